"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss and normalised states (Fujimoto & Gu, NeurIPS 2021,
"A Minimalist Approach to Offline Reinforcement Learning"; docs/td3bc.md), as the authors' code runs it
(sfujim/TD3_BC: main.py, TD3_BC.py, utils.py).

TD3 (twin critics, target policy smoothing, delayed policy updates) changes in two places only:

- States are normalised with the dataset's statistics, s ↦ (s − μ) / σ, μ the mean and σ the standard deviation
  (numpy's, ddof 0) of the dataset's observations plus `normalize_eps` (1e-3). Dataset states, next states and the
  states the policy acts on in evaluation all pass through it. Here μ and σ are buffers of the algorithm, saved in
  every checkpoint, and `act`, `algo.actor` and `attack_critics()` take raw observations: eval.py and `load_run` act
  exactly as training evaluated.
- The actor loss adds a behaviour-cloning term weighted against a normalised Q:

      L(φ) = −λ · mean_b Q_θ1(s_b, π_φ(s_b)) + mean_{b,i} (π_φ(s_b)_i − a_{b,i})²
      λ = α / mean_b |Q_θ1(s_b, π_φ(s_b))|        (no gradient through λ; α = `alpha` = 2.5)

Per batch (s, a, r, s', d) of dataset transitions, states normalised, in the authors' order (k counts updates from 1):

1. Critics   ε ~ N(0, I),  ã = clip(π_φ'(s') + clip(σ̃ ε, −c, c), −1, 1)   (σ̃ = `policy_noise` 0.2, c = `noise_clip` 0.5,
             both × max_action, which is 1 for every task here)
             y = r + γ (1 − d) min_k Q_θk'(s', ã);   L(θ) = Σ_k mean_b (Q_θk(s, a) − y)²
2. Only when k mod `policy_freq` (2) = 0: the actor step on L(φ) above with the critics' weights frozen, then the
   targets θ' ← θ' + τ (θ − θ'), φ' ← φ' + τ (φ − φ').

Acting: π_φ((s − μ) / σ) (deterministic; `deterministic=False` acts the same, there is nothing to sample).
`update(..., noise=ε)` takes the smoothing noise's standard-normal draws instead of drawing them (tests).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from algos.base import TrainableModule
from algos.sac import adam
from buffers.replay import Batch
from config import (
    OfflineConfig,
    Rule,
    all_positive,
    discount,
    non_negative,
    polyak_rate,
    positive,
    register_config,
)
from models.actor_critic import CriticEnsemble, DeterministicActor
from models.seed_stack import SeedStreams
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, planned_updates

MAX_ACTION = 1.0  # every policy here acts in [-1, 1]^|A| (envs/tasks.py rescales other action boxes)


@register_config("td3bc")
@dataclass
class TD3BCConfig(OfflineConfig):
    """TD3+BC (docs/td3bc.md). Defaults are the authors' main.py and TD3_BC.py as run by their run_experiments.sh:
    one epoch is their evaluation period (eval_freq 5e3 updates), 200 of them their max_timesteps 1e6."""

    rules: ClassVar[dict[str, Rule]] = {
        **dict.fromkeys(("actor_lr", "critic_lr", "policy_freq", "normalize_eps"), positive),
        **dict.fromkeys(("policy_noise", "noise_clip", "alpha"), non_negative),
        "hidden_dims": all_positive,
        "gamma": discount("at 1 the bootstrapped critic targets have no bound"),
        "tau": polyak_rate,
    }

    epochs: int = 200
    steps_per_epoch: int = 5000
    batch_size: int = 256
    eval_every: int = 1
    eval_episodes: int = 10
    save_every: int = 10
    gamma: float = 0.99  # the authors' `discount`
    tau: float = 0.005  # Polyak rate of the target critics and the target actor
    policy_noise: float = 0.2  # std of the target policy smoothing noise, as a fraction of max_action
    noise_clip: float = 0.5  # the smoothing noise is clipped to ±noise_clip · max_action
    policy_freq: int = 2  # the actor and the targets update on every policy_freq-th critic update
    alpha: float = 2.5  # λ = alpha / mean |Q1(s, π(s))|
    normalize: bool = True  # normalise states with the dataset's mean and std (false: μ = 0, σ = 1)
    normalize_eps: float = 1e-3  # added to the dataset's std
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])  # the actor's and each critic's


