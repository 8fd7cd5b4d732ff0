"""A user's own task from a task file, end to end on a non-MuJoCo gymnasium env (MountainCarContinuous) with a
dataset the test writes: train, resume, eval.py, score.py; a directory of task files on $OFFLINE_MBRL_TASKS; and
bad task files refused with one line."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_DYNAMICS

import eval as eval_cli
import score
import train
from envs.datasets import write_d4rl_hdf5
from envs.task_files import TASKS_PATH_ENV
from envs.tasks import get_task
from envs.termination import termination_for
from utils.errors import UserError, run_cli

ENV_ID = "MountainCarContinuous-v0"
EPISODE_STEPS = 60
TINY = [
    "epochs=2",
    "steps_per_epoch=20",
    "batch_size=16",
    "rollout_freq=20",
    "rollout_batch_size=40",
    "rollout_length=2",
    "eval_episodes=2",
    "save_every=1",
    *TINY_DYNAMICS,
    "sac.hidden_dims=[16,16]",
]
TERMINATION = """
import torch

def reached_goal(obs, act, next_obs):
    # MountainCarContinuous ends when the car reaches the flag (position >= 0.45, moving right).
    return (next_obs[..., 0] >= 0.45) & (next_obs[..., 1] >= 0)

def one_flag_too_few(obs, act, next_obs):
    return (next_obs[..., 0] >= 0.45)[:-1]

def float_flags(obs, act, next_obs):
    return (next_obs[..., 0] >= 0.45).float()

def fails(obs, act, next_obs):
    return next_obs[..., 5]
"""
_names = (f"car-{i}" for i in itertools.count())  # the task registry is per process: one name per task file


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks registered from task files here do not leak into other tests' view of the registry."""
    import envs.tasks

    monkeypatch.setattr(envs.tasks, "_REGISTRY", dict(envs.tasks._REGISTRY))
    monkeypatch.setattr(envs.tasks, "_LOADED_FILES", {})


