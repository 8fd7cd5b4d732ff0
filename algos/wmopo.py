"""WMOPO: weighted model estimation for offline model-based RL (Hishinuma & Senda, NeurIPS 2021; docs/wmopo.md),
the D4RL algorithm (Algorithm 3): an EM over the model θ and the policy π.

E-step of iteration k:
  - k = 0: θ fitted by plain maximum likelihood (the shared ensemble's fit).
  - k ≥ 1: roll the current stochastic π out in θ from episode starts, stopping with probability 1 − γ after every
    step (samples of its occupancy d^π_θ), fit the density ratio r ≈ d^π_θ / d^D by classification, and refit θ from
    its current weights with the weighted likelihood, weights w_i = r(x_i)^α / mean_j r(x_j)^α.
  - The ratio is fitted again against π's occupancy in the new θ (at k = 0 against the untrained π's), then
    the model error ℓ(x) = ½ mean_{elites} Σ_d [(μ_d − y_d)² e^{−log σ²_d} + log σ²_d], shifted so its minimum over
    the data is 0, is regressed by a network c(x) ≈ ℓ(x) (on log ℓ), and the penalty coefficient is

        b = ½ B′ (Σ_i r(x_i) ℓ(x_i))^{−1/4}      (a sum over the dataset; B′ = 1e-2).

M-step of iteration k: SAC in the model, one whole model episode at a time (one model step per update), on
batches half from the model episodes with r̃ = clip(r̂ − b·c(s, a), ±10R) and half from the data with
r − b·ℓ(s, a) (clipped to ±10R′), R = max(|r_min|, |r_max|), R′ = min(|r_min|, |r_max|) (the official code's bounds).

The ensemble, SAC, the buffers and the offline loop are the shared ones; WMOPO's own pieces are the occupancy
sampling, the ratio and model-error networks, b and the penalised rewards, the model episodes its M-steps learn from
(`ModelEpisodes`, the trainer's rollout strategy) and the EM schedule, with its branches off iteration 0.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn

from algos.base import ModelBasedAlgorithm
from algos.sac import SAC
from algos.train_run import Takeover
from algos.trainer import OfflineTrainer, RolloutStrategy
from buffers.replay import Batch
from config import (
    DynamicsConfig,
    ModelBasedConfig,
    Rule,
    RunConfig,
    SACConfig,
    all_positive,
    discount,
    flatten_config,
    non_negative,
    one_of,
    positive,
    register_config,
)
from envs.evaluation import isolated_global_rngs
from envs.task_config import load_run_config
from envs.tasks import reset_states
from models.actor_critic import mlp
from models.density_ratio import DensityRatio, RatioFitConfig
from models.dynamics import EnsembleDynamics, UncertaintyFn
from utils.algorithm_spec import AlgorithmSpec, FigureSet, Loop, ModelUse, Unit, planned_updates
from utils.errors import UserError
from utils.paths import resolve_seed_path

Tensor = torch.Tensor
REFIT_PROGRESS = "dynamics_refit.pt"  # an interrupted weighted refit's state, in the run directory
# The checkpoint at the end of iteration 0, kept beside the latest one: E-step 0 and M-step 0 do not depend on α,
# so runs that differ only in α (or in the number of iterations) can take it over (`branch_from`).
BRANCH_SNAPSHOT = "after_iteration0.pt"
BRANCH_FREE_KEYS = frozenset({"weight_exponent", "em_iterations", "branch_from", "log_dir"})
ENV_START_POOL = 10_000  # real-env reset states drawn once for model_starts=env
MAX_DROPPED_BATCHES = 100  # batches of model episodes in a row that all went non-finite: the model has diverged


class ModelDiverged(UserError):
    """Occupancy sampling found only non-finite episodes: the model has diverged (one line from the CLIs)."""


def _wmopo_dynamics() -> DynamicsConfig:
    """`model_dyna_nn_torch.py`: 7 members / 5 elites of 6 x 256 SiLU, inputs standardised, targets raw; loss the mean
    over members of the (weighted) NLL + 5e-6 ΣW² + 1e-3 Σ(max − min log σ²); Adam 1e-3, batch 512, no bootstrap (all
    members see the same batches); 10 % holdout scored by the weighted NLL, stopping once 5 epochs after epoch 6 pass
    without any member improving; the last weights kept, elites by the last holdout losses."""
    return DynamicsConfig(
        num_ensemble=7,
        num_elites=5,
        hidden_dims=[256] * 6,
        weight_decay=[1e-5] * 7,
        lr=1e-3,
        batch_size=512,
        holdout_ratio=0.1,
        max_holdout=1_000_000_000,
        max_epochs=10_000,
        max_epochs_since_update=5,
        patience_after_epoch=6,
        holdout_metric="nll",
        keep_weights="last",
        bootstrap=False,
        shared_batches=True,
        member_loss="mean",
        logvar_bound_coef=1e-3,
    )


def _wmopo_sac() -> SACConfig:
    """`sac/sac.py`: γ 0.995, lr 1e-3 for actor and critics, entropy coefficient fixed at 0.2, 2 x 256."""
    return SACConfig(
        actor_lr=1e-3,
        critic_lr=1e-3,
        gamma=0.995,
        auto_alpha=False,
        alpha=0.2,
        alpha_max=None,
        lr_schedule="none",
        log_std_min=-20.0,
        log_std_max=2.0,
    )


@dataclass
class ModelErrorFitConfig:
    """`model_penalty.py`: 4 x 256 tanh regressing log ℓ; Adam 5e-3, batch 512, 10 % holdout, patience 5."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    lr: float = 5e-3
    batch_size: int = 512
    holdout_ratio: float = 0.1
    patience: int = 5
    max_epochs: int = 10_000
    min_loss: float = 1e-12  # points with ℓ at or below this (the minimum) are left out of the log regression
    max_prediction: float = 1e16


