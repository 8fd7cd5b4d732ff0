"""Task files: a user's own task (their gymnasium env and a D4RL-layout dataset) without editing the package.

    python train.py --task path/to/my_task.yaml --algo mopo
    OFFLINE_MBRL_TASKS=path/to/tasks python train.py --task my-task --algo mopo   # a directory of task files

A task file is YAML (docs/custom_tasks.md):

    name: my-task                      # optional; default: the file name without .yaml
    env_id: MyEnv-v0                   # a gymnasium id
    env_module: my_package.envs        # optional: imported before gym.make (it registers env_id); or a .py file
    env_kwargs: {}                     # optional keyword arguments of gym.make
    max_episode_steps: 500             # optional episode limit (default: the env's own)
    dataset: data/my_task.hdf5         # D4RL layout; a relative path is relative to this file
    termination: my_package.done:fn    # optional: batched torch fn(obs, act, next_obs) -> bool [B]; none = never
    ref_min_score: -1200.0             # optional reference returns (both or neither) for normalized scores
    ref_max_score: -150.0

Every problem is one line naming the file and the key. Relative paths (dataset, .py files) are resolved against the
task file's directory, so a task file and its data can move together.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml

from utils.errors import UserError

TASKS_PATH_ENV = "OFFLINE_MBRL_TASKS"
"""Task files or directories of them (separated by os.pathsep) whose tasks can be named like built-in ones."""

TASK_FILE_SUFFIXES = (".yaml", ".yml")
_KEYS = {
    "name": "str",
    "env_id": "str",
    "env_module": "str",
    "env_kwargs": "mapping",
    "max_episode_steps": "int",
    "dataset": "str",
    "termination": "str",
    "ref_min_score": "number",
    "ref_max_score": "number",
}
_REQUIRED = ("env_id", "dataset")


def is_task_file(name: str) -> bool:
    """A --task value that names a task file rather than a registered task."""
    return name.strip().lower().endswith(TASK_FILE_SUFFIXES)


def task_files_on_path() -> list[Path]:
    """Task files named by $OFFLINE_MBRL_TASKS, directories expanded to their *.yaml / *.yml files (sorted)."""
    files: list[Path] = []
    for entry in filter(None, os.environ.get(TASKS_PATH_ENV, "").split(os.pathsep)):
        path = Path(entry).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in TASK_FILE_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"${TASKS_PATH_ENV} names {entry}, which does not exist; fix or unset the variable")
    return files


def _check_type(path: str, key: str, value: Any) -> Any:
    kind = _KEYS[key]
    ok = {
        "str": isinstance(value, str) and value.strip() != "",
        "int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value),
        "mapping": isinstance(value, dict) and all(isinstance(k, str) for k in value),
    }[kind]
    if not ok:
        wanted = {"str": "a non-empty string", "int": "a positive integer", "number": "a finite number",
                  "mapping": "a mapping of keyword arguments"}[kind]  # fmt: skip
        raise UserError(f"task file {path}: {key} must be {wanted}, got {value!r}")
    return value


def _import_module(reference: str, base: Path, path: str, key: str) -> ModuleType:
    """`package.module`, or a `.py` file (relative to the task file's directory)."""
    if reference.endswith(".py"):
        file = (base / reference).resolve()
        if not file.is_file():
            raise UserError(f"task file {path}: {key} names {reference}, but {file} does not exist")
        name = f"_task_file_module_{abs(hash(str(file)))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's code: report it in one line
            del sys.modules[name]
            raise UserError(f"task file {path}: importing {file} failed: {type(err).__name__}: {err}") from None
        return module
    try:
        return importlib.import_module(reference)
    except ImportError as err:
        raise UserError(
            f"task file {path}: {key} {reference!r} cannot be imported ({err}); install the package, add it to "
            "PYTHONPATH, or name a .py file relative to the task file"
        ) from None


def resolve_termination(reference: str, base: Path, path: str) -> Callable[..., Any]:
    """The function named by `module:function` or `file.py:function`."""
    module_ref, colon, attr = reference.rpartition(":")
    if not colon or not module_ref or not attr:
        raise UserError(f"task file {path}: termination must be MODULE:FUNCTION or FILE.py:FUNCTION, got {reference!r}")
    module = _import_module(module_ref, base, path, "termination")
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"task file {path}: termination {reference!r}: {module_ref} has no function {attr!r}")
    return fn


