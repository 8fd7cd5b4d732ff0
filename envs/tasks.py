"""Task registry: one name ("hopper-medium-replay-v2") resolves to everything the code needs about a task.

Names, dataset URLs and reference scores follow D4RL (`d4rl/infos.py`, `d4rl/gym_mujoco/__init__.py`) so
normalized scores are comparable with published tables. Evaluation uses gymnasium's -v4 MuJoCo envs, which use
the same MuJoCo models as the v3-era gym envs the D4RL datasets were collected with.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

from envs import custom_pendulum  # noqa: F401  (registers CustomPendulum-v0 with gymnasium)
from envs.task_files import import_env_module, is_task_file, load_task_file_spec, task_files_on_path
from utils.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one offline task: environment, dataset source and score normalization."""

    name: str
    family: str
    level: str
    version: str
    gym_id: str
    obs_dim: int
    act_dim: int
    dataset_file: str
    url: str | None
    ref_min_score: float | None  # None (task files without reference returns): no normalized score
    ref_max_score: float | None
    minari_id: str | None
    # Task files (a user's own task, see load_task_file): where the spec came from, the module that registers the
    # gymnasium id, keyword arguments of gym.make, the termination function's import path, and an episode limit.
    source_file: str | None = None
    env_module: str | None = None
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    termination: str | None = None
    max_episode_steps: int | None = None

    @property
    def online(self) -> bool:
        """An environment without a dataset, for algorithms that collect their own samples (PAL, MAL)."""
        return self.level == ONLINE_LEVEL

    @property
    def normalizable(self) -> bool:
        """Whether reference returns exist, so returns can be reported as D4RL-style normalized scores."""
        return self.ref_min_score is not None and self.ref_max_score is not None


@dataclass(frozen=True)
class _Family:
    gym_id: str
    obs_dim: int
    act_dim: int
    ref_min_score: float
    ref_max_score: float
    v0_mixed_file: str | None  # D4RL's v0 medium-replay file (not named after the family for walker2d)


# Reference scores from D4RL's infos.py; v1 and v2 reuse the -random-v0 values (docs/datasets.md#normalised-score).
_FAMILIES: dict[str, _Family] = {
    "hopper": _Family("Hopper-v4", 11, 3, -20.272305, 3234.3, "hopper_mixed.hdf5"),
    "walker2d": _Family("Walker2d-v4", 17, 6, 1.629008, 4592.3, "walker_mixed.hdf5"),
    "halfcheetah": _Family("HalfCheetah-v4", 17, 6, -280.178953, 12135.0, "halfcheetah_mixed.hdf5"),
    # Not in D4RL (generated data only). Reference returns: uniform random actions, mean of 200 episodes measured
    # here (-1255.5); expert -150, roughly the best published Pendulum-v1 returns (e.g. RL Zoo's SAC/TD3).
    "pendulum": _Family("Pendulum-v1", 3, 1, -1255.5, -150.0, None),
    # The pendulum of the WMOPO study (envs/custom_pendulum.py, docs/wmopo.md). Random: uniform torques, mean of 200
    # episodes measured here (-195.9); expert: 0, the most any policy can earn (upright from the first step).
    "custom_pendulum": _Family(custom_pendulum.GYM_ID, 2, 1, -195.9, 0.0, None),
}

FAMILIES: tuple[str, ...] = tuple(_FAMILIES)

_D4RL_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
_V0_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
_V12_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay")
# Minari re-collected these with gymnasium -v5 envs: same observation layout, different data than D4RL's.
_MINARI_LEVELS = ("medium", "expert")

_REGISTRY: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def register_task(spec: TaskSpec) -> None:
    """Add a task to the registry; names are unique so a typo cannot silently replace an existing task."""
    if spec.name in _REGISTRY or spec.name in _ALIASES:
        raise ValueError(f"task {spec.name!r} is already registered")
    if spec.normalizable and spec.ref_max_score <= spec.ref_min_score:  # type: ignore[operator]
        raise ValueError(f"task {spec.name!r}: ref_max_score must exceed ref_min_score")
    _REGISTRY[spec.name] = spec


def _family_spec(
    family: str, level: str, version: str, dataset_file: str, url: str | None, minari_id: str | None = None
) -> TaskSpec:
    info = _FAMILIES[family]
    return TaskSpec(
        name=f"{family}-{level}-{version}",
        family=family,
        level=level,
        version=version,
        gym_id=info.gym_id,
        obs_dim=info.obs_dim,
        act_dim=info.act_dim,
        dataset_file=dataset_file,
        url=url,
        ref_min_score=info.ref_min_score,
        ref_max_score=info.ref_max_score,
        minari_id=minari_id,
    )


