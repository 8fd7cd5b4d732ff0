"""The base of every loop train.py runs (`RunRunner`): how it is built from an opened run, started (fresh, resumed or
branched), evaluated, interrupted and summed up, so train.py runs the offline trainer, the NPG trainer and the
Pendulum study through one protocol and never asks which one it has.

    runner = runner_class(spec).build(run)     # algos/__init__.py picks the class from the algorithm's record
    runner.start(run)                          # resume from the run's checkpoint, or checkpoint before training
    result = runner.run()                      # train; Ctrl-C says `python train.py --resume RUN_DIR`
    print(runner.result_line(result, run))

Checkpoint writing and RNG restore are utils/runner.py's (`Runner`), which the behaviour trainer of collect.py shares.
"""

from __future__ import annotations

import csv
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from config import RunConfig
from envs.datasets import OfflineDataset
from envs.evaluation import Evaluator
from envs.generate import dataset_reference
from envs.tasks import TaskSpec
from utils.checkpoint import load_project_file
from utils.errors import UserError
from utils.logger import RunLogger
from utils.paths import CHECKPOINT
from utils.runner import Runner

CHECKPOINT_FORMAT = "offline-mbrl-checkpoint/1"
LAST_K = 5  # evaluations averaged in the final line next to the last one; one evaluation can catch a bad episode


@dataclass
class OpenRun:
    """A run being started or resumed: its config, directory, data and logger (everything before the trainer)."""

    cfg: RunConfig
    run_dir: Path
    checkpoint: dict[str, Any] | None
    spec: TaskSpec
    device: torch.device
    dataset: OfflineDataset | None
    logger: RunLogger
    progress: bool
    branched_from: Path | None = None  # the run whose state this one took over at its start (`Takeover`)


@dataclass(frozen=True)
class Takeover:
    """Another run's saved state that a fresh run starts from instead of repeating what that run already did:
    train.py copies the logs and `files` of `run_dir` into the new run and continues from `checkpoint`."""

    run_dir: Path
    checkpoint: Path
    files: tuple[str, ...] = ()


class RunRunner(Runner):
    """A loop that train.py runs from a `RunConfig`: its checkpoint is `<run_dir>/checkpoints/checkpoint.pt` in
    CHECKPOINT_FORMAT (see `read_checkpoint`), and it refuses another task's or algorithm's checkpoint, which would
    otherwise load half and train on wrong. It owns its evaluator (closed with it); the logger is the run's, opened
    before the loop exists (a model fit logs to it first) and closed by train.py."""

    checkpoint_format: ClassVar[str] = CHECKPOINT_FORMAT
    unit: ClassVar[str] = "epoch"  # what the loop counts between evaluations, as its lines and the logger say it
    cfg: RunConfig
    run_dir: Path
    logger: RunLogger
    evaluator: Evaluator | None = None
    wall_time: float = 0.0  # training seconds, summed over resumed segments
    last_eval: dict[str, float] | None = None

    @classmethod
    @abstractmethod
    def build(cls, run: OpenRun) -> RunRunner | None:
        """The loop of `run`, with everything it needs built (models fitted or loaded, algorithm, evaluator); None
        when the run ends before any loop (a `dynamics_only` run, whose model is saved)."""

    @property
    def checkpoint_path(self) -> Path:  # type: ignore[override]
        return self.run_dir / CHECKPOINT

    @classmethod
    def takeover(cls, cfg: RunConfig) -> Takeover | None:
        """The saved state a fresh run of `cfg` starts from, once checked (None: from scratch, the default). Asked
        before the run directory exists, so a refusal leaves nothing behind."""
        return None

    def start(self, run: OpenRun) -> None:
        """Continue from the run's checkpoint (its own, or another run's taken over: `Takeover`), else write one
        before any training, so a run killed before its first save resumes on the same random streams."""
        if run.checkpoint is not None and run.branched_from is not None:
            self.load_state(run.checkpoint, source=run.branched_from)
            print(f"branched off {run.branched_from} at step {run.checkpoint['global_step']}", flush=True)
            self.save_checkpoint()  # the branch's own checkpoint: from here on it resumes like any run
        elif run.checkpoint is not None:
            self.load_state(run.checkpoint, source=run.run_dir)
            print(self.resumed_line(run.checkpoint), flush=True)
        else:
            self.save_checkpoint()

    def load_state(self, state: dict[str, Any], source: str | Path = "checkpoint") -> None:
        """Continue from checkpoint `state` (read from `source`, named in the error if it is another run's)."""
        if (state["task"], state["algo"]) != (self.cfg.task, self.cfg.algo):
            raise UserError(
                f"checkpoint in {source} is from {state['algo']} on {state['task']}, not {self.cfg.algo} on "
                f"{self.cfg.task}; resume it with its own run directory"
            )
        self.restore_checkpoint(state)

    def resumed_line(self, state: dict[str, Any]) -> str:
        """Where a resumed run was, as train.py prints it."""
        return f"resumed at {self.unit} {state['epoch']} (step {state['global_step']})"

    def resume_hint(self) -> str:
        return f"continue with: python train.py --resume {self.run_dir}"

    def record_evaluation(self, result: dict[str, float], count: int, step: int) -> None:
        """Keep `result` as the last evaluation and log it (TensorBoard, progress.csv, the summary line) after
        `count` epochs or iterations, at logged step `step`."""
        self.last_eval = result
        self.logger.evaluation(count, step, result, self.wall_time, unit=self.unit)

    def result_line(self, result: dict[str, float], run: OpenRun) -> str:
        """What train.py prints when the run ends: the policy's score next to what it learned from (`final_line`)."""
        return final_line(result, run.spec, run.dataset, run.run_dir)

    def close(self) -> None:
        """Release what the loop opened: its evaluator's environments (and a subclass's own)."""
        if self.evaluator is not None:
            self.evaluator.close()


