"""Whole paths for the natural-policy-gradient family (docs/npg.md).

`PathBatch` holds N paths padded to a common length T with a validity mask, so returns, GAE and the NPG step run on
[N, T] tensors with no loop over paths. `PathBuffer` keeps the real transitions of the newest paths, capped by
transitions, and the first observation of every path ever collected (the start states of model rollouts).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from buffers.replay import Batch


class PathBatch(NamedTuple):
    obs: torch.Tensor  # [N, T, obs_dim]
    act: torch.Tensor  # [N, T, act_dim], the policy's samples (before clipping), whose log-probability NPG needs
    rew: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] bool, True on the steps each path has (a prefix of every row)
    terminated: torch.Tensor  # [N] bool: the path ended in a terminal state, so its value after the end is 0

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)

    @property
    def timesteps(self) -> torch.Tensor:
        """Step index within the path [N, T] (the baseline's time feature)."""
        steps = torch.arange(self.mask.shape[1], device=self.mask.device)
        return steps.expand_as(self.mask)

    def select(self, rows: torch.Tensor) -> PathBatch:
        """The paths picked by a bool mask or index tensor over N."""
        return PathBatch(*(field[rows] for field in self))

    def returns(self) -> torch.Tensor:
        """Undiscounted return of every path [N] (mjrl's path score)."""
        return (self.rew * self.mask).sum(1)


class PathBuffer:
    """Real transitions of the newest paths, at most `capacity` of them: whole oldest paths are dropped (mjrl's
    FIFO over paths). Start states of every path added are kept for model rollouts."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> None:
        self.capacity, self.device = capacity, torch.device(device)
        empty = torch.empty(0, device=self.device)
        self.data = Batch(empty.view(0, obs_dim), empty.view(0, act_dim), empty, empty.view(0, obs_dim), empty)
        self.path_lengths: list[int] = []
        self.init_states = empty.view(0, obs_dim)

    def __len__(self) -> int:
        return len(self.data.obs)

    def add_paths(self, paths: list[Batch]) -> None:
        """Append paths (each a Batch of its transitions in order), then drop the oldest while over capacity."""
        if not paths:
            return
        self.data = Batch.cat(self.data, *(Batch(*(f.to(self.device) for f in p)) for p in paths))
        self.path_lengths += [len(p.obs) for p in paths]
        self.init_states = torch.cat([self.init_states, torch.stack([p.obs[0].to(self.device) for p in paths])])
        drop = 0
        while len(self) - drop > self.capacity and len(self.path_lengths) > 1:
            drop += self.path_lengths.pop(0)
        if drop:
            self.data = Batch(*(field[drop:] for field in self.data))

    def newest(self, count: int) -> Batch:
        return Batch(*(field[-count:] for field in self.data))

    def state_dict(self) -> dict[str, Any]:
        return {
            "data": [field.cpu() for field in self.data],
            "path_lengths": list(self.path_lengths),
            "init_states": self.init_states.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = Batch(*(field.to(self.device) for field in state["data"]))
        self.path_lengths = list(state["path_lengths"])
        self.init_states = state["init_states"].to(self.device)
