"""`python train.py --list-tasks`: every task by kind, with what it needs before a run can start.

A bare list of eighty names does not say which are environments for the online algorithms, which need D4RL's data
and whether it is here, or which are generated here and how. Grouped, each line answers that for its task. It lives
in utils/, not envs/, because it names algorithms (envs/ imports none).
"""

from __future__ import annotations

from pathlib import Path

from config import config_classes
from envs.datasets import DATASET_DIR_ENV, default_dataset_dirs, find_dataset
from envs.task_files import TASKS_PATH_ENV
from envs.tasks import TaskSpec, get_task, list_tasks


def _online_algorithms(spec: TaskSpec) -> list[str]:
    """The online algorithms made for this task's family (the WMOPO study for its pendulum), else those for any."""
    online = {name: cls.families for name, cls in config_classes().items() if cls.online}
    dedicated = sorted(name for name, families in online.items() if families and spec.family in families)
    return dedicated or sorted(name for name, families in online.items() if families is None)


def _home_relative(path: Path) -> str:
    """A path with the home directory written as ~, so the listing stays narrow."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _data_status(spec: TaskSpec) -> str:
    """Where the task's dataset file was found, or how to get it."""
    found = find_dataset(spec, None)
    if found is not None:
        return f"present: {_home_relative(found)}"
    if spec.source_file is not None:
        return f"missing: no file at {spec.dataset_file} (the task file's `dataset`)"
    if spec.version == "gen":
        return f"missing, generate it: python collect.py dataset --task {spec.name}"
    return "missing (train.py downloads it on first use)"


def task_listing() -> str:
    """Every task, grouped as online environments, D4RL datasets, generated datasets and the user's task files,
    each with its algorithms or the state of its data."""
    specs = [get_task(name) for name in list_tasks()]
    width = max(len(spec.name) for spec in specs) + 2
    places = " or ".join(_home_relative(d) for d in default_dataset_dirs())
    sections = [
        (
            "Online tasks: gymnasium environments without a dataset, for the algorithms named (they collect their "
            "own samples)",
            [s for s in specs if s.online],
            lambda spec: ", ".join(_online_algorithms(spec)),
        ),
        (
            f"Offline D4RL tasks: D4RL's datasets, looked for in {places} (${DATASET_DIR_ENV} first) and "
            "downloaded there",
            [s for s in specs if s.url is not None],
            _data_status,
        ),
        (
            "Offline generated tasks (-gen): datasets made on this machine from the project's behaviour policies "
            "(every level of one env at once: python collect.py dataset --env hopper)",
            [s for s in specs if s.version == "gen"],
            _data_status,
        ),
        (
            f"Your task files (${TASKS_PATH_ENV})",
            [s for s in specs if s.source_file is not None],
            _data_status,
        ),
    ]
    lines: list[str] = []
    for title, members, describe in sections:
        if not members:
            continue
        lines += [""] if lines else []
        lines.append(f"{title}:")
        lines += [f"  {spec.name:<{width}}{describe(spec)}" for spec in members]
    return "\n".join(lines)