def _register_d4rl_tasks() -> None:
    for family, info in _FAMILIES.items():
        if info.v0_mixed_file is None:  # not a D4RL env
            continue
        for level in _V0_LEVELS:
            file = info.v0_mixed_file if level == "medium-replay" else f"{family}_{level.replace('-', '_')}.hdf5"
            register_task(_family_spec(family, level, "v0", file, f"{_D4RL_BASE_URL}/gym_mujoco/{file}"))
        _ALIASES[f"{family}-mixed-v0"] = f"{family}-medium-replay-v0"  # D4RL's original v0 name
        for version in ("v1", "v2"):
            for level in _V12_LEVELS:
                file = f"{family}_{level.replace('-', '_')}-{version}.hdf5"
                minari_id = f"mujoco/{family}/{level}-v0" if version == "v2" and level in _MINARI_LEVELS else None
                url = f"{_D4RL_BASE_URL}/gym_mujoco_{version}/{file}"
                register_task(_family_spec(family, level, version, file, url, minari_id))


GENERATED_LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")


def _register_generated_tasks() -> None:
    # Same reference scores as D4RL so normalized numbers stay comparable.
    for family in _FAMILIES:
        for level in GENERATED_LEVELS:
            register_task(_family_spec(family, level, "gen", f"{family}-{level}-gen.hdf5", None))


ONLINE_LEVEL = "online"


def _register_online_tasks() -> None:
    # Named by their gymnasium ids; the D4RL reference returns make their scores comparable with the offline tasks.
    for family, info in _FAMILIES.items():
        # Online model-based NPG needs a known reward (envs/rewards.py); the WMOPO Pendulum study needs its pendulum.
        if info.v0_mixed_file is None and family != "custom_pendulum":
            continue
        spec = _family_spec(family, ONLINE_LEVEL, info.gym_id.rsplit("-", 1)[1], "", None)
        register_task(dataclasses.replace(spec, name=info.gym_id))
        _ALIASES[info.gym_id.lower()] = info.gym_id


_register_d4rl_tasks()
_register_generated_tasks()
_register_online_tasks()


