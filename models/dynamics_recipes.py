"""How each lineage fits the shared ensemble (docs/dynamics.md#recipes): the pieces `EnsembleDynamics.fit` plugs in.

A recipe names one lineage's choices: the per-sample loss, which rows are held out and in what order the rest are
visited, how an epoch is judged and which weights and elites a fit keeps, and when it stops.

- MBPO (`mbpo`): Gaussian NLL, a random holdout, each member kept at its best holdout MSE (a > 1 % relative gain
  counts), elites by that loss, stopping after `max_epochs_since_update` epochs without a gain.
- Weighted NLL (`weighted_nll`, WMOPO's D4RL model): the same holdout split, judged by the (weighted) NLL, where any
  lower value counts.
- PMDB (`pmdb`): β-NLL in log-σ bounds with AdamW, no holdout: `max_epochs` epochs (or a training-loss patience),
  the last weights, the first `num_elites` members as elites.
- mjrl (`mjrl`): deterministic MSE on MAD-scaled data, every row in its order, whole minibatches, a fixed number of
  epochs and an optional step cap; the weights carry on, no elites are chosen.

The `dynamics` block selects the recipe (`recipe_for`) by the keys that always selected it, and each piece reads its
own keys, so every key keeps its meaning; the NPG family asks for `mjrl` by name. The per-sample losses and the
optimisers are chosen by `dynamics.loss` and `dynamics.optimizer` for every recipe alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

from utils.errors import UserError

if TYPE_CHECKING:
    from models.dynamics import EnsembleDynamics
    from models.dynamics_config import DynamicsConfig


# ---------------------------------------------------------------------------------------------------- losses
def squared_error(mean: torch.Tensor, logvar: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """mjrl's deterministic loss: the mean's squared error, averaged over output dims [E, B]."""
    return (mean - y).square().mean(-1)


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """MBPO's Gaussian NLL without its ½ and log 2π, averaged over output dims [E, B]."""
    assert logvar is not None, "the Gaussian NLL needs a probabilistic model"
    return ((mean - y).square() * torch.exp(-logvar) + logvar).mean(-1)


def beta_nll(mean: torch.Tensor, logvar: torch.Tensor | None, y: torch.Tensor, beta: float) -> torch.Tensor:
    """PMDB's β-NLL [E, B]: −log N(y | μ, σ) per element times w = stopgrad(σ)^{2β} / its mean over the batch (β = 0
    is the plain NLL with its ½ and log 2π). In the scaled target space it differs from the loss in raw units by a
    constant only: the scales cancel in w."""
    assert logvar is not None, "the β-NLL needs a probabilistic model"
    nll = 0.5 * ((mean - y).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
    weight = torch.exp(beta * logvar.detach())  # σ^{2β}
    return (nll * weight / weight.mean(-2, keepdim=True)).mean(-1)


SampleLoss = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]
SAMPLE_LOSSES = ("nll", "mse", "beta_nll")


def sample_loss(cfg: DynamicsConfig) -> SampleLoss:
    """The per-member, per-sample loss `dynamics.loss` names."""
    if cfg.loss == "mse":
        return squared_error
    if cfg.loss == "beta_nll":
        return lambda mean, logvar, y: beta_nll(mean, logvar, y, cfg.nll_beta)
    return gaussian_nll


# ---------------------------------------------------------------------------------------------------- optimisers
def layer_decay_adam(model: EnsembleDynamics) -> torch.optim.Optimizer:
    """MBPO's: Adam whose per-layer weight_decay adds wd·W to each weight's gradient before the moment updates, the
    gradient of wd·½‖W‖² in the loss (coupled L2, not AdamW), in one fused kernel; biases and bounds undecayed."""
    cfg = model.cfg
    layer_weights = [layer.weight for layer in model.net.layers]
    others = [p for p in model.parameters() if all(p is not w for w in layer_weights)]
    groups = [{"params": [w], "weight_decay": wd} for w, wd in zip(layer_weights, cfg.weight_decay)]
    return torch.optim.Adam([*groups, {"params": others, "weight_decay": 0.0}], lr=cfg.lr, fused=True)


