"""End to end: train.py on a tiny generated dataset, kill -9 and resume, and bad input at the CLI."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY_MOPO_SETTINGS

import train
from envs import get_task
from envs.datasets import write_d4rl_hdf5
from utils.errors import UserError, run_cli
from utils.paths import resolve_seed_path

REPO = Path(__file__).resolve().parents[1]
TASK = "hopper-random-gen"


@pytest.fixture(scope="module")
def dataset_dir(tiny_dataset_dir: Path) -> Path:
    return tiny_dataset_dir


@pytest.fixture
def env(dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(dataset_dir))
    # The killed subprocess must use the same thread count as this process for bit-identical results.
    return {**os.environ, "D4RL_DATASET_DIR": str(dataset_dir), "OMP_NUM_THREADS": str(torch.get_num_threads())}


def train_args(log_dir: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "--task",
        TASK,
        "--algo",
        "mopo",
        "--seed",
        "3",
        "--log-dir",
        str(log_dir),
        "--no-progress",
        "--set",
        f"epochs={epochs}",
        *TINY_MOPO_SETTINGS,
        *extra,
    ]


def only_run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / TASK / "mopo").iterdir()
    return run_dir


def final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)
    return state["algo_state"]["modules"]


def progress_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_dir_layout(env: dict[str, str], tmp_path: Path) -> None:
    result = train.main(train_args(tmp_path, 2))
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith("seed3-")
    for name in ("config.yaml", "progress.csv", "dynamics.pt", "checkpoints/checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    rows = progress_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["step"]) for r in rows] == [60, 120]
    assert float(rows[-1]["normalized_score_mean"]) == pytest.approx(result["normalized_mean"])
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()


def checkpointed_epoch(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)["epoch"])


def kill_after_first_epoch(log_dir: Path, epochs: int, env: dict[str, str]) -> Path:
    """Run train.py in a subprocess and SIGKILL it as soon as it has checkpointed an epoch (progress.csv has its
    second row, which is written after epoch 1's checkpoint); returns the run dir."""
    stderr = log_dir.with_name(log_dir.name + ".stderr")
    log_dir.mkdir(parents=True)
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "train.py", *train_args(log_dir, epochs)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            runs = list((log_dir / TASK / "mopo").glob("*/progress.csv"))
            if runs and len(progress_rows(runs[0].parent)) >= 2:
                break
            time.sleep(0.005)
    finally:
        process.kill()  # SIGKILL; nothing if it has already exited
        process.wait()
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"train.py exited {process.returncode} before the kill:\n{stderr.read_text()[-2000:]}")
    run_dir = only_run_dir(log_dir)
    if checkpointed_epoch(run_dir) < 1:
        pytest.fail(f"train.py checkpointed no epoch within 120 s:\n{stderr.read_text()[-2000:]}")
    return run_dir


