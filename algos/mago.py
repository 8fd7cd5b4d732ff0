"""MAGO: offline Model-based Adversarial Game for policy Optimization (docs/mago.md; the PMDB code lineage).

Offline RL as an alternating Markov game between the policy and "nature", who picks the dynamics at every step:

1. Model player. For the current batch of game states s and actions a, draw N members of a large ensemble with
   replacement (members come with counts). Each member i gives K sampled next states ŝ' and its candidate value

       Q_i(s, a) = mean_K [ r_i − φ + γ (1 − p_done(s, a, ŝ')) V(ŝ') ],   r_i = clip(r̂_norm, 0, 1),

   where p_done = max(termination(s, a, ŝ'), 1 − Π_j c_j(ŝ'_j)) softly ends states that leave the data's range and
   φ = `factor` · mean ensemble std, the paper's differential penalty, subtracted in training only with
   `factor_in_training` (MAGO's code has none: φ = 0). Nature plays the k-th smallest candidate counting
   multiplicity (k = 2 of N = 10: pessimistic, not worst-case).
2. Policy player. A KL-regularised soft policy against a slowly moving reference π_ref (Polyak τ = 1e-5):
   V(s) = α(s) [logsumexp_i(Q(s, a_i)/α(s) + ℓ_i) − logsumexp_i ℓ_i] by self-normalised importance sampling over
   M actions (half from π with ℓ = log π_ref − log π, half from π_ref with ℓ = 0), α(s) set per state so that the
   Boltzmann policy π_ref·exp(Q/α) sits `target_kld` nats from π_ref.
3. Critics regress 128 dataset rows on r_norm + γ(1 − d) V_target(s') and 128 game rows on nature's value (both
   clipped to [0, 1/(1 − γ)]); π fits the Boltzmann policy by weighted maximum likelihood.

The ensemble is the shared one configured as PMDB's (models/dynamics.py); the losses and the game are MAGO's own.
Every random draw of an update can be given instead of drawn (`UpdateDraws`, `NatureDraws`, `ActionNoise`), so the
equations can be held to the authors' outputs on injected draws (tests/test_reference_mago.py); without them the
draws come from torch's RNG in the same order as always.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from algos.base import TrainableModule
from algos.sac import adam
from buffers.replay import Batch
from config import (
    DynamicsConfig,
    LearnedModelConfig,
    Rule,
    above,
    all_positive,
    between,
    discount,
    polyak_rate,
    positive,
    register_config,
)
from envs.evaluation import isolated_global_rngs
from envs.tasks import TaskSpec, normalized_score
from models.actor_critic import CriticEnsemble, TanhGaussianActor, tanh_log_det
from models.dynamics import EnsembleDynamics, UncertaintyFn
from utils.algorithm_spec import AlgorithmSpec, FigureSet, Loop, ModelUse, Unit, planned_updates

ALPHA_FLOOR = 1e-3  # α(s) >= this; also the temperature of the "max_a Q" estimate inside α(s)
OOD_SHARPNESS = 12.0  # the continue probability's sigmoid spans ±6 between the inner and the outer band


def _mago_dynamics() -> DynamicsConfig:
    """PMDB/MAGO's ensemble: 100 members of 4 x 256 SiLU, log-σ soft bounds (init 1 and −5), β-NLL with β = 0.5,
    targets [Δs, r_norm] divided by their (unbiased) std, AdamW 1e-4 (decay 7.5e-5) with gradient-norm clipping at
    10, 1000 epochs without holdout, fresh bootstrap rows every epoch."""
    return DynamicsConfig(
        num_ensemble=100,
        num_elites=100,
        hidden_dims=[256, 256, 256, 256],
        weight_decay=[0.0] * 5,
        lr=1e-4,
        batch_size=256,
        holdout_ratio=0.0,
        max_epochs=1000,
        bootstrap=True,
        bootstrap_every_epoch=True,
        loss="beta_nll",
        nll_beta=0.5,
        variance_bounds="logstd",
        max_logvar_init=1.0,
        min_logvar_init=-5.0,
        optimizer="adamw",
        adamw_weight_decay=7.5e-5,
        grad_clip=10.0,
        normalization="scaled_targets",
        reward_normalization=True,
        unbiased_std=True,
    )


def normalize_reward(model: EnsembleDynamics, reward: torch.Tensor) -> torch.Tensor:
    """r_norm = (r − shift) / scale with the model's reward statistics (`dynamics.reward_normalization`): the units
    nature's rewards, the critic targets and the value bound 1/(1 − γ) live in (the data's rewards in ≈[0, 1]). The
    identity for a model without them."""
    if not model.cfg.reward_normalization:
        return reward
    return (reward - model.reward_shift) / model.reward_scale


def denormalize_reward(model: EnsembleDynamics, reward: torch.Tensor) -> torch.Tensor:
    """Back to raw units, r = r_norm · scale + shift (the monitor's model return is reported in them)."""
    if not model.cfg.reward_normalization:
        return reward
    return reward * model.reward_scale + model.reward_shift


def _order_statistic_rule(value: Any, cfg: Any) -> str | None:
    return None if 1 <= value <= cfg.num_models else f"between 1 and num_models ({cfg.num_models})"


@register_config("mago")
@dataclass
class MAGOConfig(LearnedModelConfig):
    """MAGO (docs/mago.md); defaults are MAGO's config.py (1e6 updates, an evaluation every 1000)."""

    rules: ClassVar[dict[str, Rule]] = {
        **dict.fromkeys(
            (
                "adv_batch_size",
                "num_models",
                "num_state_samples",
                "num_action_samples",
                "adv_horizon",
                "target_kld",
                "actor_lr",
                "critic_lr",
                "alpha",
                "proposal_std",
                "monitor_rollouts",
                "monitor_horizon",
            ),
            positive,
        ),
        "order_statistic": _order_statistic_rule,
        "num_action_samples": lambda value, cfg: None if value >= 2 else ">= 2 (half from π, half from π_ref)",
        # Every value lies in [0, 1/(1 − γ)] (rewards normalised to [0, 1]), the clip of the critic targets.
        "gamma": discount("the critic targets are clipped to [0, 1/(1 − γ)]"),
        **dict.fromkeys(("tau_value", "tau_policy"), polyak_rate),
        **dict.fromkeys(("adv_explore_ratio", "explore_ratio"), between(0, 1)),
        "hidden_dims": all_positive,
        "log_std_max": above("log_std_min"),
        **dict.fromkeys(
            ("factor", "eval_penalty_coef", "policy_beta", "ood_inner"), lambda v, c: None if v >= 0 else ">= 0"
        ),
        "ood_outer": lambda value, cfg: None if value > cfg.ood_inner else "> ood_inner",
        # Nature values candidates with each member's reward and samples next states from its Gaussian.
        "dynamics.predict_reward": lambda value, cfg: None if value else "true for MAGO (nature needs the rewards)",
        "dynamics.loss": lambda value, cfg: None if value != "mse" else "nll or beta_nll for MAGO (a Gaussian model)",
    }

    epochs: int = 1000
    steps_per_epoch: int = 1000
    batch_size: int = 128  # dataset rows per update (real_batch_size)
    adv_batch_size: int = 128  # game states, each advanced one step per update
    gamma: float = 0.99
    tau_value: float = 5e-3  # critic targets
    tau_policy: float = 1e-5  # reference policy π_ref ← π
    actor_lr: float = 3e-5
    critic_lr: float = 3e-4
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256])
    log_std_min: float = -4.0  # policy log-std soft-clamped to [min, max]
    log_std_max: float = 2.0
    auto_alpha: bool = True  # α(s) from target_kld; false: fixed `alpha`
    target_kld: float = 5.0
    alpha: float = 0.1
    num_action_samples: int = 20  # M, for V(s), the policy loss and game actions
    proposal_std: float = 0.1  # pre-tanh std of the proposals around dataset actions in the policy loss
    policy_beta: float = 0.5  # β of the β-weighted log-likelihood of the policy loss
    explore_ratio: float = 0.0  # game actions taken from π instead of the Boltzmann policy
    # Model player.
    num_models: int = 10  # N members drawn with replacement per step
    order_statistic: int = 2  # k: nature plays the k-th smallest candidate value, counting multiplicity
    num_state_samples: int = 10  # K next states per drawn member
    adv_explore_ratio: float = 0.1  # per step, with this probability nature draws members ∝ counts instead
    adv_horizon: int = 1000  # game states are restarted from the data after this many steps
    ood_inner: float = 5.5  # continue probability 1 within midpoint ± ood_inner · range of the data's next states
    ood_outer: float = 10.5  # ... and ≈ 0 beyond midpoint ± ood_outer · range
    # Differential penalty φ = factor · mean ensemble std of the drawn members' means (docs/mago.md#the-factor).
    # Default false: no penalty in training, as MAGO's code (none anywhere) and MORAL's (its std is None in training);
    # true is the paper's reading, φ subtracted from every candidate's reward in training. The evaluation monitor
    # subtracts it whenever factor > 0 (MORAL's test mode); factor=0 removes it everywhere.
    factor: float = 0.5
    factor_in_training: bool = False
    # Evaluation monitor: model rollouts from dataset start states with π_ref's mean (adv-q and ensemble-std figures),
    # and MAGO's reported return, real return − eval_penalty_coef · mean ensemble std (over the next-state AND the
    # normalised-reward means, as MAGO's evaluator), logged as test/reward_penalized;
    # report_penalized_return=true puts that in progress.csv too (MAGO's README numbers; default the plain return).
    monitor_rollouts: int = 10
    monitor_horizon: int = 1000
    eval_penalty_coef: float = 1.0
    report_penalized_return: bool = False
    dynamics: DynamicsConfig = field(default_factory=_mago_dynamics)


