"""train.py --help and --list-tasks: what each algorithm learns from, and every task by kind with its data's state."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

import collect
import train
from algos import STUDIES
from config import config_classes
from envs import generate, get_task, list_tasks

SECTIONS = ("Online tasks", "Offline D4RL tasks", "Offline generated tasks (-gen)")


def listing(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, str]]:
    """`train.py --list-tasks` as {section title's start: {task: what its line says}}."""
    assert train.main(["--list-tasks"]) is None
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines():
        if line and not line.startswith(" "):
            current = sections.setdefault(next(s for s in (*SECTIONS, "Your task files") if line.startswith(s)), {})
        elif line:
            name, status = line.split(maxsplit=1)
            current[name] = status
    return sections


def test_help_says_which_algorithms_learn_offline_and_which_online(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Train an offline RL algorithm" not in text

    def named(phrase: str) -> set[str]:
        found = re.search(re.escape(phrase) + r"[^(]*\(([^)]*)\)", text)
        assert found, (phrase, text[:400])
        return set(re.findall(r"[a-z0-9-]+", found.group(1).replace("on D4RL or generated data", "")))

    classes = config_classes()
    assert named("offline RL from a dataset") == {name for name, cls in classes.items() if not cls.online}
    assert named("online model-based RL in a gymnasium environment") == {
        name for name, cls in classes.items() if cls.online and name not in STUDIES
    }
    assert named("the WMOPO Pendulum study's model fits") == set(STUDIES)


def test_list_tasks_groups_tasks_and_says_where_their_data_is(
    dataset_dirs: SimpleNamespace,
    tiny_dataset_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "d4rl"
    data_dir.mkdir()
    (data_dir / "hopper-random-gen.hdf5").write_bytes((tiny_dataset_dir / "hopper-random-gen.hdf5").read_bytes())
    (data_dir / get_task("hopper-medium-v2").dataset_file).write_bytes(b"stand-in for D4RL's file")
    monkeypatch.setenv("D4RL_DATASET_DIR", str(data_dir))

    sections = listing(capsys)
    assert list(sections) == list(SECTIONS)  # no task files on OFFLINE_MBRL_TASKS: no such section
    listed = [name for tasks in sections.values() for name in tasks]
    assert sorted(listed) == list_tasks()  # each task once, in the section of its kind

    online = sections["Online tasks"]
    assert set(online) == {name for name in list_tasks() if get_task(name).online}
    assert online["Hopper-v4"] == "mal, pal"
    assert online["CustomPendulum-v0"] == ", ".join(sorted(STUDIES))
    d4rl = sections["Offline D4RL tasks"]
    assert d4rl["hopper-medium-v2"] == f"present: {data_dir / 'hopper_medium-v2.hdf5'}"
    assert d4rl["hopper-expert-v2"] == "missing (train.py downloads it on first use)"
    generated = sections["Offline generated tasks (-gen)"]
    assert generated["hopper-random-gen"] == f"present: {data_dir / 'hopper-random-gen.hdf5'}"
    command = "python collect.py dataset --task hopper-medium-gen"
    assert generated["hopper-medium-gen"] == f"missing, generate it: {command}"

    # The command it gives works as given (a small dataset: the default size is D4RL's million transitions), and
    # the task then lists as present.
    monkeypatch.setattr(generate, "DEFAULT_TRANSITIONS", 300)
    (written,) = collect.main(shlex.split(command)[2:])
    assert written == data_dir / "hopper-medium-gen.hdf5" and written.is_file()
    capsys.readouterr()
    assert listing(capsys)["Offline generated tasks (-gen)"]["hopper-medium-gen"] == f"present: {written}"
