"""The trainer's model rollouts (algos/trainer.py) against hand-computed numbers, with a scripted model.

A regression here changes the algorithm without failing anything else: storing the raw model reward turns MOPO into
MBPO, rolling on from terminated rows feeds the critic transitions from states after the end of an episode, and
branching at the wrong steps changes how fresh the model data is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from algos import build_algorithm
from algos.train_run import read_checkpoint
from algos.trainer import OfflineTrainer
from buffers.replay import Batch, ReplayBuffer
from config import load_config
from envs import get_task
from models.dynamics import UncertaintyFn
from utils.logger import RunLogger

TASK = "hopper-random-gen"
OBS_DIM, ACT_DIM = 3, 2
NUM_STARTS = 6
# Start states: column 0 is a row id (0..5), column 1 the rollout step (0), column 2 a constant.
STARTS = torch.stack(
    [torch.arange(NUM_STARTS, dtype=torch.float32), torch.zeros(NUM_STARTS), torch.ones(NUM_STARTS)], 1
)


class ScriptedDynamics:
    """A model whose step is known in closed form. For a row with id i at rollout step t (obs[:, 0], obs[:, 1]):
    next_obs = obs + (0, 1, 0), raw reward 10 i + t, uncertainty i + 1, done iff (i, t) is in `ends`.

    Records every call (obs, act, uncertainty statistic) so a test can see which rows were rolled at which step."""

    def __init__(self, ends: set[tuple[int, int]] = frozenset()) -> None:
        self.ends = set(ends)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, UncertaintyFn | None]] = []

    def step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        uncertainty: UncertaintyFn | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        self.calls.append((obs.clone(), act.clone(), uncertainty))
        ids, steps = obs[:, 0], obs[:, 1]
        next_obs = obs.clone()
        next_obs[:, 1] += 1
        reward = 10 * ids + steps
        done = torch.tensor([(int(i), int(t)) in self.ends for i, t in zip(ids, steps)], dtype=torch.bool)
        info = {"raw_reward": reward}
        if uncertainty is not None:
            info["uncertainty"] = ids + 1
        return next_obs, reward, done, info


class RecordingLogger(RunLogger):
    """The run logger, also keeping every `scalars` call."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, quiet=True)
        self.scalar_calls: list[tuple[dict[str, float], int]] = []

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        self.scalar_calls.append((dict(metrics), step))
        super().scalars(metrics, step)


class ConstantEvaluator:
    spec = get_task(TASK)

    def evaluate(self, policy: Any) -> dict[str, float]:
        keys = ("normalized_mean", "normalized_std", "return_mean", "return_std", "length_mean", "length_std")
        return dict.fromkeys(keys, 0.0)


def _trainer(
    algo_name: str, tmp_path: Path, dynamics: ScriptedDynamics, *overrides: str, logger: Any = None
) -> OfflineTrainer:
    cfg = load_config(algo_name, TASK, overrides=["sac.hidden_dims=[8]", "model_retain_epochs=1", *overrides])
    torch.manual_seed(0)
    algo = build_algorithm(cfg, OBS_DIM, ACT_DIM, "cpu", dynamics)
    real = ReplayBuffer(NUM_STARTS, OBS_DIM, ACT_DIM)
    real.add(Batch(STARTS, torch.zeros(NUM_STARTS, ACT_DIM), torch.zeros(NUM_STARTS), STARTS, torch.zeros(NUM_STARTS)))
    return OfflineTrainer(cfg, algo, real, ConstantEvaluator(), logger, tmp_path, dynamics, progress=False)


def _branch_from_all_starts(trainer: OfflineTrainer) -> None:
    """Rollouts branch from rows 0..5 in order instead of a random draw, so every stored row is known."""
    trainer.real_buffer.sample_obs = lambda n: STARTS[:n].clone()


def _stored(trainer: OfflineTrainer) -> Batch:
    fake = trainer.fake_buffer
    assert fake is not None
    return Batch(*(field[: fake.size] for field in fake.storage))