class StateNormalizer(nn.Module):
    """s ↦ (s − μ) / σ. μ and σ are buffers, so they travel with the algorithm's state_dict (checkpoints, load_run);
    they start as 0 and 1 (the identity) until `fit` sets them from a dataset."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    @torch.no_grad()
    def fit(self, observations: ArrayLike, eps: float) -> None:
        """μ = mean, σ = std (ddof 0, as numpy's) + eps over the rows of `observations` [N, obs_dim], reduced in
        float64 and stored as float32."""
        obs = np.asarray(observations, dtype=np.float64)
        self.mean.copy_(torch.as_tensor(obs.mean(0)))
        self.std.copy_(torch.as_tensor(obs.std(0) + eps))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class RawStateCritics(nn.Module):
    """The twin critics as a function of raw observations, Q_θk((s − μ) / σ, a) -> [2, B]: what eval.py's value-based
    attacks query. Built on request from the algorithm's own modules (it holds no weights of its own)."""

    def __init__(self, normalizer: nn.Module, critics: nn.Module) -> None:
        super().__init__()
        self.normalizer, self.critics = normalizer, critics

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.critics(self.normalizer(obs), act)


class TD3BCPolicy:
    """The policy on raw observations, as the observation attacks call one: `policy(obs, deterministic=True)` ->
    (π((obs − μ) / σ), None) for obs [..., obs_dim] ([S, B, obs_dim] when seed-stacked), differentiable in obs. Not
    a Module: the networks belong to the TD3BC."""

    def __init__(self, algo: TD3BC) -> None:
        self.algo = algo

    def __call__(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, None]:
        return self.algo.policy(self.algo.normalizer(obs))[0], None


class TD3BC(TrainableModule):
    needs_dynamics: ClassVar[bool] = False
    needs_dataset: ClassVar[bool] = True  # the state statistics are the dataset's
    stackable: ClassVar[bool] = True  # docs/seeds.md: the update below is written for an optional seed dimension

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: TD3BCConfig,
        device: torch.device | str = "cpu",
        dynamics: Any = None,
        dataset: Any = None,
    ) -> None:
        """`dataset` (an envs.datasets.OfflineDataset, or anything with `observations`) sets the state statistics;
        without one they stay the identity until a saved state is loaded (`algos.load_run`). `dynamics` is unused:
        TD3+BC learns no model."""
        super().__init__()
        self.cfg = cfg
        self.normalizer = StateNormalizer(obs_dim)
        if cfg.normalize and dataset is not None:
            self.normalizer.fit(dataset.observations, cfg.normalize_eps)
        self.policy = DeterministicActor(obs_dim, act_dim, cfg.hidden_dims, MAX_ACTION)
        self.target_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.critics = CriticEnsemble(obs_dim, act_dim, cfg.hidden_dims, num_critics=2)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # the authors' total_it
        self.to(device)
        self._build_optimizers(cfg.epochs)
        self.actor = TD3BCPolicy(self)
        self._streams: SeedStreams | None = None  # each stacked seed's random streams

    def _build_optimizers(self, epochs: int) -> None:
        self._polyak_pairs = (
            [*self.target_critics.parameters(), *self.target_policy.parameters()],
            [*self.critics.parameters(), *self.policy.parameters()],
        )
        self.critic_optim = adam(self.critics.parameters(), self.cfg.critic_lr)
        self.actor_optim = adam(self.policy.parameters(), self.cfg.actor_lr)

    def stack_extras(self, runs: Sequence[TrainableModule], rng: SeedStreams) -> None:
        self.actor = TD3BCPolicy(self)
        self._streams = rng

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs)[0]

    def attack_critics(self) -> nn.Module | None:
        """The twin critics on raw observations, which the value-based observation attacks query (eval.py)."""
        return RawStateCritics(self.normalizer, self.critics)

    # ------------------------------------------------------------------------------------------------ learning
    def _standard_normal(self, *shape: int, device: torch.device) -> torch.Tensor:
        """ε ~ N(0, I) of `shape`: from the global stream for one run, from each seed's own stream ([S, *shape])
        when seed-stacked."""
        if self._streams is None:
            return torch.randn(*shape, device=device)
        return self._streams.randn(*shape)

    @torch.no_grad()
    def critic_target(self, batch: Batch, noise: torch.Tensor | None = None) -> torch.Tensor:
        """y = r + γ(1 − d) min_k Q_θk'(s', ã),  ã = clip(π_φ'(s') + clip(σ̃ ε, −c, c), −1, 1), s' normalised here
        (batch.next_obs is raw). `noise` is ε [(S,) B, act_dim]; None draws it."""
        cfg = self.cfg
        next_obs = self.normalizer(batch.next_obs)
        if noise is None:
            noise = self._standard_normal(*batch.act.shape[-2:], device=batch.act.device)
        clip = cfg.noise_clip * MAX_ACTION
        smoothing = (noise * (cfg.policy_noise * MAX_ACTION)).clamp(-clip, clip)
        next_act = (self.target_policy(next_obs)[0] + smoothing).clamp(-MAX_ACTION, MAX_ACTION)
        next_value = self.target_critics(next_obs, next_act).amin(-2)
        return batch.rew + cfg.gamma * (1.0 - batch.done) * next_value

    def actor_loss(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L(φ), the BC term mean (π(s) − a)², λ) at normalised states obs [(S,) B, obs_dim], each [(S,)]: the
        means run over the batch (and action dims), per seed when stacked."""
        pi = self.policy(obs)[0]
        q1 = self.critics(obs, pi).select(-2, 0)  # Q_θ1(s, π(s)) [(S,) B]
        lmbda = self.cfg.alpha / q1.abs().mean(-1).detach()
        bc = (pi - act).square().mean((-2, -1))
        return -lmbda * q1.mean(-1) + bc, bc, lmbda

    def update(self, batch: Batch, num_real: int = 0, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One TD3+BC iteration (critics; every `policy_freq`-th, the actor and the targets); detached metrics, the
        actor's only on the iterations that step it. `noise`: the smoothing draws ε (see `critic_target`).

        Shapes work with or without a leading seed dimension (docs/seeds.md): every loss is a mean over the batch,
        summed over seeds for the backward pass, so each seed's gradient is that of its own loss."""
        self.updates += 1
        target = self.critic_target(batch, noise)
        obs = self.normalizer(batch.obs)
        q = self.critics(obs, batch.act)  # [(S,) 2, B]
        critic_loss = (q - target.unsqueeze(-2)).square().mean(-1).sum(-1)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optim.step()
        metrics = {"loss/critic": critic_loss.detach() / 2, "q_mean": q.detach().mean((-2, -1))}

        if int(self.updates.reshape(-1)[0]) % self.cfg.policy_freq == 0:  # every seed counts the same updates
            self.critics.requires_grad_(False)  # the actor's gradient flows through Q_θ1 without touching its weights
            actor_loss, bc, lmbda = self.actor_loss(obs, batch.act)
            self.actor_optim.zero_grad(set_to_none=True)
            actor_loss.sum().backward()
            self.actor_optim.step()
            self.critics.requires_grad_(True)
            self.soft_update_targets()
            metrics |= {"loss/actor": actor_loss.detach(), "loss/bc": bc.detach(), "lambda": lmbda}
        return metrics

    @torch.no_grad()
    def soft_update_targets(self) -> None:
        torch._foreach_lerp_(*self._polyak_pairs, self.cfg.tau)  # θ̄ ← θ̄ + τ(θ − θ̄), one kernel for all tensors

    def end_epoch(self) -> None:
        pass  # no learning-rate schedule

    # ------------------------------------------------------------------------------------------------ checkpoint
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_optim": self.critic_optim, "actor_optim": self.actor_optim}


SPEC = AlgorithmSpec(
    "td3bc", "TD3+BC", TD3BCConfig, TD3BC, Loop.EPOCHS, Unit.GRADIENT_STEPS, planned_updates, ModelUse.NONE
)
