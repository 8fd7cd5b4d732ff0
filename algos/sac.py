"""Soft Actor-Critic, the policy core every model-based algorithm here extends (docs/sac.md).

Subclasses change what is genuinely theirs by overriding a hook: `critic_target` / `next_value` (MICRO's conservative
operator and backup variants), `model_reward` (MOPO's penalty on model rewards).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from algos.base import TrainableModule
from buffers.replay import Batch
from config import SACConfig
from models.actor_critic import CriticEnsemble, TanhGaussianActor
from models.seed_stack import SeedStack, SeedStackedActor, SeedStreams


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """Fused Adam: one kernel for all parameters (several times faster than the per-tensor loop on CPU)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class SAC(TrainableModule):
    """SAC with an ensemble of critics, automatic entropy tuning with an optional clamp, and Polyak targets."""

    penalty_type: str | None = None  # the model uncertainty `model_reward` needs from each rollout step, if any
    needs_dynamics: bool = False  # True when updates query the dynamics model (the constructor then takes it)
    stackable: bool = True  # `SAC.stack` applies: the update is SAC's own, with shape-generic hooks

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

    @classmethod
    def stack(cls, runs: Sequence[SAC], rng: SeedStreams, epochs: int) -> SAC:
        """S freshly built runs of this algorithm as one seed-stacked instance (models/seed_stack.py): networks,
        targets and α gain a leading seed dimension, batches and outputs carry it ([S, B, ...]), and every other
        attribute (config, MOPO's penalty, ...) is the first run's. Build each run under its own seed and call
        `rng.capture()` after it, so the stacked instance starts exactly where each run alone would."""
        stacked = copy.copy(runs[0])
        stacked._parameters, stacked._buffers, stacked._modules = {}, {}, dict(runs[0]._modules)
        stacked.actor = SeedStackedActor([run.actor for run in runs], rng)
        stacked.critics = SeedStack([run.critics for run in runs])
        stacked.target_critics = SeedStack([run.target_critics for run in runs]).requires_grad_(False)
        stacked.log_alpha = nn.Parameter(torch.stack([run.log_alpha.detach() for run in runs]).unsqueeze(-1))
        stacked.register_buffer("alpha", torch.stack([run.alpha for run in runs]).unsqueeze(-1))
        stacked.num_seeds = len(runs)
        stacked._build_optimizers(epochs)
        stacked.stack_extras(runs, rng)
        return stacked

    def stack_extras(self, runs: Sequence[SAC], rng: SeedStreams) -> None:
        """What a subclass keeps per seed in a stacked instance (MICRO: each seed's dynamics model)."""

    # ------------------------------------------------------------------------------------------------ stacked seeds
    def _seed_slice(self, value: torch.Tensor, seed: int, single_shape: torch.Size) -> torch.Tensor:
        return value[seed].detach().clone().reshape(single_shape)

    def seed_training_state(self, seed: int, template: SAC) -> dict[str, Any]:
        """On a stacked instance: what seed `seed`'s run alone would checkpoint (`training_state()` of `template`,
        an unstacked instance of the same algorithm and config, filled with the seed's slice)."""
        modules = {}
        for name, child in self.named_children():
            if isinstance(child, SeedStack):
                modules |= {f"{name}.{key}": value for key, value in child.unstack()[seed].items()}
        single = template.state_dict()
        for name in ("log_alpha", "alpha"):
            modules[name] = self._seed_slice(getattr(self, name), seed, single[name].shape)
        template.load_state_dict(modules)
        for stacked_optim, single_optim in zip(self.optimizers().values(), template.optimizers().values()):
            state = stacked_optim.state_dict()
            if isinstance(stacked_optim, torch.optim.Optimizer):
                shapes = [p.shape for group in single_optim.param_groups for p in group["params"]]
                state["state"] = {
                    index: {
                        key: value if key == "step" else self._seed_slice(value, seed, shapes[index])
                        for key, value in per_param.items()
                    }
                    for index, per_param in state["state"].items()
                }
            single_optim.load_state_dict(state)
        return template.training_state()

    def load_seed_training_state(self, seed: int, state: dict[str, Any]) -> None:
        """Write a run's ordinary training state into seed `seed`'s slice (the inverse of `seed_training_state`)."""
        modules = state["modules"]
        with torch.no_grad():
            for name, child in self.named_children():
                if isinstance(child, SeedStack):
                    for key in child.state_names():
                        child.write_seed(seed, key, modules[f"{name}.{key}"])
            for name in ("log_alpha", "alpha"):
                getattr(self, name)[seed].copy_(modules[name].reshape(getattr(self, name)[seed].shape))
        for name, stacked_optim in self.optimizers().items():
            if not isinstance(stacked_optim, torch.optim.Optimizer):
                stacked_optim.load_state_dict(state[name])  # schedules: the same for every seed
                continue
            params = [p for group in stacked_optim.param_groups for p in group["params"]]
            for index, per_param in state[name]["state"].items():
                target = stacked_optim.state[params[index]]
                for key, value in per_param.items():
                    if key == "step":
                        target[key] = value.clone()
                    else:
                        if key not in target:
                            target[key] = torch.zeros_like(params[index])
                        target[key][seed].copy_(value.reshape(target[key][seed].shape))

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
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optim.step()

        self.critics.requires_grad_(False)  # the actor's gradient flows through Q without touching its weights
        action, log_prob = self.actor(batch.obs)
        log_prob = log_prob.squeeze(-1)
        q_pi = self.critics(batch.obs, action).amin(-2)
        actor_loss = (self.alpha * log_prob - q_pi).mean(-1)
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optim.step()
        self.critics.requires_grad_(True)

        metrics.update({"loss/actor": actor_loss.detach(), "loss/critic": critic_loss.detach() / self.cfg.num_critics})
        if self.cfg.auto_alpha:
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean(-1)
            self.alpha_optim.zero_grad(set_to_none=True)
            alpha_loss.sum().backward()
            self.alpha_optim.step()
            with torch.no_grad():
                alpha = self.log_alpha.exp()
                self.alpha.copy_(alpha if self.cfg.alpha_max is None else alpha.clamp(max=self.cfg.alpha_max))
            metrics["loss/alpha"] = alpha_loss.detach()
        self.soft_update_targets()
        metrics.update(
            {
                "alpha": self.alpha.clone().squeeze(-1),
                "q_mean": q.detach().mean((-2, -1)),
                "entropy": -log_prob.detach().mean(-1),
            }
        )
        return metrics

    @torch.no_grad()
    def soft_update_targets(self) -> None:
        torch._foreach_lerp_(*self._polyak_pairs, self.cfg.tau)  # θ̄ ← θ̄ + τ(θ − θ̄), one kernel for all tensors

    def end_epoch(self) -> None:
        if self.actor_scheduler is not None:
            self.actor_scheduler.step()

    # ------------------------------------------------------------------------------------------------ checkpoint
    def optimizers(self) -> dict[str, Any]:
        named = {"actor_optim": self.actor_optim, "critic_optim": self.critic_optim, "alpha_optim": self.alpha_optim}
        if self.actor_scheduler is not None:
            named["actor_scheduler"] = self.actor_scheduler
        return named


class SeedOfStack:
    """Seed `seed` of a stacked SAC-family instance, as that seed's trainer and evaluator see a run's algorithm:
    acting runs the unchanged actor on the seed's weights (call it inside the seed's `SeedStreams.active`), and
    checkpoints hold the seed's ordinary training state, so a stacked seed's run dir is that of a run alone.
    Updates and LR schedules belong to the stacked instance (algos/trainer.py `SeedStackedTrainer`)."""

    def __init__(self, stacked: SAC, seed: int, template: SAC) -> None:
        self.stacked, self.seed, self.template = stacked, seed, template
        self.penalty_type = stacked.penalty_type

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.stacked.actor.seed_call(self.seed, "act", obs, deterministic)

    def model_reward(self, reward: torch.Tensor, info: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.stacked.model_reward(reward, info)

    def end_epoch(self) -> None:
        """Nothing per seed: the stacked instance steps the shared schedules once per epoch."""

    def training_state(self) -> dict[str, Any]:
        return self.stacked.seed_training_state(self.seed, self.template)

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.stacked.load_seed_training_state(self.seed, state)