# ---------------------------------------------------------------------------------------------------- rewards
@pytest.mark.parametrize("penalty_type", ["aleatoric", "pairwise_diff"])
def test_mopo_stores_the_penalised_reward_not_the_raw_one(tmp_path: Path, penalty_type: str) -> None:
    dynamics = ScriptedDynamics()
    overrides = ("penalty_coef=0.5", f"penalty_type={penalty_type}", "rollout_batch_size=6", "rollout_length=1")
    trainer = _trainer("mopo", tmp_path, dynamics, *overrides)
    _branch_from_all_starts(trainer)
    acting = []
    act = trainer.algo.act
    trainer.algo.act = lambda obs, deterministic=True: (acting.append(deterministic), act(obs, deterministic))[1]

    metrics = trainer.rollout()

    # The model is asked for MOPO's own u(s, a).
    assert [call[2].keywords["penalty_type"] for call in dynamics.calls] == [penalty_type]  # type: ignore[union-attr]
    assert acting == [False]  # rollouts follow the stochastic policy
    stored = _stored(trainer)
    # r̃ = r − λ u with r = 10 i, u = i + 1, λ = 0.5, for i = 0..5.
    assert_close(stored.rew, torch.tensor([-0.5, 9.0, 18.5, 28.0, 37.5, 47.0]))
    assert_close(stored.obs, STARTS)
    assert_close(stored.act, dynamics.calls[0][1])
    assert_close(stored.next_obs, STARTS + torch.tensor([0.0, 1.0, 0.0]))
    assert_close(stored.done, torch.zeros(6))
    assert metrics["rollout_info/reward_mean"] == pytest.approx(23.25)  # (−0.5 + 9 + … + 47) / 6
    assert metrics["rollout_info/raw_reward_mean"] == pytest.approx(25.0)
    assert metrics["rollout_info/uncertainty_mean"] == pytest.approx(3.5)


def test_micro_stores_the_raw_model_reward(tmp_path: Path) -> None:
    """MICRO's conservatism is in the critic target; a penalty on the stored reward would count it twice."""
    dynamics = ScriptedDynamics()
    trainer = _trainer("micro", tmp_path, dynamics, "penalty_coef=0.5", "rollout_batch_size=6", "rollout_length=1")
    _branch_from_all_starts(trainer)
    metrics = trainer.rollout()
    assert [call[2] for call in dynamics.calls] == [None]
    assert_close(_stored(trainer).rew, torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0, 50.0]))
    assert metrics["rollout_info/reward_mean"] == pytest.approx(25.0)


def test_combo_stores_the_raw_model_reward_and_mixes_half_and_half(tmp_path: Path) -> None:
    """COMBO's conservatism is CQL's critic term: no uncertainty is asked for, the model's reward is stored as it is,
    and by default (real_ratio 0.5) every batch is int(8 · 0.5) = 4 dataset rows, then 4 model rows."""
    dynamics = ScriptedDynamics()
    schedule = ("epochs=1", "steps_per_epoch=2", "rollout_freq=2", "batch_size=8", "rollout_batch_size=6")
    trainer = _trainer("combo", tmp_path, dynamics, *schedule, "rollout_length=1", "cql.num_actions=2")
    assert trainer.cfg.real_fraction() == 0.5
    _branch_from_all_starts(trainer)
    metrics = trainer.rollout()
    assert [call[2] for call in dynamics.calls] == [None]
    assert_close(_stored(trainer).rew, torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0, 50.0]))
    assert metrics["rollout_info/reward_mean"] == metrics["rollout_info/raw_reward_mean"] == pytest.approx(25.0)

    batches: list[tuple[Batch, int]] = []
    update = trainer.algo.update
    trainer.algo.update = lambda batch, num_real=0: (batches.append((batch, num_real)), update(batch, num_real))[1]
    trainer.logger = RecordingLogger(tmp_path)
    trainer.train()
    trainer.logger.close()
    assert [(len(batch.obs), num_real) for batch, num_real in batches] == [(8, 4), (8, 4)]
    for batch, _ in batches:  # dataset rows have s' = s (STARTS); model rows step 1 further
        assert batch.next_obs[:4, 1].tolist() == [0.0] * 4 and batch.next_obs[4:, 1].tolist() == [1.0] * 4


