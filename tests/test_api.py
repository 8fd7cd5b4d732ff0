"""The Python API (docs/api.md): the page's example runs as written, so the docs cannot go stale; `load_run` restores
a tiny run of every family (BC, BCQ, MOPO of the SAC family, MOReL and PAL of the NPG family, MAGO) to the policy
that was trained, `action` takes one observation or a batch in numpy or torch, `train.main` says where its run is,
and a bad run directory or observation is refused in one line."""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_DATASET_TASK, TINY_DYNAMICS, TINY_MOPO_SETTINGS

import train
from algos import ALGORITHMS, load_run, run_evaluator
from envs import get_task
from utils.errors import UserError

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"
NPG_TINY = [
    "num_iter=2", "save_every=1", "fit_epochs=1", "inner_steps=1", "update_paths=4", "horizon=10", "eval_episodes=2",
    "dynamics.hidden_dims=[16,16]", "npg.policy_hidden_dims=[8,8]", "npg.baseline_hidden_dims=[8,8]",
]  # fmt: skip
TINY: dict[str, list[str]] = {
    "bc": ["epochs=2", "steps_per_epoch=20", "batch_size=32", "eval_episodes=2", "hidden_dims=[16,16]"],
    "bcq": [
        "epochs=2", "steps_per_epoch=10", "batch_size=32", "eval_episodes=2", "actor_hidden_dims=[16,16]",
        "critic_hidden_dims=[16,16]", "vae_hidden_dims=[16,16]",
    ],
    "mopo": ["epochs=1", *TINY_MOPO_SETTINGS, "eval_episodes=2"],
    "morel": [*NPG_TINY, "bc_epochs=1"],
    "pal": [*NPG_TINY, "init_samples=300", "iter_samples=200", "buffer_size=1000"],
    "mago": [
        "epochs=2", "steps_per_epoch=3", "batch_size=16", "adv_batch_size=8", "eval_episodes=2", "hidden_dims=[16,16]",
        "num_models=3", "num_state_samples=2", "num_action_samples=4", "monitor_rollouts=2", "monitor_horizon=5",
        "dynamics.num_ensemble=4", "dynamics.num_elites=4", "dynamics.hidden_dims=[16,16]",
        "dynamics.weight_decay=[0,0,0]", "dynamics.max_epochs=1",
    ],
}  # fmt: skip
TASK = {"pal": "Hopper-v4"}  # the others learn from conftest's tiny hopper-random-gen dataset


def code_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def progress_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`trained(algo)`: train.main's result for a tiny run of `algo`, trained once per module on first use."""
    log_dir = tmp_path_factory.mktemp("api_runs")
    results: dict[str, train.TrainResult] = {}

    def run(algo: str) -> train.TrainResult:
        if algo not in results:
            task = TASK.get(algo, TINY_DATASET_TASK)
            argv = ["--task", task, "--algo", algo, "--seed", "1", "--log-dir", str(log_dir), "--no-progress"]
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
                result = train.main([*argv, "--set", "save_every=1", *TINY[algo]])
            assert result is not None
            results[algo] = result
        return results[algo]

    return run


def test_docs_example_runs_as_written(
    dataset_dirs: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/api.md's example, verbatim: one block that uses all five calls and runs to the end (its own asserts
    included), in a scratch directory."""
    blocks = code_blocks(API_PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/api.md should hold exactly one runnable python example"
    for call in ("train.main(", "load_run(", ".action(", "run_evaluator(", "load_dataset("):
        assert call in blocks[0], f"the example no longer shows {call}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the example's mkdtemp() lands in the test's dir
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(blocks[0], str(API_PAGE), "exec"), namespace)
    result, scores = namespace["result"], namespace["scores"]
    assert result.run_dir.is_relative_to(tmp_path) and (result.run_dir / "checkpoints" / "checkpoint.pt").is_file()
    assert set(scores) >= {"return_mean", "normalized_mean", "normalized_std"} and np.isfinite(scores["return_mean"])
    assert namespace["episode_return"] > 0
    assert not list(dataset_dirs.home.rglob("*.hdf5"))  # nothing written to the user's dataset directory


@pytest.mark.parametrize("algo", ["bc", "bcq", "mopo", "morel", "pal", "mago"])
def test_load_run_restores_the_trained_policy(trained: Any, algo: str) -> None:
    """The loaded algorithm holds the last checkpoint's weights, and the run's own evaluator replays the run's last
    evaluation with it; train.main's result names the run directory and that evaluation."""
    result = trained(algo)
    last = progress_rows(result.run_dir)[-1]
    assert result["return_mean"] == pytest.approx(float(last["return_mean"]))
    cfg, algo_loaded = load_run(result.run_dir)
    assert (cfg.algo, cfg.task) == (algo, TASK.get(algo, TINY_DATASET_TASK))
    assert isinstance(algo_loaded, ALGORITHMS[algo])
    saved = torch.load(result.run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)["algo_state"]["modules"]
    loaded = algo_loaded.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)
    with run_evaluator(cfg, cfg.eval_episodes) as evaluator:
        replay = evaluator.evaluate(algo_loaded.act)
    assert evaluator.envs == []  # the with block released the environments
    assert replay["return_mean"] == pytest.approx(float(last["return_mean"]))