def adamw(model: EnsembleDynamics) -> torch.optim.Optimizer:
    """PMDB's: AdamW decaying every parameter by `adamw_weight_decay`."""
    return torch.optim.AdamW(model.parameters(), lr=model.cfg.lr, weight_decay=model.cfg.adamw_weight_decay, fused=True)


def adam_l2(model: EnsembleDynamics) -> torch.optim.Optimizer:
    """Adam with torch's coupled L2 `param_weight_decay` on every parameter."""
    return torch.optim.Adam(model.parameters(), lr=model.cfg.lr, weight_decay=model.cfg.param_weight_decay, fused=True)


OPTIMIZERS: dict[str, Callable[[EnsembleDynamics], torch.optim.Optimizer]] = {
    "adam": layer_decay_adam,
    "adamw": adamw,
    "adam_l2": adam_l2,
}


# ---------------------------------------------------------------------------------------------------- fit state
@dataclass
class FitState:
    """What the fit loop carries from epoch to epoch; a progress file saves it."""

    best_losses: torch.Tensor  # per member: its best holdout loss, or the best training loss in every entry
    member_losses: torch.Tensor  # per member: the last epoch's mean data term
    epoch: int = 0
    steps: int = 0  # gradient steps taken
    stale: int = 0  # epochs in a row without an improvement
    best_state: dict[str, torch.Tensor] | None = None  # the members' weights at their best epoch (keep_weights best)
    last_holdout: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class HeldOut(NamedTuple):
    """The holdout split, standardised inputs and scaled targets, with the fit's weights if any."""

    x: torch.Tensor
    y: torch.Tensor
    weights: torch.Tensor | None


# ---------------------------------------------------------------------------------------------------- splits
class Split(Protocol):
    def holdout_size(self, rows: int) -> int:
        """Rows kept out of training."""
        ...

    def order(self, rows: int, device: torch.device) -> torch.Tensor | None:
        """The rows' order, holdout first (None: every row in its place, none held out)."""
        ...


@dataclass(frozen=True)
class RandomHoldout:
    """MBPO's: min(int(n · ratio), max_holdout) rows at random held out (the order is drawn even when none are)."""

    ratio: float
    max_rows: int

    def holdout_size(self, rows: int) -> int:
        return min(int(rows * self.ratio), self.max_rows)

    def order(self, rows: int, device: torch.device) -> torch.Tensor | None:
        return torch.randperm(rows, device=device)


class InOrder:
    """mjrl's: every row trains, in its place (the scalers' statistics are summed in the data's own order)."""

    def holdout_size(self, rows: int) -> int:
        return 0

    def order(self, rows: int, device: torch.device) -> torch.Tensor | None:
        return None


# ---------------------------------------------------------------------------------------------------- minibatches
class RowSchedule(Protocol):
    """Which training rows each member visits in an epoch, cut into minibatches along dim 1."""

    shared: bool  # one order for every member: a batch is one [B, ·] input broadcast to all
    persistent: bool  # the rows carry over from epoch to epoch (a progress file saves them)

    def first(self, rows: int, members: int, device: torch.device) -> torch.Tensor | None:
        """Drawn once, before the first epoch."""
        ...

    def epoch(self, previous: torch.Tensor | None, rows: int, members: int, device: torch.device) -> torch.Tensor:
        """The epoch's rows [E, N] of every member."""
        ...


@dataclass(frozen=True)
class Reshuffled:
    """MBPO's: rows drawn once per fit (a bootstrap sample, or every row), each member's reshuffled every epoch."""

    bootstrap: bool
    shared: bool = False
    persistent: bool = True

    def first(self, rows: int, members: int, device: torch.device) -> torch.Tensor | None:
        if self.bootstrap:
            return torch.randint(rows, (members, rows), device=device)
        return torch.arange(rows, device=device).expand(members, rows)

    def epoch(self, previous: torch.Tensor | None, rows: int, members: int, device: torch.device) -> torch.Tensor:
        assert previous is not None
        return previous.gather(1, torch.rand(members, rows, device=device).argsort(1))


