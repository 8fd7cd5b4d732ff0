"""CQL (docs/cql.md) as a user runs it: its config layers and their checks, train.py end to end on tiny data, exact
resume (warm-up and Lagrange multiplier across the break), eval.py's clean, sim2real and both value/Gaussian attacks,
and plot.py, score.py and sweep.py on its runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import eval_run, progress_rows, refused_by_train, train_tiny, train_tiny_on

import plot
import score
import sweep
import train
from algos import ALGORITHMS, CQL, build_algorithm
from algos.cql import CQLConfig
from config import load_config
from utils.algorithm_spec import ModelUse, algorithm_spec
from utils.errors import UserError

TASK = "hopper-random-gen"  # conftest's tiny_dataset_dir
TINY = [
    "epochs=2", "steps_per_epoch=20", "batch_size=32", "eval_episodes=2", "save_every=1", "sac.hidden_dims=[32,32]",
    "cql.num_actions=3",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------- configs
def test_registry_defaults_and_presets() -> None:
    spec = algorithm_spec("cql")
    assert ALGORITHMS["cql"] is CQL and spec.model is ModelUse.NONE and spec.stackable and not spec.online
    # defaults.yaml mirrors the dataclass defaults, which are the authors' cql_mujoco_new.py as their README runs it
    without_file = "task-without-file"
    assert load_config("cql", without_file) == dataclasses.replace(CQLConfig(), algo="cql", task=without_file)
    cfg = load_config("cql", "hopper-medium-v2")
    assert (cfg.epochs * cfg.steps_per_epoch, cfg.batch_size, cfg.eval_episodes, cfg.eval_every) == (
        3 * 10**6,
        256,
        1,
        1,
    )
    assert {key: getattr(cfg.sac, key) for key in SHARED_SAC} == SHARED_SAC and cfg.sac.lr_schedule == "none"
    cql = cfg.cql
    assert (cql.weight, cql.temperature, cql.num_actions, cql.logsumexp) == (5.0, 1.0, 10, "per_state")
    assert (cql.lagrange, cql.target_action_gap, cql.lagrange_lr) == (False, 5.0, 3e-4)
    assert (cql.deterministic_backup, cql.max_q_backup, cql.bc_steps) == (True, False, 39_999)
    assert cql.update_order == "authors"
    assert not hasattr(cfg, "dynamics") and not hasattr(cfg, "rollout_length")
    quick = load_config("cql", "hopper-medium-gen", "quickstart")
    assert (quick.epochs, quick.steps_per_epoch, quick.eval_episodes, quick.cql.bc_steps) == (3, 80, 3, 80)
    assert isinstance(build_algorithm(quick, 11, 3), CQL)


# SAC as both the authors' cql_mujoco_new.py and KIT's run_cql.py build it
SHARED_SAC = {"hidden_dims": [256, 256, 256], "actor_lr": 1e-4, "critic_lr": 3e-4, "alpha_lr": 1e-4, "gamma": 0.99}
SHARED_SAC |= {"tau": 0.005, "num_critics": 2, "auto_alpha": True, "target_entropy": None, "alpha_max": None}
SHARED_SAC |= {"log_std_min": -5.0, "log_std_max": 2.0}


def test_offlinerl_kit_preset_is_kits_run() -> None:
    """`--config offlinerl-kit` resolves to OfflineRL-Kit's run_cql.py as run (argparse defaults, and cql.py's
    per-draw logsumexp and actor-first order), written out here from KIT's files, not read from the preset."""
    cfg = load_config("cql", "hopper-medium-v2", "offlinerl-kit")
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.eval_episodes, cfg.eval_every) == (
        1000,
        1000,
        256,
        10,
        1,
    )
    assert {key: getattr(cfg.sac, key) for key in SHARED_SAC} == SHARED_SAC and cfg.sac.lr_schedule == "none"
    assert dataclasses.asdict(cfg.cql) == {
        "weight": 5.0, "temperature": 1.0, "num_actions": 10, "logsumexp": "per_draw", "lagrange": False,
        "target_action_gap": 10.0, "lagrange_lr": 3e-4, "deterministic_backup": True, "max_q_backup": False,
        "bc_steps": 0, "update_order": "actor_first",
    }  # fmt: skip
    # everything else is the authors' run
    authors = dataclasses.asdict(load_config("cql", "hopper-medium-v2"))
    kit = dataclasses.asdict(cfg)
    differ = {key for key in authors if authors[key] != kit[key]}
    assert differ == {"epochs", "eval_episodes", "cql"}
    assert {key for key in authors["cql"] if authors["cql"][key] != kit["cql"][key]} == {
        "logsumexp",
        "target_action_gap",
        "bc_steps",
        "update_order",
    }


@pytest.mark.parametrize(
    ("items", "fragments"),
    [
        (["cql.logsumexp=all"], ["cql.logsumexp='all'", "one of per_draw, per_state"]),
        (["cql.update_order=critic_first"], ["cql.update_order='critic_first'", "one of authors, actor_first"]),
        (
            ["cql.temperature=0", "cql.weight=-1", "cql.num_actions=0", "cql.bc_steps=-5", "cql.lagrange_lr=0"],
            ["cql.temperature=0.0", "cql.weight=-1.0", "cql.num_actions=0", "cql.bc_steps=-5", "cql.lagrange_lr=0.0"],
        ),
        (["cql.wieght=3"], ["unknown config key 'cql.wieght'", "cql.weight"]),
        (["cql.lagrange=maybe"], ["cql.lagrange must be true or false"]),
        (["sac.tau=0"], ["sac.tau=0.0"]),
        (["dynamics.lr=1e-3"], ["unknown config key 'dynamics.lr'"]),
    ],
)
def test_bad_input_is_one_line(items: list[str], fragments: list[str], tmp_path: Path, cli_error: Any) -> None:
    err = refused_by_train(cli_error, tmp_path, "cql", TASK, items)
    for fragment in fragments:
        assert fragment in err, err