# ---------------------------------------------------------------------------------------------------- terminals
def test_terminated_rows_are_not_rolled_on(tmp_path: Path) -> None:
    # Rows 1 and 4 terminate at step 0, row 2 at step 1; rows 0, 3, 5 run the full three steps.
    dynamics = ScriptedDynamics(ends={(1, 0), (4, 0), (2, 1)})
    trainer = _trainer("mopo", tmp_path, dynamics, "penalty_coef=0.5", "rollout_batch_size=6", "rollout_length=3")
    _branch_from_all_starts(trainer)

    metrics = trainer.rollout()

    rolled = [(call[0][:, 0].tolist(), call[0][:, 1].tolist()) for call in dynamics.calls]
    assert rolled == [
        ([0, 1, 2, 3, 4, 5], [0] * 6),
        ([0, 2, 3, 5], [1] * 4),
        ([0, 3, 5], [2] * 3),
    ]
    stored = _stored(trainer)
    ids = [0, 1, 2, 3, 4, 5, 0, 2, 3, 5, 0, 3, 5]
    steps = [0] * 6 + [1] * 4 + [2] * 3
    assert stored.obs[:, 0].tolist() == ids and stored.obs[:, 1].tolist() == steps
    assert stored.next_obs[:, 1].tolist() == [t + 1 for t in steps]
    assert stored.done.tolist() == [0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    # r̃ = 10 i + t − 0.5 (i + 1) for every stored (i, t).
    assert stored.rew.tolist() == [10 * i + t - 0.5 * (i + 1) for i, t in zip(ids, steps)]
    assert_close(stored.act, torch.cat([call[1] for call in dynamics.calls]))
    assert metrics["rollout_info/num_transitions"] == 13
    assert metrics["rollout_info/mean_rollout_length"] == pytest.approx(13 / 6)
    assert metrics["rollout_info/steps"] == 3


def test_rollout_stops_once_every_row_has_terminated(tmp_path: Path) -> None:
    ends = {(1, 0), (4, 0)} | {(i, 1) for i in (0, 2, 3, 5)}
    dynamics = ScriptedDynamics(ends=ends)
    trainer = _trainer("mopo", tmp_path, dynamics, "rollout_batch_size=6", "rollout_length=5")
    _branch_from_all_starts(trainer)
    metrics = trainer.rollout()
    assert [len(call[0]) for call in dynamics.calls] == [6, 4]
    assert metrics["rollout_info/steps"] == 2 and metrics["rollout_info/num_transitions"] == 10
    assert trainer.fake_buffer is not None and len(trainer.fake_buffer) == 10


# ---------------------------------------------------------------------------------------------------- schedule
SCHEDULE = (
    "steps_per_epoch=5",
    "rollout_freq=3",
    "batch_size=8",
    "real_ratio=0.5",
    "rollout_batch_size=6",
    "rollout_length=1",
    "eval_every=1",
    "save_every=1",
)


def _record_schedule(trainer: OfflineTrainer) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Wrap rollout and update: global steps of the rollouts; (global step, rows, real rows) of the updates."""
    rollout_steps: list[int] = []
    updates: list[tuple[int, int, int]] = []
    rollout, update = trainer.rollout, trainer.algo.update

    def recorded_rollout() -> dict[str, float]:
        rollout_steps.append(trainer.global_step)
        return rollout()

    def recorded_update(batch: Batch, num_real: int = 0) -> dict[str, torch.Tensor]:
        updates.append((trainer.global_step, len(batch.obs), num_real))
        return update(batch, num_real)

    trainer.rollout = recorded_rollout
    trainer.algo.update = recorded_update
    return rollout_steps, updates


def test_rollouts_happen_every_rollout_freq_global_steps(tmp_path: Path) -> None:
    """Steps 0..9 over two epochs of 5 with rollout_freq 3: rollouts at global steps 0, 3, 6, 9 (a per-epoch
    counter would give 0, 3, 5, 8), each before that step's update, so even the first batch mixes model rows."""
    logger = RecordingLogger(tmp_path)
    trainer = _trainer("mopo", tmp_path, ScriptedDynamics(), "epochs=2", *SCHEDULE, logger=logger)
    rollout_steps, updates = _record_schedule(trainer)
    trainer.train()
    logger.close()
    assert rollout_steps == [0, 3, 6, 9]
    assert updates == [(step, 8, 4) for step in range(10)]  # int(8 * 0.5) real rows, the rest from rollouts
    logged = [step for metrics, step in logger.scalar_calls if "rollout_info/num_transitions" in metrics]
    assert logged == [0, 3, 6, 9]
    assert trainer.global_step == 10 and trainer.epoch == 2


def test_resumed_run_keeps_the_global_rollout_schedule(tmp_path: Path) -> None:
    first = _trainer("mopo", tmp_path, ScriptedDynamics(), "epochs=1", *SCHEDULE, logger=RecordingLogger(tmp_path))
    first_steps, _ = _record_schedule(first)
    first.train()
    first.logger.close()
    assert first_steps == [0, 3]
    resumed = _trainer("mopo", tmp_path, ScriptedDynamics(), "epochs=2", *SCHEDULE, logger=RecordingLogger(tmp_path))
    resumed.load_state(read_checkpoint(first.checkpoint_path))
    resumed_steps, updates = _record_schedule(resumed)
    resumed.train()
    resumed.logger.close()
    assert resumed_steps == [6, 9]
    assert [step for step, _, _ in updates] == [5, 6, 7, 8, 9]
