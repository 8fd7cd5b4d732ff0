"""Soft Actor-Critic, the policy core every model-based algorithm here extends (docs/sac.md).

Subclasses change what is genuinely theirs by overriding a hook: `critic_target` / `next_value` (MICRO's conservative
operator and backup variants), `model_reward` (MOPO's penalty on model rewards), `actor_loss` (CQL's behaviour-cloning
warm-up). An algorithm that updates in another order or adds a critic term (CQL) calls the steps `actor_step`,
`alpha_step` and `critic_step` from its own `update`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from algos.base import TrainableModule
from buffers.replay import Batch
from config import SACConfig
from models.actor_critic import CriticEnsemble, TanhGaussianActor
from models.dynamics import UncertaintyFn


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """Fused Adam: one kernel for all parameters (several times faster than the per-tensor loop on CPU)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class SAC(TrainableModule):
    """SAC with an ensemble of critics, automatic entropy tuning with an optional clamp, and Polyak targets."""

    rollout_uncertainty: UncertaintyFn | None = None  # the statistic `model_reward` needs from each model step
    needs_dynamics: bool = False  # True when updates query the dynamics model (the constructor then takes it)
    stackable: bool = True  # `stack` applies: the update is SAC's own, with shape-generic hooks (docs/seeds.md)

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, epochs: int, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden_dims, 1.0, cfg.log_std_min, cfg.log_std_max)
        self.critics = CriticEnsemble(obs_dim, act_dim, cfg.hidden_dims, cfg.num_critics)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.log_alpha = nn.Parameter(torch.tensor(0.0 if cfg.auto_alpha else float(torch.tensor(cfg.alpha).log())))
        self.register_buffer("alpha", self.log_alpha.detach().exp())
        self.to(device)
        self._build_optimizers(epochs)

    def _build_optimizers(self, epochs: int) -> None:
        cfg = self.cfg
        self._polyak_pairs = (list(self.target_critics.parameters()), list(self.critics.parameters()))
        self.actor_optim = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_optim = adam(self.critics.parameters(), cfg.critic_lr)
        self.alpha_optim = adam([self.log_alpha], cfg.alpha_lr)
        self.actor_scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optim, epochs)
            if cfg.lr_schedule == "cosine"
            else None
        )

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor.act(obs, deterministic)

    def model_reward(self, reward: torch.Tensor, info: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reward stored for a model transition; plain SAC keeps the model's reward."""
        return reward

    # ------------------------------------------------------------------------------------------------ learning
    @torch.no_grad()
    def next_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Soft value of the next state: min_j Q̄_j(s', a') − α log π(a'|s'), a' ~ π(·|s')."""
        next_act, next_log_prob = self.actor(next_obs)
        return self.target_critics(next_obs, next_act).amin(-2) - self.alpha * next_log_prob.squeeze(-1)

    @torch.no_grad()
    def backup_value(self, next_obs: torch.Tensor, max_q_actions: int | None, deterministic: bool) -> torch.Tensor:
        """The backup variants of the conservative family (MICRO, CQL): with `max_q_actions` = n, the max over n
        sampled a' of each target critic, then the min over critics; with `deterministic`, min_j Q̄_j(s', a') without
        the entropy term; otherwise the soft value (`next_value`)."""
        if max_q_actions:
            repeated = next_obs.repeat_interleave(max_q_actions, dim=-2)
            q = self.target_critics(repeated, self.actor(repeated)[0])  # [(S,) critics, B * n]
            return q.unflatten(-1, (-1, max_q_actions)).amax(-1).amin(-2)
        if deterministic:
            return self.target_critics(next_obs, self.actor(next_obs)[0]).amin(-2)
        return SAC.next_value(self, next_obs)

    @torch.no_grad()
    def critic_target(self, batch: Batch, num_real: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """y = r + γ(1 − d) V(s'), and any metrics of the target. The first `num_real` rows are dataset
        transitions, the rest model transitions (a conservative operator may treat them differently)."""
        return batch.rew + self.cfg.gamma * (1.0 - batch.done) * self.next_value(batch.next_obs), {}

    def update(self, batch: Batch, num_real: int = 0) -> dict[str, torch.Tensor]:
        """One SAC step (critics, actor, α, targets) in OfflineRL-Kit's order; returns detached metrics.

        Shapes work with or without a leading seed dimension (`SAC.stack`): losses are means over the batch, then
        summed over seeds for the backward pass, so each seed's gradient is that of its own loss."""
        target, metrics = self.critic_target(batch, num_real)
        q = self.critics(batch.obs, batch.act)  # [(S,) critics, B]
        critic_loss = (q - target.unsqueeze(-2)).square().mean(-1).sum(-1)
        self.critic_step(critic_loss)
        actor_loss, log_prob = self.actor_step(batch)
        metrics.update({"loss/actor": actor_loss, "loss/critic": critic_loss.detach() / self.cfg.num_critics})
        metrics.update(self.alpha_step(log_prob))
        self.soft_update_targets()
        metrics.update(
            {
                "alpha": self.alpha.clone().squeeze(-1),
                "q_mean": q.detach().mean((-2, -1)),
                "entropy": -log_prob.mean(-1),
            }
        )
        return metrics

    def critic_step(self, critic_loss: torch.Tensor) -> None:
        """One Adam step of the critics on `critic_loss` ([S] per seed when stacked, summed for the backward)."""
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optim.step()

    def actor_loss(self, batch: Batch, action: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        """L_π = mean_b [α log π(ã|s) − min_j Q_j(s, ã)] for the reparameterised ã ~ π(·|s) with log-density
        `log_prob` [(S,) B]; the critics are frozen while it is taken. [S] per seed when stacked."""
        q_pi = self.critics(batch.obs, action).amin(-2)
        return (self.alpha * log_prob - q_pi).mean(-1)

    def actor_step(
        self, batch: Batch, sample: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step of the actor on `actor_loss`; returns that loss and log π(ã|s) [(S,) B], both detached.
        `sample` is (ã, log π(ã|s)) as `self.actor(batch.obs)` returned it earlier, with its graph (an update that
        steps α on that sample before the actor, as the CQL authors' does); None draws it here."""
        self.critics.requires_grad_(False)  # the actor's gradient flows through Q without touching its weights
        action, log_prob = self.actor(batch.obs) if sample is None else sample
        log_prob = log_prob.squeeze(-1)
        actor_loss = self.actor_loss(batch, action, log_prob)
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optim.step()
        self.critics.requires_grad_(True)
        return actor_loss.detach(), log_prob.detach()

    def alpha_step(self, log_prob: torch.Tensor) -> dict[str, torch.Tensor]:
        """With `auto_alpha`: one Adam step of log α on −mean_b [log α (log π + H_target)], then α = exp(log α),
        clamped at `alpha_max`; returns its loss. Without: nothing."""
        if not self.cfg.auto_alpha:
            return {}
        alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy)).mean(-1)
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.sum().backward()
        self.alpha_optim.step()
        with torch.no_grad():
            alpha = self.log_alpha.exp()
            self.alpha.copy_(alpha if self.cfg.alpha_max is None else alpha.clamp(max=self.cfg.alpha_max))
        return {"loss/alpha": alpha_loss.detach()}

    @torch.no_grad()
    def soft_update_targets(self) -> None:
        torch._foreach_lerp_(*self._polyak_pairs, self.cfg.tau)  # θ̄ ← θ̄ + τ(θ − θ̄), one kernel for all tensors

    def attack_critics(self) -> nn.Module | None:
        """Its Q critics, which the value-based observation attacks query (eval.py --choice attack)."""
        return self.critics

    def end_epoch(self) -> None:
        if self.actor_scheduler is not None:
            self.actor_scheduler.step()

    # ------------------------------------------------------------------------------------------------ checkpoint
    def optimizers(self) -> dict[str, Any]:
        named = {"actor_optim": self.actor_optim, "critic_optim": self.critic_optim, "alpha_optim": self.alpha_optim}
        if self.actor_scheduler is not None:
            named["actor_scheduler"] = self.actor_scheduler
        return named