def test_load_config_refuses_in_one_error() -> None:
    with pytest.raises(UserError, match=r"invalid config: cql\.temperature=-1\.0 .*; change the value"):
        load_config("cql", TASK, overrides=["cql.temperature=-1"])


# ---------------------------------------------------------------------------------------------------- end to end
def _train(log_dir: Path, *extra: str) -> Path:
    return train_tiny("cql", TASK, log_dir, TINY, *extra)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_on(tiny_dataset_dir, "cql", TASK, tmp_path_factory.mktemp("log"), TINY)


def test_run_layout_logs_and_clean_eval_reproduces_the_last_training_evaluation(run_dir: Path) -> None:
    assert not (run_dir / "dynamics.pt").exists()
    assert "dynamics" not in yaml.safe_load((run_dir / "config.yaml").read_text())
    assert [int(r["epoch"]) for r in progress_rows(run_dir)] == [1, 2]
    state = torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert int(state["algo_state"]["modules"]["num_updates"]) == 40
    (row,) = eval_run(run_dir, "--choice", "clean", "--episodes", "2")
    assert row["normalized_mean"] == pytest.approx(float(progress_rows(run_dir)[-1]["normalized_score_mean"]))


def test_sim2real_runs(run_dir: Path) -> None:
    rows = eval_run(run_dir, "--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5")
    assert [r["friction"] for r in rows] == [0.5, 1.5]
    assert (run_dir / "eval" / "sim2real_friction=0.5,1.5_ep1.csv").is_file()


@pytest.mark.parametrize("mode", ["min_Q", "action_diff"])
def test_attacks_run_and_a_zero_budget_is_clean(run_dir: Path, mode: str, data_env: None) -> None:
    """min_Q queries CQL's twin critics, action_diff its tanh-Gaussian actor."""
    rows = eval_run(
        run_dir, "--choice", "attack", "--attack-mode", mode, "--epsilons", "0,0.2", "--episodes", "2",
        "--num-candidates", "5",
    )  # fmt: skip
    clean = eval_run(run_dir, "--choice", "clean", "--episodes", "2")[0]
    assert [r["epsilon"] for r in rows] == [0.0, 0.2]
    assert rows[0]["return_mean"] == clean["return_mean"]
    assert (run_dir / "eval" / f"attack-{mode}_eps=0,0.2_cand5_ep2.csv").is_file()


def test_resumed_run_equals_uninterrupted_run(data_env: None, tmp_path: Path) -> None:
    """The warm-up (30 updates: across the epoch break at 20) and the Lagrange multiplier continue exactly."""
    extra = ("cql.bc_steps=30", "cql.lagrange=true")
    straight = _train(tmp_path / "straight", *extra)
    one_epoch = _train(tmp_path / "resumed", *extra, "epochs=1")
    config = one_epoch / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1\n", "epochs: 2\n"))
    train.main(["--resume", str(one_epoch), "--no-progress"])

    def final(run: Path) -> dict[str, Any]:
        return torch.load(run / "checkpoints" / "checkpoint.pt", weights_only=False)["algo_state"]

    expected, resumed = final(straight), final(one_epoch)
    assert expected["modules"].keys() == resumed["modules"].keys()
    for name, tensor in expected["modules"].items():
        assert torch.equal(tensor, resumed["modules"][name]), name
    assert float(expected["modules"]["cql_log_alpha"]) != 0.0
    for name in ("actor_optim", "critic_optim", "alpha_optim", "cql_alpha_optim"):
        for key, value in expected[name]["state"].items():
            for field, tensor in value.items():
                assert torch.equal(tensor, resumed[name]["state"][key][field]), (name, key, field)
    columns = [column for column in progress_rows(straight)[0] if column != "wall_time"]
    assert [[r[c] for c in columns] for r in progress_rows(one_epoch)] == [
        [r[c] for c in columns] for r in progress_rows(straight)
    ]


def test_plot_and_score_read_cql_runs(run_dir: Path, tmp_path: Path) -> None:
    written = plot.main([str(run_dir), "--out", str(tmp_path), "--smooth", "1"])
    assert [path.name for path in written] == [f"{TASK}.png"] and written[0].stat().st_size > 0
    gap = plot.main([str(run_dir), "--metric", "cql/q_gap", "--out", str(tmp_path / "gap"), "--smooth", "1"])
    assert len(gap) == 1 and gap[0].stat().st_size > 0
    (row,) = score.main([str(run_dir), "--out", str(tmp_path / "scores.md")])
    assert (row.task, row.algo) == (TASK, "cql")
    assert list(row.values) == [pytest.approx(float(progress_rows(run_dir)[-1]["normalized_score_mean"]))]


def test_sweep_over_the_min_q_weight(data_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--tasks", TASK, "--algos", "cql", "--seeds", "0", "--workers", "1", "--threads", "1", "--log-dir",
        str(tmp_path), "--grid", "cql.weight=1,10", "--set", *TINY, "epochs=1",
    ]  # fmt: skip
    assert sweep.main(argv) == 0
    configs = sorted(tmp_path.rglob("config.yaml"))
    assert {path.parents[3].name for path in configs} == {"cql.weight=1", "cql.weight=10"}
    assert {yaml.safe_load(path.read_text())["cql"]["weight"] for path in configs} == {1.0, 10.0}
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "2 already finished, 0 to resume, 0 to start" in capsys.readouterr().out
