"""The package layout the code relies on: envs/ (the world) imports no algorithm, and every algorithm's config
dataclass lives beside the algorithm and is found by its `--algo` name."""

from __future__ import annotations

import ast
from pathlib import Path

from algos import ALGORITHMS, STUDIES
from config import CONFIG_CLASSES, config_classes, load_config

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level package of every module a file imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_envs_import_no_algorithm() -> None:
    offenders = {path.name for path in (REPO / "envs").glob("*.py") if "algos" in imported_modules(path)}
    assert not offenders, f"envs/ must not import algos/: {sorted(offenders)}"


def test_every_algorithm_has_its_config_class_in_its_own_module() -> None:
    classes = config_classes()
    assert set(classes) == set(ALGORITHMS) | set(STUDIES)
    for name, algo_class in {**ALGORITHMS, **STUDIES}.items():
        assert classes[name].__module__ == algo_class.__module__, name


def test_config_py_defines_no_algorithm_config() -> None:
    assert all(cls.__module__ != "config" for cls in CONFIG_CLASSES.values())


def test_algorithm_rules_apply_only_to_their_own_config() -> None:
    """BCQ's `select_noise` check lives on BCQ's class; MOPO, which has no such key, still loads."""
    assert load_config("mopo", "hopper-medium-v2").penalty_type == "aleatoric"
    assert load_config("bcq", "hopper-medium-v2", overrides=["select_noise=fresh"]).select_noise == "fresh"
