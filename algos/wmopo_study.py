"""WMOPO's Pendulum study (docs/wmopo.md#the-pendulum-study): does a model fitted by weighted maximum likelihood
evaluate a fixed target policy π better than plain maximum likelihood, when the data were collected elsewhere?

The data D are 1000 transitions of uniformly random torques (envs/custom_pendulum.py); π is a committed SAC policy.
With ℓ_θ(x) the Gaussian NLL of a data transition x = (s, a, s') and L(θ; w) = mean_D[w · ℓ_θ]:

- ERM (`wmopo-erm`): θ₀ = argmin L(θ; 1).
- Algorithm 2 (`wmopo-alg2`): for i = 0..I−1, roll π out in θ_i with geometric stopping (samples of its discounted
  occupancy d^π_θi), fit the density ratio r_ψ ≈ d^π_θi / d^D, weights w = relu(r_ψ) / mean, score_i = −L(θ_i; w);
  θ_{i+1} = argmin L(θ; w^α) from θ_i. The weights and score of θ_I close the loop; the best-scoring θ_i is kept.
- Algorithm 1 as its authors' code runs it (`wmopo-alg1-detached`): Algorithm 2 whose refit loss also carries
  ⟨θ − θ_i, g⟩, where g = Σ_j w_j^α ℓ_θi(x_j) φ(s_j)ᵀΘ / Σ_j w_j^α is the part of the gradient that comes from the
  weights depending on θ, with ∇_θ log d^π_θ(s) ≈ φ(s)ᵀΘ, φ(s) = [1, s, s²], Θ from a constrained LSTD(λ) on
  simulated episodes whose "cost" is ∇_θ log p_θ(s' | s, a) of each simulated transition. The authors build the
  term from detached parameter values, so it never reaches the gradient: it changes the loss the refit prints and
  stops on, and the random draws (the LSTD episodes), but the refit follows Algorithm 2's gradient.
- `wmopo-alg1`: this project's differentiable reading of that correction: the same term through the live
  parameters, so the refit's gradient gains g (docs/wmopo.md#decisions).

The outcome: π's discounted return in the real pendulum and in the chosen model, and the policy-evaluation error
|real − simulated|.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from algos.train_run import OpenRun, RunRunner
from algos.wmopo import ModelDiverged, occupancy_samples
from config import DynamicsConfig, Rule, RunConfig, between, discount, one_of, positive, register_config
from envs import custom_pendulum as pendulum
from envs.behaviour import load_behaviour_policy
from envs.generate import BEHAVIOUR_ROOT
from envs.tasks import TaskSpec
from models.density_ratio import DensityRatio, RatioFitConfig
from models.dynamics import EnsembleDynamics
from models.dynamics_recipes import BatchLoss, FitRecipe, recipe_for, with_loss
from utils.algorithm_spec import AlgorithmSpec, FigureSet, Loop, ModelUse, RunFigure, Unit, no_planned_length
from utils.errors import UserError
from utils.logger import RunLogger

Policy = Callable[[torch.Tensor], torch.Tensor]  # states [B, 2] -> torques [B, 1]
Transition = Callable[..., torch.Tensor]  # states, torques (, standard-normal noise) -> next states


def study_dynamics() -> DynamicsConfig:
    """The study's model: one network, 1 x 8 tanh -> Δs, a state-independent log σ² starting at 0, raw inputs, Adam
    (lr 5e-4) with coupled L2 1e-4 on every parameter, batch 32, no holdout; a fit stops once 21 epochs passed
    without a lower training loss, keeping the last weights (`regression.py`, `model.py`)."""
    return DynamicsConfig(
        num_ensemble=1,
        num_elites=1,
        hidden_dims=[8],
        weight_decay=[0.0, 0.0],
        lr=5e-4,
        batch_size=32,
        holdout_ratio=0.0,
        max_epochs=50_000,
        train_loss_patience=21,
        bootstrap=False,
        loss="nll",
        variance_model="state_independent",
        optimizer="adam_l2",
        param_weight_decay=1e-4,
        activation="tanh",
        init="uniform",
        normalization="none",
        predict_reward=False,
    )


def study_ratio() -> RatioFitConfig:
    """`ratio_estimation.py`: 2 x 16 tanh, Adam lr 1e-3 with L2 1e-4, batch 32, no holdout, ≤ 1000 epochs, stop once
    21 epochs passed without a lower training loss."""
    return RatioFitConfig(
        hidden_dims=[16, 16], lr=1e-3, weight_decay=1e-4, batch_size=32, holdout_ratio=0.0, patience=21, max_epochs=1000
    )


def policy_file(path: str) -> Path:
    """A policy path as given if it exists or is absolute, else relative to the repository (the committed policy)."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else BEHAVIOUR_ROOT.parent / given


