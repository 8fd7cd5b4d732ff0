"""Run configs on tasks: a config merged for the task the command line names (`load_task_config`), the check that an
algorithm can run on that task (`check_task_fits`), the commands suggested when it cannot (`suggest_train`), and
saved run configs read back with their task made known again (`load_run_config`).

These need both config.py and the task registry; config.py imports nothing from envs/, so they live here, a layer
above both. Algorithm config classes are looked up in config.py's registry, filled by importing `algos`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from config import ModelBasedNPGConfig, RunConfig, config_classes, load_config, read_run_config
from envs.rewards import observation_mask, reward_fn_for
from envs.tasks import TaskSpec, episode_limit, get_task, list_tasks, load_task_file
from envs.termination import termination_fn_for_kind
from utils.errors import UserError


def load_task_config(
    algo: str,
    task: str,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    cli: Mapping[str, Any] | None = None,
) -> RunConfig:
    """`load_config` for a task as the command line names it: a registered name or a task file, which is read
    first so the run records the task's name and its file."""
    spec = get_task(task)
    cfg = load_config(
        algo, spec.name, config_file, overrides, {**(cli or {}), "task_file": spec.source_file}, spec.family
    )
    check_task_fits(cfg, spec)
    return cfg


class NeedsSettings(UserError):
    """A refusal that named settings would lift (`settings`: `key=value` strings), so a suggestion can add them."""

    def __init__(self, message: str, settings: Sequence[str]) -> None:
        super().__init__(message)
        self.settings = list(settings)


_suggesting = False  # True while a suggested command is checked: refusals met inside suggest nothing themselves


def suggest_train(algo: str, task: str, overrides: Sequence[str] = ()) -> str | None:
    """The arguments `--task TASK --algo ALGO [--set ...]` when train.py accepts them up to where work would start
    (config layers, validation, the task fit), adding the settings a refusal names (`NeedsSettings`); else None. Every
    command a message suggests goes through here, so no message offers a command that is refused in turn."""
    global _suggesting
    if _suggesting:
        return None
    _suggesting = True
    settings = list(overrides)
    try:
        for attempt in range(2):
            try:
                load_task_config(algo, task, overrides=settings)
                break
            except NeedsSettings as err:
                added = [item for item in err.settings if item not in settings]
                if attempt or not added:
                    return None
                settings += added
            except UserError:
                return None
    finally:
        _suggesting = False
    sets = f" --set {' '.join(settings)}" if settings else ""
    return f"--task {task} --algo {algo}{sets}"


def _first_command(algos: Sequence[str], tasks: Sequence[str]) -> str | None:
    """The first accepted `python train.py ...` over algos x tasks (tasks vary fastest), or None."""
    for algo in algos:
        for task in tasks:
            command = suggest_train(algo, task)
            if command is not None:
                return f"python train.py {command}"
    return None


def _dataset_tasks_of(family: str) -> list[str]:
    """The dataset tasks of an env family, the generated medium level first (it needs no download)."""
    tasks = [name for name in list_tasks() if get_task(name).family == family and not get_task(name).online]
    return sorted(tasks, key=lambda name: (name != f"{family}-medium-gen", not name.endswith("-gen"), name))


def _function_settings(cfg: Any, family: str) -> tuple[list[str], list[str]]:
    """Model-based NPG's known functions that `family` lacks (the problems) and the settings that supply them:
    reward and termination of model rollouts, and the observation mask."""

    def works(check: Callable[[], Any]) -> str | None:
        try:
            check()
        except UserError as err:
            return str(err).split(";")[0]
        return None

    problems, settings = [], []
    if cfg.reward_fn != "learned":
        problem = works(lambda: reward_fn_for(family, cfg.reward_fn))
        if problem:
            problems.append(problem)
            settings.append(
                "reward_fn=env" if works(lambda: reward_fn_for(family, "env")) is None else "reward_fn=learned"
            )
    problem = works(lambda: termination_fn_for_kind(family, cfg.termination_fn))
    if problem:
        problems.append(problem)
        settings.append(
            "termination_fn=env"
            if works(lambda: termination_fn_for_kind(family, "env")) is None
            else "termination_fn=mopo"
        )
    problem = works(lambda: observation_mask(family, cfg.obs_mask))
    if problem:
        problems.append(problem)
        settings.append("obs_mask=none")
    return problems, settings


