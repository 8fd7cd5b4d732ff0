"""The model-based NPG loop of PAL/MAL (online) and MOReL (offline), with checkpoint and resume (docs/npg.md).

Per iteration:
1. Online: collect `init_samples` (first iteration) or `iter_samples` real decisions with the stochastic policy into
   the path buffer; measure each model's error on them (its generalisation error), then fit the models on the
   buffer (warm, or from scratch with `refresh_fit`). Offline: fit the models on the dataset once, set MOReL's
   threshold and initialise the policy by behaviour cloning.
2. `inner_steps` NPG steps, each on paths rolled out in every model from `update_paths` start states.
3. Evaluate the mean action in the real environment; keep the best policy; checkpoint.

The logger, the evaluator and the atomic checkpoint are the ones the offline trainer uses. Online runs log at the
number of environment steps taken so far (decisions x act_repeat), offline runs at the iteration.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from tqdm.auto import tqdm

from algos.build import build_algorithm, run_evaluator
from algos.game import ModelBasedNPG, OnlineNPGConfig, next_obs_per_member
from algos.train_run import OpenRun, RunRunner
from buffers.paths import PathBuffer
from buffers.replay import Batch, ReplayBuffer
from config import ModelBasedNPGConfig
from envs.evaluation import Evaluator
from envs.rewards import RewardFn, reward_fn_for
from envs.sampling import collection_seed, sample_paths
from envs.tasks import TaskSpec, make_env
from envs.termination import termination_fn_for_kind
from models.dynamics import EnsembleDynamics
from models.dynamics_recipes import mjrl
from models.npg import RewardModel
from utils.logger import RunLogger


@torch.no_grad()
def prediction_error(
    dynamics: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of each member's next-state prediction in raw units [E] (mjrl's `compute_loss`; on
    samples the model has not been fitted to, its generalisation error)."""
    return (next_obs_per_member(dynamics, obs, act) - next_obs).square().mean(dim=(1, 2))