@dataclass
class PendulumStudyConfig(RunConfig):
    """Keys of the Pendulum study (docs/wmopo.md#the-pendulum-study); the registered names set `iterations` and
    `correction`."""

    online: ClassVar[bool] = True  # no dataset task: the study generates its data in the pendulum itself
    families: ClassVar[tuple[str, ...] | None] = ("custom_pendulum",)

    iterations: int = 10  # loop_num; 0 = ERM alone
    # "none" (Algorithm 2), "detached" (Algorithm 1 as the authors' code runs it: ⟨θ − θ_i, g⟩ on the loss value
    # only), "live" (this project's differentiable reading: the term's gradient g reaches the refit)
    correction: str = "none"
    weight_exponent: float = 1.0  # α: the refit uses w^α
    gamma: float = pendulum.GAMMA
    data_transitions: int = 1000
    data_seed: int = 0  # the data are one fixed set, as the original's committed np_obac.csv; seeds vary the fits
    policy_path: str = "behaviour/custom_pendulum/expert.pt"  # relative paths: to the working dir, else the repo
    sim_samples: int = 1000  # occupancy samples per ratio fit
    refit_epochs: int = 10_000  # max epochs of each weighted refit (ERM: dynamics.max_epochs)
    refit_lr: float = 5e-4
    # κ of a live proximal term κ‖θ − θ_i‖² in every refit. The original's `param_update_penalty` is 0 in all its
    # runs and, built from detached parameters like its correction, would have had no effect; κ > 0 keeps the live
    # correction's refit bounded (docs/wmopo.md#decisions).
    proximal_coef: float = 0.0
    lstd_lambda: float = 0.9
    lstd_penalty: float = 0.1
    lstd_episodes: int = 2000
    eval_episodes: int = 100
    # Start spreads σ of N((π, 0), σ²) (docs/wmopo.md#evaluation-starts). The authors evaluate π's real return from
    # σ = 1 and its model return from the model env's reset, σ = 0.5, which is also where every simulated episode of
    # training starts (occupancy samples, LSTD). Evaluation and training starts are separate keys here; the result
    # also reports the matched-start error, the model's episodes starting from the real episodes' own start states.
    real_eval_reset_std: float = pendulum.REAL_EVAL_RESET_STD
    model_eval_reset_std: float = pendulum.MODEL_EVAL_RESET_STD  # the authors' model rollouts start tighter
    model_start_std: float = pendulum.MODEL_EVAL_RESET_STD  # training's simulated episodes (the model env's reset)
    save_every: int = 1
    dynamics: DynamicsConfig = field(default_factory=study_dynamics)
    ratio: RatioFitConfig = field(default_factory=study_ratio)

    def planned_epochs(self) -> int:
        """A finished study's checkpoint counts its iterations plus the final evaluation."""
        return self.iterations + 1

    rules: ClassVar[dict[str, Rule]] = {
        "iterations": lambda value, cfg: None if value >= 0 else ">= 0 (0 fits the ERM model alone)",
        "correction": one_of("none", "live", "detached"),
        "weight_exponent": lambda value, cfg: None if value >= 0 else ">= 0",
        "gamma": discount("simulated episodes stop with probability 1 − γ after every step; at 1 they never stop"),
        "lstd_lambda": between(0.0, 1.0),
        "lstd_penalty": lambda value, cfg: None if value >= 0 else ">= 0",
        "proximal_coef": lambda value, cfg: None if value >= 0 else ">= 0",
        "dynamics.num_ensemble": lambda value, cfg: None if value == 1 else "1 (the study fits one model)",
        "dynamics.predict_reward": lambda value, cfg: None if not value else "false (the study's model predicts Δs)",
        "dynamics.loss": one_of("nll"),
        "policy_path": lambda value, cfg: (
            None
            if policy_file(value).is_file()
            else "an existing policy file (the default, behaviour/custom_pendulum/expert.pt, is committed; to train "
            "another: python collect.py train --env custom_pendulum --steps 40000 --snapshot-every 2000 --work-dir "
            "data/custom_pendulum, then policy_path=data/custom_pendulum/snapshots/step40000.pt)"
        ),
        **dict.fromkeys(
            ("data_transitions", "sim_samples", "refit_epochs", "refit_lr", "lstd_episodes", "eval_episodes"),
            positive,
        ),
        **dict.fromkeys(
            ("real_eval_reset_std", "model_eval_reset_std", "model_start_std"),
            lambda value, cfg: None if value >= 0 else ">= 0 (a start spread; 0 starts every episode hanging still)",
        ),
    }


