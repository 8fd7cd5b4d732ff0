"""BCQ's own networks (Fujimoto et al., 2019; docs/bcq.md): the conditional VAE G_ω(s) that models the
behaviour policy, and the perturbation network ξ_φ(s, a). Its twin critics are `models.actor_critic.CriticEnsemble`.

Both take inputs with any leading dimensions ([..., obs_dim]), so several candidate actions per state are one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.actor_critic import mlp


class ConditionalVAE(nn.Module):
    """G_ω: encoder (s, a) -> hidden -> (μ, log σ), log σ clamped to [log_std_min, log_std_max];
    decoder (s, z) -> hidden -> max_action · tanh.

    Reconstruction draws z = μ + σ ε (reparameterised); sampling an action without z draws z ~ N(0, I) clipped to
    [−latent_clip, latent_clip] (no clipping when latent_clip is None).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (750, 750),
        max_action: float = 1.0,
        log_std_min: float = -4.0,
        log_std_max: float = 15.0,
        latent_clip: float | None = 0.5,
    ) -> None:
        super().__init__()
        self.latent_dim, self.max_action, self.latent_clip = latent_dim, max_action, latent_clip
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        # One output layer for μ and log σ: the same as the original's two heads (each output unit is its own row).
        self.encoder = mlp(obs_dim + act_dim, 2 * latent_dim, hidden_dims)
        self.decoder = mlp(obs_dim + latent_dim, act_dim, hidden_dims)

    def encode(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and clamped log-std of z given (s, a)."""
        mean, log_std = self.encoder(torch.cat([obs, act], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction of a, μ, log σ) with z = μ + σ ε; ε ~ N(0, I) drawn here unless given (seed-stacked calls
        bring each seed's draws)."""
        mean, log_std = self.encode(obs, act)
        z = mean + log_std.exp() * (torch.randn_like(mean) if noise is None else noise)
        return self.decode(obs, z), mean, log_std

    def clip_latent(self, z: torch.Tensor) -> torch.Tensor:
        """A standard normal draw as a sampling latent: clipped to ±latent_clip."""
        return z if self.latent_clip is None else z.clamp(-self.latent_clip, self.latent_clip)

    def sample_latent(
        self, *shape: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z ~ N(0, I) of shape [*shape, latent_dim], clipped to ±latent_clip."""
        return self.clip_latent(torch.randn(*shape, self.latent_dim, device=device, generator=generator))

    def decode(self, obs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Actions for obs [..., obs_dim]; without z, a fresh clipped latent sample per row."""
        if z is None:
            z = self.sample_latent(*obs.shape[:-1], device=obs.device)
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, z], dim=-1)))


class PerturbationActor(nn.Module):
    """ξ_φ: (s, a) -> hidden -> Φ · max_action · tanh(·), applied as clip(a + ξ_φ(s, a), −max_action, max_action)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dims: Sequence[int] = (400, 300),
        max_action: float = 1.0,
        phi: float = 0.05,
    ) -> None:
        super().__init__()
        self.max_action, self.phi = max_action, phi
        self.net = mlp(obs_dim + act_dim, act_dim, hidden_dims)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The perturbed action (a + ξ_φ(s, a), clipped), for inputs [..., dim]."""
        xi = self.phi * self.max_action * torch.tanh(self.net(torch.cat([obs, act], dim=-1)))
        return (act + xi).clamp(-self.max_action, self.max_action)