@dataclass(frozen=True)
class FreshBootstrap:
    """PMDB's: a new bootstrap sample every epoch (i.i.d. rows, already in random order)."""

    shared: bool = False
    persistent: bool = False

    def first(self, rows: int, members: int, device: torch.device) -> torch.Tensor | None:
        # Drawn and never used: the fits made so far drew it, and their random streams stay as they were.
        return torch.randint(rows, (members, rows), device=device)

    def epoch(self, previous: torch.Tensor | None, rows: int, members: int, device: torch.device) -> torch.Tensor:
        return torch.randint(rows, (members, rows), device=device)


@dataclass(frozen=True)
class SharedShuffle:
    """Every member sees the same minibatches, in one new order per epoch (the weighted-NLL lineage)."""

    shared: bool = True
    persistent: bool = False

    def first(self, rows: int, members: int, device: torch.device) -> torch.Tensor | None:
        return None

    def epoch(self, previous: torch.Tensor | None, rows: int, members: int, device: torch.device) -> torch.Tensor:
        return torch.randperm(rows, device=device).expand(members, rows)


@dataclass(frozen=True)
class WholeBatches:
    """mjrl's: each member its own new order of every row each epoch, the last partial minibatch dropped."""

    batch_size: int
    shared: bool = False
    persistent: bool = False

    def first(self, rows: int, members: int, device: torch.device) -> torch.Tensor | None:
        return None

    def epoch(self, previous: torch.Tensor | None, rows: int, members: int, device: torch.device) -> torch.Tensor:
        whole = rows // self.batch_size * self.batch_size
        return torch.rand(members, rows, device=device).argsort(1)[:, :whole]


def rows_for(cfg: DynamicsConfig) -> RowSchedule:
    """The schedule `bootstrap`, `bootstrap_every_epoch` and `shared_batches` select."""
    if cfg.bootstrap and cfg.bootstrap_every_epoch:
        return FreshBootstrap()
    if cfg.shared_batches and not cfg.bootstrap:
        return SharedShuffle()
    return Reshuffled(cfg.bootstrap)


# ---------------------------------------------------------------------------------------------------- judges
class Judge(Protocol):
    """The holdout/elite policy: what an epoch's losses mean for the patience counter, which weights and elites the
    fit keeps, and what it reports."""

    def begin(self, model: EnsembleDynamics, state: FitState) -> None:
        """Before the first epoch (a resumed fit then restores what it saved)."""
        ...

    def end_epoch(self, model: EnsembleDynamics, state: FitState, train_loss: float, held: HeldOut | None) -> None:
        """Judge the epoch: update `state` (its `metrics` are the epoch's logged values)."""
        ...

    def finish(self, model: EnsembleDynamics, state: FitState) -> dict[str, float]:
        """Settle weights and elites; the fit's final metrics."""
        ...


@dataclass(frozen=True)
class TrainingLoss:
    """Without a holdout: the last weights, the first `num_elites` members as elites; with `patience`, an epoch
    without a lower training loss counts as stale."""

    patience: bool

    def begin(self, model: EnsembleDynamics, state: FitState) -> None:
        pass

    def end_epoch(self, model: EnsembleDynamics, state: FitState, train_loss: float, held: HeldOut | None) -> None:
        state.metrics = {"dynamics/train_loss": train_loss}
        if self.patience:  # best_losses holds the best training loss in every entry
            if train_loss < float(state.best_losses[0]):
                state.best_losses.fill_(train_loss)
                state.stale = 0
            else:
                state.stale += 1

    def finish(self, model: EnsembleDynamics, state: FitState) -> dict[str, float]:
        model.elites.copy_(torch.arange(model.cfg.num_elites, device=model.device))
        return {**state.metrics, "dynamics/epochs": state.epoch, "dynamics/elite_holdout_loss": float("nan")}


