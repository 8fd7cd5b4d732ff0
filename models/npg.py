"""Networks of the natural-policy-gradient family (docs/npg.md): mjrl's Gaussian MLP policy and MLP value baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.actor_critic import mlp


class GaussianMLPPolicy(nn.Module):
    """a ~ N(μ(s), diag σ²) with a tanh MLP mean and a state-independent log σ (mjrl's `gaussian_mlp.MLP`).

    The output layer starts 100x smaller than torch's default, so the first policy acts near zero with the initial
    σ = exp(init_log_std); log σ is clamped to [min_log_std, max_log_std] after every update (`clamp_log_std`).
    The input is (s ⊙ obs_mask − obs_shift) / (obs_scale + 1e-6), mjrl's form: `obs_mask` is mjrl's per-task
    observation mask (hopper: velocities × 0.02; ones otherwise), fixed at construction, so the policy reads raw
    observations wherever it runs (training, evaluation, eval.py) and sees what mjrl's policy saw; `obs_shift` and
    `obs_scale` are the identity unless set.
    Actions are not squashed: the environment and the models receive them clipped to [-1, 1]; log-probabilities
    are those of the unclipped Gaussian sample.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        init_log_std: float = 0.0,
        min_log_std: float = -2.5,
        max_log_std: float = 1.0,
        obs_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.act_dim, self.min_log_std, self.max_log_std = act_dim, min_log_std, max_log_std
        self.mean_net = mlp(obs_dim, act_dim, hidden_dims, nn.Tanh)
        with torch.no_grad():
            self.mean_net[-1].weight.mul_(1e-2)
            self.mean_net[-1].bias.mul_(1e-2)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        self.register_buffer(  # from the config, not the checkpoint
            "obs_mask", torch.ones(obs_dim) if obs_mask is None else obs_mask.clone().float(), persistent=False
        )
        self.register_buffer("obs_shift", torch.zeros(obs_dim))
        self.register_buffer("obs_scale", torch.ones(obs_dim))

    def normalized_input(self, obs: torch.Tensor) -> torch.Tensor:
        """What the mean network reads: the masked observation, shifted and scaled."""
        return (obs * self.obs_mask - self.obs_shift) / (self.obs_scale + 1e-6)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_net(self.normalized_input(obs))

    def distribution_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std [..., act_dim] (the log-std broadcast to the batch)."""
        mean = self.mean(obs)
        return mean, self.log_std.expand_as(mean)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log-probability [..., 1]); deterministic gives the mean. The action is not clipped."""
        mean, log_std = self.distribution_params(obs)
        action = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return action, self.log_prob(obs, action, mean).unsqueeze(-1)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """log π(a|s) [...] of the diagonal Gaussian."""
        mean = self.mean(obs) if mean is None else mean
        z = (act - mean) / self.log_std.exp()
        return -0.5 * z.square().sum(-1) - self.log_std.sum() - 0.5 * self.act_dim * math.log(2 * math.pi)

    def kl_from(self, obs: torch.Tensor, old_mean: torch.Tensor, old_log_std: torch.Tensor) -> torch.Tensor:
        """KL(π_old(·|s) ‖ π(·|s)) per state [...], differentiable in the current parameters."""
        mean, log_std = self.distribution_params(obs)
        old_var, var = (2 * old_log_std).exp(), (2 * log_std).exp()
        return (log_std - old_log_std + (old_var + (old_mean - mean).square()) / (2 * var) - 0.5).sum(-1)

    @torch.no_grad()
    def clamp_log_std(self) -> None:
        self.log_std.clamp_(self.min_log_std, self.max_log_std)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The action an environment or model receives: the (mean or sampled) action clipped to [-1, 1]."""
        return self(obs, deterministic)[0].clamp(-1.0, 1.0)


class ValueBaseline(nn.Module):
    """mjrl's `MLPBaseline`: V(s, t) from the (masked, as the policy's) observation clipped to ±10 and divided by 10
    and the time features (t/1000)^k for k = 1..4 (t = step within the path), through a ReLU MLP."""

    def __init__(
        self, obs_dim: int, hidden_dims: Sequence[int] = (128, 128), obs_mask: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim + 4, 1, hidden_dims)
        self.register_buffer(  # from the config, not the checkpoint
            "obs_mask", torch.ones(obs_dim) if obs_mask is None else obs_mask.clone().float(), persistent=False
        )

    def features(self, obs: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (timestep.to(obs.dtype) / 1000.0).unsqueeze(-1)
        masked = obs * self.obs_mask
        return torch.cat([masked.clamp(-10.0, 10.0) / 10.0, t, t.square(), t.pow(3), t.pow(4)], dim=-1)

    def forward(self, obs: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """V [...] for observations [..., obs_dim] at steps `timestep` [...]."""
        return self.net(self.features(obs, timestep)).squeeze(-1)
