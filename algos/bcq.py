"""BCQ: Batch-Constrained deep Q-learning (Fujimoto, Meger & Precup, ICML 2019; docs/bcq.md), continuous
version as in the official code (sfujim/BCQ, continuous_BCQ/BCQ.py).

Extrapolation error comes from bootstrapping on actions the data never shows, so BCQ only evaluates actions that look
like the data: a conditional VAE G_ω(s) models the behaviour policy, a perturbation network ξ_φ nudges its samples by
at most Φ · max_action, and both the critic target and the policy choose among such generated actions.

Networks: G_ω (models/bcq.py ConditionalVAE; sampling uses z ~ N(0, I) clipped to [−0.5, 0.5]), ξ_φ
(PerturbationActor), twin critics Q_θ1, Q_θ2 (one batched CriticEnsemble), targets φ', θ1', θ2'.

Per batch (s, a, r, s', d), in the official order:

1. VAE        L(ω) = mean (G_ω(s, a) − a)² + ½ KL,   KL = −½ mean(1 + log σ² − μ² − σ²),   z = μ + σ ε.
2. Critics    a'_j = ξ_φ'(s', G_ω(s')_j),  j = 1..n  (n = 10 samples per next state)
              y = r + γ (1 − d) max_j [ λ min_k Q_θk'(s', a'_j) + (1 − λ) max_k Q_θk'(s', a'_j) ]   (λ = 0.75)
              L(θ) = Σ_k mean (Q_θk(s, a) − y)²
3. Actor      L(φ) = −mean Q_θ1(s, ξ_φ(s, G_ω(s)))
4. Targets    θ' ← τ θ + (1 − τ) θ',   φ' ← τ φ + (1 − τ) φ'.

Acting: π(s) = argmax_i Q_θ1(s, a_i),  a_i = ξ_φ(s, G_ω(s)_i),  i = 1..100, computed for all states in one batch.
`algo.actor` is that rule as the observation attacks call a policy (`actor(obs, deterministic=True)[0]`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, cast

import torch

from algos.base import TrainableModule
from algos.sac import adam
from buffers.replay import Batch
from config import (
    OfflineConfig,
    Rule,
    all_positive,
    between,
    discount,
    non_negative,
    one_of,
    polyak_rate,
    positive,
    positive_or_none,
    register_config,
)
from models.actor_critic import CriticEnsemble
from models.bcq import ConditionalVAE, PerturbationActor
from models.seed_stack import SeedStreams
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, planned_updates


@register_config("bcq")
@dataclass
class BCQConfig(OfflineConfig):
    """BCQ (docs/bcq.md, Fujimoto et al.'s continuous BCQ). Defaults are the official code's: one epoch is
    its evaluation period (5e3 iterations), 200 of them its 1e6 iterations."""

    rules: ClassVar[dict[str, Rule]] = {
        "select_noise": one_of("fixed", "fresh"),
        **dict.fromkeys(("actor_lr", "critic_lr", "vae_lr", "num_target_samples", "num_select_samples"), positive),
        **dict.fromkeys(("latent_dim", "latent_clip"), positive_or_none),
        **dict.fromkeys(("phi", "kl_weight"), non_negative),
        **dict.fromkeys(("actor_hidden_dims", "critic_hidden_dims", "vae_hidden_dims"), all_positive),
        "gamma": discount("at 1 the bootstrapped critic targets have no bound"),
        "tau": polyak_rate,
        "lmbda": between(0, 1),
        "vae_log_std_max": lambda value, cfg: (
            None if cfg.vae_log_std_min < value else f"> vae_log_std_min ({cfg.vae_log_std_min:g})"
        ),
    }

    epochs: int = 200
    steps_per_epoch: int = 5000
    batch_size: int = 100
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics and the target perturbation network
    lmbda: float = 0.75  # soft clipped double Q: lmbda * min + (1 - lmbda) * max over the two target critics
    phi: float = 0.05  # largest perturbation, as a fraction of max_action
    actor_lr: float = 1e-3  # perturbation network xi_phi
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    actor_hidden_dims: list[int] = field(default_factory=lambda: [400, 300])
    critic_hidden_dims: list[int] = field(default_factory=lambda: [400, 300])
    vae_hidden_dims: list[int] = field(default_factory=lambda: [750, 750])
    latent_dim: int | None = None  # None: 2 |A|
    kl_weight: float = 0.5
    latent_clip: float | None = 0.5  # decoded samples use z ~ N(0, I) clipped to [-latent_clip, latent_clip]
    vae_log_std_min: float = -4.0
    vae_log_std_max: float = 15.0
    num_target_samples: int = 10  # VAE actions per next state in the critic target
    num_select_samples: int = 100  # VAE actions per state when acting
    # "fixed": the deterministic policy (evaluation, eval.py and its attacks) uses the same num_select_samples
    # latent draws at every call, so it is a function of the observation; "fresh": new draws every call, as the
    # official select_action. Acting with deterministic=False always draws fresh.
    select_noise: str = "fixed"


class BCQPolicy:
    """BCQ's select-action rule as a policy object: `policy(obs, deterministic=True)` -> (action, None) for obs
    [..., obs_dim], differentiable in obs (for gradient attacks). Not a Module: the networks belong to the BCQ."""

    def __init__(self, algo: BCQ) -> None:
        self.algo = algo

    def __call__(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, None]:
        return self.algo.select_action(obs, deterministic), None


class BCQ(TrainableModule):
    needs_dynamics: ClassVar[bool] = False
    stackable: ClassVar[bool] = True  # docs/seeds.md: the update below is written for an optional seed dimension

    def __init__(self, obs_dim: int, act_dim: int, cfg: BCQConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim or 2 * act_dim
        self.vae = ConditionalVAE(
            obs_dim,
            act_dim,
            self.latent_dim,
            cfg.vae_hidden_dims,
            log_std_min=cfg.vae_log_std_min,
            log_std_max=cfg.vae_log_std_max,
            latent_clip=cfg.latent_clip,
        )
        self.perturbation = PerturbationActor(obs_dim, act_dim, cfg.actor_hidden_dims, phi=cfg.phi)
        self.target_perturbation = copy.deepcopy(self.perturbation).requires_grad_(False)
        self.critics = CriticEnsemble(obs_dim, act_dim, cfg.critic_hidden_dims, num_critics=2)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.to(device)
        self._build_optimizers(cfg.epochs)
        self.actor = BCQPolicy(self)
        self._select_generators: dict[torch.device, torch.Generator] = {}
        self._select_seeds = [cfg.seed]  # one per stacked seed: each seed's fixed acting latents
        self._streams: SeedStreams | None = None  # each stacked seed's random streams

    def _build_optimizers(self, epochs: int) -> None:
        self._polyak_pairs = (
            [*self.target_critics.parameters(), *self.target_perturbation.parameters()],
            [*self.critics.parameters(), *self.perturbation.parameters()],
        )
        self.vae_optim = adam(self.vae.parameters(), self.cfg.vae_lr)
        self.critic_optim = adam(self.critics.parameters(), self.cfg.critic_lr)
        self.actor_optim = adam(self.perturbation.parameters(), self.cfg.actor_lr)

    def stack_extras(self, runs: Sequence[TrainableModule], rng: SeedStreams) -> None:
        self.actor = BCQPolicy(self)
        self._select_generators = {}
        self._select_seeds = [cast(BCQ, run).cfg.seed for run in runs]
        self._streams = rng

    def _standard_normal(self, *shape: int, device: torch.device) -> torch.Tensor:
        """ε ~ N(0, I) of `shape`: from the global stream for one run, from each seed's own stream ([S, *shape])
        when seed-stacked."""
        if self._streams is None:
            return torch.randn(*shape, device=device)
        return self._streams.randn(*shape)

    # ------------------------------------------------------------------------------------------------ acting
    def _select_latents(self, rows: int, device: torch.device, deterministic: bool) -> torch.Tensor:
        """[(S,) rows, n, latent] latent draws for the n candidates per state. The fixed draws (same for every row
        and call, from a private generator seeded with the run's seed) leave the global RNG streams untouched."""
        n = self.cfg.num_select_samples
        if deterministic and self.cfg.select_noise == "fixed":
            generator = self._select_generators.get(device)
            if generator is None:
                generator = self._select_generators[device] = torch.Generator(device=device)
            fixed = []
            for seed in self._select_seeds:
                generator.manual_seed(seed)
                fixed.append(torch.randn(n, self.latent_dim, device=device, generator=generator))
            z = torch.stack(fixed) if self._streams is not None else fixed[0]
            return self.vae.clip_latent(z).unsqueeze(-3).expand(*z.shape[:-2], rows, n, self.latent_dim)
        return self.vae.clip_latent(self._standard_normal(rows, n, self.latent_dim, device=device))

    def candidates(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """For obs [(S,) B, obs_dim]: the perturbed VAE actions a_i = ξ_φ(s, G_ω(s)_i) [(S,) B, n, act_dim] and
        Q_θ1 [(S,) B, n]."""
        rows, n = obs.shape[-2], self.cfg.num_select_samples
        repeated = obs.unsqueeze(-2).expand(*obs.shape[:-1], n, obs.shape[-1])
        z = self._select_latents(rows, obs.device, deterministic)
        actions = self.perturbation(repeated, self.vae.decode(repeated, z))
        q1 = self.critics(repeated.flatten(-3, -2), actions.flatten(-3, -2)).select(-2, 0)
        return actions, q1.unflatten(-1, (rows, n))

    def select_action(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """argmax_i Q_θ1(s, a_i) over the candidates, for obs [..., obs_dim] ([S, B, obs_dim] when stacked)."""
        flat = obs if self._streams is not None else obs.reshape(-1, obs.shape[-1])
        actions, q1 = self.candidates(flat, deterministic)
        best = q1.argmax(-1, keepdim=True).unsqueeze(-1).expand(*q1.shape[:-1], 1, actions.shape[-1])
        return actions.gather(-2, best).squeeze(-2).reshape(*obs.shape[:-1], actions.shape[-1])

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.select_action(obs, deterministic)

    # ------------------------------------------------------------------------------------------------ learning
    def vae_loss(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L(ω), reconstruction MSE, KL) with KL = −½ mean(1 + log σ² − μ² − σ²), each [S] when stacked."""
        noise = self._standard_normal(obs.shape[-2], self.latent_dim, device=obs.device)
        recon, mean, log_std = self.vae(obs, act, noise)
        recon_loss = (recon - act).square().mean((-2, -1))
        kl = -0.5 * (1 + 2 * log_std - mean.square() - (2 * log_std).exp()).mean((-2, -1))
        return recon_loss + self.cfg.kl_weight * kl, recon_loss, kl

    def sample_behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        """G_ω(s): one VAE action per row of obs [(S,) B, obs_dim], z ~ N(0, I) clipped."""
        z = self.vae.clip_latent(self._standard_normal(obs.shape[-2], self.latent_dim, device=obs.device))
        return self.vae.decode(obs, z)

    @torch.no_grad()
    def critic_target(self, batch: Batch) -> torch.Tensor:
        """y = r + γ(1 − d) max_j [λ min_k Q̄_k(s', a'_j) + (1 − λ) max_k Q̄_k(s', a'_j)], a'_j = ξ_φ'(s', G_ω(s')_j)."""
        n, lmbda = self.cfg.num_target_samples, self.cfg.lmbda
        next_obs = batch.next_obs.repeat_interleave(n, dim=-2)  # rows [s'_1 × n, s'_2 × n, ...]
        next_act = self.target_perturbation(next_obs, self.sample_behaviour(next_obs))
        q = self.target_critics(next_obs, next_act)  # [(S,) 2, B * n]
        soft_clipped = lmbda * q.amin(-2) + (1.0 - lmbda) * q.amax(-2)
        next_value = soft_clipped.unflatten(-1, (-1, n)).amax(-1)
        return batch.rew + self.cfg.gamma * (1.0 - batch.done) * next_value

    def update(self, batch: Batch, num_real: int = 0) -> dict[str, torch.Tensor]:
        """One BCQ iteration (VAE, critics, perturbation actor, targets); returns detached metrics.

        Shapes work with or without a leading seed dimension (docs/seeds.md): every loss is a mean over the batch,
        summed over seeds for the backward pass, so each seed's gradient is that of its own loss."""
        vae_loss, recon_loss, kl = self.vae_loss(batch.obs, batch.act)
        self.vae_optim.zero_grad(set_to_none=True)
        vae_loss.sum().backward()
        self.vae_optim.step()

        target = self.critic_target(batch)
        q = self.critics(batch.obs, batch.act)  # [(S,) 2, B]
        critic_loss = (q - target.unsqueeze(-2)).square().mean(-1).sum(-1)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optim.step()

        with torch.no_grad():
            sampled = self.sample_behaviour(batch.obs)
        self.critics.requires_grad_(False)  # the actor's gradient flows through Q_θ1 without touching its weights
        actor_loss = -self.critics(batch.obs, self.perturbation(batch.obs, sampled)).select(-2, 0).mean(-1)
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optim.step()
        self.critics.requires_grad_(True)

        self.soft_update_targets()
        return {
            "loss/vae": vae_loss.detach(),
            "loss/recon": recon_loss.detach(),
            "loss/kl": kl.detach(),
            "loss/critic": critic_loss.detach() / 2,
            "loss/actor": actor_loss.detach(),
            "q_mean": q.detach().mean((-2, -1)),
        }

    @torch.no_grad()
    def soft_update_targets(self) -> None:
        torch._foreach_lerp_(*self._polyak_pairs, self.cfg.tau)  # θ̄ ← θ̄ + τ(θ − θ̄), one kernel for all tensors

    def attack_critics(self) -> torch.nn.Module | None:
        """Its Q critics, which the value-based observation attacks query (eval.py --choice attack)."""
        return self.critics

    def end_epoch(self) -> None:
        pass  # no learning-rate schedule

    # ------------------------------------------------------------------------------------------------ checkpoint
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae_optim": self.vae_optim, "critic_optim": self.critic_optim, "actor_optim": self.actor_optim}


SPEC = AlgorithmSpec("bcq", "BCQ", BCQConfig, BCQ, Loop.EPOCHS, Unit.GRADIENT_STEPS, planned_updates, ModelUse.NONE)