@register_config("wmopo")
@dataclass
class WMOPOConfig(ModelBasedConfig):
    """WMOPO's D4RL algorithm (docs/wmopo.md#algorithm-3-on-d4rl-style-tasks). `epochs` counts the epochs of one
    M-step (50 x 10 000 model steps = 500k); the run has `em_iterations` M-steps."""

    rules: ClassVar[dict[str, Rule]] = {
        "weight_exponent": lambda value, cfg: None if value >= 0 else ">= 0 (0: every refit is plain MLE)",
        "em_iterations": positive,
        "b_scale": lambda value, cfg: None if value >= 0 else ">= 0",
        "sim_batch": positive,
        "sim_samples": lambda value, cfg: None if value is None or value > 0 else "> 0 (or null: the dataset size)",
        "reward_bound": positive,
        "real_reward_bound": one_of("min", "max"),
        "model_starts": one_of("dataset", "env"),
        "rollout_mode": one_of("episodes"),
        "model_episode_length": positive,
        "rollout_random_steps": non_negative,
        "update_after": non_negative,
        "dynamics.predict_reward": lambda value, cfg: None if value else "true (WMOPO's model predicts rewards)",
        "dynamics.loss": one_of("nll"),
        # Occupancy samples are episodes that stop with probability 1 − γ after every step.
        "sac.gamma": discount("model episodes of the occupancy samples stop with probability 1 − γ; at 1 never"),
        "model_eval_episodes": positive,
        "model_error.hidden_dims": all_positive,
        **dict.fromkeys(
            ("model_error.lr", "model_error.batch_size", "model_error.patience", "model_error.max_epochs"), positive
        ),
        "model_error.holdout_ratio": lambda value, cfg: (
            None if 0 <= value < 1 else "in [0, 1) (0: stop on the training loss)"
        ),
        "model_error.min_loss": non_negative,
        "model_error.max_prediction": positive,
        "branch_from": lambda value, cfg: (
            None
            if value is None or cfg.em_iterations >= 2
            else "null unless em_iterations >= 2 (a branch starts at iteration 1)"
        ),
    }

    weight_exponent: float = 0.2  # α (the README's runs: 0.0 and 0.2; main.py's default 0.1)
    em_iterations: int = 2  # M-steps: iteration 0 (ERM model) and iteration 1 (weighted refit)
    b_scale: float = 1e-2  # B′
    sim_batch: int = 200  # model episodes sampled side by side for the ratio fits
    sim_samples: int | None = None  # occupancy samples per ratio fit; None: as many as the dataset has rows
    reward_bound: float = 10.0  # model rewards clipped to ±reward_bound·R, real ones to ±reward_bound·R′
    real_reward_bound: str = "min"  # R′ = min(|r_min|, |r_max|) as the official replay memory; "max": R′ = R
    # Where model episodes start: the dataset's episode starts (strictly offline) or the real env's reset
    # distribution (the official code; needs the simulator).
    model_starts: str = "dataset"
    model_eval_episodes: int = 5  # model episodes with the deterministic policy at every evaluation
    epochs: int = 50
    steps_per_epoch: int = 10_000
    eval_every: int = 1
    eval_episodes: int = 5
    save_every: int = 1
    batch_size: int = 512
    real_ratio: float = 0.5
    # The M-step's model data (`ModelEpisodes`): rollout_batch_size model episodes run on from episode starts, each
    # rollout (every rollout_freq steps) advancing them by rollout_length steps; an episode ends at termination or
    # after model_episode_length steps (a time limit, not a termination) and starts again. The only mode there is:
    # the key stays so configs that name it keep loading.
    rollout_mode: str = "episodes"
    rollout_batch_size: int = 1
    rollout_length: int = 1
    rollout_freq: int = 1
    model_episode_length: int = 1000
    rollout_random_steps: int = 10_000  # uniform random actions first; iteration 0 only (later M-steps: 0)
    update_after: int = 10_000  # model steps before the first update of every M-step
    model_buffer_size: int | None = 1_000_000
    sac: SACConfig = field(default_factory=_wmopo_sac)
    dynamics: DynamicsConfig = field(default_factory=_wmopo_dynamics)
    ratio: RatioFitConfig = field(default_factory=RatioFitConfig)
    model_error: ModelErrorFitConfig = field(default_factory=ModelErrorFitConfig)
    # A WMOPO run dir of the same task and seed, with the same settings but weight_exponent and em_iterations
    # (`{seed}` and wildcards allowed, matching exactly one run that finished iteration 0): this run takes over its
    # iteration 0 (logs, model, networks, buffers, random streams) instead of repeating it, as the official code's
    # α runs share one iteration 0 (docs/wmopo.md#branching-off-iteration-0).
    branch_from: str | None = None

    def planned_epochs(self) -> int:
        return self.epochs * self.em_iterations


