"""CQL: Conservative Q-Learning (Kumar, Zhou, Tucker & Levine, NeurIPS 2020; docs/cql.md), the continuous SAC-based
version as the authors' code runs it on D4RL MuJoCo (aviralkumar2907/CQL d4rl/rlkit/torch/sac/cql.py,
d4rl/examples/cql_mujoco_new.py with their README's command); OfflineRL-Kit's run is the `offlinerl-kit` preset.

SAC on dataset batches, with a conservative term added to each critic's loss: push Q down on actions the data does
not show and up on the actions it does. Per batch (s, a, r, s', d), with ã ~ π(·|s) drawn first:

1. α         automatic entropy tuning, log α ← log α − lr ∇ −mean[log α (log π(ã|s) − |A|)], no clamp
2. Actor     L(π) = mean [α log π(ã|s) − min_j Q_j(s, ã)]                   (the first `cql.bc_steps` updates:
                                                                          α log π(ã|s) − log π(a|s), BC warm-up)
3. Critics   y = r + γ (1 − d) min_j Q̄_j(s', a'),  a' ~ π(·|s')                  (deterministic backup)
             L(Q_j) = mean (Q_j(s, a) − y)² + w · R_j
             R_j = T · mean logsumexp(X_j / T) − mean Q_j(s, a)                 (the regulariser, `cql_regulariser`)
             X_j: for n = 10 draws k per state, Q_j(s, u_k) − log 𝒰(u_k)     u_k ~ 𝒰[−1, 1]^|A|, log 𝒰 = −|A| log 2
                                                Q_j(s, a_k) − log π(a_k|s)   a_k ~ π(·|s)
                                                Q_j(s, a'_k) − log π(a'_k|s')  a'_k ~ π(·|s')   (Q at s, not s')
             logsumexp over all 3n terms of a state, mean over states         (cql.logsumexp=per_state: the authors)
                        or over the 3 terms of each draw k, mean over states and k (per_draw: KIT as run)
   Lagrange  (cql.lagrange, off) α' = clamp(exp(log α'), 0, 1e6) replaces w·R_j by α' (w·R_j − τ) and log α' ascends
             ½ Σ_j α' (w·R_j − τ)
4. Targets   Q̄ ← Q̄ + τ_polyak (Q − Q̄)

`cql.update_order` says when the steps happen. `authors` (default, their train_from_torch): ã is drawn, α stepped on
it, the actor's loss taken with the new α and the critics before their step, the critic target and the
regulariser's policy actions drawn from the actor before its step; then the actor steps, then the critics.
`actor_first` (KIT): the actor steps, then α, then the target and the regulariser draw from the updated actor.

COMBO (algos/combo.py) reuses the regulariser with other samples: `CQL.cql_regulariser(push_down_obs,
push_down_next_obs, push_up_obs, push_up_act)` pushes Q down at the given states and up on the given rows, and the
update asks `regulariser_rows(batch, num_real, q)` which rows those are (every row of the batch for CQL; COMBO's
choice among dataset and model rows for COMBO).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from algos.base import TrainableModule
from algos.sac import SAC, adam
from buffers.replay import Batch
from config import OfflineConfig, Rule, SACConfig, non_negative, one_of, positive, register_config
from models.seed_stack import SeedStreams
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, planned_updates

LOGSUMEXP_MODES = ("per_draw", "per_state")
UPDATE_ORDERS = ("authors", "actor_first")
CQL_ALPHA_MAX = 1e6  # the Lagrange multiplier's clamp (KIT, the authors)


@dataclass
class CQLTermConfig:
    """CQL's own keys (`cql.*`), the block COMBO shares: the regulariser, its Lagrange form, the backup, the actor's
    behaviour-cloning warm-up and the order of the steps. Defaults: the authors' cql_mujoco_new.py as their README's
    command runs it (docs/cql.md#defaults); configs/cql/offlinerl-kit.yaml holds KIT's run_cql.py."""

    weight: float = 5.0  # w, the min-Q weight (the authors' --min_q_weight; KIT --cql-weight; CORL cql_alpha)
    temperature: float = 1.0  # T of the logsumexp (the authors' temp)
    num_actions: int = 10  # n draws per state from each of the three action sources (num_random; KIT repeat actions)
    logsumexp: str = "per_state"  # per_state: over all 3n of a state (the authors); per_draw: 3 per draw (KIT as run)
    lagrange: bool = False  # α' tuned to hold w·R at target_action_gap (the authors: lagrange_thresh >= 0)
    target_action_gap: float = 5.0  # τ (the authors' --lagrange_thresh default; KIT --lagrange-threshold 10)
    lagrange_lr: float = 3e-4  # Adam lr of log α' (the authors: qf_lr; KIT --cql-alpha-lr)
    deterministic_backup: bool = True  # no −α log π(a'|s') in the critic target
    max_q_backup: bool = False  # next value = max over num_actions sampled a' per critic, then min over critics
    # The first bc_steps actor updates regress log π(a|s) instead of Q: the authors' policy_eval_start=40000 is
    # compared with a counter incremented before the test, so 39 999 updates (KIT: none).
    bc_steps: int = 39_999
    update_order: str = "authors"  # authors: α, then losses from the pre-update actor, actor, critics; actor_first: KIT


CQL_TERM_RULES: dict[str, Rule] = {
    "cql.weight": non_negative,
    "cql.temperature": positive,
    "cql.num_actions": positive,
    "cql.logsumexp": one_of(*LOGSUMEXP_MODES),
    "cql.lagrange_lr": positive,
    "cql.bc_steps": non_negative,
    "cql.update_order": one_of(*UPDATE_ORDERS),
}
"""Checks on the `cql.*` block, for every config that embeds it (CQL's, COMBO's)."""


class HasCQLTerm(Protocol):
    """What the CQL class reads of a config: CQL's own, or one that embeds its blocks (COMBO's)."""

    epochs: int
    sac: SACConfig
    cql: CQLTermConfig


def _cql_sac() -> SACConfig:
    """SAC as cql_mujoco_new.py builds it (and KIT's run_cql.py alike): 3 hidden layers of 256, no clamp on α, no
    learning-rate schedule."""
    return SACConfig(hidden_dims=[256, 256, 256], alpha_max=None, lr_schedule="none")


@register_config("cql")
@dataclass
class CQLConfig(OfflineConfig):
    """CQL (docs/cql.md): SAC with the conservative critic term, on dataset batches only. Defaults are the authors'
    cql_mujoco_new.py: 3000 epochs x 1000 steps, batch 256, 1000 evaluation steps (one full episode) every epoch."""

    rules: ClassVar[dict[str, Rule]] = CQL_TERM_RULES

    epochs: int = 3000
    eval_episodes: int = 1
    sac: SACConfig = field(default_factory=_cql_sac)
    cql: CQLTermConfig = field(default_factory=CQLTermConfig)


@dataclass(frozen=True)
class CQLDraws:
    """The actions the regulariser's logsumexp runs over, n per pushed-down state (N states; `(S,)` when stacked):
    uniform actions `random` [(S,) N, n, A] (log-density −|A| log 2), `policy` ~ π(·|s) and `next_policy` ~ π(·|s')
    [(S,) N, n, A] with their log-densities [(S,) N, n]. Drawn without gradients; tests pass their own."""

    random: torch.Tensor
    policy: torch.Tensor
    policy_log_prob: torch.Tensor
    next_policy: torch.Tensor
    next_policy_log_prob: torch.Tensor


@dataclass(frozen=True)
class RegulariserRows:
    """Which rows the regulariser pushes Q down at (`down_obs` [(S,) N, obs_dim] and their next states) and up on
    (`up_obs`, `up_act` [(S,) M, ...], with their Q `up_q` [(S,) critics, M] from the TD loss's call)."""

    down_obs: torch.Tensor
    down_next_obs: torch.Tensor
    up_obs: torch.Tensor
    up_act: torch.Tensor
    up_q: torch.Tensor


@dataclass(frozen=True)
class CQLTerm:
    """The regulariser of each critic, [(S,) critics]: `gap` = R_j = `pushed_down` − `pushed_up`, where `pushed_down`
    is T · mean logsumexp(X_j / T) and `pushed_up` the mean Q_j of the pushed-up rows; and the mean Q_j of each
    action source (for logging), [(S,) critics] each."""

    gap: torch.Tensor
    pushed_down: torch.Tensor
    pushed_up: torch.Tensor
    q_random: torch.Tensor
    q_policy: torch.Tensor
    q_next_policy: torch.Tensor


def cql_logsumexp(values: torch.Tensor, temperature: float, mode: str) -> torch.Tensor:
    """T · mean logsumexp(X / T) of X = `values` [..., 3, N, n] (source, state, draw), [...]: `per_draw` takes the
    logsumexp over the 3 sources of each draw and averages over states and draws (KIT as run); `per_state` takes it
    over all 3n values of a state and averages over states (the authors, CORL, the paper)."""
    scaled = values / temperature
    if mode == "per_draw":
        return temperature * torch.logsumexp(scaled, dim=-3).mean((-2, -1))
    if mode == "per_state":
        return temperature * torch.logsumexp(scaled, dim=(-3, -1)).mean(-1)
    raise ValueError(f"unknown cql.logsumexp {mode!r}; choose one of {', '.join(LOGSUMEXP_MODES)}")


class CQL(SAC):
    """SAC core (twin critics, automatic entropy tuning, Polyak targets) plus CQL's conservative critic term."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: HasCQLTerm, device: torch.device | str = "cpu") -> None:
        super().__init__(obs_dim, act_dim, cfg.sac, cfg.epochs, device)
        self.cql = cfg.cql
        self.act_dim = act_dim
        self.cql_log_alpha = nn.Parameter(torch.zeros((), device=device))  # log α' (Lagrange form), starts at 0
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long, device=device))
        self._streams: SeedStreams | None = None  # each stacked seed's random streams (uniform draws)
        self._build_optimizers(cfg.epochs)

    def _build_optimizers(self, epochs: int) -> None:
        super()._build_optimizers(epochs)
        if "cql_log_alpha" in self._parameters:  # absent while SAC's constructor builds its own optimisers
            self.cql_alpha_optim = adam([self.cql_log_alpha], self.cql.lagrange_lr)

    def stack_extras(self, runs: Sequence[TrainableModule], rng: SeedStreams) -> None:
        """Stacked seeds draw their uniform actions from their own streams (the policy samples already do)."""
        self._streams = rng

    def optimizers(self) -> dict[str, Any]:
        return {**super().optimizers(), "cql_alpha_optim": self.cql_alpha_optim}

    # ------------------------------------------------------------------------------------------------ the backup
    @torch.no_grad()
    def next_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """V(s') = min_j Q̄_j(s', a') (deterministic backup, KIT's default), or with `max_q_backup` the max over
        `num_actions` sampled a' per critic, then the min over critics; otherwise SAC's soft value."""
        max_q_actions = self.cql.num_actions if self.cql.max_q_backup else None
        return self.backup_value(next_obs, max_q_actions, self.cql.deterministic_backup)

    # ------------------------------------------------------------------------------------------------ the actor
    def in_warmup(self) -> bool:
        """Whether this update is one of the first `cql.bc_steps` (equal for every stacked seed)."""
        return self.cql.bc_steps > 0 and int(self.num_updates.reshape(-1)[0]) < self.cql.bc_steps

    def actor_loss(self, batch: Batch, action: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        """SAC's actor loss, or during the warm-up mean [α log π(ã|s) − log π(a|s)] on the dataset action a."""
        if self.in_warmup():
            return (self.alpha * log_prob - self.actor.log_prob(batch.obs, batch.act)).mean(-1)
        return super().actor_loss(batch, action, log_prob)

    # ------------------------------------------------------------------------------------------------ the regulariser
    def _uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Uniform draws on [−1, 1] of `shape`: from the global stream, or each stacked seed's own ([S, *shape])."""
        if self._streams is None:
            return torch.empty(shape, device=device).uniform_(-1.0, 1.0)
        return torch.stack(
            [torch.empty(shape, device=device).uniform_(-1.0, 1.0, generator=g) for g in self._streams.generators]
        )

    @torch.no_grad()
    def draw_actions(self, obs: torch.Tensor, next_obs: torch.Tensor) -> CQLDraws:
        """n = `cql.num_actions` actions per state of obs [(S,) N, obs_dim] from each source, in the authors' (and
        KIT's) order: uniform, π(·|s), π(·|s') (next_obs [(S,) N, obs_dim])."""
        n, rows = self.cql.num_actions, obs.shape[-2]
        random = self._uniform((rows, n, self.act_dim), obs.device)
        policy, policy_log_prob = self.actor(obs.repeat_interleave(n, dim=-2))
        next_policy, next_log_prob = self.actor(next_obs.repeat_interleave(n, dim=-2))
        return CQLDraws(
            random=random,
            policy=policy.unflatten(-2, (rows, n)),
            policy_log_prob=policy_log_prob.squeeze(-1).unflatten(-1, (rows, n)),
            next_policy=next_policy.unflatten(-2, (rows, n)),
            next_policy_log_prob=next_log_prob.squeeze(-1).unflatten(-1, (rows, n)),
        )

    def cql_regulariser(
        self,
        push_down_obs: torch.Tensor,
        push_down_next_obs: torch.Tensor,
        push_up_obs: torch.Tensor,
        push_up_act: torch.Tensor,
        *,
        push_up_q: torch.Tensor | None = None,
        draws: CQLDraws | None = None,
    ) -> CQLTerm:
        """CQL's regulariser R_j of every critic, with gradients into the critics only:

            R_j = T · mean logsumexp(X_j / T) − mean Q_j(push_up_obs, push_up_act)

        X_j holds, at each state s of `push_down_obs` [(S,) N, obs_dim], Q_j(s, ·) − log-density for the n uniform
        actions, n actions of π(·|s) and n actions of π(·|s'), s' its row of `push_down_next_obs` (the next-state
        actions are valued at s). `cql.logsumexp` says which values one logsumexp spans (`cql_logsumexp`).

        CQL pushes down at the batch's states and up on the batch's rows (and passes the TD loss's Q(s, a) as
        `push_up_q` [(S,) critics, M], which then stands for the rows). COMBO pushes down at model-rollout states
        and up on dataset rows. `draws` replaces the draws (`draw_actions`) with given ones."""
        if draws is None:
            draws = self.draw_actions(push_down_obs, push_down_next_obs)
        rows, n = draws.random.shape[-3], draws.random.shape[-2]
        states = push_down_obs.unsqueeze(-2).expand(*push_down_obs.shape[:-1], n, push_down_obs.shape[-1])
        obs = torch.stack([states] * 3, dim=-4).flatten(-4, -2)  # [(S,) 3 N n, obs_dim]: sources x states x draws
        actions = torch.stack([draws.random, draws.policy, draws.next_policy], dim=-4).flatten(-4, -2)
        q = self.critics(obs, actions).unflatten(-1, (3, rows, n))  # [(S,) critics, 3, N, n], one batched call
        uniform_log_density = torch.full_like(draws.policy_log_prob, -self.act_dim * math.log(2.0))
        log_density = torch.stack([uniform_log_density, draws.policy_log_prob, draws.next_policy_log_prob], dim=-3)
        pushed_down = cql_logsumexp(q - log_density.unsqueeze(-4), self.cql.temperature, self.cql.logsumexp)
        if push_up_q is None:
            push_up_q = self.critics(push_up_obs, push_up_act)
        pushed_up = push_up_q.mean(-1)
        source_means = q.detach().mean((-2, -1))  # [(S,) critics, 3]
        return CQLTerm(
            gap=pushed_down - pushed_up,
            pushed_down=pushed_down,
            pushed_up=pushed_up,
            q_random=source_means[..., 0],
            q_policy=source_means[..., 1],
            q_next_policy=source_means[..., 2],
        )

    def conservative_penalty(self, term: CQLTerm) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What each critic's loss adds, [(S,) critics]: w · R_j, or in the Lagrange form α' (w · R_j − τ) after one
        Adam step of log α' on −½ Σ_j α' (w · R_j − τ) (R_j held fixed; the critics see α' before the step)."""
        weighted = self.cql.weight * term.gap
        if not self.cql.lagrange:
            return weighted, {}
        alpha_prime = self.cql_log_alpha.exp().clamp(0.0, CQL_ALPHA_MAX)
        violation = weighted - self.cql.target_action_gap
        lagrange_loss = -0.5 * (alpha_prime * violation.detach()).sum(-1)
        self.cql_alpha_optim.zero_grad(set_to_none=True)
        lagrange_loss.sum().backward()
        self.cql_alpha_optim.step()
        alpha_prime = alpha_prime.detach()
        return alpha_prime * violation, {"loss/cql_alpha": lagrange_loss.detach(), "cql_alpha": alpha_prime.squeeze(-1)}

    # ------------------------------------------------------------------------------------------------ the update
    def regulariser_rows(self, batch: Batch, num_real: int, q: torch.Tensor) -> RegulariserRows:
        """The rows the regulariser pushes down at and up on, given the batch's Q(s, a) `q` [(S,) critics, B]: for
        CQL every row of the batch both ways (the first `num_real` rows are dataset rows, all of them here)."""
        return RegulariserRows(batch.obs, batch.next_obs, batch.obs, batch.act, q)

    def critic_metrics(self, q: torch.Tensor, num_real: int) -> dict[str, torch.Tensor]:
        """Extra scalars of the critic loss from the batch's Q(s, a) [(S,) critics, B] (none for CQL)."""
        return {}

    def critic_loss(self, batch: Batch, num_real: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Σ_j [TD loss of Q_j + its conservative term] [(S,)], with the actor as it is now (the target's a' and the
        regulariser's policy draws), and its metrics (detached). Steps α' in the Lagrange form."""
        target, _ = self.critic_target(batch, num_real)
        q = self.critics(batch.obs, batch.act)  # [(S,) critics, B]
        td_loss = (q - target.unsqueeze(-2)).square().mean(-1)
        rows = self.regulariser_rows(batch, num_real, q)
        term = self.cql_regulariser(rows.down_obs, rows.down_next_obs, rows.up_obs, rows.up_act, push_up_q=rows.up_q)
        penalty, lagrange_metrics = self.conservative_penalty(term)
        critic_loss = (td_loss + penalty).sum(-1)
        return critic_loss, {
            "loss/critic": critic_loss.detach() / self.cfg.num_critics,
            "loss/td": td_loss.detach().mean(-1),
            "cql/term": penalty.detach().mean(-1),
            "cql/q_gap": term.gap.detach().mean(-1),
            "cql/q_pushed_down": term.pushed_down.detach().mean(-1),
            "cql/q_random": term.q_random.mean(-1),
            "cql/q_policy": term.q_policy.mean(-1),
            "cql/q_next_policy": term.q_next_policy.mean(-1),
            **lagrange_metrics,
            "q_mean": q.detach().mean((-2, -1)),
            **self.critic_metrics(q.detach(), num_real),
        }

    def update(self, batch: Batch, num_real: int = 0) -> dict[str, torch.Tensor]:
        """One CQL step in `cql.update_order`, then the targets; detached metrics. Shapes work with or without a
        leading seed dimension, as SAC's.

        authors (train_from_torch, cql.py l. 160-310): ã ~ π(·|s) and one α step on it (l. 160-169); the actor's loss
        with that new α and the critics before their step (l. 174-191); the critic target's a' and the regulariser's
        policy actions from the actor before its step (l. 196-281); the actor steps (l. 286-289), then the critics
        (l. 292-300). actor_first (KIT): the actor steps, α steps on its sample, the critic loss draws from the updated
        actor, the critics step."""
        if self.cql.update_order == "authors":
            sample = self.actor(batch.obs)  # ã ~ π(·|s) with its graph, before any step
            metrics = self.alpha_step(sample[1].squeeze(-1).detach())
            critic_loss, critic_metrics = self.critic_loss(batch, num_real)
            actor_loss, log_prob = self.actor_step(batch, sample)
        else:
            actor_loss, log_prob = self.actor_step(batch)
            metrics = self.alpha_step(log_prob)
            critic_loss, critic_metrics = self.critic_loss(batch, num_real)
        self.critic_step(critic_loss)
        self.soft_update_targets()
        self.num_updates += 1
        return {
            "loss/actor": actor_loss,
            **metrics,
            **critic_metrics,
            "alpha": self.alpha.clone().squeeze(-1),
            "entropy": -log_prob.mean(-1),
        }


SPEC = AlgorithmSpec("cql", "CQL", CQLConfig, CQL, Loop.EPOCHS, Unit.GRADIENT_STEPS, planned_updates, ModelUse.NONE)
