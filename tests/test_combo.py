"""COMBO (docs/combo.md) as a user runs it: its config layers (OfflineRL-Kit's run_combo.py, the per-task files, the
paper's rows, quickstart) and their checks, train.py end to end on tiny data (model fit, rollouts, the regulariser),
exact resume across a rollout and an epoch break, eval.py's clean, sim2real and both attacks, and plot.py, score.py
and sweep.py on its runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import (
    assert_same_tensors,
    eval_run,
    interrupted_at_epoch,
    progress_rows,
    refused_by_train,
    train_tiny,
    train_tiny_on,
)

import plot
import score
import sweep
import train
from algos import ALGORITHMS, COMBO, build_algorithm
from algos.combo import COMBOConfig
from config import load_config
from utils.algorithm_spec import ModelUse, algorithm_spec
from utils.errors import Interrupted, UserError

TASK = "hopper-random-gen"  # conftest's tiny_dataset_dir
TINY = [
    "epochs=2", "steps_per_epoch=30", "batch_size=32", "rollout_freq=20", "rollout_batch_size=100",
    "rollout_length=2", "eval_episodes=2", "save_every=1", "sac.hidden_dims=[32,32]", "cql.num_actions=3",
    "dynamics.num_ensemble=3", "dynamics.num_elites=2", "dynamics.hidden_dims=[16,16]",
    "dynamics.weight_decay=[2.5e-5,5e-5,1e-4]", "dynamics.max_epochs=2",
]  # fmt: skip
# KIT's suggested values (run_combo.py l. 26-36), written out here rather than read from the task files.
KIT_PER_TASK = {
    "halfcheetah-medium-v2": (5, 0.5), "hopper-medium-v2": (5, 5.0), "walker2d-medium-v2": (1, 5.0),
    "halfcheetah-medium-replay-v2": (5, 0.5), "hopper-medium-replay-v2": (5, 0.5),
    "walker2d-medium-replay-v2": (1, 0.5), "halfcheetah-medium-expert-v2": (5, 5.0),
    "hopper-medium-expert-v2": (5, 5.0), "walker2d-medium-expert-v2": (1, 5.0),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- configs
def test_registry_and_defaults_are_kits_run_combo() -> None:
    spec = algorithm_spec("combo")
    assert ALGORITHMS["combo"] is COMBO and spec.model is ModelUse.ROLLOUTS and spec.stackable and not spec.online
    without_file = "task-without-file"  # defaults.yaml mirrors the dataclass defaults
    assert load_config("combo", without_file) == dataclasses.replace(COMBOConfig(), algo="combo", task=without_file)
    cfg = load_config("combo", without_file)
    loop = (cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.eval_episodes, cfg.eval_every)
    assert loop == (1000, 1000, 256, 10, 1)  # run_combo.py l. 78-81
    rollouts = (cfg.rollout_freq, cfg.rollout_batch_size, cfg.rollout_length, cfg.model_retain_epochs)
    assert rollouts == (1000, 50_000, 5, 5) and cfg.real_ratio == cfg.real_fraction() == 0.5  # l. 71-75
    assert (cfg.push_down, cfg.push_up) == ("mix", "batch")  # --rho-s mix (l. 64); q1 of the mixed batch
    sac = {"hidden_dims": [256, 256, 256], "actor_lr": 1e-4, "critic_lr": 3e-4, "alpha_lr": 1e-4, "gamma": 0.99}
    sac |= {"tau": 0.005, "num_critics": 2, "auto_alpha": True, "target_entropy": None, "alpha_max": None}
    sac |= {"lr_schedule": "cosine", "log_std_min": -5.0, "log_std_max": 2.0}
    assert {key: getattr(cfg.sac, key) for key in sac} == sac
    assert dataclasses.asdict(cfg.cql) == {
        "weight": 5.0, "temperature": 1.0, "num_actions": 10, "logsumexp": "per_draw", "lagrange": False,
        "target_action_gap": 10.0, "lagrange_lr": 3e-4, "deterministic_backup": True, "max_q_backup": False,
        "bc_steps": 0, "update_order": "actor_first",
    }  # fmt: skip
    dynamics = cfg.dynamics
    assert (dynamics.num_ensemble, dynamics.num_elites, dynamics.hidden_dims) == (7, 5, [200, 200, 200, 200])
    assert (dynamics.lr, dynamics.max_epochs_since_update, dynamics.max_epochs) == (1e-3, 5, None)
    assert dynamics.weight_decay == [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]
    assert not cfg.termination.strict


@pytest.mark.parametrize("task", sorted(KIT_PER_TASK))
def test_per_task_files_hold_kits_suggested_values(task: str) -> None:
    for name in (task, task.replace("-v2", "-gen")):  # the -gen files inherit the -v2 ones
        cfg = load_config("combo", name)
        assert (cfg.rollout_length, cfg.cql.weight) == KIT_PER_TASK[task], name
        assert cfg.real_ratio == 0.5 and cfg.push_down == "mix"


def test_paper_and_quickstart_presets() -> None:
    paper = load_config("combo", "hopper-medium-v2", "paper")
    assert (paper.push_down, paper.push_up) == ("model", "data")
    assert (paper.rollout_length, paper.cql.weight) == (5, 5.0)  # the task file still applies
    kit = dataclasses.asdict(load_config("combo", "hopper-medium-v2"))
    assert {key for key, value in dataclasses.asdict(paper).items() if kit[key] != value} == {"push_down", "push_up"}
    quick = load_config("combo", "hopper-medium-gen", "quickstart")
    assert (quick.epochs, quick.steps_per_epoch, quick.rollout_freq, quick.dynamics.max_epochs) == (2, 60, 60, 2)
    assert isinstance(build_algorithm(quick, 11, 3), COMBO)


@pytest.mark.parametrize(
    ("items", "fragments"),
    [
        (["push_down=all"], ["push_down='all'", "one of mix, model"]),
        (["push_up=model"], ["push_up='model'", "one of batch, data"]),
        (["push_up=data", "real_ratio=0"], ["push_up='data'", "dataset rows in every batch"]),
        (["push_down=model", "real_ratio=1"], ["push_down='model'", "model rows in every batch"]),
        (["cql.logsumexp=all", "cql.weight=-1"], ["cql.logsumexp='all'", "cql.weight=-1.0"]),
        (["penalty_coef=1"], ["unknown config key 'penalty_coef'"]),
    ],
)
def test_bad_input_is_one_line(items: list[str], fragments: list[str], tmp_path: Path, cli_error: Any) -> None:
    err = refused_by_train(cli_error, tmp_path, "combo", TASK, items)
    for fragment in fragments:
        assert fragment in err, err


def test_load_config_refuses_in_one_error() -> None:
    with pytest.raises(UserError, match=r"invalid config: push_up='x' .*; change the value"):
        load_config("combo", TASK, overrides=["push_up=x"])


# ---------------------------------------------------------------------------------------------------- end to end
def _train(log_dir: Path, *extra: str) -> Path:
    return train_tiny("combo", TASK, log_dir, TINY, *extra)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_on(tiny_dataset_dir, "combo", TASK, tmp_path_factory.mktemp("log"), TINY)


def test_run_layout_logs_and_clean_eval_reproduces_the_last_training_evaluation(run_dir: Path) -> None:
    assert (run_dir / "dynamics.pt").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["push_down"] == "mix"
    assert [int(r["epoch"]) for r in progress_rows(run_dir)] == [1, 2]
    state = torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert int(state["algo_state"]["modules"]["num_updates"]) == 60
    (row,) = eval_run(run_dir, "--choice", "clean", "--episodes", "2")
    assert row["normalized_mean"] == pytest.approx(float(progress_rows(run_dir)[-1]["normalized_score_mean"]))


def test_sim2real_runs(run_dir: Path) -> None:
    rows = eval_run(run_dir, "--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5")
    assert [r["friction"] for r in rows] == [0.5, 1.5]
    assert (run_dir / "eval" / "sim2real_friction=0.5,1.5_ep1.csv").is_file()


@pytest.mark.parametrize("mode", ["min_Q", "action_diff"])
def test_attacks_run_and_a_zero_budget_is_clean(run_dir: Path, mode: str, data_env: None) -> None:
    """min_Q queries COMBO's twin critics, action_diff its tanh-Gaussian actor."""
    rows = eval_run(
        run_dir, "--choice", "attack", "--attack-mode", mode, "--epsilons", "0,0.2", "--episodes", "2",
        "--num-candidates", "5",
    )  # fmt: skip
    clean = eval_run(run_dir, "--choice", "clean", "--episodes", "2")[0]
    assert [r["epsilon"] for r in rows] == [0.0, 0.2]
    assert rows[0]["return_mean"] == clean["return_mean"]
    assert (run_dir / "eval" / f"attack-{mode}_eps=0,0.2_cand5_ep2.csv").is_file()


