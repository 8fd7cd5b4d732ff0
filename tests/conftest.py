"""Shared fixtures: dataset directories isolated from the user's real ones, and tiny D4RL-layout data."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import algos  # noqa: F401  (registers every algorithm's config class: config.py reads configs with it, never imports it)
from buffers.replay import Batch


@pytest.fixture(autouse=True, scope="session")
def single_thread_torch() -> None:
    """Tiny test networks run faster on one thread than two, and a second busy thread makes timings erratic."""
    torch.set_num_threads(1)


@pytest.fixture
def dataset_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point HOME at an empty temp dir and unset D4RL_DATASET_DIR, so no test reads or writes ~/.d4rl."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("D4RL_DATASET_DIR", raising=False)
    return SimpleNamespace(home=home, home_datasets=home / ".d4rl" / "datasets", env_dir=tmp_path / "env_dir")


def make_episodes(
    lengths: list[int], ends: list[str], obs_dim: int = 11, act_dim: int = 3, with_next: bool = True
) -> dict[str, np.ndarray]:
    """Raw D4RL dict whose observation is (episode id, step, 0...), so any pairing across episodes is visible.

    `ends[i]` says how episode i ends: "terminal", "timeout" or "none" (cut off by the end of the data).
    """
    rows = []
    for episode, length in enumerate(lengths):
        for step in range(length):
            rows.append(
                (
                    episode,
                    step,
                    step == length - 1 and ends[episode] == "terminal",
                    step == length - 1 and ends[episode] == "timeout",
                )
            )
    n = len(rows)
    observations = np.zeros((n, obs_dim), np.float32)
    observations[:, 0] = [r[0] for r in rows]
    observations[:, 1] = [r[1] for r in rows]
    next_observations = observations.copy()
    next_observations[:, 1] += 1
    data = {
        "observations": observations,
        "actions": np.full((n, act_dim), 0.5, np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.array([r[2] for r in rows]),
        "timeouts": np.array([r[3] for r in rows]),
    }
    if with_next:
        data["next_observations"] = next_observations
    return data


@pytest.fixture(scope="session")
def episodes_factory():
    """The make_episodes helper, as a fixture so test modules need no import path tricks."""
    return make_episodes


TINY_DATASET_TASK = "hopper-random-gen"


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A D4RL_DATASET_DIR holding a 2000-transition hopper-random-gen file, for end-to-end runs."""
    from envs import get_task
    from envs.datasets import write_d4rl_hdf5
    from envs.generate import generate_dataset

    spec = get_task(TINY_DATASET_TASK)
    directory = tmp_path_factory.mktemp("d4rl")
    data = generate_dataset(spec, num_transitions=2000, seed=0, max_episode_steps=200)
    write_d4rl_hdf5(directory / spec.dataset_file, data)
    return directory


def assert_same_tensors(expected: Any, actual: Any, where: str = "checkpoint") -> None:
    """Nested dicts/lists of tensors, arrays and plain values are equal, tensors and arrays bit for bit (resume
    equality of whole checkpoints)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(expected, actual), where
    elif isinstance(expected, np.ndarray):
        assert np.array_equal(expected, actual), where
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys(), where
        for key in expected:
            assert_same_tensors(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same_tensors(e, a, f"{where}[{i}]")
    else:
        assert expected == actual, where


@pytest.fixture(scope="session")
def study_policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained target policy for the Pendulum study (the machinery, not the study's result; the committed
    one is not needed)."""
    from envs import get_task
    from envs.behaviour import save_behaviour_policy
    from models.actor_critic import TanhGaussianActor

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("study_policy") / "target.pt"
    save_behaviour_policy(TanhGaussianActor(2, 1, (16, 16)), get_task("CustomPendulum-v0"), path, note="test")
    return path


@pytest.fixture(scope="session")
def same_tensors():
    """assert_same_tensors, as a fixture so test modules need no import path tricks."""
    return assert_same_tensors


@pytest.fixture
def cli_error(capsys: pytest.CaptureFixture[str]):
    """Run a CLI entry point as its script would (`run_cli`) and return its single stderr line, asserting exit code 2
    and no traceback: the contract for bad input."""
    from utils.errors import run_cli

    def run(main: Any) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "Traceback" not in err
        return err

    return run


def run_checkpoint(run_dir: Path) -> dict[str, Any]:
    """A run's last checkpoint without its wall time (the one field two equal runs may differ in)."""
    state = torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)
    del state["wall_time"]
    return state


@pytest.fixture(scope="session")
def checkpoint_of():
    """run_checkpoint, as a fixture."""
    return run_checkpoint


# `--set` values for a tiny but complete MOPO run on the tiny dataset: every component runs (dynamics fit, rollouts,
# mixed batches, evaluation, checkpoints) in seconds. `epochs` is the caller's. Module-level tests import it
# (`from conftest import TINY_MOPO_SETTINGS`); fixtures take `tiny_mopo_settings`.
TINY_DYNAMICS = (  # a 3-member ensemble of 16 x 16 fitted for 2 epochs
    "dynamics.num_ensemble=3",
    "dynamics.num_elites=2",
    "dynamics.hidden_dims=[16,16]",
    "dynamics.weight_decay=[2.5e-5,5e-5,1e-4]",
    "dynamics.max_epochs=2",
)
TINY_MOPO_SETTINGS = (
    "steps_per_epoch=60",
    "batch_size=32",
    "rollout_freq=30",
    "rollout_batch_size=100",
    "rollout_length=2",
    "eval_episodes=1",
    "save_every=1",
    *TINY_DYNAMICS,
    "sac.hidden_dims=[32,32]",
)


