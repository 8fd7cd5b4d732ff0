"""What the trainer, the registry, eval.py and the Python API (docs/api.md) need from an algorithm, of any family.

SAC and its model-based subclasses (MOPO, MICRO) and the model-free baselines (BC, BCQ) all satisfy `Algorithm`;
only algorithms trained on model rollouts also satisfy `ModelBasedAlgorithm`. A run that trains no policy (the WMOPO
Pendulum study) is its own loop instead: a `RunRunner` (algos/train_run.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from buffers.replay import Batch
from models.dynamics import UncertaintyFn
from models.seed_stack import SeedStack, SeedStreams, stack_modules
from utils.errors import UserError

if TYPE_CHECKING:  # annotations only
    from envs.tasks import TaskSpec


class Policy(Protocol):
    """`algo.actor` as the observation attacks call it: `actor(obs, deterministic=True)[0]` is the action for obs
    [..., obs_dim]. A Gaussian policy also has `distribution_params(obs)` (needed by the action_diff attack)."""

    def __call__(self, obs: torch.Tensor, deterministic: bool = ...) -> tuple[torch.Tensor, Any]: ...


class Algorithm(Protocol):
    needs_dynamics: ClassVar[bool]  # True when the constructor takes `dynamics=` (updates query the model)
    needs_dataset: ClassVar[bool]  # True when the constructor takes `dataset=` (it draws states from the data itself)
    stackable: ClassVar[bool]  # `TrainableModule.stack` applies (docs/seeds.md)
    actor: Policy

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions [B, act_dim] for observations [B, obs_dim], without gradients."""
        ...

    def attack_critics(self) -> nn.Module | None:
        """The Q critics the value-based observation attacks query (eval.py), None for a policy learned without."""
        ...

    def evaluation_extras(self, result: dict[str, float], spec: TaskSpec) -> tuple[dict[str, float], dict[str, float]]:
        """The algorithm's own additions to an evaluation of its policy: the evaluation as the run reports it, and
        scalars to log beside it (MAGO's game rollouts, WMOPO's model episodes)."""
        ...

    def action(self, obs: ArrayLike | torch.Tensor, deterministic: bool = True) -> np.ndarray | torch.Tensor:
        """`act` for library users: one observation or a batch, numpy or tensor (`TrainableModule.action`)."""
        ...

    def update(self, batch: Batch, num_real: int = 0) -> dict[str, torch.Tensor]:
        """One gradient step on `batch` (its first `num_real` rows are dataset transitions); detached metrics."""
        ...

    def end_epoch(self) -> None:
        """Called by the trainer after every `steps_per_epoch` updates (LR schedules)."""
        ...

    def training_state(self) -> dict[str, Any]:
        """Everything needed to continue training bit-for-bit; its `modules` entry is the `state_dict()`."""
        ...

    def load_training_state(self, state: dict[str, Any]) -> None: ...

    # nn.Module's, used by `algos.load_run`.
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any: ...

    def eval(self) -> Any: ...