@pytest.mark.parametrize("algo", ["bc", "bcq", "mopo", "morel", "pal", "mago"])
def test_action_takes_one_observation_or_a_batch_in_numpy_or_torch(trained: Any, algo: str) -> None:
    cfg, policy = load_run(trained(algo).run_dir)
    spec = get_task(cfg.task)
    observations = np.random.default_rng(0).normal(size=(4, spec.obs_dim))  # float64, as environments return them

    one = policy.action(observations[0])
    assert isinstance(one, np.ndarray) and one.dtype == np.float32 and one.shape == (spec.act_dim,)
    assert np.array_equal(policy.action(observations[0].tolist()), one)
    batch = policy.action(observations)
    assert isinstance(batch, np.ndarray) and batch.shape == (4, spec.act_dim)
    np.testing.assert_allclose(batch[0], one, atol=1e-6)  # the same observation, the same action (up to rounding)
    assert np.array_equal(policy.action(observations), batch)  # deterministic: every call alike
    assert np.all(np.abs(batch) <= 1.0)
    as_tensor = policy.action(torch.as_tensor(observations))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    assert torch.equal(as_tensor, policy.act(torch.as_tensor(observations, dtype=torch.float32)))
    sampled = policy.action(observations, deterministic=False)
    assert sampled.shape == (4, spec.act_dim) and np.isfinite(sampled).all()


def test_bad_observations_are_refused_in_one_line(trained: Any) -> None:
    _, policy = load_run(trained("bc").run_dir)
    obs_dim = get_task(TINY_DATASET_TASK).obs_dim
    for bad in (np.zeros(obs_dim + 1), np.zeros((2, 3, obs_dim)), np.float32(0.5)):
        with pytest.raises(UserError, match=rf"pass one observation \[{obs_dim}\] or a batch \[batch, {obs_dim}\]"):
            policy.action(bad)
    with pytest.raises(UserError, match="observations must be numbers"):
        policy.action(["a"] * obs_dim)


def test_bad_run_dirs_are_refused_in_one_line(trained: Any, tmp_path: Path, cli_error: Any) -> None:
    run_dir = trained("bc").run_dir
    err = cli_error(lambda: load_run(tmp_path / "no-such-run"))
    assert "is not a run directory (no config.yaml); pass a directory under log/" in err
    holder = run_dir.parent  # log/<task>/bc: holds a run but is none
    assert f"is not a run directory (no config.yaml); it holds runs, e.g. {run_dir}" in cli_error(
        lambda: load_run(holder)
    )
    assert "trained on hopper-random-gen, not Hopper-v4" in cli_error(lambda: load_run(run_dir, task="Hopper-v4"))


def test_a_run_without_a_policy_is_refused_in_one_line(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_error: Any
) -> None:
    """A dynamics_only run returns its directory (and no evaluation); load_run says it has no policy and how to
    train one on its model. A run killed before its first checkpoint has none to load."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    argv = ["--task", TINY_DATASET_TASK, "--algo", "mopo", "--log-dir", str(tmp_path), "--no-progress", "--set"]
    result = train.main([*argv, *TINY_DYNAMICS, "dynamics_only=true"])
    assert result is not None and dict(result) == {} and (result.run_dir / "dynamics.pt").is_file()
    err = cli_error(lambda: load_run(result.run_dir))
    assert "is a dynamics_only run" in err and f"dynamics_path={result.run_dir / 'dynamics.pt'}" in err

    unsaved = tmp_path / "unsaved"
    unsaved.mkdir()
    config = (result.run_dir / "config.yaml").read_text()
    assert "dynamics_only: true" in config
    (unsaved / "config.yaml").write_text(config.replace("dynamics_only: true", "dynamics_only: false"))
    assert "the run has not saved one yet" in cli_error(lambda: load_run(unsaved))
