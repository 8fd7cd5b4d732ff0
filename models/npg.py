"""Networks of the natural-policy-gradient family (docs/npg.md): mjrl's Gaussian MLP policy, MLP value baseline and
learned reward model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.actor_critic import mlp
from models.dynamics import Standardizer
from models.ensemble import EnsembleMLP


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


class RewardModel(nn.Module):
    """mjrl's learned reward r_φ(s, a, f_i(s, a)), one per ensemble member: a ReLU MLP on the state, the action and
    member i's predicted next state (conditioning on the prediction makes the reward easy to learn, mjrl's README).

    Inputs are scaled by their mean and mean absolute deviation (the next state with the state's statistics), the
    output mapped back by the rewards' (mjrl's RewardNet); the loss is the squared error in reward units.
    """

    def __init__(self, num_members: int, obs_dim: int, act_dim: int, hidden_dims: Sequence[int] = (100, 100)) -> None:
        super().__init__()
        self.net = EnsembleMLP(num_members, 2 * obs_dim + act_dim, 1, hidden_dims, nn.ReLU, "uniform")
        self.obs_scaler = Standardizer(obs_dim, "mad")
        self.act_scaler = Standardizer(act_dim, "mad")
        self.reward_scaler = Standardizer(1, "mad")

    def _inputs(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        obs, act = self.obs_scaler(obs), self.act_scaler(act)
        next_obs = self.obs_scaler(next_obs)
        obs, act = obs.expand(*next_obs.shape[:-1], -1), act.expand(*next_obs.shape[:-1], -1)
        return torch.cat([obs, act, next_obs], dim=-1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Rewards [E, B] for next states [E, B, obs] (member i's rows), with obs/act [E, B, ·] or shared [B, ·]."""
        out = self.net(self._inputs(obs, act, next_obs))
        return (out * self.reward_scaler.scale + self.reward_scaler.mean).squeeze(-1)

    def fit_epochs(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        rewards: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        batch_size: int,
        max_steps: int | None = None,
    ) -> torch.Tensor:
        """Fit every member on (s, a, its own predicted s' [E, n, obs]) -> r like the dynamics under the mjrl recipe
        (own shuffles, whole batches, the step cap checked after each epoch); last epoch's loss per member [E]."""
        self.obs_scaler.fit(obs)
        self.act_scaler.fit(act)
        self.reward_scaler.fit(rewards.reshape(-1, 1))
        x = self._inputs(obs, act, next_obs).detach()  # [E, n, in]
        members, n = x.shape[0], x.shape[1]
        steps_per_epoch = n // batch_size
        losses = torch.zeros(members, device=x.device)
        steps, epoch = 0, 0
        while epoch < epochs and (max_steps is None or steps < max_steps):
            epoch += 1
            order = torch.rand(members, n, device=x.device).argsort(1)[:, : steps_per_epoch * batch_size]
            losses = torch.zeros(members, device=x.device)
            for rows in order.split(batch_size, dim=1):
                batch = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
                prediction = (self.net(batch) * self.reward_scaler.scale + self.reward_scaler.mean).squeeze(-1)
                per_member = (prediction - rewards[rows]).square().mean(-1)
                optimizer.zero_grad(set_to_none=True)
                per_member.sum().backward()
                optimizer.step()
                losses += per_member.detach()
            losses /= max(steps_per_epoch, 1)
            steps += steps_per_epoch
        return losses