class ModelBasedAlgorithm(Algorithm, Protocol):
    """An algorithm the trainer branches model rollouts for."""

    # The statistic of all members' predictions `model_reward` needs from each model step (info["uncertainty"]), if any.
    rollout_uncertainty: UncertaintyFn | None

    def model_reward(self, reward: torch.Tensor, info: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reward stored for a model transition; `info` holds the model's extras (e.g. "uncertainty") and the
        transition itself ("obs", "act", "next_obs")."""
        ...


class TrainableModule(nn.Module):
    """Checkpointing shared by every algorithm: its `state_dict()` (networks, targets, α) plus the state of each
    optimiser and schedule that `optimizers()` names, so training continues bit-for-bit after a resume.

    Seed stacking (docs/seeds.md): an algorithm whose `update` is written for an optional leading seed dimension
    sets `stackable` and builds its optimisers in `_build_optimizers`; `stack` then makes S runs one instance."""

    stackable: ClassVar[bool] = False
    needs_dataset: ClassVar[bool] = False  # True: `algos.build_algorithm` hands the constructor `dataset=`
    # The observation width, set by `algos.build_algorithm`, so `action` refuses a wrong-sized input in one line.
    obs_dim: int | None = None

    def action(self, obs: ArrayLike | torch.Tensor, deterministic: bool = True) -> np.ndarray | torch.Tensor:
        """The policy's action for one observation [obs_dim] or for a batch [B, obs_dim], in the kind given: a tensor
        comes back as a float32 tensor on its own device, anything else (numpy array, list) as a float32 numpy array.
        Deterministic by default, as evaluation plays; `deterministic=False` samples (from the global torch stream).
        The trainer and the evaluator call `act` on batched tensors directly; this is the one-call form for scripts
        (docs/api.md), which should not have to know the algorithm's device or batch convention."""
        device = next(self.parameters()).device
        try:
            batch = torch.as_tensor(obs, dtype=torch.float32).to(device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise UserError(
                f"observations must be numbers (a numpy array, tensor or list of shape [obs_dim] or [batch, "
                f"obs_dim]); got {type(obs).__name__}: {str(err).splitlines()[0]}"
            ) from None
        width = self.obs_dim if self.obs_dim is not None else batch.shape[-1] if batch.dim() else 0
        if batch.dim() not in (1, 2) or batch.shape[-1] != width:
            raise UserError(
                f"observations of shape {tuple(batch.shape)} do not fit this policy; pass one observation "
                f"[{width}] or a batch [batch, {width}]"
            )
        actions = cast(Algorithm, self).act(batch.unsqueeze(0) if batch.dim() == 1 else batch, deterministic)
        actions = actions.squeeze(0) if batch.dim() == 1 else actions
        if isinstance(obs, torch.Tensor):
            return actions.to(obs.device, torch.float32)
        return actions.to("cpu", torch.float32).numpy()

    def attack_critics(self) -> nn.Module | None:
        """None: a policy learned without Q critics (BC, NPG); the algorithms with critics return them."""
        return None

    def evaluation_extras(self, result: dict[str, float], spec: TaskSpec) -> tuple[dict[str, float], dict[str, float]]:
        """None beyond the real episodes: the evaluation unchanged, nothing more to log."""
        return result, {}

    def optimizers(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build_optimizers(self, epochs: int) -> None:
        """(Re)create the optimisers and schedules over the current parameters (stackable algorithms)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be seed-stacked")

    @classmethod
    def stack(cls, runs: Sequence[TrainableModule], rng: SeedStreams, epochs: int) -> Any:
        """S freshly built runs of this algorithm as one seed-stacked instance: every network becomes a `SeedStack`
        of the runs' copies, top-level tensors (SAC's α) gain a leading seed dimension ([S, 1] for scalars, so they
        broadcast against [S, B] batches), and every other attribute (config, MOPO's penalty, ...) is the first
        run's. Build each run under its own seed and call `rng.capture()` after it, so the stacked instance starts
        exactly where each run alone would."""
        if not cls.stackable:
            raise NotImplementedError(f"{cls.__name__} cannot be seed-stacked")
        first = runs[0]
        stacked = copy.copy(first)
        stacked._parameters, stacked._buffers, stacked._modules = {}, {}, {}
        for name, child in first.named_children():
            wrapper = stack_modules([run._modules[name] for run in runs], rng)
            setattr(stacked, name, wrapper.requires_grad_(any(p.requires_grad for p in child.parameters())))
        stacked._single_shapes = {}
        for name, value in [*first._parameters.items(), *first._buffers.items()]:
            assert value is not None
            values = torch.stack([getattr(run, name).detach() for run in runs])
            values = values.unsqueeze(-1) if value.dim() == 0 else values
            if name in first._parameters:
                setattr(stacked, name, nn.Parameter(values, requires_grad=value.requires_grad))
            else:
                stacked.register_buffer(name, values)
            stacked._single_shapes[name] = value.shape
        stacked._build_optimizers(epochs)
        stacked.stack_extras(runs, rng)
        for seed, run in enumerate(runs):  # optimiser states too: a resumed run's Adam moments carry over
            stacked.load_seed_training_state(seed, run.training_state())
        return stacked

    def stack_extras(self, runs: Sequence[TrainableModule], rng: SeedStreams) -> None:
        """What a subclass keeps per seed in a stacked instance (MICRO: each seed's dynamics model)."""

    def seed_modules_into(self, seed: int, template: TrainableModule) -> None:
        """On a stacked instance: load seed `seed`'s networks and tensors into `template`, an unstacked instance of
        the same algorithm and config."""
        modules = {}
        for name, child in self.named_children():
            modules |= {f"{name}.{key}": value for key, value in cast(SeedStack, child).unstack()[seed].items()}
        for name, shape in self._single_shapes.items():
            modules[name] = getattr(self, name)[seed].detach().clone().reshape(shape)
        template.load_state_dict(modules)

    def seed_training_state(self, seed: int, template: TrainableModule) -> dict[str, Any]:
        """On a stacked instance: what seed `seed`'s run alone would checkpoint (`training_state()` of `template`,
        filled with the seed's slice)."""
        self.seed_modules_into(seed, template)
        for stacked_optim, single_optim in zip(self.optimizers().values(), template.optimizers().values()):
            state = stacked_optim.state_dict()
            if isinstance(stacked_optim, torch.optim.Optimizer):
                shapes = [p.shape for group in single_optim.param_groups for p in group["params"]]
                state["state"] = {
                    index: {
                        key: value if key == "step" else value[seed].clone().reshape(shapes[index])
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
                for key in cast(SeedStack, child).state_names():
                    cast(SeedStack, child).write_seed(seed, key, modules[f"{name}.{key}"])
            for name in self._single_shapes:
                getattr(self, name)[seed].copy_(modules[name].reshape(getattr(self, name)[seed].shape))
        for name, stacked_optim in self.optimizers().items():
            if not isinstance(stacked_optim, torch.optim.Optimizer):
                stacked_optim.load_state_dict(state[name])  # schedules: the same for every seed
                continue
            for group, saved in zip(stacked_optim.param_groups, state[name]["param_groups"]):
                group.update({key: value for key, value in saved.items() if key != "params"})  # the scheduled lr
            params = [p for group in stacked_optim.param_groups for p in group["params"]]
            for index, per_param in state[name]["state"].items():
                target = stacked_optim.state[params[index]]
                for key, value in per_param.items():
                    if key == "step":
                        target[key] = value.clone()
                    else:
                        target.setdefault(key, torch.zeros_like(params[index]))[seed].copy_(
                            value.reshape(params[index][seed].shape)
                        )

    def training_state(self) -> dict[str, Any]:
        return {"modules": self.state_dict(), **{name: obj.state_dict() for name, obj in self.optimizers().items()}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["modules"])
        for name, obj in self.optimizers().items():
            obj.load_state_dict(state[name])


class SeedOfStack:
    """Seed `seed` of a stacked instance (`TrainableModule.stack`), as that seed's trainer and evaluator see a run's
    algorithm: acting runs the unchanged actor on the seed's weights (call it inside the seed's
    `SeedStreams.active`), and checkpoints hold the seed's ordinary training state, so a stacked seed's run dir is
    that of a run alone. Updates and LR schedules belong to the stacked instance (`SeedStackedTrainer`)."""

    def __init__(self, stacked: Any, seed: int, template: TrainableModule) -> None:
        self.stacked, self.seed, self.template = stacked, seed, template
        self.rollout_uncertainty = getattr(stacked, "rollout_uncertainty", None)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        if isinstance(self.stacked.actor, SeedStack):
            return self.stacked.actor.seed_call(self.seed, "act", obs, deterministic)
        # A policy made of several networks (BCQ's): the template with the seed's current weights acts.
        self.stacked.seed_modules_into(self.seed, self.template)
        return self.template.act(obs, deterministic)

    def model_reward(self, reward: torch.Tensor, info: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.stacked.model_reward(reward, info)

    def evaluation_extras(self, result: dict[str, float], spec: TaskSpec) -> tuple[dict[str, float], dict[str, float]]:
        """The seed's own: the unstacked algorithm's (stackable algorithms add nothing to their evaluations)."""
        return self.template.evaluation_extras(result, spec)

    def end_epoch(self) -> None:
        """Nothing per seed: the stacked instance steps the shared schedules once per epoch."""

    def training_state(self) -> dict[str, Any]:
        return self.stacked.seed_training_state(self.seed, self.template)

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.stacked.load_seed_training_state(self.seed, state)