class NPGTrainer(RunRunner):
    """The NPG loop as a runner: its checkpoint file is the offline trainer's (`RunRunner`), with its own keys."""

    unit: ClassVar[str] = "iteration"

    def __init__(
        self,
        cfg: ModelBasedNPGConfig,
        algo: ModelBasedNPG,
        spec: TaskSpec,
        evaluator: Evaluator,
        logger: RunLogger,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
        dataset: Batch | None = None,
        dataset_starts: torch.Tensor | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.algo, self.spec, self.evaluator, self.logger = cfg, algo, spec, evaluator, logger
        self.run_dir, self.device, self.progress = Path(run_dir), torch.device(device), progress
        self.learned_reward = cfg.reward_fn == "learned"
        known_reward = None if self.learned_reward else reward_fn_for(spec.family, cfg.reward_fn)
        self.reward_fn: RewardFn = (
            (lambda obs, act, next_obs: self.reward_model(obs, act, next_obs))  # learned from summed real rewards
            if known_reward is None
            else (lambda obs, act, next_obs: known_reward(obs, act, next_obs) * cfg.act_repeat)
        )
        self.termination_fn = termination_fn_for_kind(spec.family, cfg.termination_fn)
        self.online = dataset is None
        self.dataset, self.dataset_starts = dataset, dataset_starts
        self.env = make_env(spec, act_repeat=cfg.act_repeat) if self.online else None
        capacity = cast(OnlineNPGConfig, cfg).buffer_size if cfg.online else 0  # offline: the dataset, no paths
        self.buffer = PathBuffer(capacity, spec.obs_dim, spec.act_dim, device)
        self.new_models()
        self.iteration = 0  # iterations completed
        self.env_steps = 0
        self.fitted = False
        self.wall_time = 0.0
        self.last_eval: dict[str, float] | None = None
        self.best_score = -math.inf
        self.best_policy = copy.deepcopy(algo.actor.state_dict())

    @classmethod
    def build(cls, run: OpenRun) -> NPGTrainer:
        """The loop of a PAL/MAL (online) or MOReL run; offline, model rollouts start from the dataset episodes'
        first states."""
        cfg, spec, device = cast(ModelBasedNPGConfig, run.cfg), run.spec, run.device
        evaluator = run_evaluator(cfg, cfg.eval_episodes, device=device)
        algo = cast(ModelBasedNPG, build_algorithm(cfg, spec.obs_dim, spec.act_dim, device))
        if run.dataset is None:
            return cls(cfg, algo, spec, evaluator, run.logger, run.run_dir, device, progress=run.progress)
        data = ReplayBuffer.from_dataset(run.dataset, device).storage
        starts = torch.as_tensor(run.dataset.start_observations(), device=device)
        return cls(cfg, algo, spec, evaluator, run.logger, run.run_dir, device, data, starts, run.progress)

    def new_models(self) -> None:
        """Freshly initialised models and their optimisers (and the learned reward's, with reward_fn=learned)."""
        cfg, spec = self.cfg, self.spec
        self.dynamics = EnsembleDynamics(spec.obs_dim, spec.act_dim, cfg.dynamics).to(self.device)
        self.dynamics_optim = self.dynamics.optimizer()
        if self.learned_reward:
            self.reward_model = RewardModel(cfg.dynamics.num_ensemble, spec.obs_dim, spec.act_dim).to(self.device)
            self.reward_optim = torch.optim.Adam(self.reward_model.parameters(), lr=cfg.dynamics.lr)

    @property
    def step(self) -> int:
        """The x axis of this run's curves: environment steps online, iterations offline."""
        return self.env_steps if self.online else self.iteration

    # ------------------------------------------------------------------------------------------------ phases
    def collect(self) -> dict[str, float]:
        """New real paths with the stochastic policy into the buffer (online)."""
        cfg = self.cfg
        wanted = cfg.init_samples if self.iteration == 0 else cfg.iter_samples
        paths, returns, env_steps = sample_paths(
            self.env,
            lambda obs: self.algo.act(obs, deterministic=False),
            wanted,
            collection_seed(cfg.seed, self.iteration, cfg.collection_seeds),
            self.device,
        )
        self.buffer.add_paths(paths)
        decisions = sum(len(p.obs) for p in paths)
        self.env_steps += env_steps
        return {
            "train/rollout_score": sum(returns) / len(returns),
            "train/iter_samples": decisions,
            "train/num_paths": len(paths),
            "train/buffer_transitions": len(self.buffer),
        }

    def fit_models(self, data: Batch, newest: int | None) -> dict[str, float]:
        """Each model's error on the `newest` transitions before fitting (generalisation), then the fit."""
        cfg, metrics = self.cfg, {}
        if newest:
            recent = Batch(*(field[-newest:] for field in data))
            errors = prediction_error(self.dynamics, recent.obs, recent.act, recent.next_obs)
            for i, error in enumerate(errors.tolist()):
                metrics[f"dynamics/loss_gen_{i}"] = error
        if cfg.refresh_fit:
            self.new_models()
        recipe = mjrl(cfg.dynamics, cfg.fit_epochs, cfg.fit_max_steps)
        result = self.dynamics.fit(
            data.obs, data.act, data.next_obs, None, progress=False, recipe=recipe, optimizer=self.dynamics_optim
        )
        counts = {key: result.pop(key) for key in ("dynamics/epochs", "dynamics/steps")}
        metrics.update(result)  # dynamics/loss_<i>
        if self.learned_reward:  # mjrl's r(s, a, f_i(s, a)) on each member's own predictions
            with torch.no_grad():
                predicted = next_obs_per_member(self.dynamics, data.obs, data.act)
            losses = self.reward_model.fit_epochs(
                data.obs,
                data.act,
                predicted,
                data.rew,
                self.reward_optim,
                cfg.fit_epochs,
                cfg.dynamics.batch_size,
                cfg.fit_max_steps,
            )
            metrics.update({f"reward/loss_{i}": loss for i, loss in enumerate(losses.tolist())})
        metrics.update(counts)
        return metrics

    def start_states(self) -> torch.Tensor:
        """`update_paths` start states: first states of real paths (start_state=init), or with start_state=buffer
        ⌊n(1 − buffer_frac)⌋ + 1 of those and ⌊n·buffer_frac⌋ + 1 of any stored state (mjrl's mix)."""
        cfg = self.cfg
        pool = self.buffer.init_states if self.online else self.dataset_starts
        states = self.buffer.data.obs if self.online else self.dataset.obs  # type: ignore[union-attr]
        assert pool is not None
        if cfg.start_state == "init":
            return pool[torch.randint(len(pool), (cfg.update_paths,), device=pool.device)]
        from_init = int(cfg.update_paths * (1 - cfg.buffer_frac)) + 1
        from_buffer = int(cfg.update_paths * cfg.buffer_frac) + 1
        return torch.cat(
            [
                pool[torch.randint(len(pool), (from_init,), device=pool.device)],
                states[torch.randint(len(states), (from_buffer,), device=states.device)],
            ]
        )

    def iterate(self) -> tuple[dict[str, float], dict[str, float]]:
        """One iteration: data and models, NPG steps, evaluation; returns its scalars and the evaluation."""
        cfg, algo = self.cfg, self.algo
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        if self.online:
            metrics.update(self.collect())
            sampled = time.perf_counter()
            metrics.update(self.fit_models(self.buffer.data, int(metrics["train/iter_samples"])))
        else:
            sampled = started
            if not self.fitted:
                data = self.dataset
                assert data is not None
                metrics.update(self.fit_models(data, None))
                metrics.update(algo.prepare_on_dataset(self.dynamics, data.obs, data.act))
        self.fitted = True
        fitted = time.perf_counter()

        step_metrics: dict[str, list[float]] = {}
        for _ in range(cfg.inner_steps):
            for key, value in algo.train_step(
                self.dynamics, self.start_states(), self.reward_fn, self.termination_fn
            ).items():
                step_metrics.setdefault(key, []).append(value)
        metrics.update({key: sum(values) / len(values) for key, values in step_metrics.items()})
        optimised = time.perf_counter()

        evaluation = self.evaluator.evaluate(algo.act)
        if evaluation["return_mean"] > self.best_score:
            self.best_score = evaluation["return_mean"]
            self.best_policy = copy.deepcopy(algo.actor.state_dict())
        done = time.perf_counter()
        metrics.update(
            {
                "time/sampling": sampled - started,
                "time/model_fit": fitted - sampled,
                "time/npg": optimised - fitted,
                "time/evaluation": done - optimised,
                "time/iteration": done - started,
                "eval/best_episode_reward": self.best_score,
            }
        )
        return metrics, evaluation

    # ------------------------------------------------------------------------------------------------ training
    def train(self) -> dict[str, float] | None:
        """Run the remaining iterations; returns the last evaluation."""
        cfg = self.cfg
        bar = tqdm(
            total=cfg.num_iter,
            initial=self.iteration,
            desc=f"{cfg.algo} {cfg.task}",
            unit="iter",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        while self.iteration < cfg.num_iter:
            metrics, evaluation = self.iterate()
            self.iteration += 1
            self.wall_time += metrics["time/iteration"]
            self.logger.scalars(metrics, self.step)
            self.record_evaluation(evaluation, self.iteration, self.step)
            bar.update()
            bar.set_postfix(score=f"{self.last_eval['normalized_mean']:.1f}")
            if self.iteration % cfg.save_every == 0 or self.iteration == cfg.num_iter:
                self.save_checkpoint()
        bar.close()
        return self.last_eval

    # ------------------------------------------------------------------------------------------------ checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "task": self.cfg.task,
            "algo": self.cfg.algo,
            "epoch": self.iteration,
            "global_step": self.step,
            "env_steps": self.env_steps,
            "fitted": self.fitted,
            "wall_time": self.wall_time,
            "num_events": self.logger.num_events,
            "last_eval": self.last_eval,
            "best_score": self.best_score,
            "best_policy": self.best_policy,
            "algo_state": self.algo.training_state(),
            "dynamics": self.dynamics.state_dict(),
            "dynamics_optim": self.dynamics_optim.state_dict(),
            "reward_model": self.reward_model.state_dict() if self.learned_reward else None,
            "reward_optim": self.reward_optim.state_dict() if self.learned_reward else None,
            "path_buffer": self.buffer.state_dict(),
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.algo.load_training_state(state["algo_state"])
        self.dynamics.load_state_dict(state["dynamics"])
        self.dynamics_optim.load_state_dict(state["dynamics_optim"])
        if self.learned_reward:
            self.reward_model.load_state_dict(state["reward_model"])
            self.reward_optim.load_state_dict(state["reward_optim"])
        self.buffer.load_state_dict(state["path_buffer"])
        self.iteration, self.env_steps, self.fitted = state["epoch"], state["env_steps"], state["fitted"]
        self.wall_time, self.last_eval = state["wall_time"], state["last_eval"]
        self.best_score, self.best_policy = state["best_score"], state["best_policy"]

    def close(self) -> None:
        super().close()
        if self.env is not None:
            self.env.close()
