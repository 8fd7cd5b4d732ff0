"""The one training loop of the offline model-based (MBPO-style) family, with checkpoint and resume.

Per epoch: `steps_per_epoch` updates on mixed real/model batches, with model rollouts every `rollout_freq` steps;
then evaluation every `eval_every` epochs and an atomic checkpoint every `save_every` epochs. Without a dynamics
model (model-free baselines) batches come from the dataset alone.

What a rollout adds and whether a step's update may run is the trainer's rollout strategy (`RolloutStrategy`), so
the loop is the same for every algorithm: by default `BranchRollouts`, short paths branched from dataset states
(MBPO/MOPO); a trainer subclass whose algorithm gathers model data otherwise picks its own in `rollout_strategy`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from tqdm.auto import tqdm

from algos.base import Algorithm, ModelBasedAlgorithm
from buffers.replay import Batch, ReplayBuffer, sample_mixed, sample_mixed_seeds
from config import OfflineConfig, RunConfig
from envs.evaluation import evaluate_together
from models.dynamics import EnsembleDynamics
from models.seed_stack import SeedStreams
from utils.checkpoint import load_project_file
from utils.errors import UserError
from utils.logger import RunLogger
from utils.runner import Runner

CHECKPOINT_FORMAT = "offline-mbrl-checkpoint/1"


def step_bar(cfg: OfflineConfig, initial: int, desc: str, progress: bool) -> tqdm:
    """The progress bar over a run's gradient steps."""
    return tqdm(
        total=cfg.epochs * cfg.steps_per_epoch,
        initial=initial,
        desc=desc,
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.05,
    )


class RolloutStrategy(ABC):
    """How an offline trainer gets its model data: the loop asks its strategy every `rollout_freq` steps to collect
    and every step whether the update may run. What the rollouts carry from one call to the next (none for the
    default) is the strategy's own, checkpointed with the trainer."""

    @abstractmethod
    def collect(self, trainer: OfflineTrainer) -> dict[str, float]:
        """Add model transitions to `trainer.fake_buffer` before the step's update; returns scalars to log at it."""

    @abstractmethod
    def may_update(self) -> bool:
        """Whether this step's update runs (a strategy may hold updates back until enough model data exists)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Scalars logged at the end of each epoch, for rollout statistics gathered over it."""
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of the strategy so a resumed run rolls out on as it would have (None: nothing)."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore `state_dict`'s result; a strategy that keeps nothing has nothing to restore (its state is None)."""
        if state is not None:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint holds rollout state for it")


class BranchRollouts(RolloutStrategy):
    """MBPO/MOPO's model data, the default: each collection branches fresh short paths from dataset states
    (`OfflineTrainer.rollout`) and keeps nothing between them; updates run from the first step."""

    def collect(self, trainer: OfflineTrainer) -> dict[str, float]:
        return trainer.rollout()

    def may_update(self) -> bool:
        return True


ROLLOUT_STATE = "episodes"  # the checkpoint key of the rollout strategy's state, as checkpoints have always named it


@dataclass(frozen=True)
class Takeover:
    """Another run's saved state that a fresh run starts from instead of repeating what that run already did:
    train.py copies the logs and `files` of `run_dir` into the new run and continues from `checkpoint`."""

    run_dir: Path
    checkpoint: Path
    files: tuple[str, ...] = ()


class RunRunner(Runner):
    """A loop that train.py runs from a `RunConfig` (the offline trainer, the NPG trainer, a study): its checkpoint is
    `<run_dir>/checkpoints/checkpoint.pt` in CHECKPOINT_FORMAT (see `read_checkpoint`), and it refuses another
    task's or algorithm's checkpoint, which would otherwise load half and train on wrong."""

    checkpoint_format: ClassVar[str] = CHECKPOINT_FORMAT
    cfg: RunConfig

    def load_state(self, state: dict[str, Any], source: str | Path = "checkpoint") -> None:
        """Continue from checkpoint `state` (read from `source`, named in the error if it is another run's)."""
        if (state["task"], state["algo"]) != (self.cfg.task, self.cfg.algo):
            raise UserError(
                f"checkpoint in {source} is from {state['algo']} on {state['task']}, not {self.cfg.algo} on "
                f"{self.cfg.task}; resume it with its own run directory"
            )
        self.restore_checkpoint(state)


