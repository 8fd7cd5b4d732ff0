"""Resume keeps TensorBoard whole: every scalar logged up to the checkpoint survives, nothing after it is kept, and
nothing is duplicated; `--resume` of a run without a checkpoint says so (and its suggested fix works)."""

from __future__ import annotations

import csv
import dataclasses
import shlex
from pathlib import Path

import pytest

import train
from envs.task_config import load_run_config
from utils.logger import RunLogger
from utils.runs import Run, read_tensorboard

TASK = "hopper-random-gen"
TINY = [
    "steps_per_epoch=40",
    "batch_size=32",
    "rollout_freq=40",
    "rollout_batch_size=50",
    "rollout_length=2",
    "eval_episodes=1",
    "save_every=2",
    "dynamics.num_ensemble=3",
    "dynamics.num_elites=2",
    "dynamics.hidden_dims=[16,16]",
    "dynamics.weight_decay=[2.5e-5,5e-5,1e-4]",
    "dynamics.max_epochs=2",
    "sac.hidden_dims=[16,16]",
]


class Killed(Exception):
    """Stands for a kill after some events were written past the last checkpoint."""


@pytest.fixture(autouse=True)
def dataset(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))


def args(log_dir: Path, epochs: int = 4) -> list[str]:
    return ["--task", TASK, "--algo", "mopo", "--seed", "1", "--log-dir", str(log_dir), "--no-progress", "--set",
            f"epochs={epochs}", *TINY]  # fmt: skip


def run_dir_of(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / TASK / "mopo").iterdir()
    return run_dir


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event per tag in the order TensorBoard reads it (duplicates and all), as stored: the raw
    records' simple values (a loader that migrates them to tensor summaries would read every value as 0)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    from utils.logger import _event_files

    out: dict[str, list[tuple[int, float]]] = {}
    for path in _event_files(run_dir):
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                assert value.HasField("simple_value"), f"{value.tag} is not stored as a scalar in {path.name}"
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_resumed_run_logs_every_scalar_once_as_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train.main(args(tmp_path / "whole"))
    expected = scalars(run_dir_of(tmp_path / "whole"))

    original = RunLogger.evaluation

    def evaluation_then_die(self: RunLogger, epoch: int, *rest: object, **named: object) -> None:
        original(self, epoch, *rest, **named)  # type: ignore[arg-type]
        if epoch == 3:  # the checkpoint is at epoch 2: epoch 3's rollout, losses and evaluation are past it
            raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(RunLogger, "evaluation", evaluation_then_die)
        train.main(args(tmp_path / "cut"))
    run_dir = run_dir_of(tmp_path / "cut")
    before = scalars(run_dir)
    assert max(step for step, _ in before["eval/episode_reward"]) == 120  # events past the checkpoint are on disk

    train.main(["--resume", str(run_dir), "--no-progress"])
    resumed = scalars(run_dir)
    assert resumed.keys() == expected.keys()
    for tag, points in expected.items():
        assert [step for step, _ in resumed[tag]] == [step for step, _ in points], tag
        assert resumed[tag] == points, tag  # bit-identical on CPU
    # The evaluation at the checkpoint's own step (80) survived, once.
    assert [step for step, _ in resumed["eval/normalized_episode_reward"]] == [40, 80, 120, 160]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # the rewritten file and the resumed segment's
    # What plot.py and score.py read (EventAccumulator scalars): every point, before the resume and after it.
    read = read_tensorboard(Run(run_dir, TASK, "mopo", 1, {}))
    assert read.keys() == expected.keys()
    for tag, points in expected.items():
        assert list(zip(read[tag].steps.tolist(), read[tag].values.tolist())) == points, tag


