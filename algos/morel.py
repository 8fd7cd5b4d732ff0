"""MOReL: Model-Based Offline Reinforcement Learning (Kidambi et al., NeurIPS 2020; docs/morel.md).

From an offline dataset D, build a pessimistic MDP and optimise the policy in it:

1. Fit an ensemble {f_i} of deterministic models to D (models/dynamics.py, mjrl's configuration).
2. Unknown-state detector: the members' disagreement δ(s, a) = max_{i<j} ‖f_i(s, a) − f_j(s, a)‖₂, with the
   threshold τ = max_{(s,a) ∈ D} δ(s, a) / pessimism_coef (no truncation when pessimism_coef is 0 or null).
3. Pessimistic MDP: a model path reaching a step t ≤ L − 2 with δ(s_t, a_t) > τ is cut after that step (kept at
   least 4 steps long) and its last reward gets `truncate_reward` (the HALT penalty −κ). As mjrl runs it, the cut
   path is not terminal (its value is bootstrapped from its last state) and every path's terminated flag is
   cleared; `halt_terminates: true` is the paper's absorbing HALT state (no value beyond the cut, falls kept).
4. Policy: a Gaussian MLP initialised by behaviour cloning on D, improved by NPG steps on paths rolled out in every
   member from the dataset's episode start states (algos/game.py, algos/npg.py).

With `obs_mask: mjrl` (the hopper preset) δ is measured on masked states, velocities × 0.02, as mjrl's models
predict masked states: velocity disagreements weigh 50x less than in raw units, and τ scales with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from algos.game import ModelBasedNPG, next_obs_per_member, pairwise_disagreement
from buffers.paths import PathBatch
from config import DatasetConfig, ModelBasedNPGConfig, Rule, non_negative, positive, register_config
from models.dynamics import EnsembleDynamics
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit

MIN_TRUNCATED_LENGTH = 4  # mjrl keeps truncated paths at least this long
DISAGREEMENT_CHUNK = 50_000  # dataset rows per chunk when measuring δ over the whole dataset


@register_config("morel")
@dataclass
class MOReLConfig(ModelBasedNPGConfig, DatasetConfig):
    """MOReL (docs/morel.md). Defaults: mjrl's d4rl_hopper_medium config (configs/morel/defaults.yaml)."""

    rules: ClassVar[dict[str, Rule]] = {
        "pessimism_coef": lambda value, cfg: None if value is None or value >= 0 else ">= 0 or null",
        "bc_epochs": non_negative,
        "bc_batch_size": positive,
        "bc_lr": positive,
    }

    num_iter: int = 500
    inner_steps: int = 1
    horizon: int = 700
    fit_max_steps: int | None = None
    eval_episodes: int = 10
    pessimism_coef: float | None = 3.0  # τ = max_D δ / pessimism_coef; 0 or null: no truncation (naive MBRL)
    truncate_reward: float = 0.0  # added to the last reward of a truncated path (MOReL's HALT penalty −κ)
    # False, mjrl's code: it computes the flag after cutting the path, so every path (fallen ones included) ends
    # unterminated and its value is bootstrapped. True: the paper's absorbing HALT state (a cut path is terminated).
    halt_terminates: bool = False
    bc_init: bool = True
    # False, mjrl's code: BC leaves the policy's input shift 0 and scale 1. True installs the data's mean and std.
    bc_set_transforms: bool = False
    bc_epochs: int = 5
    bc_batch_size: int = 256
    bc_lr: float = 1e-3


