"""The one training loop of the offline model-based (MBPO-style) family, with checkpoint and resume.

Per epoch: `steps_per_epoch` updates on mixed real/model batches, with model rollouts every `rollout_freq` steps;
then evaluation every `eval_every` epochs and an atomic checkpoint every `save_every` epochs. Without a dynamics
model (model-free baselines) batches come from the dataset alone.

What a rollout adds and whether a step's update may run is the trainer's rollout strategy (`RolloutStrategy`), so
the loop is the same for every algorithm: by default `BranchRollouts`, short paths branched from dataset states
(MBPO/MOPO); a trainer subclass whose algorithm gathers model data otherwise picks its own in `rollout_strategy`.
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from algos.base import Algorithm, ModelBasedAlgorithm
from algos.build import build_algorithm, run_evaluator
from algos.train_run import OpenRun, RunRunner
from buffers.replay import Batch, ReplayBuffer, sample_mixed, sample_mixed_seeds
from config import LearnedModelConfig, OfflineConfig
from envs.evaluation import Evaluator, evaluate_together
from envs.tasks import TaskSpec
from envs.termination import termination_for
from models.dynamics import EnsembleDynamics
from models.seed_stack import SeedStreams
from utils.algorithm_spec import ModelUse, algorithm_spec
from utils.errors import UserError
from utils.logger import RunLogger
from utils.paths import FIT_PROGRESS, resolve_seed_path
from utils.runner import run_interruptibly


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


class OfflineTrainer(RunRunner):
    def __init__(
        self,
        cfg: OfflineConfig,
        algo: Algorithm,
        real_buffer: ReplayBuffer,
        evaluator: Evaluator,
        logger: RunLogger,
        run_dir: str | Path,
        dynamics: EnsembleDynamics | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.algo, self.real_buffer, self.evaluator, self.logger = cfg, algo, real_buffer, evaluator, logger
        self.run_dir, self.dynamics, self.progress = Path(run_dir), dynamics, progress
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

    @classmethod
    def build(cls, run: OpenRun) -> OfflineTrainer | None:
        """The trainer of an offline run: the dataset as its replay buffer, the dynamics model fitted (or loaded)
        first where the algorithm learns one, the algorithm, its evaluator. None for a `dynamics_only` run."""
        cfg, spec, device, dataset = cast(OfflineConfig, run.cfg), run.spec, run.device, run.dataset
        assert dataset is not None
        model_use = algorithm_spec(cfg.algo).model
        real_buffer = ReplayBuffer.from_dataset(dataset, device)
        dynamics = None
        if model_use.fitted_first:  # its config has the learned-model keys
            learned = cast(LearnedModelConfig, cfg)
            dynamics = prepare_dynamics(learned, spec, real_buffer, run.run_dir, run.logger, device, run.progress)
            if learned.dynamics_only:
                print(f"dynamics model saved; reuse it with --set dynamics_path={run.run_dir / 'dynamics.pt'}")
                return None
        algo = build_algorithm(cfg, spec.obs_dim, spec.act_dim, device, dynamics, dataset)
        evaluator = run_evaluator(cfg, cfg.eval_episodes, device=device)
        rollouts = dynamics if model_use is ModelUse.ROLLOUTS else None  # the others query it themselves
        return cls(cfg, algo, real_buffer, evaluator, run.logger, run.run_dir, rollouts, run.progress)

    def rollout_strategy(self) -> RolloutStrategy:
        """The model data of this trainer's algorithm; a subclass with its own kind of rollouts returns its own."""
        return BranchRollouts()

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
                        self.real_buffer, self.fake_buffer, cfg.batch_size, cfg.real_fraction()
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
            result = self.evaluator.evaluate(self.algo.act) if evaluation is None else evaluation
            result, extras = self.algo.evaluation_extras(result, self.evaluator.spec)  # the algorithm's own
            self.logger.scalars(extras, self.global_step)
            self.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            self.record_evaluation(result, self.epoch, self.global_step)
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

    def run(self) -> list[dict[str, float] | None]:
        """`train`, stopped by Ctrl-C with the command that continues every seed (each left its last checkpoint)."""
        dirs = " ".join(str(trainer.run_dir) for trainer in self.trainers)
        return run_interruptibly(self.train, f"continue with: python train.py --stack-seeds --resume {dirs}")

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
                    cfg.real_fraction(),
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


def prepare_dynamics(
    cfg: LearnedModelConfig,
    spec: TaskSpec,
    buffer: ReplayBuffer,
    run_dir: Path,
    logger: RunLogger,
    device: torch.device,
    progress: bool,
) -> EnsembleDynamics:
    """The run's own model file if it has one (resume), else a given `dynamics_path`, else a freshly fitted one. The
    fit writes its progress to FIT_PROGRESS every couple of minutes, so a run killed while fitting continues the fit
    where it was (`--resume`); the file goes once the model is saved."""
    termination = termination_for(spec, cfg.termination.strict)
    own_file = run_dir / "dynamics.pt"
    if own_file.exists():
        return EnsembleDynamics.load(own_file, spec.obs_dim, spec.act_dim, termination, device)
    if cfg.dynamics_path:
        given = resolve_seed_path(cfg.dynamics_path, cfg.seed, "dynamics_path", "model file")
        dynamics = EnsembleDynamics.load(given, spec.obs_dim, spec.act_dim, termination, device)
        shutil.copyfile(given, own_file)  # the run stays resumable if the shared file moves
        return dynamics
    dynamics = EnsembleDynamics(spec.obs_dim, spec.act_dim, cfg.dynamics, termination).to(device)
    data = buffer.storage
    progress_file = run_dir / FIT_PROGRESS
    if progress_file.exists():
        print(f"continuing the dynamics fit saved in {progress_file}", flush=True)

    def logger_state() -> dict[str, int]:
        logger.flush()  # the scalars counted must be on disk, as for a checkpoint
        return {"num_events": logger.num_events}

    metrics = dynamics.fit(
        data.obs,
        data.act,
        data.next_obs,
        data.rew,
        log_fn=lambda m, epoch: logger.scalars(m, epoch),
        progress=progress,
        progress_file=progress_file,
        extra_state=logger_state,
    )
    dynamics.save(own_file, task=spec.name)
    progress_file.unlink(missing_ok=True)
    holdout = metrics["dynamics/elite_holdout_loss"]
    quality = (  # a fit without holdout (fixed epochs) has no holdout error to report
        f"elite holdout {'MSE' if cfg.dynamics.holdout_metric == 'mse' else 'NLL'} {holdout:.4f}"
        if np.isfinite(holdout)
        else f"last loss {metrics['dynamics/train_loss']:.4f}"
    )
    print(f"dynamics: {metrics['dynamics/epochs']} epochs, {quality}, saved to {own_file}", flush=True)
    return dynamics
