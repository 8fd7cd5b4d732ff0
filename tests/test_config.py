"""Tests of config.py: layering, per-task files, value parsing, error messages, validation and run-config round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from algos.mopo import MOPOConfig
from algos.wmopo import WMOPOConfig
from config import (
    CONFIGS_DIR,
    config_to_dict,
    list_keys,
    load_config,
    save_config,
)
from envs.task_config import load_run_config
from utils.errors import UserError

MOPO_DIR = CONFIGS_DIR / "mopo"
PRESETS = ("defaults", "mopo_tf", "quickstart", "demo")
TASK_FILES = sorted(p.stem for p in MOPO_DIR.glob("*.yaml") if p.stem not in PRESETS)


def write(path: Path, text: str) -> str:
    """Write a YAML file for a test and return its path as the string load_config expects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(**kwargs: object) -> str:
    """Message of the UserError load_config raises for these arguments (algo/task default to MOPO hopper v2)."""
    kwargs = {"algo": "mopo", "task": "hopper-medium-v2", **kwargs}
    with pytest.raises(UserError) as info:
        load_config(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------------------------------
# Layering and shipped files


def test_defaults_yaml_agrees_with_dataclass() -> None:
    # A task without its own file gets defaults.yaml, which mirrors the dataclass defaults (KIT v2 values).
    assert load_config("mopo", "no-such-task-v2") == MOPOConfig(task="no-such-task-v2", algo="mopo")


def test_layer_order(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "epochs: 7\nbatch_size: 64\nseed: 5\nrollout_length: 2\n")
    cfg = load_config(
        "mopo",
        "hopper-medium-v2",
        config_file=user,
        overrides=["batch_size=32", "seed=6"],
        cli={"seed": 7, "device": None, "log_dir": tmp_path / "runs"},
    )
    assert cfg.penalty_coef == 5.0  # task file beats defaults.yaml (2.5)
    assert cfg.rollout_length == 2  # config file beats task file (5)
    assert cfg.epochs == 7  # config file beats defaults.yaml (3000)
    assert cfg.batch_size == 32  # --set beats config file
    assert cfg.seed == 7  # cli beats --set
    assert cfg.device == "cpu"  # None in cli means "not given"
    assert cfg.log_dir == str(tmp_path / "runs")  # paths from flags become strings
    assert (cfg.algo, cfg.task) == ("mopo", "hopper-medium-v2")


def test_v2_task_file_is_picked_up() -> None:
    cfg = load_config("mopo", "hopper-medium-v2")
    assert (cfg.rollout_length, cfg.penalty_coef) == (5, 5.0)
    assert cfg.sac.actor_lr == 1e-4 and cfg.sac.lr_schedule == "cosine" and cfg.epochs == 3000


def test_v0_task_file_inherits_mopo_tf_preset() -> None:
    cfg = load_config("mopo", "hopper-medium-v0")
    assert (cfg.rollout_length, cfg.penalty_coef) == (5, 5.0)
    assert (cfg.sac.actor_lr, cfg.sac.critic_lr, cfg.sac.alpha_lr) == (3e-4, 3e-4, 3e-4)
    assert cfg.sac.target_entropy == -3.0 and isinstance(cfg.sac.target_entropy, float)
    assert cfg.sac.alpha_max is None and cfg.sac.lr_schedule == "none" and cfg.epochs == 1000
    replay = load_config("mopo", "hopper-medium-replay-v0")  # MOPO-TF's hopper-mixed
    assert (replay.rollout_length, replay.penalty_coef) == (5, 1.0)


def test_shipped_files_all_load() -> None:
    assert len(TASK_FILES) == 21 + 9  # published v2 and v0 values, and the generated tasks that inherit v2's
    for task in TASK_FILES:
        cfg = load_config("mopo", task)
        if task.endswith("-gen"):
            published = load_config("mopo", task.replace("-gen", "-v2"))
            assert (cfg.rollout_length, cfg.penalty_coef) == (published.rollout_length, published.penalty_coef)
        assert cfg.rollout_length in (1, 5) and cfg.penalty_coef > 0
        assert (cfg.sac.target_entropy == -3.0) == task.endswith("-v0")
    quick = load_config("mopo", "walker2d-medium-v2", config_file="quickstart")
    assert quick.epochs == 10 and quick.dynamics.max_epochs == 20
    assert (quick.rollout_length, quick.penalty_coef) == (5, 0.5)  # task values survive the preset


def test_demo_preset_is_what_the_readme_says() -> None:
    """MOPO's demo (README's algorithm table): halfcheetah-medium-gen's rollout length, a short budget, λ = 5."""
    demo = load_config("mopo", "halfcheetah-medium-gen", config_file="demo")
    assert (demo.epochs, demo.steps_per_epoch, demo.dynamics.max_epochs, demo.rollout_batch_size) == (
        25,
        1000,
        20,
        10000,
    )
    assert (demo.rollout_length, demo.penalty_coef) == (5, 5.0)
    assert (demo.sac.actor_lr, demo.sac.lr_schedule) == (1e-4, "none")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "python train.py --task halfcheetah-medium-gen --algo mopo --config demo" in readme


def test_morel_demo_preset_is_the_main_command_and_its_learning_check_budget() -> None:
    """README's main command: MOReL's halfcheetah learning-check budget (50 iterations on 10-epoch models) over the
    halfcheetah family preset."""
    demo = load_config("morel", "halfcheetah-medium-gen", config_file="demo", family="halfcheetah")
    assert (demo.num_iter, demo.fit_epochs) == (50, 10)
    assert (demo.start_state, demo.pessimism_coef, demo.npg.init_log_std) == ("buffer", 1.5, -1.0)
    check = load_config(
        "morel", "halfcheetah-medium-gen", overrides=["num_iter=50", "fit_epochs=10"], family="halfcheetah"
    )
    assert demo == check
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "python train.py --task halfcheetah-medium-gen --algo morel --config demo" in readme


# ----------------------------------------------------------------------------------------------------------------
# Value parsing


@pytest.mark.parametrize("text", ["False", "false", "0", "no", "off", "OFF"])
def test_false_strings_parse_as_false(text: str) -> None:
    cfg = load_config("mopo", "x", overrides=[f"sac.auto_alpha={text}", f"dynamics.bootstrap={text}"])
    assert cfg.sac.auto_alpha is False and cfg.dynamics.bootstrap is False


@pytest.mark.parametrize("text", ["True", "true", "1", "yes", "on"])
def test_true_strings_parse_as_true(text: str) -> None:
    assert load_config("mopo", "x", overrides=[f"termination.strict={text}"]).termination.strict is True


@pytest.mark.parametrize("text", ["none", "null", "None"])
def test_none_parsing(text: str) -> None:
    cfg = load_config(
        "mopo", "x", overrides=[f"dynamics.max_epochs={text}", f"sac.alpha_max={text}", f"dataset_path={text}"]
    )
    assert cfg.dynamics.max_epochs is None and cfg.sac.alpha_max is None and cfg.dataset_path is None


def test_scalar_parsing() -> None:
    cfg = load_config("mopo", "x", overrides=["dynamics.max_epochs=30", "sac.actor_lr=1e-3", "penalty_coef=1"])
    assert cfg.dynamics.max_epochs == 30 and cfg.sac.actor_lr == 1e-3 and cfg.penalty_coef == 1.0
    assert isinstance(cfg.penalty_coef, float)


@pytest.mark.parametrize("text", ["[100,100]", "100,100", "[ 100, 100 ]"])
def test_list_parsing(text: str) -> None:
    cfg = load_config("mopo", "x", overrides=[f"dynamics.hidden_dims={text}", "dynamics.weight_decay=1e-5,2e-5,3e-5"])
    assert cfg.dynamics.hidden_dims == [100, 100]
    assert cfg.dynamics.weight_decay == [1e-5, 2e-5, 3e-5]


def test_yaml_reads_exponent_floats_and_dotted_keys(tmp_path: Path) -> None:
    # Plain PyYAML reads `1e-3` as a string; configs must not depend on writing `1.0e-3`.
    user = write(tmp_path / "u.yaml", "dynamics:\n  lr: 1e-3\nsac.tau: 1e-2\ndynamics.hidden_dims: [64]\n")
    cfg = load_config("mopo", "x", config_file=user, overrides=["dynamics.weight_decay=[0.1, 0.2]"])
    assert cfg.dynamics.lr == 1e-3 and cfg.sac.tau == 1e-2 and cfg.dynamics.hidden_dims == [64]


# ----------------------------------------------------------------------------------------------------------------
# Errors


def test_unknown_algo() -> None:
    message = error_of(algo="mopoo")
    assert "unknown algorithm 'mopoo'" in message and "mopo" in message


def test_unknown_key_in_set_suggests_close_keys() -> None:
    message = error_of(overrides=["dynamics.max_epoch=3"])
    assert "'dynamics.max_epoch'" in message and "--set dynamics.max_epoch=3" in message
    assert "did you mean dynamics.max_epochs" in message
    assert "dynamics.max_epochs" in error_of(overrides=["max_epochs=3"])  # same name, missing block prefix


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    message = error_of(config_file=write(tmp_path / "typo.yaml", "sac:\n  actor_learning_rate: 1\n"))
    assert "'sac.actor_learning_rate'" in message and "typo.yaml" in message and "sac.actor_lr" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("epochs: 10.5\n", "epochs must be an integer, got 10.5"),
        ("epochs: 1000.0\n", "epochs must be an integer, got 1000.0"),
        ("epochs: true\n", "epochs must be an integer, got True"),
        ("real_ratio: yes\n", "real_ratio must be a number, got True"),
        ("device: 0\n", "device must be a string, got 0"),
        ("sac:\n  hidden_dims: 256\n", "sac.hidden_dims must be a list of integers, got 256"),
        ("dynamics:\n  weight_decay: [1, x]\n", "dynamics.weight_decay must be a list of numbers"),
        ("epochs:\n", "epochs must be an integer, got None"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, text: str, fragment: str) -> None:
    message = error_of(config_file=write(tmp_path / "types.yaml", text))
    assert fragment in message and "types.yaml" in message


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("epochs=abc", "epochs must be an integer, got 'abc'"),
        ("epochs=1e3", "epochs must be an integer, got '1e3'"),
        ("sac.auto_alpha=maybe", "sac.auto_alpha must be true or false, got 'maybe'"),
        ("sac.actor_lr=fast", "sac.actor_lr must be a number, got 'fast'"),
        ("dynamics.hidden_dims=[200,x]", "dynamics.hidden_dims must be a list of integers"),
        ("epochs=none", "epochs must be an integer, got 'none'"),
    ],
)
def test_wrong_type_in_set(item: str, fragment: str) -> None:
    message = error_of(overrides=[item])
    assert fragment in message and f"--set {item}" in message


