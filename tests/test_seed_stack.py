"""Seed-stacked networks and SAC (models/seed_stack.py, SAC.stack): S seeds in one batched computation end where
the same S seeds trained alone end."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import interrupted_at_epoch

import train
from algos.base import TrainableModule
from algos.bcq import BCQ, BCQConfig
from algos.combo import COMBO, COMBOConfig
from algos.cql import CQL, CQLConfig, CQLTermConfig
from algos.micro import MICRO, MICROConfig
from algos.mopo import MOPO, MOPOConfig
from algos.sac import SAC
from algos.td3bc import TD3BC, TD3BCConfig
from buffers.replay import Batch, ReplayBuffer, sample_mixed, sample_mixed_seeds
from config import DynamicsConfig, SACConfig
from models.actor_critic import CriticEnsemble, TanhGaussianActor
from models.dynamics import EnsembleDynamics
from models.seed_stack import SeedStack, SeedStackedActor, SeedStreams
from utils.errors import Interrupted

OBS_DIM, ACT_DIM, SEEDS = 3, 2, (0, 1, 2)
TINY_DATASET_TASK = "hopper-random-gen"  # the tiny_dataset_dir fixture's task


def _batches(seed: int, num: int, n: int = 32) -> list[Batch]:
    gen = torch.Generator().manual_seed(100 + seed)
    return [
        Batch(
            obs=torch.randn(n, OBS_DIM, generator=gen),
            act=torch.rand(n, ACT_DIM, generator=gen) * 2 - 1,
            rew=torch.randn(n, generator=gen),
            next_obs=torch.randn(n, OBS_DIM, generator=gen),
            done=(torch.rand(n, generator=gen) < 0.3).float(),
        )
        for _ in range(num)
    ]


def _stack_batches(batches: list[Batch]) -> Batch:
    return Batch(*(torch.stack(fields) for fields in zip(*batches)))


def test_stack_evaluates_each_seed_with_its_own_weights_and_round_trips() -> None:
    critics = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        critics.append(CriticEnsemble(OBS_DIM, ACT_DIM, (8, 8), num_critics=2))
    stack = SeedStack(critics)
    assert [name for name, _ in stack.named_parameters()] == [
        "stacked." + name.replace(".", "__") for name, _ in critics[0].named_parameters()
    ]
    obs, act = torch.randn(len(SEEDS), 5, OBS_DIM), torch.rand(len(SEEDS), 5, ACT_DIM)
    q = stack(obs, act)
    assert q.shape == (len(SEEDS), 2, 5)
    for seed, critic in enumerate(critics):
        torch.testing.assert_close(q[seed], critic(obs[seed], act[seed]))
    states = stack.unstack()
    fresh = CriticEnsemble(OBS_DIM, ACT_DIM, (8, 8), num_critics=2)
    fresh.load_state_dict(states[1])
    torch.testing.assert_close(fresh(obs[1], act[1]), q[1])
    for name in stack.state_names():  # seed 1's slice gets seed 0's weights
        stack.write_seed(1, name, states[0][name])
    torch.testing.assert_close(stack(obs, act)[1], critics[0](obs[1], act[1]))
    torch.testing.assert_close(stack(obs, act)[2], critics[2](obs[2], act[2]))


def test_captured_streams_continue_each_seeds_global_stream() -> None:
    rng = SeedStreams()
    expected = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        torch.randn(7)  # what building a seed's networks consumes
        rng.capture()
        expected.append(torch.randn(4, 2))
    torch.testing.assert_close(rng.randn(4, 2), torch.stack(expected), rtol=0, atol=0)
    two_streams = SeedStreams()
    two_streams.capture()
    two_streams.capture()
    with pytest.raises(ValueError, match="3 actors but 2 random streams"):
        SeedStackedActor([TanhGaussianActor(OBS_DIM, ACT_DIM, (8,))] * 3, two_streams)


def _sac_cfg() -> SACConfig:
    return SACConfig(hidden_dims=[16, 16], actor_lr=3e-3, critic_lr=3e-3, alpha_lr=3e-3)


def _build(algo: str, seed: int) -> TrainableModule:
    torch.manual_seed(seed)
    if algo == "bcq":
        small = {f"{net}_hidden_dims": [16, 16] for net in ("actor", "critic", "vae")}
        return BCQ(OBS_DIM, ACT_DIM, BCQConfig(seed=seed, num_target_samples=3, num_select_samples=5, **small))
    if algo == "td3bc":  # each seed's own state statistics (a dataset of its own)
        observations = np.random.default_rng(seed).normal(size=(50, OBS_DIM)) * [3.0, 0.5, 1.0] + [1.0, 0.0, -2.0]
        data = SimpleNamespace(observations=observations)
        return TD3BC(OBS_DIM, ACT_DIM, TD3BCConfig(seed=seed, hidden_dims=[16, 16]), dataset=data)
    if algo == "mopo":
        return MOPO(OBS_DIM, ACT_DIM, MOPOConfig(sac=_sac_cfg(), epochs=10))
    if algo == "cql":  # the Lagrange multiplier and the warm-up's switch (after 5 of 15 updates) stacked too
        cql = CQLTermConfig(num_actions=3, lagrange=True, bc_steps=5)
        return CQL(OBS_DIM, ACT_DIM, CQLConfig(sac=_sac_cfg(), epochs=10, cql=cql))
    if algo == "combo":  # the paper's rows: dataset and model rows split at num_real in every seed
        cql = CQLTermConfig(num_actions=3, logsumexp="per_draw", update_order="actor_first")
        combo = COMBOConfig(sac=_sac_cfg(), epochs=10, cql=cql, push_down="model", push_up="data")
        return COMBO(OBS_DIM, ACT_DIM, combo)
    if algo == "micro":
        dynamics_cfg = DynamicsConfig(num_ensemble=3, num_elites=2, hidden_dims=[8], weight_decay=[0.0, 0.0])
        dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, dynamics_cfg)  # untrained: its samples differ per seed
        return MICRO(OBS_DIM, ACT_DIM, MICROConfig(sac=_sac_cfg(), epochs=10, num_samples=2), dynamics=dynamics)
    return SAC(OBS_DIM, ACT_DIM, _sac_cfg(), epochs=10)


@pytest.mark.parametrize("algo", ["sac", "mopo", "micro", "bcq", "td3bc", "cql", "combo"])
def test_stacked_seeds_end_where_the_seeds_trained_alone_end(algo: str) -> None:
    updates, num_real = 15, 20  # rows 20..31 are "model rows" (MICRO's penalty applies there)
    alone = []
    for seed in SEEDS:
        run = _build(algo, seed)  # the global stream continues from here, as in a run trained alone
        for batch in _batches(seed, updates):
            run.update(batch, num_real)
        alone.append(run)

    rng = SeedStreams()
    runs = []
    for seed in SEEDS:
        runs.append(_build(algo, seed))
        rng.capture()
    stacked = type(runs[0]).stack(runs, rng, epochs=10)
    per_seed = [_batches(seed, updates) for seed in SEEDS]
    for step in range(updates):
        metrics = stacked.update(_stack_batches([batches[step] for batches in per_seed]), num_real)
    assert all(value.shape == (len(SEEDS),) for value in metrics.values())

    obs = torch.randn(len(SEEDS), 4, OBS_DIM)
    actions = stacked.act(obs)  # each seed's deterministic policy, one batched call
    template = _build(algo, 99)
    for seed, run in enumerate(alone):
        expected, got = run.training_state(), stacked.seed_training_state(seed, template)
        assert got["modules"].keys() == expected["modules"].keys()
        for key, value in expected["modules"].items():
            torch.testing.assert_close(got["modules"][key], value, rtol=1e-4, atol=1e-5, msg=key)
        for name in run.optimizers():  # each seed's Adam moments are its own
            for index, state in expected[name].get("state", {}).items():
                for key, value in state.items():
                    torch.testing.assert_close(got[name]["state"][index][key], value, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(actions[seed], run.act(obs[seed]), rtol=1e-4, atol=1e-5)
    assert getattr(stacked, "penalty_coef", None) == getattr(alone[0], "penalty_coef", None)


def test_a_stacked_seed_differs_from_its_neighbours() -> None:
    """Independence: the seeds' parameters and draws are their own, not copies of one seed's."""
    rng = SeedStreams()
    runs = []
    for seed in SEEDS:
        runs.append(_build("sac", seed))
        rng.capture()
    stacked = SAC.stack(runs, rng, epochs=10)
    obs = torch.zeros(len(SEEDS), 4, OBS_DIM)
    actions, _ = stacked.actor(obs)
    assert not torch.allclose(actions[0], actions[1]) and not torch.allclose(actions[1], actions[2])


def test_stacked_sampling_draws_each_seeds_rows_of_a_run_alone() -> None:
    data = ReplayBuffer(50, OBS_DIM, ACT_DIM)
    data.add(_batches(0, 1, n=50)[0])
    fakes = []
    for seed in SEEDS:
        fake = ReplayBuffer(20, OBS_DIM, ACT_DIM)
        fake.add(_batches(seed + 10, 1, n=20)[0])
        fakes.append(fake)
    alone = []
    for seed, fake in zip(SEEDS, fakes):
        torch.manual_seed(seed)
        alone.append(sample_mixed(data, fake, 8, 0.25))
    rng = SeedStreams()
    for seed in SEEDS:
        torch.manual_seed(seed)
        rng.capture()
    batch, num_real = sample_mixed_seeds(data, fakes, 8, 0.25, rng.generators)
    assert num_real == 2 and batch.obs.shape == (len(SEEDS), 8, OBS_DIM)
    for seed, (single, single_real) in enumerate(alone):
        assert single_real == num_real
        for stacked_field, field in zip(batch, single):
            torch.testing.assert_close(stacked_field[seed], field, rtol=0, atol=0)
    with pytest.raises(ValueError, match="empty or non-empty together"):
        sample_mixed_seeds(data, [fakes[0], ReplayBuffer(20, OBS_DIM, ACT_DIM), fakes[2]], 8, 0.25, rng.generators)


# ---------------------------------------------------------------------------------------------------- train.py
def _train(algo: str, log_dir: Path, tiny_mopo: list[str], *flags: str) -> None:
    args = ["--task", TINY_DATASET_TASK, "--algo", algo, "--log-dir", str(log_dir), "--no-progress", *flags]
    settings = {
        "mopo": ["epochs=2", *tiny_mopo],
        "combo": ["epochs=2", *tiny_mopo, "cql.num_actions=3"],
        "micro": ["epochs=2", *tiny_mopo, "num_samples=2"],
        "bc": ["epochs=2", "steps_per_epoch=40", "batch_size=32", "eval_episodes=1", "hidden_dims=[32,32]"],
        "cql": [
            "epochs=2",
            "steps_per_epoch=30",
            "batch_size=32",
            "eval_episodes=1",
            "save_every=1",
            "sac.hidden_dims=[32,32]",
            "cql.num_actions=3",
            "cql.lagrange=true",
            "cql.bc_steps=20",
        ],
        "bcq": [
            "epochs=2",
            "steps_per_epoch=40",
            "batch_size=32",
            "eval_episodes=1",
            "save_every=1",
            "num_select_samples=5",
            *(f"{net}_hidden_dims=[32,32]" for net in ("actor", "critic", "vae")),
        ],
        "td3bc": ["epochs=2", "steps_per_epoch=41", "batch_size=32", "eval_episodes=1", "hidden_dims=[32,32]"],
    }[algo]
    train.main([*args, "--set", *settings])


def _run_dirs(log_dir: Path, algo: str) -> dict[str, Path]:
    return {path.name.split("-")[0]: path for path in (log_dir / TINY_DATASET_TASK / algo).iterdir()}


@pytest.mark.parametrize("algo", ["mopo", "micro", "bc", "bcq", "td3bc", "cql", "combo"])
def test_stack_seeds_writes_each_seeds_run_as_trained_alone(
    algo: str, tiny_dataset_dir: Path, tiny_mopo_settings: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    for seed in (0, 1):
        _train(algo, tmp_path / "alone", tiny_mopo_settings, "--seed", str(seed))
    _train(algo, tmp_path / "stacked", tiny_mopo_settings, "--seeds", "0", "1", "--stack-seeds")
    alone, stacked = _run_dirs(tmp_path / "alone", algo), _run_dirs(tmp_path / "stacked", algo)
    assert sorted(stacked) == ["seed0", "seed1"]
    for seed in ("seed0", "seed1"):
        expected = torch.load(alone[seed] / "checkpoints" / "checkpoint.pt", weights_only=False)
        got = torch.load(stacked[seed] / "checkpoints" / "checkpoint.pt", weights_only=False)
        assert got["epoch"] == expected["epoch"] == 2 and got["global_step"] == expected["global_step"]
        assert got["algo_state"]["modules"].keys() == expected["algo_state"]["modules"].keys()
        for name, value in expected["algo_state"]["modules"].items():
            torch.testing.assert_close(got["algo_state"]["modules"][name], value, rtol=1e-3, atol=1e-4, msg=name)
        for key in (key for key in expected["algo_state"] if key.endswith("_optim")):
            for index, state in expected["algo_state"][key]["state"].items():
                for name, value in state.items():
                    torch.testing.assert_close(
                        got["algo_state"][key]["state"][index][name], value, rtol=1e-3, atol=1e-4
                    )
        rows = [(path / "progress.csv").read_text().splitlines() for path in (alone[seed], stacked[seed])]
        assert [r.split(",")[:2] for r in rows[0]] == [r.split(",")[:2] for r in rows[1]]
        assert (stacked[seed] / "dynamics.pt").is_file() == (algo in ("mopo", "micro", "combo"))
    # A stacked seed's checkpoint is an ordinary one: the run continues alone.
    train.main(["--resume", str(stacked["seed1"]), "--no-progress"])


def test_stack_seeds_refuses_what_it_cannot_stack(tmp_path: Path, cli_error) -> None:
    log = ["--log-dir", str(tmp_path / "log")]
    mago = ["--task", TINY_DATASET_TASK, "--algo", "mago", "--seeds", "0", "1", "--stack-seeds", *log]
    assert "--stack-seeds supports bc, bcq, combo, cql, micro, mopo, td3bc so far, not mago" in cli_error(
        lambda: train.main(mago)
    )
    alone = ["--task", TINY_DATASET_TASK, "--algo", "mopo", "--stack-seeds", *log]
    assert "pass --seeds" in cli_error(lambda: train.main(alone))
    assert not (tmp_path / "log").exists()


def test_stacked_seeds_resume_together_where_they_stopped(
    tiny_dataset_dir: Path, tiny_mopo_settings: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stacked epochs equal one stacked epoch, a kill, and `--stack-seeds --resume` of both run dirs: the
    stacked instance is rebuilt from the seeds' checkpoints, Adam moments and random streams included."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    _train("mopo", tmp_path / "whole", tiny_mopo_settings, "--seeds", "0", "1", "--stack-seeds")
    with (
        interrupted_at_epoch(monkeypatch, 2),
        pytest.raises(Interrupted, match="continue with: python train.py --stack-seeds --resume"),
    ):
        _train("mopo", tmp_path / "split", tiny_mopo_settings, "--seeds", "0", "1", "--stack-seeds")
    split = _run_dirs(tmp_path / "split", "mopo")
    train.main(["--stack-seeds", "--resume", str(split["seed0"]), str(split["seed1"]), "--no-progress"])
    whole = _run_dirs(tmp_path / "whole", "mopo")
    for seed in ("seed0", "seed1"):
        expected = torch.load(whole[seed] / "checkpoints" / "checkpoint.pt", weights_only=False)
        got = torch.load(split[seed] / "checkpoints" / "checkpoint.pt", weights_only=False)
        assert got["epoch"] == expected["epoch"] == 2
        for name, value in expected["algo_state"]["modules"].items():
            torch.testing.assert_close(got["algo_state"]["modules"][name], value, rtol=0, atol=0, msg=name)
        rows = [(path / "progress.csv").read_text().splitlines() for path in (whole[seed], split[seed])]
        assert [row.rsplit(",", 1)[0] for row in rows[0]] == [row.rsplit(",", 1)[0] for row in rows[1]]  # no wall time


def test_stacked_resume_refuses_runs_that_cannot_stack(
    tiny_dataset_dir: Path, tiny_mopo_settings: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_error
) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    for seed, extra in (("0", []), ("1", ["sac.actor_lr=1e-3"])):
        _train("mopo", tmp_path, tiny_mopo_settings, "--seed", seed, "--set", "epochs=1", *extra)
    dirs = _run_dirs(tmp_path, "mopo")
    both = [str(dirs["seed0"]), str(dirs["seed1"])]
    assert "differs from" in cli_error(lambda: train.main(["--stack-seeds", "--resume", *both]))
    assert "in sac" in cli_error(lambda: train.main(["--stack-seeds", "--resume", *both]))
    twice = ["--stack-seeds", "--resume", both[0], "--seeds", "0"]
    assert "pass one of them alone" in cli_error(lambda: train.main(twice))
    assert "one RUN_DIR" in cli_error(lambda: train.main(["--resume", *both]))


def test_an_active_seed_sees_its_own_streams_and_leaves_the_callers() -> None:
    streams = SeedStreams()
    expected = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        streams.capture()
        expected.append((torch.rand(3), np.random.rand(3), random.random(), torch.rand(2), np.random.rand(2)))
    torch.manual_seed(99)
    np.random.seed(99)
    outer = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    for seed in (1, 0):  # any order: each seed continues its own streams
        with streams.active(seed):
            draws = (torch.rand(3), np.random.rand(3), random.random())
        torch.testing.assert_close(draws[0], expected[seed][0], rtol=0, atol=0)
        np.testing.assert_array_equal(draws[1], expected[seed][1])
        assert draws[2] == expected[seed][2]
    for seed in (0, 1):
        with streams.active(seed):
            torch.testing.assert_close(torch.rand(2), expected[seed][3], rtol=0, atol=0)
            np.testing.assert_array_equal(np.random.rand(2), expected[seed][4])
    assert torch.equal(torch.get_rng_state(), outer[0])
    np.testing.assert_array_equal(np.random.get_state()[1], outer[1])
    assert random.getstate() == outer[2]