class OfflineTrainer(RunRunner):
    def __init__(
        self,
        cfg: OfflineConfig,
        algo: Algorithm,
        real_buffer: ReplayBuffer,
        evaluator: Any,
        logger: RunLogger,
        run_dir: str | Path,
        dynamics: EnsembleDynamics | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.algo, self.real_buffer, self.evaluator, self.logger = cfg, algo, real_buffer, evaluator, logger
        self.run_dir, self.dynamics, self.progress = Path(run_dir), dynamics, progress
        self.checkpoint_path = self.run_dir / "checkpoints" / "checkpoint.pt"
        self.fake_buffer: ReplayBuffer | None = None
        if dynamics is not None:
            capacity = cfg.model_buffer_size or cfg.rollout_batch_size * cfg.rollout_length * cfg.model_retain_epochs
            obs_dim, act_dim = real_buffer.storage.obs.shape[1], real_buffer.storage.act.shape[1]
            self.fake_buffer = ReplayBuffer(capacity, obs_dim, act_dim, real_buffer.device)
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.wall_time = 0.0  # training seconds, summed over resumed segments
        self.last_eval: dict[str, float] | None = None
        self.rollouts = self.rollout_strategy()

    def rollout_strategy(self) -> RolloutStrategy:
        """The model data of this trainer's algorithm; a subclass with its own kind of rollouts returns its own."""
        return BranchRollouts()

    @classmethod
    def takeover(cls, cfg: RunConfig) -> Takeover | None:
        """The saved state a fresh run of `cfg` starts from, once checked (None: from scratch, the default). Asked
        before the run directory exists, so a refusal leaves nothing behind."""
        return None

    # ------------------------------------------------------------------------------------------------ rollouts
    @torch.no_grad()
    def rollout(self) -> dict[str, float]:
        """Branch short model rollouts from dataset states with the stochastic policy; store them FIFO."""
        cfg, dynamics, fake = self.cfg, self.dynamics, self.fake_buffer
        assert dynamics is not None and fake is not None
        algo = cast(ModelBasedAlgorithm, self.algo)
        obs = self.real_buffer.sample_obs(cfg.rollout_batch_size)
        transitions, reward_sum, raw_reward_sum, uncertainty_sum, steps_taken = 0, 0.0, 0.0, 0.0, 0
        for _ in range(cfg.rollout_length):
            act = algo.act(obs, deterministic=False)
            next_obs, raw_reward, done, info = dynamics.step(obs, act, algo.rollout_uncertainty)
            reward = algo.model_reward(raw_reward, {**info, "obs": obs, "act": act, "next_obs": next_obs})
            fake.add(Batch(obs, act, reward, next_obs, done.float()))
            transitions += len(obs)
            reward_sum += float(reward.sum())
            raw_reward_sum += float(raw_reward.sum())
            if "uncertainty" in info:
                uncertainty_sum += float(info["uncertainty"].sum())
            steps_taken += 1
            alive = ~done
            if not bool(alive.any()):
                break
            obs = next_obs[alive]
        return {
            "rollout_info/num_transitions": transitions,
            "rollout_info/reward_mean": reward_sum / transitions,
            "rollout_info/raw_reward_mean": raw_reward_sum / transitions,
            "rollout_info/uncertainty_mean": uncertainty_sum / transitions,
            "rollout_info/mean_rollout_length": transitions / cfg.rollout_batch_size,
            "rollout_info/steps": steps_taken,
        }

    # ------------------------------------------------------------------------------------------------ training
    def train(self, until_epoch: int | None = None) -> dict[str, float] | None:
        """Run the remaining epochs (up to `until_epoch`, default all); returns the last evaluation."""
        cfg = self.cfg
        final_epoch = cfg.epochs if until_epoch is None else until_epoch
        bar = step_bar(cfg, self.global_step, f"{cfg.algo} {cfg.task}", self.progress)
        while self.epoch < final_epoch:
            started = time.perf_counter()
            epoch_metrics: dict[str, list[torch.Tensor]] = {}
            for _ in range(cfg.steps_per_epoch):
                if self.dynamics is not None and self.global_step % cfg.rollout_freq == 0:
                    self.logger.scalars(self.rollouts.collect(self), self.global_step)
                if self.rollouts.may_update():
                    batch, num_real = sample_mixed(
                        self.real_buffer, self.fake_buffer, cfg.batch_size, getattr(cfg, "real_ratio", 1)
                    )
                    for key, value in self.algo.update(batch, num_real).items():
                        epoch_metrics.setdefault(key, []).append(value)
                self.global_step += 1
                bar.update()
            self.algo.end_epoch()
            self.finish_epoch(epoch_metrics, started, final_epoch)
            if self.epoch % cfg.eval_every == 0 or self.epoch == final_epoch:
                bar.set_postfix(score=f"{self.last_eval['normalized_mean']:.1f}")
        bar.close()
        return self.last_eval

    def evaluation_due(self, final_epoch: int) -> bool:
        """Whether the epoch being finished (the next one counted) ends with an evaluation."""
        return (self.epoch + 1) % self.cfg.eval_every == 0 or self.epoch + 1 == final_epoch

    def finish_epoch(
        self,
        epoch_metrics: dict[str, list[torch.Tensor]],
        started: float,
        final_epoch: int,
        evaluation: dict[str, float] | None = None,
    ) -> None:
        """Count the epoch, log its mean update metrics, evaluate (unless `evaluation` brings the result of one made
        elsewhere) and checkpoint when due."""
        cfg = self.cfg
        due = self.evaluation_due(final_epoch)
        self.epoch += 1
        self.logger.scalars({k: float(torch.stack(v).mean()) for k, v in epoch_metrics.items()}, self.global_step)
        self.logger.scalars(self.rollouts.epoch_metrics(), self.global_step)
        if due:
            self.last_eval = self.evaluator.evaluate(self.algo.act) if evaluation is None else evaluation
            monitor = getattr(self.algo, "monitor_evaluation", None)  # an algorithm's own evaluation extras
            if monitor is not None:
                self.last_eval, extras = monitor(self.last_eval, self.evaluator.spec)
                self.logger.scalars(extras, self.global_step)
            self.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            self.logger.evaluation(self.epoch, self.global_step, self.last_eval, self.wall_time)
        self.wall_time += time.perf_counter() - started
        if self.epoch % cfg.save_every == 0 or self.epoch == final_epoch:
            self.save_checkpoint()

    # ------------------------------------------------------------------------------------------------ checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "task": self.cfg.task,
            "algo": self.cfg.algo,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "wall_time": self.wall_time,
            "num_events": self.logger.num_events,  # TensorBoard scalars logged so far; a resume keeps exactly these
            "last_eval": self.last_eval,
            "algo_state": self.algo.training_state(),
            "fake_buffer": None if self.fake_buffer is None else self.fake_buffer.state_dict(),
            ROLLOUT_STATE: self.rollouts.state_dict(),
            "extra": self.extra_state(),
        }

    def extra_state(self) -> dict[str, Any] | None:
        """What a subclass adds to the checkpoint (read back in its `load_checkpoint_state`)."""
        return None

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.algo.load_training_state(state["algo_state"])
        if self.fake_buffer is not None and state["fake_buffer"] is not None:
            self.fake_buffer.load_state_dict(state["fake_buffer"])
        self.rollouts.load_state_dict(state.get(ROLLOUT_STATE))
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.wall_time, self.last_eval = state["wall_time"], state["last_eval"]

    def close(self) -> None:
        """Nothing to release (the evaluator is its owner's to close); train.py closes every trainer alike."""


