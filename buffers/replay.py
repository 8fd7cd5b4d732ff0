"""Transition storage on the device: the whole offline dataset, and the FIFO buffer of model rollouts.

Both are one ring buffer of tensors; sampling is `torch.randint` indexing, with no host round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor  # [B, obs_dim]
    act: torch.Tensor  # [B, act_dim]
    rew: torch.Tensor  # [B]
    next_obs: torch.Tensor  # [B, obs_dim]
    done: torch.Tensor  # [B], float 0/1

    @staticmethod
    def cat(*batches: Batch) -> Batch:
        return Batch(*(torch.cat(fields) for fields in zip(*batches)))


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; once full, new transitions overwrite the oldest."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> None:
        self.capacity, self.device = capacity, torch.device(device)
        self.storage = Batch(
            obs=torch.empty(capacity, obs_dim, device=self.device),
            act=torch.empty(capacity, act_dim, device=self.device),
            rew=torch.empty(capacity, device=self.device),
            next_obs=torch.empty(capacity, obs_dim, device=self.device),
            done=torch.empty(capacity, device=self.device),
        )
        self.size = 0
        self.position = 0  # next row to write

    @classmethod
    def from_dataset(cls, dataset: Any, device: torch.device | str = "cpu") -> ReplayBuffer:
        """The offline dataset (an envs.datasets.OfflineDataset) as an on-device buffer."""
        arrays = (dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals)
        batch = Batch(*(torch.as_tensor(np.asarray(a, dtype=np.float32), device=device) for a in arrays))
        buffer = cls(len(batch.obs), batch.obs.shape[1], batch.act.shape[1], device)
        buffer.add(batch)
        return buffer

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Batch) -> None:
        n = len(batch.obs)
        if n >= self.capacity:  # only the newest `capacity` rows survive
            batch = Batch(*(field[n - self.capacity :] for field in batch))
            n = self.capacity
        rows = (self.position + torch.arange(n, device=self.device)) % self.capacity
        for store, values in zip(self.storage, batch):
            store[rows] = values.to(store.dtype)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Uniform rows with replacement, drawn from `generator` (default: the global stream)."""
        rows = torch.randint(self.size, (batch_size,), device=self.device, generator=generator)
        return Batch(*(field[rows] for field in self.storage))

    def sample_obs(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.storage.obs[torch.randint(self.size, (batch_size,), device=self.device, generator=generator)]

    def state_dict(self) -> dict[str, Any]:
        """Only the filled rows are saved, so an early checkpoint stays small."""
        return {
            "capacity": self.capacity,
            "size": self.size,
            "position": self.position,
            "storage": {name: field[: self.size].clone().cpu() for name, field in self.storage._asdict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"buffer capacity {state['capacity']} in checkpoint, {self.capacity} configured")
        self.size, self.position = state["size"], state["position"]
        for name, field in self.storage._asdict().items():
            field[: self.size] = state["storage"][name].to(self.device)


def sample_mixed(
    real: ReplayBuffer,
    fake: ReplayBuffer | None,
    batch_size: int,
    real_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[Batch, int]:
    """int(batch_size * real_ratio) real transitions, then the rest from model rollouts (MBPO/MOPO mixing).

    Returns the batch and its number of real rows, which come first.
    """
    if fake is None or len(fake) == 0:
        return real.sample(batch_size, generator), batch_size
    num_real = int(batch_size * real_ratio)
    if num_real == 0:
        return fake.sample(batch_size, generator), 0
    return Batch.cat(real.sample(num_real, generator), fake.sample(batch_size - num_real, generator)), num_real


def sample_mixed_seeds(
    real: ReplayBuffer,
    fakes: Sequence[ReplayBuffer | None],
    batch_size: int,
    real_ratio: float,
    generators: Sequence[torch.Generator],
) -> tuple[Batch, int]:
    """`sample_mixed` for S stacked seeds ([S, B, ...]): one shared dataset, each seed's own rollout buffer and
    random stream, so seed s draws exactly the rows its run alone would. Every seed's buffer must be empty or
    filled alike (seeds roll out in lockstep), so the seeds' batches split into real and model rows alike."""
    samples = [
        sample_mixed(real, fake, batch_size, real_ratio, gen) for fake, gen in zip(fakes, generators, strict=True)
    ]
    if len({num_real for _, num_real in samples}) > 1:
        raise ValueError("stacked seeds' rollout buffers must be empty or non-empty together")
    return Batch(*(torch.stack(fields) for fields in zip(*(batch for batch, _ in samples)))), samples[0][1]