@dataclass(frozen=True)
class HoldoutLoss:
    """With a holdout: each member's holdout loss (`model.holdout_loss`) after every epoch. An improvement is a
    relative gain above `threshold` (the first epoch always counts; MBPO's, on the MSE) or, with `any_lower`, any
    lower value (NLLs can be negative). Stale epochs count only after `patience_after`. With `keep_best` each
    member's weights from its best epoch are restored and the elites ranked by the best losses, else the last
    weights stay and the last losses rank them."""

    threshold: float
    any_lower: bool
    keep_best: bool
    patience_after: int

    def begin(self, model: EnsembleDynamics, state: FitState) -> None:
        if self.keep_best:
            state.best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}

    def end_epoch(self, model: EnsembleDynamics, state: FitState, train_loss: float, held: HeldOut | None) -> None:
        assert held is not None
        holdout = model.holdout_loss(held.x, held.y, held.weights)
        state.last_holdout = holdout
        best = state.best_losses
        improved = holdout < best if self.any_lower else best.isinf() | ((best - holdout) / best > self.threshold)
        if bool(improved.any()):
            if self.keep_best:
                assert state.best_state is not None
                snapshot(model, state.best_state, improved)
            state.best_losses = torch.where(improved, holdout, best)
            state.stale = 0
        elif state.epoch > self.patience_after:
            state.stale += 1
        state.metrics = {
            "dynamics/train_loss": train_loss,
            # KIT's figure: mean holdout loss of the best num_elites members this epoch.
            "dynamics/holdout_loss": float(holdout.sort().values[: model.cfg.num_elites].mean()),
        }

    def finish(self, model: EnsembleDynamics, state: FitState) -> dict[str, float]:
        if self.keep_best:
            assert state.best_state is not None
            model.net.load_state_dict(state.best_state)
            model.holdout_losses.copy_(state.best_losses)
        else:  # the last epoch's weights, judged by the last epoch's holdout losses
            assert state.last_holdout is not None
            model.holdout_losses.copy_(state.last_holdout)
        model.elites.copy_(model.holdout_losses.argsort()[: model.cfg.num_elites])
        elite_loss = float(state.best_losses[model.elites].mean())
        return {**state.metrics, "dynamics/epochs": state.epoch, "dynamics/elite_holdout_loss": elite_loss}


