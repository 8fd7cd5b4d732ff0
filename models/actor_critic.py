"""Policy and value networks for the SAC family, and the deterministic policy of behaviour cloning."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.ensemble import EnsembleMLP, soft_clamp

LOG_2 = math.log(2.0)


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_dims: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    init: str = "default",
) -> nn.Sequential:
    """Linear layers with `activation` between them and a linear output; init "default" is torch's, "xavier_uniform"
    Glorot-uniform weights with zero biases (PMDB/MAGO's networks)."""
    dims = [in_dim, *hidden_dims]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    layers.append(nn.Linear(dims[-1], out_dim))
    if init == "xavier_uniform":
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    elif init != "default":
        raise ValueError(f"unknown init {init!r}")
    return nn.Sequential(*layers)


def tanh_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u)/du| = 2 (log 2 − u − softplus(−2u)), exact and stable for large |u| (no 1e-6 guard)."""
    return 2.0 * (LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))


def squashed_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor, max_action: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = max_action * tanh(mean + σ ε) for given standard-normal noise ε, and log π(a|s) [..., 1] with
    OfflineRL-Kit's 1e-6-guarded tanh correction (the noise is an argument so seed-stacked actors can draw it
    from each seed's own generator)."""
    squashed = torch.tanh(mean + log_std.exp() * noise)
    gaussian_log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    correction = torch.log(max_action * (1 - squashed.square()) + 1e-6).sum(-1, keepdim=True)
    return max_action * squashed, gaussian_log_prob - correction


class TanhGaussianActor(nn.Module):
    """a = max_action * tanh(u), u ~ N(mu(s), sigma(s)); state-conditioned log-std clamped to [min, max].

    The mean is not squashed before sampling (OfflineRL-Kit's `unbounded=True`); the log-prob of `forward` carries
    the tanh change-of-variables correction with OfflineRL-Kit's 1e-6 guard. `log_std_clamp="soft"` bounds the
    log-std with softplus edges instead of a hard clamp (PMDB/MAGO); `sample_n` and `log_prob` use the exact tanh
    Jacobian, as PMDB/MAGO's policy does.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        max_action: float = 1.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        log_std_clamp: str = "hard",
        init: str = "default",
    ) -> None:
        super().__init__()
        if log_std_clamp not in ("hard", "soft"):
            raise ValueError(f"unknown log_std_clamp {log_std_clamp!r}")
        self.act_dim, self.max_action = act_dim, max_action
        self.log_std_min, self.log_std_max, self.log_std_clamp = log_std_min, log_std_max, log_std_clamp
        self.net = mlp(obs_dim, 2 * act_dim, hidden_dims, init=init)

    def distribution_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh Gaussian mean and log-std."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if self.log_std_clamp == "soft":
            return mean, soft_clamp(log_std, self.log_std_min, self.log_std_max)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample_n(self, obs: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`num` reparameterised actions per state [num, B, act_dim] and their log-densities [num, B]."""
        mean, log_std = self.distribution_params(obs)
        noise = torch.randn(num, *mean.shape, device=mean.device, dtype=mean.dtype)
        pre_tanh = mean + log_std.exp() * noise
        gaussian = -0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = (gaussian - tanh_log_det(pre_tanh) - math.log(self.max_action)).sum(-1)
        return self.max_action * torch.tanh(pre_tanh), log_prob

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
        """log π(a|s) of given actions [..., B, act_dim] at states [B, obs_dim], summed over action dimensions [..., B].

        With beta > 0 each dimension's term is weighted by stopgrad(σ_d(s))^{2β} divided by its mean over the batch
        (PMDB/MAGO's β-weighted likelihood, the policy-side twin of the β-NLL). Actions are clipped to ±(1 − 1e-6)
        of max_action before atanh.
        """
        mean, log_std = self.distribution_params(obs)
        squashed = (actions / self.max_action).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        pre_tanh = torch.atanh(squashed)
        per_dim = (
            -0.5 * ((pre_tanh - mean) / log_std.exp()).square()
            - log_std
            - 0.5 * math.log(2 * math.pi)
            - tanh_log_det(pre_tanh)
            - math.log(self.max_action)
        )
        if beta > 0:
            weight = log_std.detach().mul(2 * beta).exp()  # σ^{2β}
            per_dim = per_dim * (weight / weight.mean(-2, keepdim=True))
        return per_dim.sum(-1)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-probability [..., 1]."""
        mean, log_std = self.distribution_params(obs)
        noise = torch.zeros_like(mean) if deterministic else torch.randn_like(mean)
        return squashed_gaussian_sample(mean, log_std, noise, self.max_action)

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

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.net(obs))

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, None]:
        """(action, None): the same call shape as the Gaussian actor's (action, log-prob); there is no log-prob."""
        return self.action(obs), None

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs)[0]


class CriticEnsemble(nn.Module):
    """`num_critics` Q-networks computed together: Q(s, a) -> [num_critics, B]."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        num_critics: int = 2,
        init: str = "uniform",
    ):
        super().__init__()
        self.num_critics = num_critics
        self.net = EnsembleMLP(num_critics, obs_dim + act_dim, 1, hidden_dims, nn.ReLU, init=init)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)