def test_kill_and_resume_matches_uninterrupted_run(env: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL once an epoch is checkpointed, resume, and get the uninterrupted run's parameters bit for bit.

    The kill is sent as soon as epoch 1 is checkpointed, with the run's last epoch ten epochs away. Should a slow
    scheduler still let it reach its final checkpoint before the kill lands, the attempt is repeated with four times
    the epochs, so resuming is always exercised (never skipped or failed for timing alone)."""
    for attempt, epochs in enumerate((12, 48)):
        run_dir = kill_after_first_epoch(tmp_path / f"killed{attempt}", epochs, env)
        killed_at = checkpointed_epoch(run_dir)
        if killed_at < epochs:
            break
    else:
        pytest.fail("train.py reached its last epoch before SIGKILL landed, twice; the machine is starved")
    assert 1 <= killed_at < epochs
    assert len(progress_rows(run_dir)) < epochs

    train.main(["--resume", str(run_dir), "--no-progress"])
    assert checkpointed_epoch(run_dir) == epochs
    train.main(train_args(tmp_path / "straight", epochs))
    straight_dir = only_run_dir(tmp_path / "straight")
    expected, resumed = final_parameters(straight_dir), final_parameters(run_dir)
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    assert [int(r["epoch"]) for r in progress_rows(run_dir)] == list(range(1, epochs + 1))
    assert [r["return_mean"] for r in progress_rows(run_dir)] == [r["return_mean"] for r in progress_rows(straight_dir)]


def test_dynamics_only_then_reuse(env: dict[str, str], tmp_path: Path) -> None:
    train.main(train_args(tmp_path / "dyn", 1, "dynamics_only=true"))
    model_file = only_run_dir(tmp_path / "dyn") / "dynamics.pt"
    assert model_file.is_file()
    assert not (only_run_dir(tmp_path / "dyn") / "checkpoints").exists()
    result = train.main(train_args(tmp_path / "reuse", 1, f"dynamics_path={model_file}"))
    assert result is not None
    assert (only_run_dir(tmp_path / "reuse") / "dynamics.pt").read_bytes() == model_file.read_bytes()


def test_dynamics_path_picks_each_seeds_own_model(env: dict[str, str], tmp_path: Path) -> None:
    """`{seed}` and wildcards: every seed of a group reuses the model its own earlier run fitted."""
    for seed in ("3", "4"):
        args = train_args(tmp_path / "dyn", 1, "dynamics_only=true")
        args[args.index("--seed") + 1] = seed
        train.main(args)
    pattern = str(tmp_path / "dyn" / TASK / "mopo" / "seed{seed}-*" / "dynamics.pt")
    train.main(train_args(tmp_path / "reuse", 1, f"dynamics_path={pattern}"))  # seed 3
    (model_file,) = (tmp_path / "dyn" / TASK / "mopo").glob("seed3-*/dynamics.pt")
    assert (only_run_dir(tmp_path / "reuse") / "dynamics.pt").read_bytes() == model_file.read_bytes()
    assert resolve_seed_path(pattern, 4, "dynamics_path", "model file").parent.name.startswith("seed4-")
    with pytest.raises(UserError, match=r"matches nothing for seed 5; make it match exactly one model file"):
        resolve_seed_path(pattern, 5, "dynamics_path", "model file")
    with pytest.raises(UserError, match=r"matches 2 paths"):
        resolve_seed_path(str(tmp_path / "dyn" / TASK / "mopo" / "seed*" / "dynamics.pt"), 0, "dynamics_path", "file")


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI as `python train.py` would; return its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_unknown_task_suggests_names(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(["--task", "hoper-medium-v2", "--algo", "mopo", "--log-dir", str(tmp_path)], capsys)
    assert "hoper-medium-v2" in err and "hopper-medium-v2" in err
    assert not tmp_path.joinpath("hoper-medium-v2").exists()


def test_unknown_algo(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(["--task", TASK, "--algo", "mopp", "--log-dir", str(tmp_path)], capsys)
    assert "mopp" in err and "mopo" in err


def test_malformed_yaml(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    err = cli_error(train_args(tmp_path, 1) + ["--config", str(bad)], capsys)
    assert "bad.yaml" in err


def test_mistyped_key(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(train_args(tmp_path, 1, "dynamics.max_epoch=3"), capsys)
    assert "dynamics.max_epoch" in err and "dynamics.max_epochs" in err
    err = cli_error(train_args(tmp_path, 1, "epochs=many"), capsys)
    assert "epochs" in err and "int" in err


def test_missing_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    err = cli_error(train_args(tmp_path, 1), capsys)
    assert "python collect.py dataset --task hopper-random-gen" in err
    assert not (tmp_path / TASK).exists()


def test_dataset_with_nan(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "nan.hdf5"
    with h5py.File(dataset_dir / get_task(TASK).dataset_file) as source:
        data = {
            key: source[key][()]
            for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
        }
    data["rewards"] = data["rewards"].copy()
    data["rewards"][7] = np.nan
    write_d4rl_hdf5(bad, data)
    err = cli_error(train_args(tmp_path, 1, f"dataset_path={bad}"), capsys)
    assert "rewards" in err and "NaN" in err


def test_resume_of_a_directory_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "somewhere").mkdir()
    err = cli_error(["--resume", str(tmp_path / "somewhere")], capsys)
    assert "not a run directory" in err
    assert list((tmp_path / "somewhere").iterdir()) == []


def test_resume_with_another_task_is_refused(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train.main(train_args(tmp_path, 1))
    run_dir = only_run_dir(tmp_path)
    err = cli_error(["--resume", str(run_dir), "--task", "walker2d-random-gen"], capsys)
    assert "walker2d-random-gen" in err and TASK in err


def test_cli_exits_2_with_one_line_in_a_real_process(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "train.py", "--task", "hopper-medum-v2", "--algo", "mopo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().count("\n") == 0
    assert "did you mean" in completed.stderr


class _KilledInFit(Exception):
    """Stands for a kill while the dynamics model is being fitted."""


def test_a_run_killed_while_fitting_its_model_resumes_the_fit(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in dynamics epoch 3 (progress saved after epoch 2, before any checkpoint), `--resume` continues the fit
    and the run: its model, final parameters and curves equal an uninterrupted run's, the dynamics curve has each
    epoch once, and the progress file is gone."""
    import models.dynamics
    from utils.logger import RunLogger

    monkeypatch.setattr(models.dynamics, "FIT_SAVE_SECONDS", 0.0)
    fit = ["dynamics.max_epochs=4", "dynamics.max_epochs_since_update=50"]
    train.main(train_args(tmp_path / "straight", 1, *fit))
    original = RunLogger.scalars

    def die_in_fit_epoch_3(self: RunLogger, metrics: dict, step: int) -> None:
        if "dynamics/train_loss" in metrics and step == 3:
            raise _KilledInFit
        original(self, metrics, step)

    with monkeypatch.context() as kill, pytest.raises(_KilledInFit):
        kill.setattr(RunLogger, "scalars", die_in_fit_epoch_3)
        train.main(train_args(tmp_path / "killed", 1, *fit))
    run_dir = only_run_dir(tmp_path / "killed")
    assert (run_dir / train.FIT_PROGRESS).is_file() and not (run_dir / "checkpoints").exists()
    train.main(["--resume", str(run_dir), "--no-progress"])
    straight = only_run_dir(tmp_path / "straight")
    assert not (run_dir / train.FIT_PROGRESS).exists()
    for name, value in torch.load(straight / "dynamics.pt", weights_only=False)["state_dict"].items():
        assert torch.equal(value, torch.load(run_dir / "dynamics.pt", weights_only=False)["state_dict"][name]), name
    expected = final_parameters(straight)
    for name, value in final_parameters(run_dir).items():
        assert torch.equal(value, expected[name]), name
    assert [r["return_mean"] for r in progress_rows(run_dir)] == [r["return_mean"] for r in progress_rows(straight)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("dynamics/train_loss")] == [1, 2, 3, 4]


def test_resuming_a_run_killed_before_its_first_checkpoint_is_refused(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that died after fitting its model but before its first checkpoint (and with no fit in progress) has
    nothing to resume: --resume refuses it, exit 2, naming the directory and the command that starts the run afresh
    in a new directory on the model it fitted; the directory is left as it was, and the command trains the run."""
    from algos.trainer import OfflineTrainer

    def die(self: OfflineTrainer) -> None:
        raise _KilledInFit

    with monkeypatch.context() as kill, pytest.raises(_KilledInFit):
        kill.setattr(OfflineTrainer, "save_checkpoint", die)
        train.main(train_args(tmp_path, 2))
    run_dir = only_run_dir(tmp_path)
    assert (run_dir / "dynamics.pt").is_file() and not (run_dir / "checkpoints").exists()
    files = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    err = cli_error(["--resume", str(run_dir), "--no-progress"], capsys)
    assert f"{run_dir} has no checkpoint to resume" in err
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == files
    command = shlex.split(err.split(" with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and f"dynamics_path={run_dir / 'dynamics.pt'}" in command
    train.main([*command[2:], "--no-progress"])
    (fresh,) = [path for path in (tmp_path / TASK / "mopo").iterdir() if path != run_dir]
    assert checkpointed_epoch(fresh) == 2
    assert [int(row["epoch"]) for row in progress_rows(fresh)] == [1, 2]
    assert (fresh / "dynamics.pt").read_bytes() == files[run_dir / "dynamics.pt"]
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == files