def test_cli_values_are_type_checked() -> None:
    assert "seed must be an integer, got '3'" in error_of(cli={"seed": "3"})


def test_set_without_equals() -> None:
    message = error_of(overrides=["epochs"])
    assert "--set 'epochs'" in message and "key=value" in message


def test_block_set_to_scalar() -> None:
    message = error_of(overrides=["dynamics=3"])
    assert "'dynamics' is a block" in message and "dynamics.num_ensemble=" in message


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(config_file=write(tmp_path / "broken.yaml", "epochs: 5\nsac: [1,\n"))
    assert "malformed YAML" in message and "broken.yaml:3:" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    message = error_of(config_file=write(tmp_path / "dup.yaml", "epochs: 5\nepochs: 6\n"))
    assert "duplicate key 'epochs'" in message and "dup.yaml:2:" in message


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    message = error_of(config_file=write(tmp_path / "list.yaml", "- epochs\n- 5\n"))
    assert "list.yaml" in message and "mapping" in message and "not a list" in message


def test_empty_yaml_file_is_allowed(tmp_path: Path) -> None:
    assert load_config("mopo", "x", config_file=write(tmp_path / "empty.yaml", "# nothing\n")).epochs == 3000


def test_missing_config_file(tmp_path: Path) -> None:
    message = error_of(config_file=str(tmp_path / "absent.yaml"))
    assert "config file not found" in message and "absent.yaml" in message