class MOReL(ModelBasedNPG):
    needs_disagreement: ClassVar[bool] = True

    def __init__(self, obs_dim: int, act_dim: int, cfg: MOReLConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(obs_dim, act_dim, cfg, device)
        self.cfg: MOReLConfig = cfg
        self.register_buffer("threshold", torch.tensor(float("inf")))  # τ, set once the models are fitted

    def prepare_on_dataset(self, dynamics: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor) -> dict[str, Any]:
        """Once the models are fitted on the dataset: the threshold τ, then (bc_init) the policy's BC start."""
        metrics = self.set_threshold(dynamics, obs, act)
        if self.cfg.bc_init:
            metrics.update(self.behaviour_cloning(obs, act))
        return metrics

    @torch.no_grad()
    def set_threshold(self, dynamics: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor) -> dict[str, float]:
        """τ = max over the dataset of δ(s, a) / pessimism_coef (δ on masked states, as the rollouts measure it)."""
        largest = max(
            float(pairwise_disagreement(next_obs_per_member(dynamics, o, a) * self.actor.obs_mask).max())
            for o, a in zip(obs.split(DISAGREEMENT_CHUNK), act.split(DISAGREEMENT_CHUNK))
        )
        coef = self.cfg.pessimism_coef
        self.threshold.fill_(largest / coef if coef else float("inf"))
        return {"morel/max_dataset_disagreement": largest, "morel/threshold": float(self.threshold)}

    def shape_paths(self, paths: PathBatch, disagreement: torch.Tensor | None) -> PathBatch:
        """Cut every path after its first step t < length − 1 with δ(s_t, a_t) > τ (mjrl checks every step but the
        last), at least 4 steps kept; HALT penalty on its last reward."""
        if disagreement is None or not bool(torch.isfinite(self.threshold)):
            return paths
        lengths = paths.lengths
        steps = torch.arange(paths.mask.shape[1], device=lengths.device)
        violation = (disagreement > self.threshold) & (steps < (lengths - 1).unsqueeze(1))
        truncated = violation.any(1)
        first = violation.float().argmax(1)  # first violating step (0 where none; masked by `truncated`)
        new_lengths = torch.where(truncated, (first + 1).clamp(min=MIN_TRUNCATED_LENGTH), lengths)
        mask = steps < new_lengths.unsqueeze(1)
        rew = paths.rew * mask
        rows = torch.arange(len(rew), device=rew.device)
        rew[rows, new_lengths - 1] += truncated.to(rew.dtype) * self.cfg.truncate_reward
        if self.cfg.halt_terminates:
            terminated = paths.terminated & ~truncated | truncated
        else:
            terminated = torch.zeros_like(paths.terminated)
        return PathBatch(paths.obs, paths.act, rew, mask, terminated)

    def behaviour_cloning(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, Any]:
        """mjrl's BC initialisation: `bc_epochs` epochs of Adam on the mean squared error between the policy mean and
        the dataset action. The input scaling stays the identity (mjrl's call keeps set_transforms=False);
        `bc_set_transforms` installs the data's mean and std of the masked observation first."""
        cfg, policy = self.cfg, self.actor
        if cfg.bc_set_transforms:
            masked = obs * policy.obs_mask
            policy.obs_shift.copy_(masked.mean(0))
            policy.obs_scale.copy_(masked.std(0, unbiased=False))
        optimizer = torch.optim.Adam(policy.mean_net.parameters(), lr=cfg.bc_lr)
        for _ in range(cfg.bc_epochs):
            for rows in torch.randperm(len(obs), device=obs.device).split(cfg.bc_batch_size):
                loss = (policy.mean(obs[rows]) - act[rows]).square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():  # on the whole dataset, in chunks
            squared = sum(
                float((policy.mean(o) - a).square().sum()) for o, a in zip(obs.split(65536), act.split(65536))
            )
        return {"morel/bc_loss": squared / act.numel()}


def planned_iterations(config: Mapping[str, Any]) -> int | None:
    """A MOReL run ends at `num_iter`: it logs once per iteration (one model fit, then NPG steps)."""
    iterations = config.get("num_iter")
    return iterations if isinstance(iterations, int) else None


SPEC = AlgorithmSpec(
    "morel", "MOReL", MOReLConfig, MOReL, Loop.NPG, Unit.NPG_ITERATIONS, planned_iterations, ModelUse.REFITTED
)