# ---------------------------------------------------------------------------------------------------- the equations
def kl_temperature(q: torch.Tensor, log_ratio: torch.Tensor, target_kld: float) -> torch.Tensor:
    """α(s) = max(1e-3, [E_{softmax(ℓ + Q/1e-3)} Q − E_{softmax(ℓ)} Q] / ε): the gap between the best sampled value
    and the value under π_ref, spread over ε nats. q, log_ratio: [M, B] over the M sampled actions; returns [B]."""
    best = (q * torch.softmax(log_ratio + q / ALPHA_FLOOR, dim=0)).sum(0)
    reference = (q * torch.softmax(log_ratio, dim=0)).sum(0)
    return ((best - reference) / target_kld).clamp(min=ALPHA_FLOOR)


def soft_value(q: torch.Tensor, log_ratio: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """V(s) = α [logsumexp_i(Q_i/α + ℓ_i) − logsumexp_i ℓ_i]: α log E_{π_ref}[exp(Q/α)] by self-normalised importance
    sampling. q, log_ratio: [M, B]; alpha: [B] or a number; returns [B]."""
    return alpha * (torch.logsumexp(q / alpha + log_ratio, dim=0) - torch.logsumexp(log_ratio, dim=0))


def order_statistic(values: torch.Tensor, counts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-th smallest of the candidate values [U, B] when candidate u occurs counts[u] times: the first candidate
    in ascending order whose cumulative count reaches k. Returns its index [B] and value [B]."""
    order = values.argsort(dim=0)
    cumulative = counts[order].cumsum(dim=0)  # [U, B]
    position = (cumulative >= k).float().argmax(dim=0)  # first True
    chosen = order.gather(0, position.unsqueeze(0)).squeeze(0)
    return chosen, values.gather(0, chosen.unsqueeze(0)).squeeze(0)


class Bands(NamedTuple):
    """The soft termination's bands per dimension: continue probability 1 inside [inner_low, inner_high], ≈ 0
    outside [outer_low, outer_high]."""

    inner_low: torch.Tensor
    inner_high: torch.Tensor
    outer_low: torch.Tensor
    outer_high: torch.Tensor


def soft_bands(low: torch.Tensor, high: torch.Tensor, inner: float, outer: float) -> Bands:
    """midpoint ± inner·range and midpoint ± outer·range of the data's next states [low, high] (PMDB's pred_min/max
    and pred_min_2/max_2)."""
    middle, spread = (low + high) / 2, high - low
    return Bands(middle - inner * spread, middle + inner * spread, middle - outer * spread, middle + outer * spread)


def continue_probability(next_obs: torch.Tensor, low: torch.Tensor, high: torch.Tensor, inner: float, outer: float):
    """Π_j c_j: each dimension's c_j is 1 within midpoint ± inner·range of the data's next states [low, high] and
    falls as a sigmoid to ≈ 0 at midpoint ± outer·range (σ(∓6) at the two bands, renormalised by σ(6), capped at 1)."""
    bands = soft_bands(low, high, inner, outer)
    scale = OOD_SHARPNESS / 2
    below = torch.sigmoid(
        (next_obs - (bands.inner_low + bands.outer_low) / 2) * (2 * scale / (bands.inner_low - bands.outer_low))
    )
    above = torch.sigmoid(
        (next_obs - (bands.inner_high + bands.outer_high) / 2) * (2 * scale / (bands.inner_high - bands.outer_high))
    )
    renormaliser = torch.sigmoid(torch.tensor(scale, dtype=next_obs.dtype))  # σ(6), a CPU scalar as always
    per_dim = (torch.minimum(below, above) / renormaliser).clamp(max=1.0)
    return per_dim.prod(-1)


def done_probability(terminal: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """p_done = max(termination, 1 − continue probability): a terminal state ends surely, one far from the data
    almost surely."""
    return torch.maximum(terminal.to(alive.dtype), 1.0 - alive)


def sample_actions(
    actor: TanhGaussianActor, obs: torch.Tensor, num: int, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num` actions tanh(μ + σ ε) per state [num, B, A] and their log-densities [num, B] (exact tanh Jacobian):
    `actor.sample_n` with the standard normals ε [num, B, A] given, or drawn here exactly as sample_n draws them."""
    mean, log_std = actor.distribution_params(obs)
    if noise is None:
        noise = torch.randn(num, *mean.shape, device=mean.device, dtype=mean.dtype)
    pre_tanh = mean + log_std.exp() * noise
    gaussian = -0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)
    log_prob = (gaussian - tanh_log_det(pre_tanh) - math.log(actor.max_action)).sum(-1)
    return actor.max_action * torch.tanh(pre_tanh), log_prob