class SeedStackedTrainer:
    """S seeds of one SAC-family algorithm trained as one batched computation (`SAC.stack`, docs/seeds.md).

    Every seed keeps its own `OfflineTrainer` (run dir, logger, evaluator, dynamics model, rollout buffer,
    checkpoint), whose algorithm is the seed's view of the stacked one (`SeedOfStack`); per-seed work (rollouts,
    evaluation, checkpoints) runs unchanged inside the seed's random streams, and the update runs once for all seeds
    on the batches each seed drew from its own stream. Each run dir ends as that seed's run alone would.
    """

    def __init__(self, trainers: list[OfflineTrainer], stacked: Any, streams: SeedStreams, progress: bool) -> None:
        if any(type(trainer.rollouts) is not BranchRollouts for trainer in trainers):
            raise UserError("seed stacking supports branched model rollouts only; train these seeds as separate runs")
        if len({(t.epoch, t.global_step) for t in trainers}) > 1:
            raise UserError("stacked seeds must start at the same epoch; resume them as separate runs")
        self.trainers, self.stacked, self.streams, self.progress = trainers, stacked, streams, progress

    def train(self) -> list[dict[str, float] | None]:
        trainers, streams, lead = self.trainers, self.streams, self.trainers[0]
        cfg = lead.cfg
        bar = step_bar(cfg, lead.global_step, f"{cfg.algo} {cfg.task} x {len(trainers)} seeds", self.progress)
        while lead.epoch < cfg.epochs:
            started = time.perf_counter()
            epoch_metrics: dict[str, list[torch.Tensor]] = {}
            for _ in range(cfg.steps_per_epoch):
                if lead.dynamics is not None and lead.global_step % cfg.rollout_freq == 0:
                    for seed, trainer in enumerate(trainers):
                        with streams.active(seed):
                            trainer.logger.scalars(trainer.rollouts.collect(trainer), trainer.global_step)
                batch, num_real = sample_mixed_seeds(
                    lead.real_buffer,
                    [trainer.fake_buffer for trainer in trainers],
                    cfg.batch_size,
                    getattr(cfg, "real_ratio", 1),
                    streams.generators,
                )
                for key, value in self.stacked.update(batch, num_real).items():
                    epoch_metrics.setdefault(key, []).append(value)
                for trainer in trainers:
                    trainer.global_step += 1
                bar.update()
            self.stacked.end_epoch()
            evaluations: list[dict[str, float] | None] = [None] * len(trainers)
            if lead.evaluation_due(cfg.epochs):  # all seeds' episodes side by side, one policy call per step
                evaluations = list(evaluate_together([t.evaluator for t in trainers], self.stacked.act))
            for seed, trainer in enumerate(trainers):
                with streams.active(seed):
                    trainer.finish_epoch(
                        {key: [value[seed] for value in values] for key, values in epoch_metrics.items()},
                        started,
                        cfg.epochs,
                        evaluations[seed],
                    )
        bar.close()
        return [trainer.last_eval for trainer in trainers]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint, with a one-line error if it is missing, corrupt or not ours."""
    return load_project_file(
        path,
        CHECKPOINT_FORMAT,
        missing=f"no checkpoint at {path}; the run has not saved one yet",
        unreadable=f"checkpoint {path} cannot be read",
        foreign=f"{path} is not a checkpoint written by this project",
    )