def final_line(result: dict[str, float], spec: TaskSpec, dataset: OfflineDataset | None, run_dir: Path) -> str:
    """The run's score (last evaluation, and the mean of the last LAST_K as score.py --last reports it) next to what
    it learned from: the dataset's mean episode and, for generated medium/expert data, the behaviour policy (online:
    the environment steps taken); then where the curves are."""
    column = "normalized_score_mean" if spec.normalizable else "return_mean"
    with open(run_dir / "progress.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    recent = [float(row[column]) for row in rows][-LAST_K:]
    recent_mean = f"mean of the last {len(recent)} evaluations {np.mean(recent):.1f}" if len(recent) > 1 else ""
    if spec.normalizable:
        score = (
            f"final normalized score {result['normalized_mean']:.1f} ± {result['normalized_std']:.1f} "
            f"(return {result['return_mean']:.1f}{', ' + recent_mean if recent_mean else ''})"
        )
    else:  # a task file without reference returns: returns only
        score = f"final return {result['return_mean']:.1f} ± {result['return_std']:.1f}"
        score += f" ({recent_mean})" if recent_mean else ""
    if dataset is None:
        context = f"online, {int(float(rows[-1]['step']))} environment steps"
    else:
        reference = dataset_reference(spec, dataset)
        behaviour = reference["behaviour_normalized"]
        if spec.normalizable:
            context = f"dataset episodes {reference['episode_normalized_mean']:.1f}"
            context += "" if behaviour is None else f", behaviour policy {behaviour:.1f}"
        else:
            context = f"dataset episodes {reference['episode_return_mean']:.1f}"
    return (
        f"{score} | {context} | curves: tensorboard --logdir {run_dir} (progress.csv there; python plot.py {run_dir})"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint, with a one-line error if it is missing, corrupt or not ours."""
    return load_project_file(
        path,
        CHECKPOINT_FORMAT,
        missing=f"no checkpoint at {path}; the run has not saved one yet",
        unreadable=f"checkpoint {path} cannot be read",
        foreign=f"{path} is not a checkpoint written by this project",
    )