def test_plot_reads_a_resumed_run_without_out_of_order_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = RunLogger.evaluation

    def evaluation_then_die(self: RunLogger, epoch: int, *rest: object, **named: object) -> None:
        original(self, epoch, *rest, **named)  # type: ignore[arg-type]
        if epoch == 3:
            raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(RunLogger, "evaluation", evaluation_then_die)
        train.main(args(tmp_path))
    run_dir = run_dir_of(tmp_path)
    train.main(["--resume", str(run_dir), "--no-progress"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    for tag in ("loss/critic", "eval/episode_reward", "rollout_info/reward_mean"):
        steps = [event.step for event in accumulator.Scalars(tag)]
        assert steps == sorted(set(steps)), tag


def files_of(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below a run directory with its bytes and modification time."""
    return {
        str(path.relative_to(run_dir)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
    }


def test_resume_without_a_checkpoint_is_refused_and_touches_nothing(tmp_path: Path, cli_error) -> None:
    """A run directory whose checkpoint is gone has nothing to continue from: --resume refuses it in one line naming
    the directory and the command that starts the run afresh, leaves every file in it as it was, and that command
    trains the run in a new directory with the same config and the model the first attempt fitted."""
    train.main(args(tmp_path, epochs=1))
    run_dir = run_dir_of(tmp_path)
    (run_dir / "checkpoints" / "checkpoint.pt").unlink()
    before = files_of(run_dir)

    err = cli_error(lambda: train.main(["--resume", str(run_dir), "--no-progress"]))
    assert err.startswith(f"error: {run_dir} has no checkpoint to resume"), err
    assert files_of(run_dir) == before
    assert [path.name for path in (tmp_path / TASK / "mopo").iterdir()] == [run_dir.name]

    command = shlex.split(err.split("start the run afresh in a new run directory with: ", 1)[1])
    assert command[:2] == ["python", "train.py"]
    assert f"dynamics_path={run_dir / 'dynamics.pt'}" in command
    assert train.main([*command[2:], "--no-progress"]) is not None
    assert files_of(run_dir) == before
    (fresh,) = [path for path in (tmp_path / TASK / "mopo").iterdir() if path != run_dir]
    assert (fresh / "dynamics.pt").read_bytes() == (run_dir / "dynamics.pt").read_bytes()
    with open(fresh / "progress.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1"]
    old, new = load_run_config(run_dir / "config.yaml"), load_run_config(fresh / "config.yaml")
    assert dataclasses.replace(new, dynamics_path=None) == old


def test_resume_of_a_run_without_a_model_names_a_plain_fresh_start(tmp_path: Path, cli_error) -> None:
    """BC fits no model: the suggested command is the run's own config, and it trains."""
    bc = ["--task", TASK, "--algo", "bc", "--seed", "2", "--log-dir", str(tmp_path), "--no-progress", "--set",
          "epochs=1", "steps_per_epoch=1", "eval_episodes=1"]  # fmt: skip
    train.main(bc)
    (run_dir,) = (tmp_path / TASK / "bc").iterdir()
    (run_dir / "checkpoints" / "checkpoint.pt").unlink()
    before = files_of(run_dir)
    err = cli_error(lambda: train.main(["--resume", str(run_dir)]))
    command = shlex.split(err.split(" with: ", 1)[1])
    assert command == ["python", "train.py", "--task", TASK, "--algo", "bc", "--config", str(run_dir / "config.yaml")]
    train.main([*command[2:], "--no-progress"])
    assert files_of(run_dir) == before
    (fresh,) = [path for path in (tmp_path / TASK / "bc").iterdir() if path != run_dir]
    assert fresh.name.startswith("seed2-")
    assert load_run_config(fresh / "config.yaml") == load_run_config(run_dir / "config.yaml")


def test_resume_of_a_finished_dynamics_only_run_names_the_command_that_trains_on_its_model(
    tmp_path: Path, cli_error
) -> None:
    train.main([*args(tmp_path, epochs=1), "dynamics_only=true"])
    run_dir = run_dir_of(tmp_path)
    before = files_of(run_dir)
    err = cli_error(lambda: train.main(["--resume", str(run_dir)]))
    assert f"{run_dir} is a dynamics_only run that saved its model, so it has nothing to resume" in err
    assert files_of(run_dir) == before
    command = shlex.split(err.split(" with: ", 1)[1])
    assert train.main([*command[2:], "--no-progress"]) is not None
    (fresh,) = [path for path in (tmp_path / TASK / "mopo").iterdir() if path != run_dir]
    assert (fresh / "checkpoints" / "checkpoint.pt").is_file()
    assert (fresh / "dynamics.pt").read_bytes() == (run_dir / "dynamics.pt").read_bytes()