def tanh_normal_around(
    actions: torch.Tensor, std: float, num: int, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num` samples tanh(atanh(a) + std·ε) around each action [B, A] and their log-densities: [num, B, A], [num, B].
    `noise`: the standard normals ε [num, B, A] (default: drawn)."""
    centre = torch.atanh(actions.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
    if noise is None:
        noise = torch.randn(num, *actions.shape, device=actions.device)
    pre_tanh = centre + std * noise
    gaussian = -0.5 * noise.square() - math.log(std) - 0.5 * math.log(2 * math.pi)
    return torch.tanh(pre_tanh), (gaussian - tanh_log_det(pre_tanh)).sum(-1)


# ---------------------------------------------------------------------------------------------------- the draws
class ActionNoise(NamedTuple):
    """Standard normals of the M actions sampled per state: π's [M//2, B, A] and π_ref's [M − M//2, B, A]."""

    policy: torch.Tensor
    reference: torch.Tensor


class NatureDraws(NamedTuple):
    """Nature's random draws; each one left None is drawn from torch's RNG (training)."""

    members: torch.Tensor | None = None  # [N] member indices drawn with replacement
    state_noise: torch.Tensor | None = None  # [K, U, B, S] standard normals of the next-state samples
    action_noise: ActionNoise | None = None  # of V at the candidate states, rows in (k, u, b) order: [·, K·U·B, A]
    explore_choice: torch.Tensor | None = None  # [B] the explored candidate (index into the distinct members)


NATURE_DRAWN = NatureDraws()  # nothing given: every draw from torch's RNG


class PolicyDraws(NamedTuple):
    """The policy step's random draws (None: drawn)."""

    near_data: torch.Tensor | None = None  # [M//2, B, A] noise of the proposals around the dataset actions
    policy: torch.Tensor | None = None  # [M//2, B_game, A] noise of π's proposals on the game rows
    reference: torch.Tensor | None = None  # [M − M//2, B + B_game, A] noise of π_ref's samples, dataset rows first


POLICY_DRAWN = PolicyDraws()


class UpdateDraws(NamedTuple):
    """Every random draw of one update (None: drawn from torch's RNG, in training's order)."""

    act_noise: ActionNoise | None = None  # the game actions' M candidates
    act_choice: torch.Tensor | None = None  # [B] the chosen candidate per game state
    coin: float | None = None  # nature explores iff coin < adv_explore_ratio
    nature: NatureDraws = NATURE_DRAWN
    target_noise: ActionNoise | None = None  # V_target at the dataset next states
    policy: PolicyDraws = POLICY_DRAWN
    done_uniform: torch.Tensor | None = None  # [B]: a game row is done iff u < p_done
    restart_states: torch.Tensor | None = None  # [B, S]: the state each game row restarts from if it ends


UPDATE_DRAWN = UpdateDraws()


# ---------------------------------------------------------------------------------------------------- the records
class ValueEstimate(NamedTuple):
    """V(s) under one pair of critics."""

    q: torch.Tensor  # [M, B] min over the two critics, clipped to [0, 1/(1 − γ)]
    alpha: torch.Tensor | float  # α(s) [B] (or the fixed α)
    value: torch.Tensor  # [B]


class Values(NamedTuple):
    """V(s) at a batch of states: the M sampled actions, their log importance ratios, and the target critics'
    (and the online critics') estimate on those same actions."""

    actions: torch.Tensor  # [M, B, A]
    log_ratio: torch.Tensor  # [M, B]
    target: ValueEstimate
    online: ValueEstimate | None


class GameActions(NamedTuple):
    """The Boltzmann policy's candidates at the game states."""

    actions: torch.Tensor  # [M, B, A]
    log_ratio: torch.Tensor  # [M, B]
    q: torch.Tensor  # [M, B] min of the online critics, not clipped
    alpha: torch.Tensor | float  # [B]
    probs: torch.Tensor  # [M, B] softmax(Q/α + ℓ) over the candidates


class Candidates(NamedTuple):
    """Nature's candidates for a batch of B game states: U distinct drawn members x K next-state samples."""

    members: torch.Tensor  # [U] ascending
    counts: torch.Tensor  # [U] draws of each
    next_mean: torch.Tensor  # [U, B, S] predictive next-state means
    next_std: torch.Tensor  # [U, B, S]
    reward_mean: torch.Tensor  # [U, B] mean normalised reward, before the clip
    next_obs: torch.Tensor  # [K, U, B, S] sampled next states
    reward: torch.Tensor  # [U, B] clip(reward_mean, 0, 1)
    terminal: torch.Tensor  # [K, U, B] the task's termination (bool)
    alive: torch.Tensor  # [K, U, B] continue probability of the soft bands
    done_prob: torch.Tensor  # [K, U, B]
    values: Values  # V at the K·U·B candidate states, flattened in (k, u, b) order
    q_target: torch.Tensor  # [U, B] mean_K [r − φ + γ (1 − p_done) V_target]
    q_online: torch.Tensor  # [U, B] the same with V_online
    ensemble_std: torch.Tensor  # [B]


class GameStep(NamedTuple):
    """Nature's move for a batch of game states."""

    target_value: torch.Tensor  # [B] k-th candidate value under the target critics: the critic's regression target
    online_value: torch.Tensor  # [B] the value of the played candidate under the online critics
    next_obs: torch.Tensor  # [B, obs] first sampled next state of the played member
    reward: torch.Tensor  # [B] its normalised reward (before the penalty)
    done_prob: torch.Tensor  # [B]
    ensemble_std: torch.Tensor  # [B] sqrt(Σ_columns Var over the N draws of the [next state, r_norm] means)
    played: torch.Tensor  # [B] the played candidate, an index into the distinct members


class PolicyTargets(NamedTuple):
    """The policy step's candidates at the rows [dataset; game] and their weights (no gradient)."""

    obs: torch.Tensor  # [B + B_game, S]
    actions: torch.Tensor  # [M, B + B_game, A]: M//2 proposals, then π_ref's samples
    proposal_log_prob: torch.Tensor  # [M//2, B + B_game] log q of the proposals
    log_ratio: torch.Tensor  # [M, B + B_game]: log π_ref − log q for the proposals, 0 for π_ref's samples
    q: torch.Tensor  # [M, B + B_game] online critics, clipped
    alpha: torch.Tensor | float  # [B + B_game]
    weights: torch.Tensor  # [M, B + B_game] softmax(Q/α + ℓ)


# ---------------------------------------------------------------------------------------------------- the agent
class MAGO(TrainableModule):
    needs_dynamics: ClassVar[bool] = True
    needs_dataset: ClassVar[bool] = True
    rollout_uncertainty: ClassVar[UncertaintyFn | None] = None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: MAGOConfig,
        device: torch.device | str = "cpu",
        dynamics: EnsembleDynamics | None = None,
        dataset: Any = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.value_max = 1.0 / (1.0 - cfg.gamma)  # rewards in [0, 1] bound every value
        self.policy = TanhGaussianActor(
            obs_dim, act_dim, cfg.hidden_dims, 1.0, cfg.log_std_min, cfg.log_std_max, "soft", "xavier_uniform"
        )
        self.reference_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.critics = CriticEnsemble(obs_dim, act_dim, cfg.hidden_dims, 2, init="xavier_uniform")
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        # The game's current states and their step counts: buffers, so checkpoints carry them.
        self.register_buffer("game_obs", torch.zeros(cfg.adv_batch_size, obs_dim))
        self.register_buffer("game_steps", torch.zeros(cfg.adv_batch_size, dtype=torch.long))
        self.to(device)
        self._critic_pairs = (list(self.target_critics.parameters()), list(self.critics.parameters()))
        self._policy_pairs = (list(self.reference_policy.parameters()), list(self.policy.parameters()))
        self.actor_optim = adam(self.policy.parameters(), cfg.actor_lr)
        self.critic_optim = adam(self.critics.parameters(), cfg.critic_lr)
        # Without a model (loaded for evaluation) the agent acts but cannot train.
        self.dynamics = None if dynamics is None else [dynamics]  # a list: not a submodule, not in checkpoints
        if dynamics is not None and dataset is not None:
            self._attach_data(dataset, torch.device(device))

    def _attach_data(self, dataset: Any, device: torch.device) -> None:
        """The state pool the game restarts from (all dataset states and the non-terminal next states), the data's
        next-state range for the soft termination, and the episodes' first states for the evaluation monitor."""
        obs = torch.as_tensor(np.asarray(dataset.observations, dtype=np.float32), device=device)
        next_obs = torch.as_tensor(np.asarray(dataset.next_observations, dtype=np.float32), device=device)
        terminal = torch.as_tensor(np.asarray(dataset.terminals, dtype=bool), device=device)
        self.state_pool = torch.cat([obs, next_obs[~terminal]])
        self.next_obs_low, self.next_obs_high = next_obs.amin(0), next_obs.amax(0)
        self.start_states = torch.as_tensor(dataset.start_observations(), device=device)
        self.game_obs.copy_(self._pool_sample(self.cfg.adv_batch_size))

    def _pool_sample(self, n: int) -> torch.Tensor:
        return self.state_pool[torch.randint(len(self.state_pool), (n,), device=self.state_pool.device)]

    @property
    def actor(self) -> TanhGaussianActor:
        """The policy that is evaluated (MAGO's mode 1, "reported in paper"): π_ref, acting with its mean."""
        return self.reference_policy

    @property
    def model(self) -> EnsembleDynamics:
        if self.dynamics is None:
            raise RuntimeError("MAGO needs its dynamics model to train; pass dynamics= to the constructor")
        return self.dynamics[0]

    # ------------------------------------------------------------------------------------------------ values
    def _min_q(self, critics: CriticEnsemble, obs: torch.Tensor, actions: torch.Tensor, clip: bool) -> torch.Tensor:
        """min over the two critics of Q(s, a_i) for actions [M, B, A] at states [B, S] (one batched call): [M, B]."""
        repeated = obs.expand(actions.shape[0], *obs.shape)
        q = critics(repeated.reshape(-1, obs.shape[-1]), actions.reshape(-1, actions.shape[-1])).amin(0)
        q = q.view(actions.shape[:-1])
        return q.clamp(0.0, self.value_max) if clip else q

    def _sampled_actions(
        self, obs: torch.Tensor, noise: ActionNoise | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M actions per state, the first M//2 from π and the rest from π_ref, with their log importance ratios
        ℓ = log π_ref − log π (π's samples) and 0 (π_ref's): [M, B, A], [M, B]."""
        num_policy = self.cfg.num_action_samples // 2
        num_reference = self.cfg.num_action_samples - num_policy
        policy_actions, policy_log_prob = sample_actions(
            self.policy, obs, num_policy, None if noise is None else noise.policy
        )
        ref_actions, _ = sample_actions(
            self.reference_policy, obs, num_reference, None if noise is None else noise.reference
        )
        ratio = self.reference_policy.log_prob(obs, policy_actions) - policy_log_prob
        return torch.cat([policy_actions, ref_actions]), torch.cat(
            [ratio, ref_actions.new_zeros(ref_actions.shape[:-1])]
        )

    def _temperature(self, q: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor | float:
        return kl_temperature(q, log_ratio, self.cfg.target_kld) if self.cfg.auto_alpha else self.cfg.alpha

    @torch.no_grad()
    def value_estimates(self, obs: torch.Tensor, online: bool = True, noise: ActionNoise | None = None) -> Values:
        """V(s) under the target critics and (if `online`) the online critics, on the same sampled actions, each with
        its own α(s)."""
        actions, log_ratio = self._sampled_actions(obs, noise)
        estimates = []
        for critics in (self.target_critics, self.critics) if online else (self.target_critics,):
            q = self._min_q(critics, obs, actions, clip=True)
            alpha = self._temperature(q, log_ratio)
            estimates.append(ValueEstimate(q, alpha, soft_value(q, log_ratio, alpha)))
        return Values(actions, log_ratio, estimates[0], estimates[1] if online else None)

    @torch.no_grad()
    def state_values(
        self, obs: torch.Tensor, online: bool = True, noise: ActionNoise | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """V(s) under the target critics and (if `online`) the online critics, on the same sampled actions: [B]."""
        values = self.value_estimates(obs, online, noise)
        return values.target.value, None if values.online is None else values.online.value

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def game_actions(self, obs: torch.Tensor, noise: ActionNoise | None = None) -> GameActions:
        """The M sampled actions per game state and the Boltzmann probabilities ∝ π_ref(a) exp(Q(s, a)/α(s)) over
        them (online critics, unclipped, as MAGO)."""
        actions, log_ratio = self._sampled_actions(obs, noise)
        q = self._min_q(self.critics, obs, actions, clip=False)
        alpha = self._temperature(q, log_ratio)
        probs = torch.softmax((q / alpha + log_ratio).t(), dim=1)  # [B, M], the rows multinomial draws from
        return GameActions(actions, log_ratio, q, alpha, probs.t())

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = True,
        noise: ActionNoise | None = None,
        choice: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deterministic: tanh of π_ref's mean (evaluation). Otherwise a game action: one of the M sampled actions
        (`game_actions`) drawn by its Boltzmann probability, or the candidate `choice` [B] if given."""
        if deterministic:
            return self.reference_policy.act(obs, deterministic=True)
        candidates = self.game_actions(obs, noise)
        index = torch.multinomial(candidates.probs.t(), 1).squeeze(1) if choice is None else choice
        chosen = candidates.actions[index, torch.arange(obs.shape[0], device=obs.device)]
        if self.cfg.explore_ratio > 0:
            explore = torch.rand(obs.shape[0], device=obs.device) < self.cfg.explore_ratio
            chosen = torch.where(explore.unsqueeze(-1), candidates.actions[0], chosen)
        return chosen

    # ------------------------------------------------------------------------------------------------ the model player
    @torch.no_grad()
    def nature_candidates(
        self, obs: torch.Tensor, act: torch.Tensor, penalize: bool, draws: NatureDraws = NATURE_DRAWN
    ) -> Candidates:
        """Every candidate of nature's move (see the module docstring): all drawn members x K samples x M actions in
        one batched pass."""
        cfg, model = self.cfg, self.model
        drawn = draws.members
        if drawn is None:
            drawn = torch.randint(model.num_members, (cfg.num_models,), device=obs.device)
        members, counts = drawn.unique(return_counts=True)
        mean, logvar = model(obs, act, members=members)  # [U, B, S + 1], raw units
        assert logvar is not None, "MAGO needs a probabilistic dynamics model"
        next_mean, reward_mean = obs + mean[..., :-1], normalize_reward(model, mean[..., -1])
        std = torch.exp(0.5 * logvar[..., :-1])
        noise = draws.state_noise
        if noise is None:
            noise = torch.randn(cfg.num_state_samples, *next_mean.shape, device=obs.device, dtype=next_mean.dtype)
        samples = next_mean + std * noise  # [K, U, B, S]
        reward = reward_mean.clamp(0.0, 1.0)  # [U, B], the member's mean reward
        flat = samples.reshape(-1, samples.shape[-1])  # termination functions see plain [rows, dim] batches
        repeats = len(flat) // len(obs)
        terminal = model.termination_fn(obs.repeat(repeats, 1), act.repeat(repeats, 1), flat).view(samples.shape[:-1])
        alive = continue_probability(samples, self.next_obs_low, self.next_obs_high, cfg.ood_inner, cfg.ood_outer)
        done_prob = done_probability(terminal, alive)  # [K, U, B]

        # MAGO's ensemble std: over the N draws (repeats included) of every predicted mean, next state and r_norm.
        draws_mean = torch.cat([next_mean, reward_mean.unsqueeze(-1)], -1).repeat_interleave(counts, dim=0)
        ensemble_std = draws_mean.var(0, correction=1 if len(draws_mean) > 1 else 0).sum(-1).sqrt()  # [B]
        penalty = cfg.factor * ensemble_std.mean() if penalize else 0.0
        values = self.value_estimates(flat, online=True, noise=draws.action_noise)
        assert values.online is not None
        continuing = cfg.gamma * (1.0 - done_prob)
        q_target = (reward - penalty + continuing * values.target.value.view(done_prob.shape)).mean(0)  # [U, B]
        q_online = (reward - penalty + continuing * values.online.value.view(done_prob.shape)).mean(0)
        return Candidates(
            members, counts, next_mean, std, reward_mean, samples, reward, terminal, alive, done_prob, values,
            q_target, q_online, ensemble_std,
        )  # fmt: skip

    @torch.no_grad()
    def play_nature(
        self, obs: torch.Tensor, act: torch.Tensor, explore: bool, penalize: bool, draws: NatureDraws = NATURE_DRAWN
    ) -> GameStep:
        """Nature's move: the k-th candidate's target value, and the candidate played (the k-th under the online
        critics, or when exploring one per state drawn ∝ its count); the state moves to its first sample."""
        cfg = self.cfg
        candidates = self.nature_candidates(obs, act, penalize, draws)
        counts, q_online = candidates.counts, candidates.q_online
        _, target_value = order_statistic(candidates.q_target, counts, cfg.order_statistic)
        if explore:  # nature explores: one member per state drawn ∝ its count
            played = draws.explore_choice
            if played is None:
                played = torch.multinomial(counts.float().expand(obs.shape[0], -1), 1).squeeze(1)
            online_value = q_online.gather(0, played.unsqueeze(0)).squeeze(0)
        else:
            played, online_value = order_statistic(q_online, counts, cfg.order_statistic)
        rows = torch.arange(obs.shape[0], device=obs.device)
        return GameStep(
            target_value=target_value,
            online_value=online_value,
            next_obs=candidates.next_obs[0, played, rows],
            reward=candidates.reward[played, rows],
            done_prob=candidates.done_prob[0, played, rows],
            ensemble_std=candidates.ensemble_std,
            played=played,
        )

    @torch.no_grad()
    def advance_game(
        self, step: GameStep, done_uniform: torch.Tensor | None = None, restart_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Move the game states on; ended ones (done drawn from p_done, or past `adv_horizon`) restart from the data.
        `done_uniform` [B] (done iff u < p_done) and `restart_states` [B, S] replace the draws if given."""
        done = torch.bernoulli(step.done_prob).bool() if done_uniform is None else done_uniform < step.done_prob
        self.game_steps += 1
        ended = done | (self.game_steps > self.cfg.adv_horizon)
        restart = self._pool_sample(len(ended)) if restart_states is None else restart_states
        self.game_obs.copy_(torch.where(ended.unsqueeze(-1), restart, step.next_obs))
        self.game_steps.masked_fill_(ended, 0)
        return ended

    # ------------------------------------------------------------------------------------------------ learning
    def update(self, batch: Batch, num_real: int = 0, draws: UpdateDraws = UPDATE_DRAWN) -> dict[str, torch.Tensor]:
        """One round: the policy acts in the game, nature answers, then one critic and one policy step on the
        dataset rows and the game rows (half the weight each), and the Polyak updates. `draws` replaces any of the
        update's random draws (a test's)."""
        cfg = self.cfg
        game_obs = self.game_obs.clone()
        game_act = self.act(game_obs, deterministic=False, noise=draws.act_noise, choice=draws.act_choice)
        coin = torch.rand(()) if draws.coin is None else draws.coin
        explore = bool(coin < cfg.adv_explore_ratio)
        step = self.play_nature(game_obs, game_act, explore, penalize=cfg.factor_in_training, draws=draws.nature)

        real_target = self.dataset_target(batch, draws.target_noise)
        critic_loss = self.critic_loss(batch.obs, batch.act, real_target, game_obs, game_act, step.target_value)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()

        policy_loss, alpha = self.policy_loss(batch.obs, batch.act, game_obs, draws.policy)
        self.actor_optim.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.actor_optim.step()

        with torch.no_grad():
            torch._foreach_lerp_(*self._critic_pairs, cfg.tau_value)
            torch._foreach_lerp_(*self._policy_pairs, cfg.tau_policy)
        ended = self.advance_game(step, draws.done_uniform, draws.restart_states)
        return {
            "loss/critic": critic_loss.detach(),
            "loss/policy": policy_loss.detach(),
            "alpha": alpha.mean(),
            "game/adv_q_target": step.target_value.mean(),
            "game/adv_q": step.online_value.mean(),
            "game/ensemble_std": step.ensemble_std.mean(),
            "game/reward": step.reward.mean(),
            "game/restarts": ended.float().mean(),
        }

    @torch.no_grad()
    def dataset_target(self, batch: Batch, noise: ActionNoise | None = None) -> torch.Tensor:
        """The dataset rows' critic target before the clip: r_norm + γ(1 − d) V_target(s'), rewards in the model's
        normalised units."""
        next_value = self.state_values(batch.next_obs, online=False, noise=noise)[0]
        return normalize_reward(self.model, batch.rew) + self.cfg.gamma * (1.0 - batch.done) * next_value

    def critic_loss(
        self,
        real_obs: torch.Tensor,
        real_act: torch.Tensor,
        real_target: torch.Tensor,
        game_obs: torch.Tensor,
        game_act: torch.Tensor,
        game_target: torch.Tensor,
    ) -> torch.Tensor:
        """½ MSE on the dataset rows + ½ MSE on the game rows, each summed over the two critics; targets clipped to
        [0, 1/(1 − γ)]."""
        q_real = self.critics(real_obs, real_act)  # [2, B]
        q_game = self.critics(game_obs, game_act)
        real = (q_real - real_target.clamp(0.0, self.value_max)).square().mean(1).sum()
        game = (q_game - game_target.clamp(0.0, self.value_max)).square().mean(1).sum()
        return 0.5 * real + 0.5 * game

    @torch.no_grad()
    def policy_targets(
        self, real_obs: torch.Tensor, real_act: torch.Tensor, game_obs: torch.Tensor, draws: PolicyDraws = POLICY_DRAWN
    ) -> PolicyTargets:
        """Per state M candidates: M//2 proposals (tanh-normal around the dataset action with pre-tanh std
        `proposal_std` on dataset rows, π's samples on game rows) and M − M//2 samples of π_ref, with weights
        w = softmax(Q/α + ℓ) of the Boltzmann policy π_ref·exp(Q/α) (online critics, clipped)."""
        cfg = self.cfg
        obs = torch.cat([real_obs, game_obs])
        num_proposals = cfg.num_action_samples // 2
        near_data, near_data_log_prob = tanh_normal_around(real_act, cfg.proposal_std, num_proposals, draws.near_data)
        from_policy, from_policy_log_prob = sample_actions(self.policy, game_obs, num_proposals, draws.policy)
        proposals = torch.cat([near_data, from_policy], dim=1)
        proposal_log_prob = torch.cat([near_data_log_prob, from_policy_log_prob], dim=1)
        ref_actions, _ = sample_actions(
            self.reference_policy, obs, cfg.num_action_samples - num_proposals, draws.reference
        )
        ratio = self.reference_policy.log_prob(obs, proposals) - proposal_log_prob
        actions = torch.cat([proposals, ref_actions])
        log_ratio = torch.cat([ratio, ref_actions.new_zeros(ref_actions.shape[:-1])])
        q = self._min_q(self.critics, obs, actions, clip=True)
        alpha = self._temperature(q, log_ratio)
        weights = torch.softmax(q / alpha + log_ratio, dim=0)  # [M, B]
        return PolicyTargets(obs, actions, proposal_log_prob, log_ratio, q, alpha, weights)

    def policy_loss(
        self,
        real_obs: torch.Tensor,
        real_act: torch.Tensor,
        game_obs: torch.Tensor,
        draws: PolicyDraws = POLICY_DRAWN,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted maximum likelihood toward π_ref·exp(Q/α) on `policy_targets`: loss −Σ_i w_i log π_β(a_i|s),
        ½ mean over the dataset rows + ½ over the game rows. Returns the loss and α(s)."""
        targets = self.policy_targets(real_obs, real_act, game_obs, draws)
        per_state = -(targets.weights * self.policy.log_prob(targets.obs, targets.actions, beta=self.cfg.policy_beta))
        per_state = per_state.sum(0)
        num_real = len(real_obs)
        loss = 0.5 * per_state[:num_real].mean() + 0.5 * per_state[num_real:].mean()
        return loss, torch.as_tensor(targets.alpha)

    def attack_critics(self) -> torch.nn.Module | None:
        """Its Q critics, which the value-based observation attacks query (eval.py --choice attack)."""
        return self.critics

    def end_epoch(self) -> None:
        """No schedules."""

    # ------------------------------------------------------------------------------------------------ evaluation
    def evaluation_extras(self, result: dict[str, float], spec: TaskSpec) -> tuple[dict[str, float], dict[str, float]]:
        """MAGO's evaluator beside the real episodes: `monitor_rollouts` game rollouts from dataset start states with
        π_ref's mean, nature playing without exploration (a rollout leaves when it ends); the statistics of nature's
        values and of the log ensemble std (the README's adv-q and ensemble-std figures), the model return, and the
        real return minus eval_penalty_coef · mean ensemble std (MAGO's reported number).

        Returns the evaluation (with the penalised return if report_penalized_return) and the scalars to log. The
        global RNG streams are left as they were, so training does not depend on how often it is evaluated.
        """
        cfg = self.cfg
        if self.dynamics is None:
            return result, {}
        with isolated_global_rngs(self.game_obs.device):
            rollouts = self.monitor_rollouts()
        penalized = result["return_mean"] - cfg.eval_penalty_coef * rollouts.pop("mean_ensemble_std")
        scalars = {**rollouts, "test/reward": result["return_mean"], "test/reward_penalized": penalized}
        if cfg.report_penalized_return:
            result = {**result, "return_mean": penalized, "normalized_mean": float(normalized_score(spec, penalized))}
        return result, scalars

    @torch.no_grad()
    def monitor_rollouts(self) -> dict[str, float]:
        cfg = self.cfg
        chosen = torch.randint(len(self.start_states), (cfg.monitor_rollouts,), device=self.start_states.device)
        obs, returns = self.start_states[chosen], torch.zeros(cfg.monitor_rollouts, device=self.start_states.device)
        index = torch.arange(cfg.monitor_rollouts, device=obs.device)
        targets, onlines, log_stds, step_stds = [], [], [], []
        for _ in range(cfg.monitor_horizon):
            step = self.play_nature(obs, self.act(obs, deterministic=True), explore=False, penalize=cfg.factor > 0)
            returns[index] += denormalize_reward(self.model, step.reward)
            targets.append(step.target_value)
            onlines.append(step.online_value)
            log_stds.append(step.ensemble_std.clamp_min(1e-12).log())  # all draws one member: std 0
            step_stds.append(step.ensemble_std.mean())
            alive = ~torch.bernoulli(step.done_prob).bool()
            obs, index = step.next_obs[alive], index[alive]
            if len(obs) == 0:
                break
        scalars = {
            "test/model_return": float(returns.mean()),
            "mean_ensemble_std": float(torch.stack(step_stds).mean()),
        }
        for name, values in (("adv_q_target", targets), ("adv_q", onlines), ("ensemble_std", log_stds)):
            flat = torch.cat(values)
            mean, std = float(flat.mean()), float(flat.std(unbiased=False))
            scalars |= {f"monitor/{name}/mean": mean, f"monitor/{name}/upper": mean + std}
            scalars[f"monitor/{name}/lower"] = mean - std
        return scalars

    # ------------------------------------------------------------------------------------------------ checkpoint
    def optimizers(self) -> dict[str, Any]:
        return {"actor_optim": self.actor_optim, "critic_optim": self.critic_optim}


# MAGO's README figures (log/<env>/<data>/{adv-q,ensemble-std,reward}): nature's value in the evaluation rollouts,
# the log ensemble std of its draws, and the normalized score (progress.csv's column, plot.py's default metric).
FIGURES = FigureSet(
    "mago",
    "MAGO",
    curves={
        "monitor/adv_q_target/mean": "adv-q",
        "monitor/ensemble_std/mean": "ensemble-std",
        "normalized_score_mean": "reward",
    },
    axis_labels={
        "monitor/adv_q_target/mean": "Adversarial Q (target critics)",
        "monitor/ensemble_std/mean": "log ensemble std",
    },
)

# Its model is queried by the game's updates; the trainer branches no rollouts (MAGO plays its own game instead).
SPEC = AlgorithmSpec(
    "mago",
    "MAGO",
    MAGOConfig,
    MAGO,
    Loop.EPOCHS,
    Unit.GRADIENT_STEPS,
    planned_updates,
    ModelUse.QUERIED,
    figure_sets=(FIGURES,),
)