# ---------------------------------------------------------------------------------------------------- sampling
def occupancy_samples(
    transition: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    policy: Callable[[Tensor], Tensor],
    starts: Callable[[int], Tensor],
    gamma: float,
    num: int,
    batch: int,
    goes_on: Callable[[int], Tensor] | None = None,
) -> Tensor:
    """`num` rows [s, a] from the discounted occupancy of `policy` under `transition` (states, actions -> next
    states, done): `batch` episodes at a time from `starts(batch)`; each step every live row is recorded, then the
    episode ends at done or, with probability 1 − γ, at random. Batches run until at least `num` rows exist (a batch
    that produces a non-finite state or action is dropped whole; MAX_DROPPED_BATCHES dropped in a row end the run
    with one line); `num` of them are drawn at random. With `batch` 1 the episodes run one after another, as the
    Pendulum study's original draws them. `goes_on(batch)` replaces the random stops (True: the episode goes on after
    this step; default uniform draws < γ), so a test can script episode lengths."""
    rows: list[Tensor] = []
    total, dropped_in_a_row = 0, 0
    while total < num:
        states = starts(batch)
        device = states.device
        alive = torch.ones(len(states), dtype=torch.bool, device=device)
        batch_rows: list[Tensor] = []
        while bool(alive.any()):
            actions = policy(states)
            pairs = torch.cat([states, actions], dim=-1)[alive]
            if not bool(torch.isfinite(pairs).all()):
                batch_rows = []
                break
            batch_rows.append(pairs)
            states, done = transition(states, actions)
            going = torch.rand(len(alive), device=device) < gamma if goes_on is None else goes_on(len(alive))
            alive &= ~done & going
        rows += batch_rows
        total += sum(len(part) for part in batch_rows)
        dropped_in_a_row = 0 if batch_rows else dropped_in_a_row + 1
        if dropped_in_a_row == MAX_DROPPED_BATCHES:
            raise ModelDiverged(
                f"the model gave a non-finite state or action in each of {MAX_DROPPED_BATCHES} batches of episodes in "
                "a row: it has diverged; refit it with a smaller learning rate or more weight decay"
            )
    samples = torch.cat(rows)
    return samples[torch.randperm(len(samples), device=samples.device)[:num]]


# ---------------------------------------------------------------------------------------------------- model error
@torch.no_grad()
def pointwise_loss(dynamics: EnsembleDynamics, obs: Tensor, act: Tensor, next_obs: Tensor, rew: Tensor) -> Tensor:
    """ℓ(x) = ½ mean over the elites of Σ_d [(μ_d − y_d)² e^{−log σ²_d} + log σ²_d], y = [Δs, r]: [N] (in chunks)."""
    values = []
    for rows in torch.arange(len(obs), device=obs.device).split(8192):
        mean, logvar = dynamics(obs[rows], act[rows], members=dynamics.elites)
        assert logvar is not None, "WMOPO's model is Gaussian"
        target = torch.cat([next_obs[rows] - obs[rows], rew[rows].unsqueeze(-1)], dim=-1)
        values.append(0.5 * ((mean - target).square() * torch.exp(-logvar) + logvar).sum(-1).mean(0))
    return torch.cat(values)


def penalty_coefficient(ratios: Tensor, losses: Tensor, b_scale: float) -> tuple[float, float]:
    """b = ½ B′ S^{−1/4} with S = Σ_i r_i ℓ_i over the dataset (raw ratios, shifted losses); returns (b, S)."""
    total = float((ratios.double() * losses.double()).sum())
    return 0.5 * b_scale * total ** (-0.25), total


def reward_bounds(rewards: Tensor, factor: float, real: str = "min") -> tuple[float, float]:
    """(factor·R, factor·R′) from the dataset rewards: R = max(|r_min|, |r_max|) bounds the model rewards and
    R′ = min(|r_min|, |r_max|) the dataset's penalised ones, as the official replay memory does (`real` "max":
    R′ = R)."""
    low, high = float(rewards.min().abs()), float(rewards.max().abs())
    return factor * max(low, high), factor * (max(low, high) if real == "max" else min(low, high))