def test_resumed_run_equals_uninterrupted_run(data_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted before epoch 2's checkpoint and resumed: rollouts at global steps 0, 20 and 40 (the second in
    epoch 1, the third after the break at 30), the model buffer, the cosine schedule and the paper's rows continue
    to the uninterrupted run's weights, optimiser states and progress, bit for bit."""
    extra = ("push_down=model", "push_up=data")
    straight = _train(tmp_path / "straight", *extra)
    with (
        interrupted_at_epoch(monkeypatch, 2),
        pytest.raises(Interrupted, match="continue with: python train.py --resume"),
    ):
        _train(tmp_path / "split", *extra)
    (split,) = (tmp_path / "split" / TASK / "combo").iterdir()
    train.main(["--resume", str(split), "--no-progress"])

    expected = torch.load(straight / "checkpoints" / "checkpoint.pt", weights_only=False)
    resumed = torch.load(split / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert resumed["epoch"] == expected["epoch"] == 2
    assert_same_tensors(expected["algo_state"], resumed["algo_state"], "algo_state")
    columns = [column for column in progress_rows(straight)[0] if column != "wall_time"]
    assert [[r[c] for c in columns] for r in progress_rows(split)] == [
        [r[c] for c in columns] for r in progress_rows(straight)
    ]


def test_plot_and_score_read_combo_runs(run_dir: Path, tmp_path: Path) -> None:
    written = plot.main([str(run_dir), "--out", str(tmp_path), "--smooth", "1"])
    assert [path.name for path in written] == [f"{TASK}.png"] and written[0].stat().st_size > 0
    gap = plot.main([str(run_dir), "--metric", "combo/q_data", "--out", str(tmp_path / "q"), "--smooth", "1"])
    assert len(gap) == 1 and gap[0].stat().st_size > 0
    (row,) = score.main([str(run_dir), "--out", str(tmp_path / "scores.md")])
    assert (row.task, row.algo) == (TASK, "combo")
    assert list(row.values) == [pytest.approx(float(progress_rows(run_dir)[-1]["normalized_score_mean"]))]


def test_sweep_over_the_pushed_down_rows(data_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--tasks", TASK, "--algos", "combo", "--seeds", "0", "--workers", "1", "--threads", "1", "--log-dir",
        str(tmp_path), "--grid", "push_down=mix,model", "--set", *TINY, "epochs=1",
    ]  # fmt: skip
    assert sweep.main(argv) == 0
    configs = sorted(tmp_path.rglob("config.yaml"))
    assert {path.parents[3].name for path in configs} == {"push_down=mix", "push_down=model"}
    assert {yaml.safe_load(path.read_text())["push_down"] for path in configs} == {"mix", "model"}
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "2 already finished, 0 to resume, 0 to start" in capsys.readouterr().out