def test_inherit_is_relative_to_including_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "base.yaml", "epochs: 11\npenalty_coef: 0.5\n")
    child = write(tmp_path / "sub" / "child.yaml", "inherit: ../base.yaml\npenalty_coef: 0.75\n")
    monkeypatch.chdir(tmp_path / "sub")
    cfg = load_config("mopo", "hopper-medium-v2", config_file=child)
    assert cfg.epochs == 11 and cfg.penalty_coef == 0.75  # the including file wins over what it inherits
    assert "inherited file 'nowhere.yaml' not found" in error_of(
        config_file=write(tmp_path / "orphan.yaml", "inherit: nowhere.yaml\n")
    )


def test_inherit_cycle(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "inherit: b.yaml\n")
    write(tmp_path / "b.yaml", "inherit: a.yaml\n")
    message = error_of(config_file=str(tmp_path / "a.yaml"))
    assert "inheritance cycle" in message and "a.yaml -> " in message and "b.yaml" in message
    assert "cycle" in error_of(config_file=write(tmp_path / "self.yaml", "inherit: self.yaml\n"))


def test_config_file_for_another_algo_is_rejected(tmp_path: Path) -> None:
    message = error_of(config_file=write(tmp_path / "other.yaml", "algo: bcq\n"))
    assert "algo='bcq'" in message and "other.yaml" in message


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("penalty_type=max", "penalty_type='max' (from --set penalty_type=max) must be one of aleatoric"),
        ("dynamics.loss=l1", "dynamics.loss='l1'"),
        ("sac.lr_schedule=linear", "must be one of cosine, none"),
        ("dataset_backend=s3", "must be one of auto, hdf5, d4rl, minari"),
        ("device=gpu", "must be cpu, cuda or cuda:N"),
        ("epochs=0", "epochs=0"),
        ("dynamics.batch_size=-1", "dynamics.batch_size=-1"),
        ("rollout_length=0", "rollout_length=0"),
        ("real_ratio=1.5", "real_ratio=1.5 (from --set real_ratio=1.5) must be between 0 and 1"),
        ("dynamics.num_elites=8", "must be between 1 and dynamics.num_ensemble (7)"),
        ("dynamics.num_ensemble=4", "dynamics.num_elites=5 (from"),
        ("dynamics.hidden_dims=200,200", "dynamics.weight_decay=[2.5e-05"),
        ("dynamics.holdout_ratio=1", "must be in [0, 1)"),
        ("dynamics.holdout_ratio=0", "0 only with dynamics.max_epochs set"),
    ],
)
def test_validation_errors(item: str, fragment: str) -> None:
    message = error_of(overrides=[item])
    assert message.startswith("invalid config:") and fragment in message


