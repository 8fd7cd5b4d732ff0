"""What the trainer, the registry and eval.py need from an algorithm, whatever its family.

SAC and its model-based subclasses (MOPO, MICRO) and the model-free baselines (BC, BCQ) all satisfy `Algorithm`;
only algorithms trained on model rollouts also satisfy `ModelBasedAlgorithm`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from buffers.replay import Batch


class Policy(Protocol):
    """`algo.actor` as the observation attacks call it: `actor(obs, deterministic=True)[0]` is the action for obs
    [..., obs_dim]. A Gaussian policy also has `distribution_params(obs)` (needed by the action_diff attack)."""

    def __call__(self, obs: torch.Tensor, deterministic: bool = ...) -> tuple[torch.Tensor, Any]: ...


class Algorithm(Protocol):
    needs_dynamics: ClassVar[bool]  # True when the constructor takes `dynamics=` (updates query the model)
    actor: Policy

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions [B, act_dim] for observations [B, obs_dim], without gradients."""
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

    penalty_type: str | None  # the model uncertainty `model_reward` needs from each rollout step, if any

    def model_reward(self, reward: torch.Tensor, info: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reward stored for a model transition; `info` holds the model's extras (e.g. "uncertainty") and the
        transition itself ("obs", "act", "next_obs")."""
        ...


class TrainableModule(nn.Module):
    """Checkpointing shared by every algorithm: its `state_dict()` (networks, targets, α) plus the state of each
    optimiser and schedule that `optimizers()` names, so training continues bit-for-bit after a resume."""

    def optimizers(self) -> dict[str, Any]:
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        return {"modules": self.state_dict(), **{name: obj.state_dict() for name, obj in self.optimizers().items()}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["modules"])
        for name, obj in self.optimizers().items():
            obj.load_state_dict(state[name])