def termination_problem(done: Any, next_obs: torch.Tensor) -> str | None:
    """What is wrong with a termination function's output for the batch `next_obs` [..., obs_dim]: it must be a bool
    tensor with one flag per row (a float 0/1 would pass a shape check and mean something else to every caller)."""
    rows = tuple(next_obs.shape[:-1])
    if not isinstance(done, torch.Tensor):
        got = f"a {type(done).__name__}"
    elif done.shape != rows:
        got = f"shape {tuple(done.shape)}"
    elif done.dtype != torch.bool:
        got = f"a {str(done.dtype).removeprefix('torch.')} tensor"
    else:
        return None
    return (
        f"returned {got}; it must return a bool tensor of shape {rows}, one flag per row of next_obs (a comparison "
        "such as next_obs[..., 0] > 1, not a float)"
    )


def _probe_termination(fn: Callable[..., Any], reference: str, env: gym.Env, path: str) -> None:
    """Call the termination function once on a small batch of the env's own states and actions, so a function that
    fails or answers wrongly is refused when the task file is read, before any work."""
    env.observation_space.seed(0)
    env.action_space.seed(0)
    obs = torch.as_tensor(np.stack([env.reset(seed=0)[0], env.observation_space.sample()]), dtype=torch.float32)
    act = torch.as_tensor(np.stack([env.action_space.sample() for _ in range(2)]), dtype=torch.float32)
    try:
        done = fn(obs, act, obs.flip(0))
    except Exception as err:  # noqa: BLE001 - the user's code: report it in one line
        raise UserError(
            f"task file {path}: termination {reference} failed on a batch of 2 states: {type(err).__name__}: "
            f"{' '.join(str(err).split())}"
        ) from None
    problem = termination_problem(done, obs)
    if problem is not None:
        raise UserError(f"task file {path}: termination {reference} {problem}")


def import_env_module(spec: Any) -> None:
    """Import the module a task file names to register its env id (before gym.make)."""
    _import_module(spec.env_module, Path(spec.source_file).parent, spec.source_file, "env_module")


def _box_dim(space: gym.Space, what: str, path: str, env_id: str) -> int:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise UserError(
            f"task file {path}: {env_id}'s {what} space is {space}; offline tasks here need a flat Box (1-d) "
            f"{what} space (wrap the env, e.g. with gymnasium's FlattenObservation)"
        )
    return int(space.shape[0])


def load_task_file_spec(path: str) -> dict[str, Any]:
    """The TaskSpec fields a task file describes, after checking every key, the env and the termination function."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"task file {path} does not exist; check the path (task files end in .yaml)")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"task file {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"task file {path} must hold `key: value` lines (env_id, dataset, ...)")
    for key in data:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), list(_KEYS), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(_KEYS)}"
            raise UserError(f"task file {path}: unknown key {key!r}; {hint}")
    for key in _REQUIRED:
        if key not in data:
            raise UserError(f"task file {path}: {key} is required (see docs/custom_tasks.md)")
    for key, value in data.items():
        _check_type(path, key, value)
    has_min, has_max = "ref_min_score" in data, "ref_max_score" in data
    if has_min != has_max:
        raise UserError(f"task file {path}: give both ref_min_score and ref_max_score, or neither")
    if has_min and data["ref_max_score"] <= data["ref_min_score"]:
        raise UserError(f"task file {path}: ref_max_score must exceed ref_min_score")

    base = file.parent
    name = str(data.get("name", file.stem)).strip().lower()
    dataset = (base / Path(data["dataset"]).expanduser()).resolve()
    fields: dict[str, Any] = {
        "name": name,
        "family": "custom",
        "level": "custom",
        "version": "custom",
        "gym_id": data["env_id"],
        "obs_dim": 0,
        "act_dim": 0,
        "dataset_file": str(dataset),  # absolute: every dataset directory lookup lands on this one file
        "url": None,
        "ref_min_score": float(data["ref_min_score"]) if has_min else None,
        "ref_max_score": float(data["ref_max_score"]) if has_max else None,
        "minari_id": None,
        "source_file": str(file),
        "env_module": data.get("env_module"),
        "env_kwargs": tuple(sorted(data.get("env_kwargs", {}).items())),
        "termination": data.get("termination"),
        "max_episode_steps": data.get("max_episode_steps"),
    }
    termination = None
    if fields["termination"] is not None:
        termination = resolve_termination(fields["termination"], base, path)
    if fields["env_module"] is not None:
        _import_module(fields["env_module"], base, path, "env_module")
    try:
        env = gym.make(fields["gym_id"], **dict(fields["env_kwargs"]))
    except gym.error.Error as err:
        raise UserError(
            f"task file {path}: gymnasium cannot make {fields['gym_id']!r} ({' '.join(str(err).split())}); name a "
            "registered env id, and the module that registers it as env_module"
        ) from None
    try:
        fields["obs_dim"] = _box_dim(env.observation_space, "observation", path, fields["gym_id"])
        fields["act_dim"] = _box_dim(env.action_space, "action", path, fields["gym_id"])
        if termination is not None:
            _probe_termination(termination, fields["termination"], env, path)
    finally:
        env.close()
    return fields