def check_task_fits(cfg: RunConfig, spec: TaskSpec) -> None:
    """Online algorithms need an environment task, offline ones a dataset task; an online buffer must hold a path.
    Lists of algorithms and tasks come from the registries, and every suggested command passes `suggest_train`."""
    classes = config_classes()
    if spec.online and not cfg.online:
        online = [name for name in sorted(classes) if classes[name].online and suggest_train(name, spec.name)]
        users = f" for the algorithms that collect their own samples ({', '.join(online)})" if online else ""
        command = _first_command([cfg.algo], _dataset_tasks_of(spec.family))
        instead = f"; e.g. {command}" if command else ""
        raise UserError(
            f"{spec.name} is an online task (an environment without a dataset){users}; {cfg.algo} learns from a "
            f"dataset, so pick a dataset task (python train.py --list-tasks){instead}"
        )
    if cfg.families is not None and spec.family not in cfg.families:
        fitting = [
            name
            for name in list_tasks()
            if get_task(name).family in cfg.families and get_task(name).online == cfg.online
        ]
        command = _first_command([cfg.algo], fitting)
        example = f"; e.g. {command}" if command else ""
        raise UserError(f"{cfg.algo} runs on {' or '.join(cfg.families)} tasks only, not {spec.name}{example}")
    if cfg.online and not spec.online:
        envs = [name for name in list_tasks() if get_task(name).online and suggest_train(cfg.algo, name)]
        needs = f" ({', '.join(envs)})" if envs else ""
        # The offline algorithms closest to this one: those sharing its nearest config base class, names alike first.
        offline: list[str] = []
        for base in type(cfg).__mro__[1:]:
            offline = [name for name, cls in classes.items() if issubclass(cls, base) and not cls.online]
            if offline:
                break
        offline.sort(key=lambda name: (-difflib.SequenceMatcher(None, name, cfg.algo).ratio(), name))
        command = _first_command(offline, [spec.name])
        instead = f"; for the dataset {spec.name}: {command}" if command else ""
        raise UserError(
            f"{cfg.algo} learns online from its own environment samples, so it needs a gymnasium env task{needs}"
            f"{instead}"
        )
    if isinstance(cfg, ModelBasedNPGConfig):  # the known functions model rollouts need, before anything is written
        problems, settings = _function_settings(cfg, spec.family)
        if problems:
            command = suggest_train(cfg.algo, spec.name, settings)
            fix = f"python train.py {command}" if command else f"--set {' '.join(settings)}"
            raise NeedsSettings(f"{'; '.join(problems)}; learn or borrow them instead: {fix}", settings)
    limit = episode_limit(spec)
    buffer_size = getattr(cfg, "buffer_size", None)
    if cfg.online and limit is not None and buffer_size is not None:
        path_length = -(-limit // cfg.act_repeat)  # type: ignore[attr-defined]
        if buffer_size < path_length:
            raise UserError(
                f"buffer_size={buffer_size} cannot hold one {spec.name} episode ({path_length} decisions with "
                f"act_repeat={cfg.act_repeat}); --set buffer_size={path_length} or more"  # type: ignore[attr-defined]
            )


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """A saved run config (config.py's `read_run_config`) whose task is known again: a run on a user's task file
    registers that task from the file the run recorded, so `get_task(cfg.task)` finds it (eval.py, --resume, sweeps)."""
    cfg = read_run_config(path)
    if cfg.task_file is not None:
        load_task_file(cfg.task_file)
    return cfg