def test_validation_accepts_edge_values() -> None:
    cfg = load_config("mopo", "x", overrides=["device=cuda:1", "real_ratio=0", "real_ratio=1", "dynamics.num_elites=7"])
    assert cfg.device == "cuda:1" and cfg.real_ratio == 1.0


# ----------------------------------------------------------------------------------------------------------------
# Keys, dicts and run configs


def test_list_keys_are_dotted_leaves() -> None:
    keys = list_keys(MOPOConfig)
    assert {"seed", "termination.strict", "dynamics.num_elites", "sac.actor_lr", "penalty_type"} <= set(keys)
    assert "dynamics" not in keys and len(keys) == len(set(keys))


def test_config_to_dict_is_plain() -> None:
    cfg = load_config("mopo", "hopper-medium-v2")
    data = config_to_dict(cfg)
    assert type(data["dynamics"]) is dict and data["dynamics"]["hidden_dims"] == [200, 200, 200, 200]
    data["dynamics"]["hidden_dims"].append(1)
    assert cfg.dynamics.hidden_dims == [200, 200, 200, 200]


def test_save_and_load_run_config_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(
        "mopo",
        "walker2d-medium-replay-v0",
        overrides=["dynamics.max_epochs=none", "sac.hidden_dims=64,64", "dataset_path=/data/w.hdf5"],
        cli={"seed": 3},
    )
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    save_config(cfg, path)  # overwriting works too
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary file left behind
    loaded = load_run_config(path)
    assert type(loaded) is MOPOConfig and loaded == cfg
    assert dataclasses.asdict(loaded) == config_to_dict(cfg)


