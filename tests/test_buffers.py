"""Replay buffers: FIFO overwrite order, sampling only stored rows, checkpoint round trip, real/fake mixing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from buffers.replay import Batch, ReplayBuffer, sample_mixed
from envs.datasets import OfflineDataset

OBS_DIM, ACT_DIM = 3, 2


def _rows(ids: range | list[int], reward: float | None = None) -> Batch:
    """Transitions whose every field encodes the row id, so a mixed-up row (obs of one, act of another) shows."""
    ids_t = torch.as_tensor(list(ids), dtype=torch.float32)
    obs = ids_t[:, None] + torch.arange(OBS_DIM) / 10
    act = -ids_t[:, None] - torch.arange(ACT_DIM) / 10
    rew = ids_t.clone() if reward is None else torch.full_like(ids_t, reward)
    return Batch(obs=obs, act=act, rew=rew, next_obs=obs + 1000, done=(ids_t % 2 == 0).float())


def _ids(buffer: ReplayBuffer) -> list[int]:
    return sorted(int(v) for v in buffer.storage.obs[: len(buffer), 0])


def _assert_consistent(batch: Batch) -> torch.Tensor:
    """Every field of every row comes from the same transition; returns the row ids."""
    ids = batch.obs[:, 0]
    expected = _rows(ids.long().tolist())
    torch.testing.assert_close(batch.obs, expected.obs)
    torch.testing.assert_close(batch.act, expected.act)
    torch.testing.assert_close(batch.rew, expected.rew)
    torch.testing.assert_close(batch.next_obs, expected.next_obs)
    torch.testing.assert_close(batch.done, expected.done)
    return ids


@pytest.mark.parametrize("chunks", [[4, 7, 9, 5], [25], [3, 13, 1, 8], [10, 10, 5]])
def test_fifo_keeps_exactly_the_newest_rows(chunks: list[int]) -> None:
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    start = 0
    for n in chunks:
        buffer.add(_rows(range(start, start + n)))
        start += n
        assert len(buffer) == min(start, 10)
        assert _ids(buffer) == list(range(max(0, start - 10), start))
    # The next row must evict the oldest survivor, wherever the ring's write position is now.
    buffer.add(_rows([start]))
    assert _ids(buffer) == list(range(start - 9, start + 1))


def test_partial_buffer_samples_only_written_rows() -> None:
    torch.manual_seed(0)
    buffer = ReplayBuffer(100, OBS_DIM, ACT_DIM)
    buffer.storage.obs.fill_(float("nan"))  # unwritten rows must never be sampled
    buffer.add(_rows(range(5)))
    buffer.add(_rows(range(5, 7)))
    batch = buffer.sample(2000)
    ids = _assert_consistent(batch)
    assert set(ids.long().tolist()) == set(range(7))  # every stored row is reachable, nothing else
    obs = buffer.sample_obs(500)
    assert set(obs[:, 0].long().tolist()) <= set(range(7))
    assert not obs.isnan().any()


def test_sample_after_wraparound_returns_stored_transitions() -> None:
    torch.manual_seed(1)
    buffer = ReplayBuffer(8, OBS_DIM, ACT_DIM)
    for start in range(0, 30, 6):
        buffer.add(_rows(range(start, start + 6)))
    ids = _assert_consistent(buffer.sample(1000))
    assert set(ids.long().tolist()) == set(range(22, 30))


def test_state_dict_round_trip_gives_the_same_samples() -> None:
    buffer = ReplayBuffer(16, OBS_DIM, ACT_DIM)
    buffer.add(_rows(range(11)))
    buffer.add(_rows(range(11, 20)))  # wrapped: position is mid-ring
    state = buffer.state_dict()
    assert state["size"] == 16 and state["storage"]["obs"].shape == (16, OBS_DIM)

    restored = ReplayBuffer(16, OBS_DIM, ACT_DIM)
    restored.load_state_dict(state)
    assert (len(restored), restored.position) == (len(buffer), buffer.position)
    torch.manual_seed(3)
    expected = buffer.sample(64)
    torch.manual_seed(3)
    got = restored.sample(64)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # FIFO order survives the round trip: the next add evicts the same (oldest) row in both.
    buffer.add(_rows([20]))
    restored.add(_rows([20]))
    assert _ids(buffer) == _ids(restored) == list(range(5, 21))


def test_state_dict_of_partial_buffer_is_small_and_restores() -> None:
    buffer = ReplayBuffer(1000, OBS_DIM, ACT_DIM)
    buffer.add(_rows(range(7)))
    state = buffer.state_dict()
    assert state["storage"]["rew"].shape == (7,)
    restored = ReplayBuffer(1000, OBS_DIM, ACT_DIM)
    restored.load_state_dict(state)
    restored.add(_rows([7]))
    assert _ids(restored) == list(range(8))


def test_state_dict_of_nearly_empty_buffer_serialises_small() -> None:
    buffer = ReplayBuffer(100_000, 17, 6)  # ~17 MB of storage
    buffer.add(Batch(torch.ones(10, 17), torch.ones(10, 6), torch.ones(10), torch.ones(10, 17), torch.ones(10)))
    file = io.BytesIO()
    torch.save(buffer.state_dict(), file)
    assert len(file.getvalue()) < 100_000, f"{len(file.getvalue())} bytes for 10 rows"


def test_load_state_dict_rejects_other_capacity() -> None:
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    buffer.add(_rows(range(3)))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(20, OBS_DIM, ACT_DIM).load_state_dict(buffer.state_dict())


# ---------------------------------------------------------------------------------------------------- mixing
def _real_and_fake(fake_rows: int = 500) -> tuple[ReplayBuffer, ReplayBuffer]:
    real = ReplayBuffer(300, OBS_DIM, ACT_DIM)
    real.add(_rows(range(300), reward=1.0))
    fake = ReplayBuffer(1000, OBS_DIM, ACT_DIM)
    if fake_rows:
        fake.add(_rows(range(fake_rows), reward=-1.0))
    return real, fake


@pytest.mark.parametrize(("real_ratio", "num_real"), [(0.05, 12), (0.5, 128), (1.0, 256), (0.0, 0), (0.003, 0)])
def test_sample_mixed_splits_real_and_fake(real_ratio: float, num_real: int) -> None:
    torch.manual_seed(0)
    real, fake = _real_and_fake()
    batch, reported_real = sample_mixed(real, fake, 256, real_ratio)
    assert all(len(field) == 256 for field in batch)
    assert reported_real == num_real
    assert bool((batch.rew[:num_real] == 1.0).all())  # the real rows come first
    assert int((batch.rew == 1.0).sum()) == num_real
    assert int((batch.rew == -1.0).sum()) == 256 - num_real


@pytest.mark.parametrize("empty_fake", [True, False])
def test_sample_mixed_without_fake_data_is_all_real(empty_fake: bool) -> None:
    torch.manual_seed(0)
    real, fake = _real_and_fake(fake_rows=0)
    batch, num_real = sample_mixed(real, fake if empty_fake else None, 256, 0.05)
    assert num_real == 256 and len(batch.rew) == 256 and bool((batch.rew == 1.0).all())


# ---------------------------------------------------------------------------------------------------- dataset
def test_from_dataset_holds_the_dataset() -> None:
    n = 9
    rng = np.random.default_rng(0)
    dataset = OfflineDataset(
        observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        next_observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        rewards=np.arange(n, dtype=np.float32),
        terminals=np.array([False, False, True, False, False, False, False, True, False]),
        episode_starts=np.array([True, False, False, True, False, False, False, False, True]),
        source="hand-made",
    )
    buffer = ReplayBuffer.from_dataset(dataset)
    assert len(buffer) == buffer.capacity == n
    stored = buffer.storage
    assert all(field.dtype == torch.float32 for field in stored)
    np.testing.assert_array_equal(stored.obs.numpy(), dataset.observations)
    np.testing.assert_array_equal(stored.act.numpy(), dataset.actions)
    np.testing.assert_array_equal(stored.next_obs.numpy(), dataset.next_observations)
    np.testing.assert_array_equal(stored.rew.numpy(), dataset.rewards)
    np.testing.assert_array_equal(stored.done.numpy(), dataset.terminals.astype(np.float32))
    # Sampled rows keep (s, a, r, s', d) together: the reward is the row index.
    torch.manual_seed(0)
    batch = buffer.sample(200)
    rows = batch.rew.long()
    torch.testing.assert_close(batch.obs, torch.from_numpy(dataset.observations)[rows])
    torch.testing.assert_close(batch.done, torch.from_numpy(dataset.terminals.astype(np.float32))[rows])