def write_dataset(path: Path, transitions: int = 400, seed: int = 0) -> None:
    """Uniform-random episodes of MountainCarContinuous in D4RL's layout, cut at EPISODE_STEPS."""
    env = gym.make(ENV_ID, max_episode_steps=EPISODE_STEPS)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations")}
    terminals, timeouts = [], []
    obs, _ = env.reset(seed=seed)
    while len(terminals) < transitions:
        action = rng.uniform(-1, 1, size=1).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, next_obs)):
            rows[key].append(value)
        terminals.append(terminated)
        timeouts.append(truncated and not terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    data = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    data["terminals"], data["timeouts"] = np.asarray(terminals), np.asarray(timeouts)
    write_d4rl_hdf5(path, data)


def write_task(directory: Path, **changes: object) -> tuple[Path, str]:
    """A task file (and its dataset and termination module) in `directory`; returns its path and task name."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "data" / "car.hdf5").exists():
        write_dataset(directory / "data" / "car.hdf5")
    (directory / "car_termination.py").write_text(TERMINATION)
    name = next(_names)
    fields = {
        "name": name,
        "env_id": ENV_ID,
        "max_episode_steps": EPISODE_STEPS,
        "dataset": "data/car.hdf5",
        "termination": "car_termination.py:reached_goal",
        "ref_min_score": -30.0,
        "ref_max_score": 90.0,
        **changes,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path, name


def cli_error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_task_file_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task_file, name = write_task(tmp_path / "tasks")
    log = tmp_path / "log"
    result = train.main(["--task", str(task_file), "--algo", "mopo", "--log-dir", str(log), "--no-progress", "--set",
                         *TINY])  # fmt: skip
    (run_dir,) = (log / name / "mopo").iterdir()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["task"] == name and saved["task_file"] == str(task_file.resolve())
    out = capsys.readouterr().out
    assert "400 transitions from" in out and "final normalized score" in out and "dataset episodes" in out
    spec = get_task(name)
    assert (spec.obs_dim, spec.act_dim, spec.family) == (2, 1, "custom")
    assert result["normalized_mean"] == pytest.approx((result["return_mean"] + 30.0) / 120.0 * 100.0)
    assert result["length_mean"] <= EPISODE_STEPS  # the task file's episode limit is the evaluation's

    train.main(["--resume", str(run_dir), "--no-progress"])  # a finished run resumes to the same end
    rows = eval_cli.main(["--run", str(run_dir), "--choice", "clean", "--episodes", "2"])
    assert float(rows[0]["return_mean"]) == pytest.approx(result["return_mean"])
    score.main([str(log), "--out", str(tmp_path / "scores.md")])
    assert name in (tmp_path / "scores.md").read_text()
    capsys.readouterr()
    assert "not a MuJoCo environment" in cli_error(eval_cli.main, ["--run", str(run_dir), "--choice", "sim2real"],
                                                   capsys)  # fmt: skip


def test_termination_by_import_path_and_none(tmp_path: Path) -> None:
    task_file, _ = write_task(tmp_path)
    spec = get_task(str(task_file))
    done = termination_for(spec)
    obs = torch.zeros(3, 2)
    next_obs = torch.tensor([[0.5, 0.01], [0.5, -0.01], [0.2, 0.05]])
    assert done(obs, torch.zeros(3, 1), next_obs).tolist() == [True, False, False]
    assert done(obs, torch.zeros(1, 1), torch.tensor([[float("nan"), 0.0]])).tolist() == [True]

    never_file, _ = write_task(tmp_path, termination=None)
    never = termination_for(get_task(str(never_file)))
    assert never(obs, torch.zeros(3, 1), next_obs).tolist() == [False, False, False]

    short_file, _ = write_task(tmp_path, termination="car_termination.py:one_flag_too_few")
    with pytest.raises(
        UserError, match=r"one_flag_too_few returned shape \(1,\); it must return a bool tensor of shape \(2,\)"
    ):
        get_task(str(short_file))  # tried on two of the env's states when the file is read
    # A function that misbehaves only later is still refused where it is called.
    floats = dataclasses.replace(get_task(str(task_file)), termination="car_termination.py:float_flags")
    with pytest.raises(
        UserError, match=r"float_flags returned a float32 tensor; it must return a bool tensor of shape \(3,\)"
    ):
        termination_for(floats)(obs, torch.zeros(3, 1), next_obs)


def test_a_directory_of_task_files_names_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, first = write_task(tmp_path / "tasks")
    _, second = write_task(tmp_path / "tasks", termination=None)
    monkeypatch.setenv(TASKS_PATH_ENV, str(tmp_path / "tasks"))
    train.main(["--list-tasks"])
    out = capsys.readouterr().out
    listed = out.split()
    assert first in listed and second in listed and "hopper-medium-v2" in listed
    # Listed in a section of their own, after the built-in kinds, each with where its data lies.
    own = out.split(f"\n\nYour task files (${TASKS_PATH_ENV}):\n")[1].splitlines()
    data = (tmp_path / "tasks" / "data" / "car.hdf5").resolve()
    assert sorted(line.split() for line in own) == sorted([name, "present:", str(data)] for name in (first, second))
    assert get_task(second).termination is None
    monkeypatch.setenv(TASKS_PATH_ENV, str(tmp_path / "nowhere"))
    assert "OFFLINE_MBRL_TASKS names" in cli_error(train.main, ["--list-tasks"], capsys)


def test_no_reference_returns_reports_returns_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task_file, _ = write_task(tmp_path, ref_min_score=None, ref_max_score=None)
    result = train.main(["--task", str(task_file), "--algo", "bc", "--log-dir", str(tmp_path / "log"),
                         "--no-progress", "--set", "epochs=1", "steps_per_epoch=5", "eval_episodes=1"])  # fmt: skip
    assert np.isnan(result["normalized_mean"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("final return ") and "nan" not in last


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"env_idd": "x"}, "unknown key 'env_idd'; did you mean env_id?"),
        ({"env_id": None}, "env_id is required"),
        ({"env_id": "NoSuchEnv-v0"}, "gymnasium cannot make 'NoSuchEnv-v0'"),
        ({"env_id": "CartPole-v1"}, "action space is Discrete(2)"),
        ({"dataset": "data/missing.hdf5"}, "missing.hdf5"),
        ({"termination": "car_termination.py"}, "termination must be MODULE:FUNCTION"),
        ({"termination": "car_termination.py:nope"}, "has no function 'nope'"),
        ({"termination": "no_such_module:done"}, "'no_such_module' cannot be imported"),
        (
            {"termination": "car_termination.py:float_flags"},
            "float_flags returned a float32 tensor; it must return a bool",
        ),
        (
            {"termination": "car_termination.py:fails"},
            "termination car_termination.py:fails failed on a batch of 2 states: IndexError",
        ),
        ({"env_module": "missing.py"}, "env_module names missing.py"),
        ({"ref_max_score": None}, "give both ref_min_score and ref_max_score"),
        ({"ref_max_score": -40.0}, "ref_max_score must exceed ref_min_score"),
        ({"max_episode_steps": 0}, "max_episode_steps must be a positive integer"),
        ({"name": "hopper-medium-v2"}, "already taken by a built-in task"),
    ],
)
def test_bad_task_files_are_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  changes: dict, needle: str) -> None:  # fmt: skip
    task_file, _ = write_task(tmp_path, **changes)
    argv = ["--task", str(task_file), "--algo", "bc", "--log-dir", str(tmp_path / "log"), "--no-progress"]
    assert needle in cli_error(train.main, argv, capsys)
    assert not (tmp_path / "log").exists()  # nothing half-written


def test_missing_task_file_and_moved_task_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--task", str(tmp_path / "nope.yaml"), "--algo", "bc"]
    err = cli_error(train.main, argv, capsys)
    assert "task file" in err and "nope.yaml does not exist" in err
    task_file, name = write_task(tmp_path / "tasks")
    train.main(["--task", str(task_file), "--algo", "bc", "--log-dir", str(tmp_path / "log"), "--no-progress",
                "--set", "epochs=1", "steps_per_epoch=5", "eval_episodes=1"])  # fmt: skip
    (run_dir,) = (tmp_path / "log" / name / "bc").iterdir()
    task_file.rename(tmp_path / "elsewhere.yaml")
    err = cli_error(eval_cli.main, ["--run", str(run_dir), "--choice", "clean"], capsys)
    assert "which is missing; put it back there" in err


def test_termination_returning_floats_is_refused_naming_the_file_and_the_function(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0/1 floats used to pass (and be cast): one line names the task file and the function, before any work."""
    task_file, _ = write_task(tmp_path, termination="car_termination.py:float_flags")
    argv = ["--task", str(task_file), "--algo", "mopo", "--log-dir", str(tmp_path / "log"), "--no-progress"]
    err = cli_error(train.main, argv, capsys)
    assert err.startswith(
        f"error: task file {task_file}: termination car_termination.py:float_flags returned a float32"
    )
    assert not (tmp_path / "log").exists()


def test_a_task_files_missing_dataset_is_the_users_to_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No collect.py command: it makes only the built-in generated tasks, not a task file's data."""
    task_file, _ = write_task(tmp_path, dataset="data/nowhere.hdf5")
    argv = ["--task", str(task_file), "--algo", "bc", "--log-dir", str(tmp_path / "log"), "--no-progress"]
    err = cli_error(train.main, argv, capsys)
    assert f"task file {task_file}: its dataset {tmp_path / 'data' / 'nowhere.hdf5'} does not exist" in err
    assert "collect.py" not in err and "docs/custom_tasks.md" in err
    assert not (tmp_path / "log").exists()