@pytest.fixture(scope="session")
def tiny_mopo_settings() -> list[str]:
    """TINY_MOPO_SETTINGS, as a fixture."""
    return list(TINY_MOPO_SETTINGS)


REFERENCE_DIR = Path(__file__).parent / "fixtures" / "reference"


@pytest.fixture(scope="session")
def reference_arrays():
    """`reference_arrays("npg")`: every array of tests/fixtures/reference/npg/npg_reference.npz (the authors' outputs
    on fixed inputs; README there), read once per session."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(algo: str) -> dict[str, np.ndarray]:
        if algo not in cache:
            with np.load(REFERENCE_DIR / algo / f"{algo}_reference.npz") as data:
                cache[algo] = {name: data[name] for name in data.files}
        return cache[algo]

    return load


def write_run(
    run: Path, config: dict[str, Any], returns: Any, scores: Any, dataset: dict[str, Any] | None = None
) -> Path:
    """A run directory as train.py leaves it, one evaluation per 1000 steps: config.yaml, progress.csv (returns and
    normalized scores, std 1, length 1000) and, with `dataset`, a provenance.json naming that dataset."""
    import csv
    import json

    import yaml

    from utils.logger import PROGRESS_COLUMNS
    from utils.provenance import PROVENANCE_FILE, PROVENANCE_FORMAT

    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with open(run / "progress.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PROGRESS_COLUMNS)
        for i, (ret, score) in enumerate(zip(returns, scores)):
            writer.writerow([i + 1, 1000 * (i + 1), ret, 1.0, score, 1.0, 1000, 1.0])
    if dataset is not None:
        (run / PROVENANCE_FILE).write_text(json.dumps({"format": PROVENANCE_FORMAT, "dataset": dataset}))
    return run


# ---------------------------------------------------------------------------------------------------- tiny runs
@pytest.fixture
def data_env(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated-data tasks read the session's tiny datasets (`tiny_dataset_dir`)."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))


def train_tiny(algo: str, task: str, log_dir: Path, settings: Sequence[str], *extra: str) -> Path:
    """One seed-1 run of `algo` on `task` through train.py with `settings` and `extra` as --set items, one thread;
    its run directory (the only one under `log_dir/task/algo`)."""
    import train

    args = ["--task", task, "--algo", algo, "--seed", "1", "--log-dir", str(log_dir), "--no-progress"]
    train.main([*args, "--threads", "1", "--set", *settings, *extra])
    (run_dir,) = (log_dir / task / algo).iterdir()
    return run_dir


def train_tiny_on(dataset_dir: Path, algo: str, task: str, log_dir: Path, settings: Sequence[str], *extra: str) -> Path:
    """`train_tiny` with D4RL_DATASET_DIR set to `dataset_dir` for the run only: for module-scoped run fixtures, which
    cannot use the function-scoped `data_env`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(dataset_dir))
        return train_tiny(algo, task, log_dir, settings, *extra)


def refused_by_train(cli_error: Any, log_dir: Path, algo: str, task: str, items: Sequence[str]) -> str:
    """train.py's one-line refusal of `--set items` for `algo` on `task`, checking that it started no run (bad input
    never leaves a run directory behind)."""
    import train

    argv = ["--task", task, "--algo", algo, "--log-dir", str(log_dir), "--set", *items]
    err = cli_error(lambda: train.main(argv))
    assert not (log_dir / task).exists()
    return err


@contextlib.contextmanager
def interrupted_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> Iterator[None]:
    """Within the block, the offline trainer's checkpoint at the end of `epoch` raises Ctrl-C instead of saving (a
    kill between an epoch's updates and its checkpoint); saving works again after the block."""
    from algos.trainer import OfflineTrainer

    save = OfflineTrainer.save_checkpoint

    def killed(trainer: OfflineTrainer) -> None:
        if trainer.epoch == epoch:
            raise KeyboardInterrupt
        save(trainer)

    monkeypatch.setattr(OfflineTrainer, "save_checkpoint", killed)
    try:
        yield
    finally:
        monkeypatch.setattr(OfflineTrainer, "save_checkpoint", save)


def progress_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's progress.csv, one dict per evaluation."""
    with open(run_dir / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def eval_run(run_dir: Path, *args: str) -> list[dict[str, Any]]:
    """eval.py on a run directory, without progress bars: its rows."""
    import eval as evaluate_cli

    return evaluate_cli.main(["--run", str(run_dir), "--no-progress", *args])


def random_batch(
    n: int = 32,
    seed: int = 0,
    obs_dim: int = 3,
    act_dim: int = 2,
    act_bound: float = 1.0,
    generator: torch.Generator | None = None,
) -> Batch:
    """A batch of `n` random transitions (actions uniform in [-act_bound, act_bound], about 30 % terminal) from
    `generator`, or from its own seeded with `seed`, so the same seed gives the same batch: the update tests' input."""
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=gen),
        act=(torch.rand(n, act_dim, generator=gen) * 2 - 1) * act_bound,
        rew=torch.randn(n, generator=gen),
        next_obs=torch.randn(n, obs_dim, generator=gen),
        done=(torch.rand(n, generator=gen) < 0.3).float(),
    )