@register_config("wmopo-erm")
@dataclass
class ERMStudyConfig(PendulumStudyConfig):
    """Plain maximum likelihood (`mle_e_step.py --unweighted_mle True`)."""

    iterations: int = 0


@register_config("wmopo-alg2")
@dataclass
class Alg2StudyConfig(PendulumStudyConfig):
    """Weights and weighted refits alternating, no gradient correction (`--skip_grad True`)."""


@register_config("wmopo-alg1")
@dataclass
class Alg1StudyConfig(PendulumStudyConfig):
    """This project's differentiable reading of Algorithm 1: ⟨θ − θ_i, g⟩ through the live parameters, so the refit's
    gradient gains g (the authors' code never does this; `wmopo-alg1-detached` is what it runs)."""

    correction: str = "live"


@register_config("wmopo-alg1-detached")
@dataclass
class Alg1DetachedStudyConfig(PendulumStudyConfig):
    """Algorithm 1 as its authors' code runs it (`python mle_e_step.py`, their README's "full version"): the
    correction is built from detached parameter values, so it changes the refit's loss value (and its early stopping)
    but not its gradient."""

    correction: str = "detached"


# ---------------------------------------------------------------------------------------------------- LSTD(λ)
def lstd_features(states: torch.Tensor) -> torch.Tensor:
    """φ(s) = [1, s, s²] per row: [B, 1 + 2·dim]."""
    return torch.cat([torch.ones_like(states[..., :1]), states, states.square()], dim=-1)


class LSTDLambda:
    """A linear fit Θ of a vector-valued function g(s) ≈ φ(s)ᵀΘ from the backward recursion
    g(s') = γ E[g(s) + c(s, a, s') | s'] on sampled transitions (s → s'), by LSTD(λ) with the trace
    e ← γλ e + φ(s'), reset to 0 at each episode's start:

        A = Σ e (φ(s') − γ φ(s))ᵀ,   b = γ Σ e cᵀ,   C = Σ φ(s) φ(s)ᵀ,   φ̄ = Σ φ(s') / n,

    all divided by the number of transitions n. `solve` returns the constrained solution
    Θ = (Aᵀ C⁻¹ A + κ φ̄ φ̄ᵀ)⁻¹ Aᵀ C⁻¹ b (κ = 0: the ordinary A⁻¹ b when A is invertible). With c = ∇_θ log p_θ(s'|s, a)
    and episodes that start from the initial distribution and stop with probability 1 − γ, g approximates
    ∇_θ log d^π_θ(s) (`grad_lsd.py`). Statistics accumulate in float64, one step of many episodes at a time.
    """

    def __init__(self, num_features: int, num_outputs: int, gamma: float, lam: float) -> None:
        self.gamma, self.lam = gamma, lam
        self.a = torch.zeros(num_features, num_features, dtype=torch.float64)
        self.b = torch.zeros(num_features, num_outputs, dtype=torch.float64)
        self.c = torch.zeros(num_features, num_features, dtype=torch.float64)
        self.phi_next_sum = torch.zeros(num_features, dtype=torch.float64)
        self.count = 0
        self.trace: torch.Tensor | None = None  # [episodes, F]

    def add(self, phi: torch.Tensor, phi_next: torch.Tensor, cost: torch.Tensor, alive: torch.Tensor) -> None:
        """One transition of each episode still running: φ(s) [L, F], φ(s') [L, F] and c [L, P] for the L episodes
        where `alive` [B] (over every episode, the same B each call, from their first transition on) is True, in
        episode order. Stopped episodes are left out, not multiplied by 0: a stopped episode cannot turn the
        statistics non-finite (inf · 0)."""
        phi, phi_next, cost = phi.double(), phi_next.double(), cost.double()
        if self.trace is None:
            self.trace = torch.zeros(len(alive), phi.shape[1], dtype=torch.float64)
        trace = self.gamma * self.lam * self.trace[alive] + phi_next
        self.trace[alive] = trace
        self.a += trace.T @ (phi_next - self.gamma * phi)
        self.b += self.gamma * (trace.T @ cost)
        self.c += phi.T @ phi
        self.phi_next_sum += phi_next.sum(0)
        self.count += len(phi)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A, b, C and φ̄, each divided by n (float64)."""
        if self.count == 0:
            raise ValueError("LSTD(λ) saw no transitions")
        n = self.count
        return self.a / n, self.b / n, self.c / n, self.phi_next_sum / n

    def solve(self, penalty: float) -> torch.Tensor:
        """Θ [F, P] (float32)."""
        a, b, c, phi_mean = self.statistics()
        c_inv_a, c_inv_b = torch.linalg.solve(c, a), torch.linalg.solve(c, b)
        normal = a.T @ c_inv_a + penalty * torch.outer(phi_mean, phi_mean)
        return torch.linalg.solve(normal, a.T @ c_inv_b).float()


# ---------------------------------------------------------------------------------------------------- the model
def parameter_vector(model: torch.nn.Module) -> torch.Tensor:
    """θ: every parameter flattened, in `named_parameters` order (live: gradients flow through it)."""
    return torch.cat([p.reshape(-1) for p in model.parameters()])


def pointwise_nll(
    model: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """ℓ_θ(x) = ½ Σ_d [(μ_d − Δs_d)² e^{−log σ²_d} + log σ²_d] + ½ D log 2π of the first member: [B]."""
    mean, logvar = model(obs, act)
    assert logvar is not None, "the study's model is Gaussian"
    error = (mean[0] - (next_obs - obs)).square()
    return 0.5 * (error * torch.exp(-logvar[0]) + logvar[0]).sum(-1) + 0.5 * obs.shape[-1] * math.log(2 * math.pi)


def log_likelihood_grads(
    model: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """∇_θ log p_θ(s' | s, a) of every row, flattened like `parameter_vector`: [B, P] (one vmapped call)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def log_likelihood(params: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor, o2: torch.Tensor):
        mean, logvar = functional_call(model, params, (o.unsqueeze(0), a.unsqueeze(0)))
        error = (mean[0, 0] - (o2 - o)).square()
        return -0.5 * (error * torch.exp(-logvar[0, 0]) + logvar[0, 0]).sum()

    grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0, 0))(params, obs, act, next_obs)
    return torch.cat([grads[name].reshape(len(obs), -1) for name in params], dim=1)


