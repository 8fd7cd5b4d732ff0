"""MICRO: model-based offline RL with a conservative Bellman operator (Liu et al., IJCAI 2024; docs/micro.md).

Same pipeline as MOPO (ensemble model, short rollouts, SAC on real + model data), but model rewards are stored
unpenalised and conservatism enters the critic target instead. For a transition (s, a, r, s', d):

1. Uncertainty set U(s, a): K next states sampled from each elite member, ŝ'_{m,k} = μ_m(s, a) + σ_m(s, a) ε.
2. Their values under the target critics and the current policy: q_{m,k} = min_j Q̄_j(ŝ'_{m,k}, a'), a' ~ π(·|ŝ'),
   averaged over samples: q_m = mean_k q_{m,k}.
3. Spread u(s, a) = mean_m q_m − min_m q_m ≥ 0, for model transitions only (u = 0 on dataset rows).
4. y = r + γ(1 − d) [V(s') − β u(s, a)], then y ← max(y, 0).

Since mean − β(mean − min) = (1 − β) E_U[V] + β min_U V, β interpolates between the standard and the robust backup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, cast

import torch

from algos.sac import SAC
from buffers.replay import Batch
from config import ModelBasedConfig, Rule, one_of, penalty_weight, positive, register_config
from models.dynamics import EnsembleDynamics
from models.seed_stack import SeedStreams
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, planned_updates

MAX_Q_BACKUP_ACTIONS = 10  # sampled next actions per state for `max_q_backup` (as in MOBILE/MICRO)


@register_config("micro")
@dataclass
class MICROConfig(ModelBasedConfig):
    """MICRO (docs/micro.md): conservative Bellman operator over the model's next-state uncertainty set.

    The critic ensemble size (MICRO's `num_q_ensemble`) is `sac.num_critics`.
    """

    rules: ClassVar[dict[str, Rule]] = {
        "num_samples": positive,
        "uncertainty_precision": one_of("fp32", "bf16"),
        "penalty_coef": penalty_weight,  # β: 0 is the standard backup, 1 the robust one (min over the set)
    }

    penalty_coef: float = 1.0  # beta: weight of (mean - min) of the next-state values over the uncertainty set
    num_samples: int = 10  # K next states sampled from each elite member
    deterministic_backup: bool = False  # drop the -alpha log pi term from the backup
    max_q_backup: bool = False  # next value = max over 10 sampled next actions (per critic), then min over critics
    clamp_target: bool = True  # y <- max(y, 0) as the original (assumes non-negative returns)
    uncertainty_precision: str = "fp32"  # bf16: autocast the K x elites value evaluations (most of MICRO's cost)


@torch.no_grad()
def sample_next_obs(dynamics: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, num_samples: int) -> torch.Tensor:
    """`num_samples` next states from every elite: the uncertainty set U(s, a), shape [elites, K, B, obs].

    A deterministic model (loss="mse") gives each elite's mean K times.
    """
    mean, logvar = dynamics(obs, act)
    mean, logvar = mean[dynamics.elites, :, : dynamics.obs_dim], None if logvar is None else logvar[dynamics.elites]
    mean = (mean + obs).unsqueeze(1).expand(-1, num_samples, -1, -1)
    if logvar is None:
        return mean
    std = torch.exp(0.5 * logvar[..., : dynamics.obs_dim]).unsqueeze(1)
    return mean + std * torch.randn_like(mean)


class MICRO(SAC):
    needs_dynamics = True

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: MICROConfig,
        device: torch.device | str = "cpu",
        dynamics: EnsembleDynamics | None = None,
    ) -> None:
        super().__init__(obs_dim, act_dim, cfg.sac, cfg.epochs, device)
        self.micro_cfg = cfg
        # The sampler bound to the model, not a submodule: the model is saved in its own file, not in every policy
        # checkpoint. Without a model (e.g. loaded for evaluation) the policy acts but cannot be trained.
        self.sample_next_obs = None if dynamics is None else partial(sample_next_obs, dynamics)
        # Stacked seeds (`SAC.stack`): each seed's own model and random streams.
        self.seed_samplers: list[Callable[..., torch.Tensor]] | None = None
        self.streams: SeedStreams | None = None

    def stack_extras(self, runs: Sequence[SAC], rng: SeedStreams) -> None:
        """Each seed keeps its own dynamics model, sampled inside the seed's random streams."""
        self.seed_samplers = [cast(MICRO, run).sample_next_obs for run in runs]
        self.streams = rng

    @torch.no_grad()
    def next_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """V(s') for the backup; `max_q_backup` and `deterministic_backup` are MICRO's (and MOBILE's) variants."""
        max_q_actions = MAX_Q_BACKUP_ACTIONS if self.micro_cfg.max_q_backup else None
        return self.backup_value(next_obs, max_q_actions, self.micro_cfg.deterministic_backup)

    def _uncertainty_set(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """K next states from every elite: [elites, K, B, obs], or [S, elites, K, B, obs] for stacked seeds."""
        num_samples = self.micro_cfg.num_samples
        if self.seed_samplers is not None and self.streams is not None:
            samples = []
            for seed, sample in enumerate(self.seed_samplers):
                with self.streams.active(seed):
                    samples.append(sample(obs[seed], act[seed], num_samples))
            return torch.stack(samples)
        if self.sample_next_obs is None:
            raise RuntimeError("MICRO needs its dynamics model to train; pass dynamics= to the constructor")
        return self.sample_next_obs(obs, act, num_samples)

    @torch.no_grad()
    def value_spread(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """u(s, a) = mean_m q_m − min_m q_m over the elites' sampled next states."""
        next_states = self._uncertainty_set(obs, act)  # [(S,) elites, K, B, obs]
        flat = next_states.reshape(*obs.shape[:-2], -1, next_states.shape[-1])
        bf16 = self.micro_cfg.uncertainty_precision == "bf16"
        with torch.autocast(flat.device.type, dtype=torch.bfloat16, enabled=bf16):
            q = self.target_critics(flat, self.actor(flat)[0]).amin(-2)
        q = q.float().view(next_states.shape[:-1])
        member_values = q.mean(-2)  # [(S,) elites, B]
        return member_values.mean(-2) - member_values.amin(-2)

    @torch.no_grad()
    def critic_target(self, batch: Batch, num_real: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """y = max(r + γ(1 − d)[V(s') − β u(s, a)], 0), u computed on the model rows only."""
        penalty = torch.zeros_like(batch.rew)
        has_model_rows = num_real < penalty.shape[-1]
        if has_model_rows:
            penalty[..., num_real:] = self.value_spread(batch.obs[..., num_real:, :], batch.act[..., num_real:, :])
        next_value = self.next_value(batch.next_obs) - self.micro_cfg.penalty_coef * penalty
        target = batch.rew + self.cfg.gamma * (1.0 - batch.done) * next_value
        if self.micro_cfg.clamp_target:
            target = target.clamp(min=0.0)
        model_penalty = penalty[..., num_real:].mean(-1) if has_model_rows else penalty.new_zeros(penalty.shape[:-1])
        return target, {"penalty": model_penalty}


SPEC = AlgorithmSpec(
    "micro", "MICRO", MICROConfig, MICRO, Loop.EPOCHS, Unit.GRADIENT_STEPS, planned_updates, ModelUse.ROLLOUTS
)
