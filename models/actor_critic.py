"""Policy and value networks for the SAC family, and the deterministic policy of behaviour cloning."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.ensemble import EnsembleMLP


def mlp(in_dim: int, out_dim: int, hidden_dims: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with `activation` between them and a linear output."""
    dims = [in_dim, *hidden_dims]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """a = max_action * tanh(u), u ~ N(mu(s), sigma(s)); state-conditioned log-std clamped to [min, max].

    The mean is not squashed before sampling (OfflineRL-Kit's `unbounded=True`); the log-prob carries the tanh
    change-of-variables correction with OfflineRL-Kit's 1e-6 guard.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        max_action: float = 1.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.act_dim, self.max_action = act_dim, max_action
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.net = mlp(obs_dim, 2 * act_dim, hidden_dims)

    def distribution_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh Gaussian mean and log-std."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-probability [..., 1]."""
        mean, log_std = self.distribution_params(obs)
        std = log_std.exp()
        noise = torch.zeros_like(mean) if deterministic else torch.randn_like(mean)
        pre_tanh = mean + std * noise
        squashed = torch.tanh(pre_tanh)
        gaussian_log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
        correction = torch.log(self.max_action * (1 - squashed.square()) + 1e-6).sum(-1, keepdim=True)
        return self.max_action * squashed, gaussian_log_prob - correction

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs, deterministic)[0]


class DeterministicActor(nn.Module):
    """a = max_action * tanh(f(s)), f an MLP (OfflineRL-Kit's `Actor` on an `MLP` backbone, used by its BC).

    It has no `distribution_params`: attacks that need a Gaussian policy refuse it.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_dims: Sequence[int] = (256, 256), max_action: float = 1.0
    ) -> None:
        super().__init__()
        self.max_action = max_action
        self.net = mlp(obs_dim, act_dim, hidden_dims)

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, None]:
        """(action, None): the same call shape as the Gaussian actor's (action, log-prob); there is no log-prob."""
        return self.max_action * torch.tanh(self.net(obs)), None

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs)[0]


class CriticEnsemble(nn.Module):
    """`num_critics` Q-networks computed together: Q(s, a) -> [num_critics, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dims: Sequence[int] = (256, 256), num_critics: int = 2):
        super().__init__()
        self.num_critics = num_critics
        self.net = EnsembleMLP(num_critics, obs_dim + act_dim, 1, hidden_dims, nn.ReLU, init="uniform")

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)