@torch.no_grad()
def snapshot(model: EnsembleDynamics, best_state: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
    """Store the current weights of the improved members (dim 0 of every ensemble tensor is the member)."""
    for name, value in model.net.state_dict().items():
        mask = improved.view(-1, *([1] * (value.dim() - 1)))
        best_state[name].copy_(torch.where(mask, value, best_state[name]))


class MemberLosses:
    """mjrl's: no holdout and no elites (paths run in every member); reports each member's last-epoch loss
    (`dynamics/loss_<i>`, in the scaled target space) with the epochs and gradient steps taken."""

    def begin(self, model: EnsembleDynamics, state: FitState) -> None:
        pass

    def end_epoch(self, model: EnsembleDynamics, state: FitState, train_loss: float, held: HeldOut | None) -> None:
        state.metrics = {"dynamics/train_loss": train_loss}

    def finish(self, model: EnsembleDynamics, state: FitState) -> dict[str, float]:
        losses = {f"dynamics/loss_{i}": loss for i, loss in enumerate(state.member_losses.tolist())}
        return {**losses, "dynamics/epochs": state.epoch, "dynamics/steps": state.steps}


# ---------------------------------------------------------------------------------------------------- stopping
class StoppingRule(Protocol):
    def done(self, state: FitState) -> bool:
        """Checked before every epoch (and before a progress file is written)."""
        ...


@dataclass(frozen=True)
class HoldoutPatience:
    """MBPO's: after `patience` stale epochs in a row, or at `max_epochs` if set; at least one epoch."""

    patience: int
    max_epochs: int | None

    def done(self, state: FitState) -> bool:
        if state.epoch == 0:
            return False
        return state.stale >= self.patience or bool(self.max_epochs and state.epoch >= self.max_epochs)


@dataclass(frozen=True)
class EpochBudget:
    """PMDB's: after `max_epochs` epochs, or `patience` stale epochs in a row if set; at least one epoch."""

    max_epochs: int | None
    patience: int | None

    def done(self, state: FitState) -> bool:
        if state.epoch == 0:
            return False
        if self.max_epochs is None:  # a holdout fraction too small for the data: nothing else would stop the fit
            raise UserError(
                "the dynamics fit has no holdout (too few transitions for dynamics.holdout_ratio) and no "
                "dynamics.max_epochs; set dynamics.max_epochs or use more data"
            )
        return state.epoch >= self.max_epochs or (self.patience is not None and state.stale >= self.patience)


@dataclass(frozen=True)
class StepBudget:
    """mjrl's: after `epochs` epochs (0: the scalers alone), or the first epoch that brings the steps to
    `max_steps`."""

    epochs: int
    max_steps: int | None

    def done(self, state: FitState) -> bool:
        return state.epoch >= self.epochs or (self.max_steps is not None and state.steps >= self.max_steps)


# ---------------------------------------------------------------------------------------------------- recipes
# (model, x, y, weights) -> (the batch's loss, each member's data term [E])
BatchLoss = Callable[
    ["EnsembleDynamics", torch.Tensor, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]
]


def ensemble_loss(
    model: EnsembleDynamics, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's training loss on one batch and each member's data term (`EnsembleDynamics.batch_loss`)."""
    return model.batch_loss(x, y, weights)


@dataclass(frozen=True)
class FitRecipe:
    """One lineage's fit. `fallback` is the recipe a fit turns to when its split holds out no row (too little data
    for the holdout fraction)."""

    name: str
    split: Split
    rows: RowSchedule
    judge: Judge
    stop: StoppingRule
    loss: BatchLoss = ensemble_loss
    fallback: FitRecipe | None = None


def pmdb(cfg: DynamicsConfig) -> FitRecipe:
    """No holdout (`holdout_ratio: 0`): `max_epochs` epochs, or `train_loss_patience` epochs without a lower training
    loss; the last weights, the first members as elites."""
    return FitRecipe(
        "pmdb",
        RandomHoldout(cfg.holdout_ratio, cfg.max_holdout),
        rows_for(cfg),
        TrainingLoss(patience=cfg.train_loss_patience is not None),
        EpochBudget(cfg.max_epochs, cfg.train_loss_patience),
    )


def _holdout_recipe(name: str, cfg: DynamicsConfig, any_lower: bool) -> FitRecipe:
    judge = HoldoutLoss(cfg.improvement_threshold, any_lower, cfg.keep_weights == "best", cfg.patience_after_epoch)
    stop = HoldoutPatience(cfg.max_epochs_since_update, cfg.max_epochs)
    split = RandomHoldout(cfg.holdout_ratio, cfg.max_holdout)
    return FitRecipe(name, split, rows_for(cfg), judge, stop, fallback=pmdb(cfg))


def mbpo(cfg: DynamicsConfig) -> FitRecipe:
    """A random holdout judged by the mean's MSE (`holdout_metric: mse`): a member improves by a relative gain above
    `improvement_threshold`; stop after `max_epochs_since_update` epochs without one (or at `max_epochs`)."""
    return _holdout_recipe("mbpo", cfg, any_lower=False)


def weighted_nll(cfg: DynamicsConfig) -> FitRecipe:
    """A random holdout judged by the fit's (weighted) NLL (`holdout_metric: nll`), any lower value an improvement."""
    return _holdout_recipe("weighted_nll", cfg, any_lower=True)


def mjrl(cfg: DynamicsConfig, epochs: int, max_steps: int | None = None) -> FitRecipe:
    """mjrl's fit: `epochs` passes over every row (no holdout, bootstrap or early stopping), whole minibatches in each
    member's own order, stopping after the first epoch that brings the steps to `max_steps`."""
    return FitRecipe("mjrl", InOrder(), WholeBatches(cfg.batch_size), MemberLosses(), StepBudget(epochs, max_steps))


def recipe_for(cfg: DynamicsConfig) -> FitRecipe:
    """The recipe a `dynamics` block selects: with a holdout (`holdout_ratio` > 0), MBPO's or, with `holdout_metric:
    nll`, the weighted-NLL lineage's; without one, PMDB's."""
    if cfg.holdout_ratio <= 0:
        return pmdb(cfg)
    return weighted_nll(cfg) if cfg.holdout_metric == "nll" else mbpo(cfg)


def with_loss(recipe: FitRecipe, wrap: Callable[[BatchLoss], BatchLoss]) -> FitRecipe:
    """`recipe`, and its fallback, with each batch loss replaced by `wrap(loss)`: the plug for a caller's own terms."""
    fallback = None if recipe.fallback is None else with_loss(recipe.fallback, wrap)
    return dataclasses.replace(recipe, loss=wrap(recipe.loss), fallback=fallback)