def penalised_real_rewards(rewards: Tensor, shifted_losses: Tensor, b: Tensor | float, bound: float) -> Tensor:
    """Dataset rewards for the M-step: r − b·ℓ(s, a) with the exact shifted model error, clipped to ±bound."""
    return (rewards - b * shifted_losses).clamp(-bound, bound)


def penalised_model_rewards(rewards: Tensor, penalty: Tensor, b: Tensor | float, bound: Tensor | float) -> Tensor:
    """r̃ = clip(r̂ − b·c(s, a), ±bound): a NaN r̂ becomes −bound (the original ends such an episode), ±∞ ±bound."""
    penalised = torch.nan_to_num(rewards - b * penalty, nan=-float(bound), posinf=float(bound))
    return penalised.clamp(-bound, bound)


class ModelErrorNet(nn.Module):
    """c(x) = exp(f(x)) ≈ ℓ(x) for x = [s, a] (raw inputs), f a tanh MLP fitted to log ℓ."""

    def __init__(self, in_dim: int, cfg: ModelErrorFitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.net = mlp(in_dim, 1, cfg.hidden_dims, nn.Tanh)

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(self.net(x).squeeze(-1)).clamp(0.0, self.cfg.max_prediction)

    def regression_targets(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """The rows the fit keeps (ℓ > min_loss: log of the shifted minimum, 0, is −∞) and their targets log ℓ."""
        keep = losses > self.cfg.min_loss
        return keep, losses[keep].log()

    def fit(self, x: Tensor, losses: Tensor) -> dict[str, float]:
        """Re-initialise, then regress log ℓ on the points with ℓ > min_loss (MSE, Adam); early stopping on the
        holdout MSE, the last weights kept (`model_penalty.py`)."""
        cfg = self.cfg
        self.net = mlp(self.in_dim, 1, cfg.hidden_dims, nn.Tanh).to(x.device)
        keep, target = self.regression_targets(losses)
        x = x[keep]
        order = torch.randperm(len(x), device=x.device)
        num_holdout = int(cfg.holdout_ratio * len(x))
        holdout, train = order[:num_holdout], order[num_holdout:]
        batch = min(cfg.batch_size, len(train))
        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        best, stale, epoch, holdout_loss = float("inf"), 0, 0, float("nan")
        while epoch < cfg.max_epochs and stale < cfg.patience:
            epoch += 1
            for rows in train[torch.randperm(len(train), device=x.device)][: len(train) // batch * batch].split(batch):
                loss = (self.net(x[rows]).squeeze(-1) - target[rows]).square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                checked = holdout if num_holdout else train
                holdout_loss = float((self.net(x[checked]).squeeze(-1) - target[checked]).square().mean())
            best, stale = (holdout_loss, 0) if holdout_loss < best else (best, stale + 1)
        return {"model_error/holdout_mse": holdout_loss, "model_error/epochs": float(epoch)}


def weights_power(ratio: DensityRatio, x: Tensor, exponent: float) -> Tensor:
    """w = r(x)^α / mean r(x)^α over the rows x (the weighted refit's weights)."""
    with torch.no_grad():
        powered = ratio(x).pow(exponent)
    return powered / powered.mean()


# ---------------------------------------------------------------------------------------------------- model episodes
class ModelEpisodes(RolloutStrategy):
    """The M-step's model data, as the official code's SAC gathers it: `num` model episodes run on from start states,
    each collection advancing them by `length` steps. An episode ends at termination, at a non-finite prediction
    (stored as a terminal transition that stays in place) or after `episode_length` steps (a time limit: stored as
    not terminal), and starts again from a start state. Counted from `reset`, the first `random_steps` model steps
    act uniformly at random and updates wait until more than `update_after` model steps exist."""

    def __init__(
        self,
        start_states: Tensor | None,
        num: int,
        length: int,
        episode_length: int,
        random_steps: int,
        update_after: int,
    ) -> None:
        if start_states is None or len(start_states) == 0:
            raise UserError("rollout_mode=episodes needs episode start states; the dataset marks no episode starts")
        self.start_states = start_states
        self.num, self.length, self.episode_length = num, length, episode_length
        self.random_steps, self.update_after = random_steps, update_after
        # The running episodes (None until the first `reset`) and the model steps taken since it.
        self.obs: Tensor | None = None
        self.steps: Tensor | None = None
        self.returns: Tensor | None = None
        self.model_steps = 0
        self.stats: dict[str, float] = {}

    @classmethod
    def of(cls, cfg: WMOPOConfig, start_states: Tensor | None) -> ModelEpisodes:
        """The model episodes `cfg` asks for (`rollout_batch_size` of them, `rollout_length` steps per rollout)."""
        return cls(
            start_states,
            cfg.rollout_batch_size,
            cfg.rollout_length,
            cfg.model_episode_length,
            cfg.rollout_random_steps,
            cfg.update_after,
        )

    def starts(self, num: int) -> Tensor:
        """`num` start states drawn uniformly with replacement (the occupancy samples start there too)."""
        return self.start_states[torch.randint(len(self.start_states), (num,), device=self.start_states.device)]

    def reset(self) -> None:
        """Start every episode afresh and count model steps from 0 (the update delay applies again; random actions
        for the first `random_steps`)."""
        self.obs = self.starts(self.num)
        self.steps = torch.zeros(self.num, dtype=torch.long, device=self.obs.device)
        self.returns = torch.zeros(self.num, device=self.obs.device)
        self.model_steps = 0
        self.stats = {}

    @torch.no_grad()
    def collect(self, trainer: OfflineTrainer) -> dict[str, float]:
        """Advance the episodes by `length` steps in the trainer's model, storing every transition in its model
        buffer; their statistics are logged once per epoch (`epoch_metrics`), so nothing per rollout."""
        dynamics, fake = trainer.dynamics, trainer.fake_buffer
        assert dynamics is not None and fake is not None
        algo = cast(ModelBasedAlgorithm, trainer.algo)
        if self.obs is None:
            self.reset()
        assert self.obs is not None and self.steps is not None and self.returns is not None
        stats, act_dim = self.stats, trainer.real_buffer.storage.act.shape[1]
        for _ in range(self.length):
            obs = self.obs
            if self.model_steps < self.random_steps:
                act = torch.rand(obs.shape[0], act_dim, device=obs.device) * 2 - 1
            else:
                act = algo.act(obs, deterministic=False)
            next_obs, raw_reward, done, info = dynamics.step(obs, act, algo.rollout_uncertainty)
            broken = ~torch.isfinite(next_obs).all(-1)
            next_obs = torch.where(broken.unsqueeze(-1), obs, next_obs)
            done = done | broken
            reward = algo.model_reward(raw_reward, {**info, "obs": obs, "act": act, "next_obs": next_obs})
            fake.add(Batch(obs, act, reward, next_obs, done.float()))
            self.model_steps += len(obs)
            self.steps += 1
            self.returns += reward
            ended = done | (self.steps >= self.episode_length)
            stats["reward_sum"] = stats.get("reward_sum", 0.0) + float(reward.sum())
            stats["raw_reward_sum"] = stats.get("raw_reward_sum", 0.0) + float(raw_reward.sum())
            stats["transitions"] = stats.get("transitions", 0.0) + len(obs)
            if bool(ended.any()):
                stats["episodes"] = stats.get("episodes", 0.0) + float(ended.sum())
                stats["return_sum"] = stats.get("return_sum", 0.0) + float(self.returns[ended].sum())
                stats["length_sum"] = stats.get("length_sum", 0.0) + float(self.steps[ended].sum())
                next_obs = next_obs.clone()
                next_obs[ended] = self.starts(int(ended.sum()))
                self.steps[ended] = 0
                self.returns[ended] = 0.0
            self.obs = next_obs
        return {}

    def may_update(self) -> bool:
        return self.model_steps > self.update_after

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's statistics (then cleared): mean stored and raw model reward, and the return and length of the
        episodes that ended."""
        stats, self.stats = self.stats, {}
        if not stats:
            return {}
        metrics = {
            "rollout_info/reward_mean": stats["reward_sum"] / stats["transitions"],
            "rollout_info/raw_reward_mean": stats["raw_reward_sum"] / stats["transitions"],
            "rollout_info/episodes_ended": stats.get("episodes", 0.0),
        }
        if stats.get("episodes"):
            metrics["rollout_info/episode_return"] = stats["return_sum"] / stats["episodes"]
            metrics["rollout_info/episode_length"] = stats["length_sum"] / stats["episodes"]
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The running episodes and counters (`random_steps` is the trainer's to save: it belongs to the EM
        schedule, which sets it per M-step)."""
        return {
            "obs": self.obs,
            "steps": self.steps,
            "returns": self.returns,
            "model_steps": self.model_steps,
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:  # a checkpoint from before the first M-step's episodes existed
            return
        self.obs, self.steps, self.returns = state["obs"], state["steps"], state["returns"]
        self.model_steps, self.stats = state["model_steps"], dict(state["stats"])


# ---------------------------------------------------------------------------------------------------- the EM loop
class WMOPOTrainer(OfflineTrainer):
    """The EM schedule around the shared trainer: E-step 0 (the ERM model is the run's fitted model), M-step 0, then
    for k ≥ 1 the weighted E-step and M-step k. A checkpoint after every E-step and every M-step epoch; a kill inside
    the weighted refit continues the fit (its progress file), a kill inside the ratio or model-error fits repeats
    that E-step from its checkpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.algo, WMOPO) and isinstance(self.rollouts, ModelEpisodes)
        self.wmopo: WMOPO = self.algo
        self.episodes: ModelEpisodes = self.rollouts
        self.iteration = 0
        self.phase = "e-step"  # "e-step" -> "m-step" -> next iteration's "e-step" ... -> "done"
        data = self.real_buffer.storage
        self.raw_rewards = data.rew.clone()
        self.data_x = torch.cat([data.obs, data.act], dim=-1)
        cfg = self.wmopo_cfg
        if cfg.model_starts == "env":  # the official code's starts: the real simulator's reset distribution
            seed = int(torch.randint(2**31 - 1, ()).item())
            pool = reset_states(self.evaluator.spec, ENV_START_POOL, seed)
            self.episodes.start_states = pool.to(data.obs.device)
            self.wmopo.start_states = self.episodes.start_states
        self.model_bound, self.real_bound = reward_bounds(data.rew, cfg.reward_bound, cfg.real_reward_bound)
        self.wmopo.model_reward_bound.fill_(self.model_bound)

    def rollout_strategy(self) -> ModelEpisodes:
        """Model episodes from the dataset's episode starts, which the agent read from the data."""
        return ModelEpisodes.of(self.wmopo_cfg, cast(WMOPO, self.algo).start_states)

    @property
    def wmopo_cfg(self) -> WMOPOConfig:
        return self.cfg  # type: ignore[return-value]

    @property
    def model(self) -> EnsembleDynamics:
        assert self.dynamics is not None
        return self.dynamics

    # ------------------------------------------------------------------------------------------------ loop
    def train(self, until_epoch: int | None = None) -> dict[str, float] | None:
        cfg = self.wmopo_cfg
        while self.phase != "done":
            if self.phase == "e-step":
                self.e_step()
                self.phase = "m-step"
                self.start_m_step()
                self.save_checkpoint()
            else:
                super().train(until_epoch=(self.iteration + 1) * cfg.epochs)
                self.iteration += 1
                self.phase = "done" if self.iteration == cfg.em_iterations else "e-step"
                self.save_checkpoint()
                if self.iteration == 1:
                    self.save_branch_snapshot()
        return self.last_eval

    # ------------------------------------------------------------------------------------------------ branches
    def save_branch_snapshot(self) -> None:
        """A copy of the end-of-iteration-0 checkpoint that later checkpoints do not overwrite (`branch_from`)."""
        snapshot = self.checkpoint_path.with_name(BRANCH_SNAPSHOT)
        staging = snapshot.with_name(snapshot.name + ".partial")
        shutil.copyfile(self.checkpoint_path, staging)
        os.replace(staging, snapshot)

    @classmethod
    def takeover(cls, cfg: RunConfig) -> Takeover | None:
        """With `branch_from`: the named run's end-of-iteration-0 state, its logs and its model (the ERM fit)."""
        if not isinstance(cfg, WMOPOConfig) or not cfg.branch_from:
            return None
        snapshot = cls.branch_snapshot(cfg)
        return Takeover(snapshot.parent.parent, snapshot, ("dynamics.pt",))

    @staticmethod
    def branch_snapshot(cfg: WMOPOConfig) -> Path:
        """The snapshot `cfg.branch_from` names, once its run is checked to be this one's but for BRANCH_FREE_KEYS."""
        assert cfg.branch_from is not None
        pattern = str(Path(cfg.branch_from) / "checkpoints" / BRANCH_SNAPSHOT)
        snapshot = resolve_seed_path(pattern, cfg.seed, "branch_from", "WMOPO run dir that finished iteration 0")
        parent = snapshot.parent.parent
        if not (parent / "config.yaml").is_file():
            raise UserError(f"branch_from {parent} is not a run directory (no config.yaml); name a WMOPO run dir")
        if not snapshot.is_file():
            raise UserError(
                f"branch_from {parent} has not finished iteration 0 (no checkpoints/{BRANCH_SNAPSHOT}); branch "
                "from it once it has"
            )
        theirs, mine = flatten_config(asdict(load_run_config(parent / "config.yaml"))), flatten_config(asdict(cfg))
        differing = sorted(
            key
            for key in theirs.keys() | mine.keys()
            if key.split(".")[0] not in BRANCH_FREE_KEYS and theirs.get(key) != mine.get(key)
        )
        if differing:
            shown = ", ".join(f"{key}: {theirs.get(key)!r} there, {mine.get(key)!r} here" for key in differing[:4])
            raise UserError(
                f"branch_from {parent} ran with other settings ({shown}{', ...' * (len(differing) > 4)}); a branch "
                f"may differ only in {', '.join(sorted(BRANCH_FREE_KEYS - {'branch_from', 'log_dir'}))}"
            )
        return snapshot

    def start_m_step(self) -> None:
        """A fresh model buffer and fresh model episodes; random actions only in iteration 0."""
        assert self.fake_buffer is not None
        self.fake_buffer.size, self.fake_buffer.position = 0, 0
        self.episodes.reset()
        self.episodes.random_steps = self.wmopo_cfg.rollout_random_steps if self.iteration == 0 else 0

    # ------------------------------------------------------------------------------------------------ E-step
    def e_step(self) -> None:
        cfg, k = self.wmopo_cfg, self.iteration
        metrics: dict[str, float] = {}
        if k > 0 and cfg.weight_exponent > 0:  # with α = 0 the model stays the ERM one: one ratio fit, for b
            metrics |= self.fit_ratio("ratio_before_refit")
            weights = weights_power(self.wmopo.ratio, self.data_x, cfg.weight_exponent)
            metrics |= self.refit(weights)
        metrics |= self.fit_ratio("ratio")
        data = self.real_buffer.storage
        losses = pointwise_loss(self.model, data.obs, data.act, data.next_obs, self.raw_rewards)
        shifted = losses - losses.min()
        if k == 0 or cfg.weight_exponent > 0:
            metrics |= self.wmopo.model_error.fit(self.data_x, shifted)
        with torch.no_grad():
            ratios = self.wmopo.ratio(self.data_x)
        b, total = penalty_coefficient(ratios, shifted, cfg.b_scale)
        self.wmopo.b.fill_(b)
        self.penalise_real_rewards(shifted)
        metrics |= {"e_step/b": b, "e_step/ratio_weighted_loss_sum": total, "e_step/loss_min": float(losses.min())}
        self.logger.scalars(metrics, self.global_step)
        print(f"E-step {k}: b = {b:.3g} (Σ r·ℓ = {total:.4g}), ratio weights {self.weight_summary(ratios)}", flush=True)

    def fit_ratio(self, prefix: str) -> dict[str, float]:
        """The ratio network (warm-started) against the current policy's occupancy in the current model."""
        cfg = self.wmopo_cfg
        num = cfg.sim_samples or len(self.data_x)
        sim = occupancy_samples(
            self.model_transition, self.stochastic_policy, self.episodes.starts, cfg.sac.gamma, num, cfg.sim_batch
        )
        fitted = self.wmopo.ratio.fit(self.data_x, sim, cfg.ratio)
        return {f"{prefix}/{key.split('/')[-1]}": value for key, value in fitted.items()}

    def refit(self, weights: Tensor) -> dict[str, float]:
        """Warm-started weighted refit of the ensemble, resumable through its progress file."""
        data = self.real_buffer.storage
        progress_file = self.run_dir / REFIT_PROGRESS
        fitted = self.model.fit(
            data.obs, data.act, data.next_obs, self.raw_rewards, weights=weights, progress=False,
            progress_file=progress_file, extra_state=self._logger_state,
        )  # fmt: skip
        progress_file.unlink(missing_ok=True)
        return {f"refit/{key.split('/')[-1]}": float(value) for key, value in fitted.items()}

    def _logger_state(self) -> dict[str, int]:
        self.logger.flush()
        return {"num_events": self.logger.num_events}

    def penalise_real_rewards(self, shifted_losses: Tensor) -> None:
        """Dataset rewards for the M-step: r − b·ℓ(s, a), clipped to ±10R′."""
        penalised = penalised_real_rewards(self.raw_rewards, shifted_losses, self.wmopo.b, self.real_bound)
        self.real_buffer.storage.rew.copy_(penalised)

    @torch.no_grad()
    def model_transition(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        next_obs, _, done, _ = self.model.step(obs, act)
        broken = ~torch.isfinite(next_obs).all(-1) | (next_obs.abs() > 1e10).any(-1)
        return torch.where(broken.unsqueeze(-1), obs, next_obs), done | broken

    def stochastic_policy(self, obs: Tensor) -> Tensor:
        return self.wmopo.act(obs, deterministic=False)

    @staticmethod
    def weight_summary(ratios: Tensor) -> str:
        weights = ratios / ratios.mean()
        ess = float(weights.sum() ** 2 / weights.square().sum()) / len(weights)
        return f"max {float(weights.max()):.3g}, effective sample fraction {ess:.3f}"

    # ------------------------------------------------------------------------------------------------ checkpoint
    def extra_state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "phase": self.phase,
            "dynamics": self.model.state_dict(),
            "random_steps": self.episodes.random_steps,
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_checkpoint_state(state)
        extra = state["extra"]
        self.iteration, self.phase = extra["iteration"], extra["phase"]
        self.episodes.random_steps = extra["random_steps"]
        if self.phase == "done" and self.iteration < self.wmopo_cfg.em_iterations:  # a branch planned longer
            self.phase = "e-step"
        self.model.load_state_dict(extra["dynamics"])
        if self.phase == "m-step" or self.iteration > 0:  # the M-step's dataset rewards, recomputed
            data = self.real_buffer.storage
            losses = pointwise_loss(self.model, data.obs, data.act, data.next_obs, self.raw_rewards)
            self.penalise_real_rewards(losses - losses.min())


# ---------------------------------------------------------------------------------------------------- the agent
class WMOPO(SAC):
    """SAC whose model rewards carry WMOPO's model-error penalty; the ratio and model-error networks and b live here
    so checkpoints carry them."""

    needs_dynamics: ClassVar[bool] = True
    stackable: ClassVar[bool] = False  # its EM schedule and extra networks are per run
    needs_dataset: ClassVar[bool] = True
    rollout_uncertainty: ClassVar[UncertaintyFn | None] = None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: WMOPOConfig,
        device: torch.device | str = "cpu",
        dynamics: EnsembleDynamics | None = None,
        dataset: Any = None,
    ) -> None:
        super().__init__(obs_dim, act_dim, cfg.sac, cfg.epochs, device)
        self.wmopo_cfg = cfg
        self.ratio = DensityRatio(obs_dim + act_dim, cfg.ratio.hidden_dims).to(device)
        self.model_error = ModelErrorNet(obs_dim + act_dim, cfg.model_error).to(device)
        self.register_buffer("b", torch.zeros((), device=device))
        self.register_buffer("model_reward_bound", torch.full((), float("inf"), device=device))
        self.dynamics = None if dynamics is None else [dynamics]  # not a submodule: the trainer saves the model
        self.start_states: Tensor | None = None
        if dataset is not None:
            self.start_states = torch.as_tensor(dataset.start_observations(), device=device)

    def model_reward(self, reward: Tensor, info: dict[str, Tensor]) -> Tensor:
        """r̃ = clip(r̂ − b·c(s, a), ±10R); a non-finite model reward becomes −10R."""
        with torch.no_grad():
            penalty = self.model_error(torch.cat([info["obs"], info["act"]], dim=-1))
        return penalised_model_rewards(reward, penalty, self.b, self.model_reward_bound)

    # ------------------------------------------------------------------------------------------------ evaluation
    def evaluation_extras(self, result: dict[str, float], spec: Any) -> tuple[dict[str, float], dict[str, float]]:
        """Beside the real episodes: `model_eval_episodes` model episodes of the deterministic policy from episode
        starts, their penalised return and length (the official SimRet), with the training RNG streams untouched."""
        if self.dynamics is None or self.start_states is None:
            return result, {}
        with isolated_global_rngs(self.b.device):
            sim_return, sim_length = self.model_episodes()
        return result, {"eval/sim_return": sim_return, "eval/sim_length": sim_length}

    @torch.no_grad()
    def model_episodes(self) -> tuple[float, float]:
        cfg, dynamics = self.wmopo_cfg, self.dynamics[0]  # type: ignore[index]
        assert self.start_states is not None
        num = cfg.model_eval_episodes
        obs = self.start_states[torch.randint(len(self.start_states), (num,), device=self.start_states.device)]
        returns, lengths = torch.zeros(num, device=obs.device), torch.zeros(num, device=obs.device)
        alive = torch.ones(num, dtype=torch.bool, device=obs.device)
        for _ in range(cfg.model_episode_length):
            act = self.act(obs, deterministic=True)
            next_obs, reward, done, info = dynamics.step(obs, act)
            penalised = self.model_reward(reward, {**info, "obs": obs, "act": act})
            returns += penalised * alive
            lengths += alive.float()
            alive &= ~(done | ~torch.isfinite(next_obs).all(-1))
            if not bool(alive.any()):
                break
            obs = torch.where(torch.isfinite(next_obs), next_obs, obs)
        return float(returns.mean()), float(lengths.mean())


def planned_m_steps(config: Mapping[str, Any]) -> int | None:
    """A WMOPO run's last step: `epochs` x `steps_per_epoch` count one M-step of its EM loop, and it has
    `em_iterations` of them."""
    updates = planned_updates(config)
    return None if updates is None else updates * config.get("em_iterations", 1)


# Its EM loop (its Figure 2a): the real return and the penalised return of the model episodes.
FIGURES = FigureSet(
    "wmopo-em",
    "WMOPO (D4RL-style)",
    curves={"eval/episode_reward": "real-return", "eval/sim_return": "sim-return"},
    axis_labels={"eval/sim_return": "Return in the model (penalised)"},
)

SPEC = AlgorithmSpec(
    "wmopo",
    "WMOPO",
    WMOPOConfig,
    WMOPO,
    Loop.EPOCHS,
    Unit.GRADIENT_STEPS,
    planned_m_steps,
    ModelUse.ROLLOUTS,
    trainer=WMOPOTrainer,
    figure_sets=(FIGURES,),
)