def list_tasks() -> list[str]:
    """Canonical names of all registered tasks (task files on TASKS_PATH_ENV included), sorted."""
    register_task_path()
    return sorted(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """Resolve a task name (or a D4RL alias such as hopper-mixed-v0), or the path of a task file, to its spec."""
    if is_task_file(name):
        return load_task_file(name)
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        register_task_path()
    if key in _REGISTRY:
        return _REGISTRY[key]
    suggestions = difflib.get_close_matches(key, list_tasks(), n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise UserError(
        f"unknown task {name!r}{hint} (list all with: python train.py --list-tasks; your own task: pass its task "
        "file, see docs/custom_tasks.md)"
    )


def normalized_score(spec: TaskSpec, returns: float | np.ndarray) -> float | np.ndarray:
    """D4RL normalized score in percent: 0 = random policy, 100 = D4RL's expert reference (NaN for a task without
    reference returns)."""
    if not spec.normalizable:
        return float("nan") if np.isscalar(returns) else np.full(np.shape(returns), np.nan)
    scale = 100.0 / (spec.ref_max_score - spec.ref_min_score)  # type: ignore[operator]
    if np.isscalar(returns):
        return float((returns - spec.ref_min_score) * scale)
    return (np.asarray(returns, dtype=np.float64) - spec.ref_min_score) * scale


def normalized_std(spec: TaskSpec, return_std: float) -> float:
    """Std of normalized scores: the std of returns scaled by 100 / (max - min) (the offset does not apply)."""
    if not spec.normalizable:
        return float("nan")
    return float(return_std * 100.0 / (spec.ref_max_score - spec.ref_min_score))  # type: ignore[operator]


@contextmanager
def _without_settotalmass_notice() -> Iterator[None]:
    """Drop MuJoCo's deprecation notice for HalfCheetah's `settotalmass`, which is still applied (mass 14).

    Every other MuJoCo warning is passed on unchanged.
    """
    previous = mujoco.get_mju_user_warning()

    def forward(message: str) -> None:
        if "settotalmass" in message:
            return
        if previous is not None:
            previous(message)
        else:
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(forward)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class ActionRepeat(gym.Wrapper):
    """Each decision is applied for `repeat` environment steps (stopping early at the episode's end); the rewards
    are summed and info["env_steps"] says how many steps were taken. mjrl's `act_repeat`: a 1000-step episode
    becomes 1000 / repeat decisions."""

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        taken = 0
        while taken < self.repeat:
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            taken += 1
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, {**info, "env_steps": taken}


def make_env(
    spec: TaskSpec, seed: int | None = None, max_episode_steps: int | None = None, act_repeat: int = 1
) -> gym.Env:
    """Build the evaluation environment; -v4 is deliberate (D4RL's physics), so its deprecation notices are noise."""
    kwargs: dict[str, Any] = dict(spec.env_kwargs)
    limit = max_episode_steps or spec.max_episode_steps
    if limit is not None:
        kwargs["max_episode_steps"] = limit
    if spec.env_module:
        import_env_module(spec)
    with warnings.catch_warnings(), _without_settotalmass_notice():
        warnings.filterwarnings("ignore", message=r".*is out of date.*")
        try:
            env = gym.make(spec.gym_id, **kwargs)
        except gym.error.Error as err:
            if spec.source_file is None:
                raise
            raise UserError(
                f"task file {spec.source_file}: gymnasium cannot make {spec.gym_id!r} ({' '.join(str(err).split())}); "
                "name a registered env id, and the module that registers it as env_module"
            ) from None
    space = env.action_space
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        # Every policy here acts in [-1, 1]^|A| (tanh); envs with other bounds (Pendulum: ±2) are rescaled.
        unit = np.ones(space.shape, np.float32)
        env = gym.wrappers.RescaleAction(env, -unit, unit)
    if act_repeat > 1:
        env = ActionRepeat(env, act_repeat)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def episode_limit(spec: TaskSpec) -> int | None:
    """Environment steps per episode before the time limit (the task's own, else gymnasium's registered one)."""
    if spec.max_episode_steps is not None:
        return spec.max_episode_steps
    if spec.env_module:
        import_env_module(spec)
    try:
        return gym.spec(spec.gym_id).max_episode_steps
    except gym.error.Error:
        return None


def physics_state(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) of the simulator, stored by D4RL as infos/qpos and infos/qvel; Pendulum's are (θ,) and (θ̇,)."""
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "data"):  # MuJoCo
        return unwrapped.data.qpos.copy(), unwrapped.data.qvel.copy()
    theta, theta_dot = unwrapped.state
    return np.array([theta]), np.array([theta_dot])


# ----------------------------------------------------------------------------------------------------------------
# Task files: a user's own task without editing the package (envs/task_files.py reads them; docs/custom_tasks.md)

_LOADED_FILES: dict[str, TaskSpec] = {}


def load_task_file(path: str | Path) -> TaskSpec:
    """Read a task file and register its task (once per file; another file claiming a known name is refused)."""
    resolved = str(Path(path).expanduser().resolve())
    if resolved in _LOADED_FILES:
        return _LOADED_FILES[resolved]
    fields = load_task_file_spec(resolved)
    spec = TaskSpec(**fields)
    known = _REGISTRY.get(spec.name) or _REGISTRY.get(_ALIASES.get(spec.name, ""))
    if known is not None:
        where = f"task file {known.source_file}" if known.source_file else "a built-in task"
        raise UserError(
            f"task file {resolved}: the name {spec.name!r} is already taken by {where}; set another `name:` there"
        )
    register_task(spec)
    _LOADED_FILES[resolved] = spec
    return spec


def register_task_path() -> None:
    """Register every task file named by ${TASKS_PATH_ENV} (files or directories of them), so their tasks can be
    named like built-in ones (`--task my-task`), listed, and found again by child processes."""
    for path in task_files_on_path():
        load_task_file(path)


def reset_states(spec: TaskSpec, num: int, seed: int) -> torch.Tensor:
    """`num` first observations of the task's environment, reset with seeds seed, seed + 1, ...: samples of its start
    distribution [num, obs_dim] (for algorithms whose model episodes start where the real ones do)."""
    env = make_env(spec)
    try:
        states = [env.reset(seed=seed + index)[0] for index in range(num)]
    finally:
        env.close()
    return torch.as_tensor(np.asarray(states, dtype=np.float32))