def test_load_run_config_needs_known_algo(tmp_path: Path) -> None:
    for text in ("epochs: 5\n", "algo: nope\n"):
        with pytest.raises(UserError, match="not a run config of a known algorithm"):
            load_run_config(write(tmp_path / "config.yaml", text))
    with pytest.raises(UserError, match="run config not found"):
        load_run_config(tmp_path / "missing.yaml")


def test_load_run_config_is_strict(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown config key 'rollout_len'.*rollout_length"):
        load_run_config(write(tmp_path / "config.yaml", "algo: mopo\nrollout_len: 5\n"))
    with pytest.raises(UserError, match="epochs must be an integer"):
        load_run_config(write(tmp_path / "config.yaml", "algo: mopo\nepochs: many\n"))


def test_wmopos_rollout_keys_are_its_own() -> None:
    """The model-episode keys live in WMOPO's config: WMOPO takes them from --set (and checks them), other algorithms
    refuse them as unknown keys in one line."""
    cfg = load_config("wmopo", "hopper-medium-v2", overrides=["update_after=5", "rollout_random_steps=0"])
    assert isinstance(cfg, WMOPOConfig)
    assert (cfg.rollout_mode, cfg.update_after, cfg.rollout_random_steps, cfg.model_episode_length) == (
        "episodes", 5, 0, 1000,
    )  # fmt: skip
    assert "update_after=-1 (from --set update_after=-1) must be >= 0" in error_of(
        algo="wmopo", overrides=["update_after=-1"]
    )
    assert "model_episode_length=0" in error_of(algo="wmopo", overrides=["model_episode_length=0"])
    for item in ("rollout_mode=branch", "model_episode_length=1000", "rollout_random_steps=0", "update_after=0"):
        assert f"unknown config key '{item.split('=')[0]}' in --set {item}" in error_of(overrides=[item])


def test_run_configs_saved_before_the_rollout_keys_moved_still_load(tmp_path: Path) -> None:
    """A MOPO run config that holds the moved keys at the values meaning branched rollouts (as every one saved
    before they moved does) loads as if it lacked them, so those runs resume; any other value is refused by name."""
    old = "algo: mopo\nrollout_mode: branch\nmodel_episode_length: 1000\nrollout_random_steps: 0\nupdate_after: 0\n"
    loaded = load_run_config(write(tmp_path / "old" / "config.yaml", old))
    assert loaded == load_run_config(write(tmp_path / "new" / "config.yaml", "algo: mopo\n"))
    with pytest.raises(UserError, match="unknown config key 'rollout_mode'"):
        load_run_config(write(tmp_path / "episodes" / "config.yaml", "algo: mopo\nrollout_mode: episodes\n"))


MICRO_TASK_FILES = sorted(p.stem for p in (CONFIGS_DIR / "micro").glob("*.yaml") if p.stem not in PRESETS)


def test_micro_files_carry_the_published_values() -> None:
    assert len(MICRO_TASK_FILES) == 9 + 9  # MICRO's nine -v2 configs, and the generated tasks that inherit them
    for task in MICRO_TASK_FILES:
        cfg = load_config("micro", task)
        published = load_config("micro", task.replace("-gen", "-v2"))
        assert cfg == dataclasses.replace(published, task=task)
    defaults = load_config("micro", "no-such-task-v2")
    assert (defaults.penalty_coef, defaults.num_samples, defaults.rollout_length, defaults.eval_every) == (
        1.0,
        10,
        1,
        10,
    )
    hopper = load_config("micro", "hopper-medium-v2")
    assert (hopper.rollout_length, hopper.penalty_coef, hopper.sac.auto_alpha, hopper.sac.alpha) == (5, 1.0, False, 0.1)
    assert hopper.dynamics.max_epochs_since_update == 10
    expert = load_config("micro", "halfcheetah-medium-expert-v2")
    assert (expert.real_ratio, expert.deterministic_backup, expert.dynamics.max_epochs_since_update) == (0.5, True, 30)
    walker = load_config("micro", "walker2d-medium-v2")
    assert (walker.dynamics.max_epochs, walker.penalty_coef) == (30, 0.5)
    quick = load_config("micro", "hopper-medium-gen", config_file="quickstart")
    assert quick.epochs == 10 and quick.rollout_length == 5
    with pytest.raises(UserError, match="penalty_type"):
        load_config("micro", "hopper-medium-v2", overrides=["penalty_type=aleatoric"])  # a MOPO key


# ----------------------------------------------------------------------------------------------------------------
# Domains of every algorithm's keys (a value inside its rule's range must be one the algorithm can run with)

ALGO_TASKS = {"wmopo-erm": "CustomPendulum-v0", "wmopo-alg2": "CustomPendulum-v0", "wmopo-alg1": "CustomPendulum-v0",
              "wmopo-alg1-detached": "CustomPendulum-v0"}  # fmt: skip


@pytest.mark.parametrize(
    ("algo", "item", "fragment"),
    [
        ("mago", "gamma=1.0", "gamma=1.0 (from --set gamma=1.0) must be in [0, 1) (the critic targets are clipped"),
        ("mopo", "sac.gamma=1", "sac.gamma=1.0 (from --set sac.gamma=1) must be in [0, 1)"),
        ("micro", "sac.gamma=1", "sac.gamma=1.0 (from --set sac.gamma=1) must be in [0, 1)"),
        ("wmopo", "sac.gamma=1", "must be in [0, 1) (model episodes of the occupancy samples stop"),
        ("bcq", "gamma=1", "gamma=1.0 (from --set gamma=1) must be in [0, 1)"),
        ("wmopo-erm", "gamma=1", "must be in [0, 1) (simulated episodes stop with probability 1 − γ"),
        ("mopo", "penalty_coef=-1", "penalty_coef=-1.0 (from --set penalty_coef=-1) must be >= 0 (0 switches"),
        ("micro", "penalty_coef=-0.5", "penalty_coef=-0.5 (from --set penalty_coef=-0.5) must be >= 0"),
        ("mopo", "sac.tau=0", "sac.tau=0.0 (from --set sac.tau=0) must be in (0, 1]"),
        ("bcq", "tau=0", "tau=0.0 (from --set tau=0) must be in (0, 1]"),
        ("mago", "tau_policy=0", "tau_policy=0.0 (from --set tau_policy=0) must be in (0, 1]"),
        ("micro", "sac.alpha=-0.1", "sac.alpha=-0.1 (from --set sac.alpha=-0.1) must be >= 0"),
        (
            "mopo",
            "sac.log_std_max=-6",
            "sac.log_std_max=-6.0 (from --set sac.log_std_max=-6) must be > sac.log_std_min",
        ),
        ("mago", "log_std_max=-5", "log_std_max=-5.0 (from --set log_std_max=-5) must be > log_std_min (-4)"),
        ("mago", "hidden_dims=[]", "hidden_dims=[] (from --set hidden_dims=[]) must be a non-empty list"),
        ("morel", "npg.init_log_std=2", "must be between npg.min_log_std (-1) and npg.max_log_std (1)"),
        ("mopo", "dynamics.max_logvar_init=-20", "must be > dynamics.min_logvar_init (-10)"),
        ("mopo", "dynamics.logvar_bound_coef=-1", "dynamics.logvar_bound_coef=-1.0"),
        (
            "wmopo",
            "ratio.holdout_ratio=1",
            "(from --set ratio.holdout_ratio=1) must be in [0, 1)",
        ),
        ("wmopo", "model_error.patience=0", "model_error.patience=0 (from --set model_error.patience=0) must be > 0"),
        ("wmopo", "model_eval_episodes=0", "model_eval_episodes=0"),
    ],
)
def test_values_outside_an_algorithms_domain_are_refused(algo: str, item: str, fragment: str) -> None:
    message = error_of(algo=algo, task=ALGO_TASKS.get(algo, "hopper-medium-gen"), overrides=[item])
    assert message.startswith("invalid config:") and fragment in message, message
    assert message.endswith("; change the value there or with --set key=value")


def test_gamma_one_only_where_no_value_needs_one_minus_gamma() -> None:
    """Over every registered algorithm: a discount of 1 is refused wherever values bootstrap (1/(1 − γ) bounds them,
    or episodes stop with probability 1 − γ); only NPG's finite-horizon paths, with a baseline that sees the step and
    no 1/(1 − γ) anywhere, take γ = 1, the undiscounted return of a path."""
    from config import config_classes

    accepted = []
    for algo, cls in sorted(config_classes().items()):
        for key in (key for key in list_keys(cls) if key.rsplit(".", 1)[-1] == "gamma"):
            try:
                load_config(algo, ALGO_TASKS.get(algo, "x"), overrides=[f"{key}=1"])
            except UserError as err:
                assert f"{key}=1.0 (from --set {key}=1) must be in [0, 1)" in str(err)
            else:
                accepted.append((algo, key))
            load_config(algo, ALGO_TASKS.get(algo, "x"), overrides=[f"{key}=0.999"])
    assert accepted == [("mal", "npg.gamma"), ("morel", "npg.gamma"), ("pal", "npg.gamma")]


def test_npg_gamma_one_is_the_undiscounted_return_of_a_finite_path() -> None:
    from algos.npg import gae

    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    advantages, returns = gae(
        rewards, torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.tensor([True]), 1.0, 0.97
    )
    assert returns.tolist() == [[10.0, 9.0, 7.0, 4.0]]
    assert torch.isfinite(advantages).all()


def test_penalty_and_polyak_keys_of_every_algorithm_have_their_domain() -> None:
    """A negative penalty weight would reward uncertainty; a Polyak rate of 0 would freeze the target networks."""
    from config import config_classes

    checked = 0
    for algo, cls in sorted(config_classes().items()):
        for key in list_keys(cls):
            name = key.rsplit(".", 1)[-1]
            bad = "-1" if name.endswith("penalty_coef") else "0" if name == "tau" or name.startswith("tau_") else None
            if bad is None:
                continue
            with pytest.raises(UserError, match=rf"{key}=-?[01]\.0 \(from --set {key}={bad}\) must be"):
                load_config(algo, ALGO_TASKS.get(algo, "x"), overrides=[f"{key}={bad}"])
            checked += 1
    assert checked >= 8


def test_a_saved_run_configs_bad_value_is_fixed_in_the_file(tmp_path: Path) -> None:
    """eval.py and --resume read a run's config.yaml and take no --set, so the message points at the file alone."""
    path = write(tmp_path / "run" / "config.yaml", "algo: mopo\nsac:\n  gamma: 1.0\n")
    with pytest.raises(UserError) as info:
        load_run_config(path)
    message = str(info.value)
    assert "sac.gamma=1.0 (from " in message and message.endswith(f"; change the value in {path}")
    assert "--set" not in message