def model_transition(model: EnsembleDynamics) -> Transition:
    """s' = s + μ_θ(s, a) + σ_θ ε with the first member (the study's single model); ε is drawn unless given."""

    @torch.no_grad()
    def transition(states: torch.Tensor, torques: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        mean, logvar = model(states, torques)
        assert logvar is not None
        noise = torch.randn_like(mean[0]) if noise is None else noise
        return states + mean[0] + torch.exp(0.5 * logvar[0]) * noise

    return transition


@dataclass
class EpisodeDraws:
    """The random draws of simulated episodes, given instead of drawn (tests against the authors' outputs): episode i
    starts at `starts[i]`, takes torque `torques[i, t]` (None: the policy's) and noise ε = `noise[i, t]` at step t,
    and stops after `lengths[i]` transitions."""

    starts: torch.Tensor  # [B, 2]
    lengths: torch.Tensor  # [B]
    noise: torch.Tensor  # [B, T, 2]
    torques: torch.Tensor | None = None  # [B, T, 1]


def lstd_statistics(
    model: EnsembleDynamics, policy: Policy, cfg: PendulumStudyConfig, draws: EpisodeDraws | None = None
) -> LSTDLambda:
    """LSTD(λ)'s statistics over `lstd_episodes` episodes of π simulated in the model from the model start states,
    side by side, each stopping with probability 1 − γ after every transition (or as `draws` script them); the cost
    of a transition is the score ∇_θ log p_θ(s'|s, a) of the sampled next state. An episode is simulated only until
    it stops, as the original's one-at-a-time episodes are, so a state it would have reached later cannot overflow
    the statistics."""
    transition = model_transition(model)
    lstd = LSTDLambda(1 + 2 * model.obs_dim, parameter_vector(model).numel(), cfg.gamma, cfg.lstd_lambda)
    if draws is None:
        states = pendulum.evaluation_reset(cfg.lstd_episodes, cfg.model_start_std)
    else:
        states = draws.starts.clone()
    alive = torch.ones(len(states), dtype=torch.bool)
    step = 0
    while bool(alive.any()):
        running = alive.nonzero().squeeze(1)
        now = states[running]
        if draws is not None and draws.torques is not None:
            torques = draws.torques[running, step]
        else:
            with torch.no_grad():
                torques = policy(now)
        then = transition(now, torques, None if draws is None else draws.noise[running, step])
        cost = log_likelihood_grads(model, now, torques, then)
        lstd.add(lstd_features(now), lstd_features(then), cost, alive)
        states[running] = then.to(states.dtype)
        step += 1
        if draws is None:
            alive[running] = torch.rand(len(running)) < cfg.gamma
        else:
            alive[running] = draws.lengths[running] > step
    return lstd


def grad_log_density(
    model: EnsembleDynamics, policy: Policy, cfg: PendulumStudyConfig, draws: EpisodeDraws | None = None
) -> torch.Tensor:
    """Θ with ∇_θ log d^π_θ(s) ≈ φ(s)ᵀΘ, from `lstd_statistics`, solved with the constraint weight κ
    (`lstd_penalty`)."""
    return lstd_statistics(model, policy, cfg, draws).solve(cfg.lstd_penalty)


def study_score(
    model: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, weights: torch.Tensor
) -> float:
    """The study's score of a model, −mean_D[w · ℓ_θ] (ℓ with its log 2π; the original's `-loss()`): higher is a
    better model where π goes."""
    with torch.no_grad():
        return -float((weights * pointwise_nll(model, obs, act, next_obs)).mean())


def occupancy_set(
    transition: Transition,
    policy: Policy,
    starts: Callable[[int], torch.Tensor],
    gamma: float,
    num: int,
    goes_on: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`num` rows [s, a] of π's discounted occupancy in a model, drawn as the original's `get_sim_data`: whole
    episodes one after another (each from `starts(1)`, stopping with probability 1 − γ after every step, no
    termination) until at least `num` rows exist, then `num` of them at random."""
    return occupancy_samples(
        lambda states, torques: (transition(states, torques), torch.zeros(len(states), dtype=torch.bool)),
        policy,
        starts,
        gamma,
        num,
        batch=1,
        goes_on=goes_on,
    )


def evaluation_errors(real: torch.Tensor, sim: torch.Tensor) -> dict[str, float]:
    """π's simulated return (mean, std over episodes) and the policy-evaluation error |mean real − mean simulated|."""
    return {
        "sim_return": float(sim.mean()),
        "sim_return_std": float(sim.std(unbiased=False)),
        "evaluation_error": abs(float(real.mean()) - float(sim.mean())),
    }


def correction_vector(theta: torch.Tensor, obs: torch.Tensor, nll: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """g = Σ_j w_j ℓ_j φ(s_j)ᵀΘ / Σ_j w_j (`grad_lsd.get_grad_vector`): [P]."""
    per_row = lstd_features(obs) @ theta  # [N, P]: ∇_θ log d(s_j) estimates
    return (weights * nll).unsqueeze(-1).mul(per_row).sum(0) / weights.sum()


def with_extra_term(recipe: FitRecipe, term: Callable[[], torch.Tensor]) -> FitRecipe:
    """`recipe` with `term()` added to every batch's loss (and so to the training loss its patience watches): how
    Algorithm 1's correction and the proximal term enter the refit."""

    def wrap(base: BatchLoss) -> BatchLoss:
        def loss(
            model: EnsembleDynamics, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            total, per_member = base(model, x, y, weights)
            return total + term(), per_member

        return loss

    return with_loss(recipe, wrap)


def correction_loss(
    model: EnsembleDynamics, anchor: torch.Tensor, g: torch.Tensor | None, live: bool, proximal_coef: float = 0.0
) -> Callable[[], Any]:
    """⟨θ − θ_i, g⟩ (if g is given) + κ‖θ − θ_i‖² as a loss term. The correction goes through the live parameters
    (its gradient is g: `wmopo-alg1`) or, as the authors' code builds it, through detached ones (a value without a
    gradient: `wmopo-alg1-detached`); the proximal term κ‖θ − θ_i‖² is always live (a project option; the authors'
    `param_update_penalty`, 0 in all their runs, is detached too)."""

    def term() -> torch.Tensor:
        theta = parameter_vector(model)
        value = (theta - anchor).square().sum() * proximal_coef
        if g is not None:
            value = value + ((theta if live else theta.detach()) - anchor).mul(g).sum()
        return value

    return term


# ---------------------------------------------------------------------------------------------------- the study
class PendulumStudy(RunRunner):
    """One run of one method: ERM, then the weighted iterations, then the evaluation of the chosen model. A
    checkpoint after the ERM fit and after every iteration lets a killed run continue where it was."""

    unit: ClassVar[str] = "iteration"

    def __init__(self, cfg: PendulumStudyConfig, spec: TaskSpec, logger: RunLogger, run_dir: str | Path) -> None:
        self.cfg, self.logger, self.run_dir = cfg, logger, Path(run_dir)
        self.progress = False
        actor, self.policy_info = load_behaviour_policy(policy_file(cfg.policy_path), spec)
        self.actor = actor.requires_grad_(False)
        generator = torch.Generator().manual_seed(cfg.data_seed)
        self.obs, self.act, self.next_obs = pendulum.random_data(cfg.data_transitions, generator)
        self.data_x = torch.cat([self.obs, self.act], dim=-1)
        self.model = EnsembleDynamics(self.obs.shape[1], self.act.shape[1], cfg.dynamics)
        self.ratio = DensityRatio(self.data_x.shape[1], cfg.ratio.hidden_dims)
        self.phase = "erm"  # "erm" -> "iterate" -> "done"
        self.iteration = 0
        self.scores: list[float] = []
        self.models: list[dict[str, torch.Tensor]] = []  # θ_i of every scored iteration
        self.wall_time = 0.0
        self.result: dict[str, float] = {}

    @classmethod
    def build(cls, run: OpenRun) -> PendulumStudy:
        """The study of `run`: its data drawn and the target policy loaded (it needs no evaluator: it scores models)."""
        return cls(cast(PendulumStudyConfig, run.cfg), run.spec, run.logger, run.run_dir)

    def policy(self, states: torch.Tensor) -> torch.Tensor:
        """π's torque, sampled (the study evaluates the stochastic policy): [B, 1]."""
        with torch.no_grad():
            return pendulum.MAX_TORQUE * self.actor(states)[0]

    # ------------------------------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        cfg = self.cfg
        started = time.perf_counter()
        if self.phase == "erm":
            metrics = self.model.fit(self.obs, self.act, self.next_obs, None, progress=False)
            self.logger.scalars({"erm/" + k.split("/")[-1]: float(v) for k, v in metrics.items()}, 0)
            self.phase = "iterate"
            self.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            self.save_checkpoint()
        while self.phase == "iterate":
            try:
                weights = self.score_current()
            except ModelDiverged:
                # The refit diverged (the live correction's loss is unbounded below, docs/wmopo.md#decisions): every
                # episode of π in θ_i goes non-finite, so θ_i cannot be scored and no refit from it could recover;
                # the study ends with θ_0..θ_i−1.
                print(f"θ_{self.iteration} has diverged: the study chooses among θ_0..θ_{self.iteration - 1}")
                self.phase = "done"
                break
            if self.iteration == cfg.iterations:
                self.phase = "done"
                break
            self.refit(weights)
            self.iteration += 1
            self.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            if self.iteration % cfg.save_every == 0:
                self.save_checkpoint()
        if not self.result:  # a finished run resumed: its result stands
            self.wall_time += time.perf_counter() - started
            self.result = self.evaluate()
            self.save_checkpoint()
        return self.result

    def score_current(self) -> torch.Tensor:
        """Weights for θ_i from a ratio fit on π's occupancy in θ_i, and the score −L(θ_i; w); logs both, stores
        θ_i, writes the figure data, and returns w."""
        cfg, i = self.cfg, self.iteration
        sim = occupancy_set(
            model_transition(self.model),
            self.policy,
            lambda num: pendulum.evaluation_reset(num, cfg.model_start_std),
            cfg.gamma,
            cfg.sim_samples,
        )
        ratio_metrics = self.ratio.fit(self.data_x, sim, cfg.ratio)
        weights = self.ratio.weights(self.data_x)
        with torch.no_grad():
            nll = pointwise_nll(self.model, self.obs, self.act, self.next_obs)
        score = study_score(self.model, self.obs, self.act, self.next_obs, weights)
        self.scores.append(score)
        self.models.append({k: v.clone() for k, v in self.model.state_dict().items()})
        sim_return = self.model_returns()
        ess = float(weights.sum() ** 2 / weights.square().sum()) / len(weights)
        self.logger.scalars(
            {
                "study/score": score,
                "study/sim_return": float(sim_return.mean()),
                "weights/max": float(weights.max()),
                "weights/min": float(weights.min()),
                "weights/effective_sample_fraction": ess,
                "study/unweighted_nll": float(nll.mean()),
                **ratio_metrics,
            },
            i,
        )
        figures = self.run_dir / "figures"
        figures.mkdir(exist_ok=True)
        np.savez(
            figures / f"iter{i}.npz", data=self.data_x.numpy(), weights=weights.numpy(), sim=sim.numpy(), score=score
        )
        return weights

    def refit(self, weights: torch.Tensor) -> None:
        """θ_{i+1} from θ_i: the weighted MLE with w^α, plus the correction term for Algorithm 1."""
        cfg = self.cfg
        tempered = weights.pow(cfg.weight_exponent)
        metrics: dict[str, float] = {}
        g = None
        if cfg.correction != "none":
            theta_features = grad_log_density(self.model, self.policy, cfg)
            with torch.no_grad():
                nll = pointwise_nll(self.model, self.obs, self.act, self.next_obs)
            g = correction_vector(theta_features, self.obs, nll, tempered)
            metrics["study/correction_norm"] = float(g.norm())
        extra = None
        if g is not None or cfg.proximal_coef > 0:
            anchor = parameter_vector(self.model).detach().clone()
            extra = correction_loss(self.model, anchor, g, cfg.correction == "live", cfg.proximal_coef)
        self.model.cfg = dataclasses.replace(cfg.dynamics, max_epochs=cfg.refit_epochs, lr=cfg.refit_lr)
        try:
            recipe = recipe_for(self.model.cfg)
            if extra is not None:
                recipe = with_extra_term(recipe, extra)
            fit = self.model.fit(
                self.obs, self.act, self.next_obs, None, weights=tempered, progress=False, recipe=recipe
            )
        finally:
            self.model.cfg = cfg.dynamics
        metrics |= {"refit/" + k.split("/")[-1]: float(v) for k, v in fit.items()}
        self.logger.scalars(metrics, self.iteration + 1)

    # ------------------------------------------------------------------------------------------------ evaluation
    def model_returns(self) -> torch.Tensor:
        starts = pendulum.evaluation_reset(self.cfg.eval_episodes, self.cfg.model_eval_reset_std)
        return pendulum.discounted_returns(self.policy, starts, model_transition(self.model), self.cfg.gamma)

    def evaluate(self) -> dict[str, float]:
        """The chosen (best-scoring) model's simulated return next to π's real return, and the evaluation error twice:
        under the authors' protocol (real starts σ = `real_eval_reset_std`, model starts `model_eval_reset_std`) and
        with matched starts (the model's episodes start from the real episodes' start states)."""
        cfg = self.cfg
        chosen = int(np.argmax(np.nan_to_num(self.scores, nan=-np.inf)))
        self.model.load_state_dict(self.models[chosen])
        real_starts = pendulum.evaluation_reset(cfg.eval_episodes, cfg.real_eval_reset_std)
        real_states = pendulum.rollout(self.policy, real_starts, pendulum.step)
        real = pendulum.discounted_return_of(real_states, cfg.gamma)
        np.savez(self.run_dir / "figures" / "real_states.npz", states=real_states.reshape(-1, 2).numpy())
        sim = self.model_returns()
        # Drawn after the authors' protocol, so its figures stay what they were without the matched evaluation.
        sim_matched = pendulum.discounted_returns(self.policy, real_starts, model_transition(self.model), cfg.gamma)
        result = {
            "real_return": float(real.mean()),
            "real_return_std": float(real.std(unbiased=False)),
            **evaluation_errors(real, sim),
            **{f"{k}_matched": v for k, v in evaluation_errors(real, sim_matched).items()},
            "chosen_iteration": float(chosen),
            "chosen_score": self.scores[chosen],
            "models_scored": float(len(self.scores)),  # fewer than iterations + 1 where a refit diverged
        }
        self.logger.scalars({f"result/{k}": v for k, v in result.items()}, len(self.scores) - 1)
        simulated = {
            "return_mean": result["sim_return"],
            "return_std": result["sim_return_std"],
            "normalized_mean": float("nan"),
            "normalized_std": float("nan"),
            "length_mean": float(pendulum.EPISODE_STEPS),
            "length_std": 0.0,
        }
        self.record_evaluation(simulated, len(self.scores) - 1, len(self.scores) - 1)
        torch.save(self.model.state_dict(), self.run_dir / "dynamics_chosen.pt")
        return result

    # ------------------------------------------------------------------------------------------------ checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "task": self.cfg.task,
            "algo": self.cfg.algo,
            # The final evaluation counts as one more; a study ended early by a diverged refit is finished too.
            "epoch": self.cfg.planned_epochs() if self.phase == "done" else self.iteration,
            "global_step": self.iteration,
            "iteration": self.iteration,
            "num_events": self.logger.num_events,
            "phase": self.phase,
            "scores": self.scores,
            "models": self.models,
            "model": self.model.state_dict(),
            "ratio": self.ratio.state_dict(),
            "wall_time": self.wall_time,
            "result": self.result,
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.phase, self.iteration, self.scores = (
            state["phase"],
            state.get("iteration", state["epoch"]),
            list(state["scores"]),
        )
        self.models = list(state["models"])
        self.model.load_state_dict(state["model"])
        self.ratio.load_state_dict(state["ratio"])
        self.wall_time, self.result = state["wall_time"], state["result"]

    def resumed_line(self, state: dict[str, Any]) -> str:
        """Where a resumed run was: its iteration and phase."""
        return f"resumed at iteration {state.get('iteration', state['epoch'])} ({state['phase']})"

    def result_line(self, result: dict[str, float], run: OpenRun) -> str:
        """How well the chosen model evaluates the target policy: its discounted return, real and in the model."""
        run_dir = run.run_dir
        return (
            f"target policy's discounted return: real {result['real_return']:.2f} ± {result['real_return_std']:.2f}, "
            f"in the chosen model (iteration {int(result['chosen_iteration'])}) {result['sim_return']:.2f} ± "
            f"{result['sim_return_std']:.2f} | evaluation error {result['evaluation_error']:.2f} | curves: "
            f"tensorboard --logdir {run_dir}"
        )


# ---------------------------------------------------------------------------------------------------- figures
def states_figure(run_dir: Path, path: Path, title: str) -> None:
    """WMOPO's Figure 1 for one study run: π's visited states in the real pendulum over the data, and the data
    coloured by log10 of their weights for the first model (ERM) and the chosen one."""
    from utils.plotting import state_scatter_panels  # matplotlib only when a figure is drawn

    figures = run_dir / "figures"
    if not (figures / "real_states.npz").is_file():
        raise UserError(f"{run_dir} has no figures/real_states.npz: the study has not finished; resume it first")
    first = np.load(figures / "iter0.npz")
    scores = {int(file.stem[len("iter") :]): float(np.load(file)["score"]) for file in figures.glob("iter*.npz")}
    best = max(sorted(scores), key=lambda i: scores[i])  # the first of equal scores, as the study's argmax
    picked = np.load(figures / f"iter{best}.npz")
    real = np.load(figures / "real_states.npz")["states"]
    data = first["data"][:, :2]
    panels = [
        ("π's states (real) over the data", data, None, real),
        ("weights of θ_0 (ERM)", data, np.log10(np.maximum(first["weights"], 1e-12)), None),
        (f"weights of θ_{best} (chosen)", data, np.log10(np.maximum(picked["weights"], 1e-12)), None),
    ]
    wall = 4.1 * np.pi
    state_scatter_panels(path, panels, "θ", "θ̇", (-wall, wall), (-15.0, 15.0), title)


# The study's figure sets (plot.py --figures), shared by its four methods.
STUDY_CURVES = FigureSet(
    "wmopo",
    "WMOPO Pendulum study",
    # Per iteration: π's return in θ_i, the score −L(θ_i; w), the weights' spread.
    curves={
        "study/sim_return": "sim-return",
        "study/score": "score",
        "weights/effective_sample_fraction": "weights-ess",
    },
    axis_labels={
        "study/sim_return": "Discounted return of π in θ_i",
        "study/score": "Score −L(θ_i; w)",
        "weights/effective_sample_fraction": "Effective sample fraction of w",
    },
)
STUDY_STATES = FigureSet(
    "wmopo-states",
    "WMOPO Pendulum study",
    run_figure=RunFigure("states", states_figure, "the Pendulum study's Figure 1 per run"),
)

SPECS = tuple(
    AlgorithmSpec(
        name,
        title,
        config,
        PendulumStudy,
        Loop.STUDY,
        Unit.STUDY_ITERATIONS,
        no_planned_length,  # its steps count models, and its config is an online one: no planned length is read
        ModelUse.REFITTED,
        figure_sets=(STUDY_CURVES, STUDY_STATES),
    )
    for name, title, config in (
        ("wmopo-erm", "Pendulum study: ERM", ERMStudyConfig),
        ("wmopo-alg2", "Pendulum study: Algorithm 2", Alg2StudyConfig),
        ("wmopo-alg1", "Pendulum study: Algorithm 1", Alg1StudyConfig),
        ("wmopo-alg1-detached", "Pendulum study: Algorithm 1 (detached)", Alg1DetachedStudyConfig),
    )
)
