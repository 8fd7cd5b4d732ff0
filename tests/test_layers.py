"""The project's import layers hold and no import circle comes back.

Every project module's imports (at module level and inside functions, as `import x.y`, `from x import y` or
`importlib.import_module("x")`) are read with `ast`, so the check imports nothing and sees the late imports that hide
circles. Lowest layer first:

    utils  <  models  <  config  <  buffers  <  envs  <  algos  <  tools  <  scripts

`tools` are the utils modules that read run configs, run directories and tasks (browsing, launching, publishing,
task listing); `scripts` are the top-level commands and bench/. A module may import its own layer and the layers
below it, never one above, and no set of modules may import each other in a circle.

`python tests/test_layers.py [ROOT]` prints the cycles and back-edges of any checkout (ROOT, default this one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[str, ...] = ("utils", "models", "config", "buffers", "envs", "algos", "tools", "scripts")
"""Lowest first: a module may import from its own layer or one before it."""

TOOLS: frozenset[str] = frozenset({"utils.runs", "utils.launch", "utils.publish", "utils.tables", "utils.task_listing"})
"""utils modules above config and envs: they read run configs, run directories and task registries."""

PACKAGE_LAYERS: dict[str, str] = {
    "utils": "utils",
    "models": "models",
    "config": "config",
    "buffers": "buffers",
    "envs": "envs",
    "algos": "algos",
    "bench": "scripts",
}
"""Layer of each top-level package or module; any other top-level module file is a script (train.py, eval.py...)."""

SKIPPED_DIRS: frozenset[str] = frozenset({"tests", "log", "results", "data", "plots", "docs", "configs"})
"""Top-level folders that hold no project modules (tests may import anything)."""


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name of every project .py file under `root`, hidden folders (.venv, .git) and SKIPPED_DIRS left out."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in SKIPPED_DIRS or any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        names = list(parts[:-1]) + ([] if path.name == "__init__.py" else [path.stem])
        modules[".".join(names)] = path
    return modules


def _target(name: str, modules: Mapping[str, Path]) -> str | None:
    """The most specific project module a dotted name lies in (`algos.mopo.MOPO` -> `algos.mopo`), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports for annotations only, which never run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of `tree` but the bodies of `if TYPE_CHECKING:` blocks (their `else:` runs, so it is kept)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _is_type_checking(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
        else:
            stack.extend(ast.iter_child_nodes(node))


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Every dotted name an import statement anywhere in `tree` reaches at run time (imports for annotations only,
    under `if TYPE_CHECKING:`, are no dependency), relative imports made absolute."""
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            # `from x import y` names the submodule x.y when there is one, else an attribute of x.
            yield from (f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names)
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value


def _is_import_call(func: ast.expr) -> bool:
    """`importlib.import_module(...)`, `import_module(...)` or `__import__(...)`: imports hidden in a call."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def import_graph(root: Path) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (itself left out)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {_target(name, modules) for name in _imported_names(tree, module, path.name == "__init__.py")}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def layer_of(module: str) -> str | None:
    """The layer a module belongs to, or None for a top-level package no layer names yet."""
    if module in TOOLS:
        return "tools"
    top, dot, _ = module.partition(".")
    if top in PACKAGE_LAYERS:
        return PACKAGE_LAYERS[top]
    return None if dot else "scripts"


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def cycle_path(graph: Mapping[str, Iterable[str]], component: Iterable[str]) -> list[str]:
    """One concrete circle through a component's first module (`a -> b -> a`), so a failure shows the edges."""
    members = set(component)
    start = min(members)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = parents[node]
                    return [start, *reversed(path[1:]), start]
                if child in members and child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise ValueError(f"{sorted(members)} is not a cycle of the graph")


def back_edges(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """`a (layer) -> b (layer)` for every import of a higher layer, and for modules that have no layer."""
    found = []
    for module in sorted(graph):
        layer = layer_of(module)
        if layer is None:
            found.append(f"{module} has no layer (add its package to PACKAGE_LAYERS)")
            continue
        for target in sorted(graph[module]):
            wanted = layer_of(target)
            if wanted is not None and LAYERS.index(wanted) > LAYERS.index(layer):
                found.append(f"{module} ({layer}) -> {target} ({wanted})")
    return found


def report(root: Path) -> str:
    """Counts and details of a checkout's cycles and back-edges, as the issue measures them."""
    graph = import_graph(root)
    components = cycles(graph)
    edges = back_edges(graph)
    lines = [
        f"{len(graph)} modules, {sum(map(len, graph.values()))} import edges",
        f"cycles (strongly connected components with >1 module): {len(components)}, sizes "
        f"{[len(component) for component in components]}",
    ]
    lines += [f"  {len(component)}: {', '.join(component)}" for component in components]
    lines.append(f"back-edges (lower layer -> higher layer): {len(edges)}")
    lines += [f"  {edge}" for edge in edges]
    return "\n".join(lines)


def test_no_import_cycle() -> None:
    graph = import_graph(ROOT)
    found = [
        f"{len(component)} modules ({', '.join(component)}), e.g. {' -> '.join(cycle_path(graph, component))}"
        for component in cycles(graph)
    ]
    assert not found, "import cycles among project modules:\n" + "\n".join(found)


def test_no_import_of_a_higher_layer() -> None:
    found = back_edges(import_graph(ROOT))
    assert not found, f"imports against the layers {' < '.join(LAYERS)}:\n" + "\n".join(found)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, `import x.y`, `from x import submodule`, attribute, relative and `importlib.import_module`
    imports all become edges."""
    files = {
        "config.py": "import importlib\n\ndef late():\n    import algos.mopo\n    importlib.import_module('envs')\n",
        "algos/__init__.py": "from . import mopo\n",
        "algos/mopo.py": "from .base import Algorithm\nfrom config import register\n",
        "algos/base.py": "from utils import errors, helper\nfrom utils.errors import UserError\n",
        # annotations only: no edge; the else branch runs, so its import is one
        "envs/__init__.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import algos\nelse:\n    import utils\n",
        "utils/__init__.py": "",
        "utils/errors.py": "",
        "tests/test_x.py": "import algos\n",
        ".venv/lib/site.py": "import config\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_graph(tmp_path) == {
        "config": {"algos.mopo", "envs"},
        "algos": {"algos.mopo"},
        "algos.mopo": {"algos.base", "config"},
        "algos.base": {"utils", "utils.errors"},
        "utils": set(),
        "utils.errors": set(),
        "envs": {"utils"},
    }


def test_the_checker_reports_a_cycle_and_a_back_edge() -> None:
    """A synthetic graph with the old circle (config -> algos -> algos.mopo -> config) and models -> config."""
    graph = {
        "config": {"algos", "utils.errors"},
        "algos": {"algos.mopo"},
        "algos.mopo": {"config", "utils.errors"},
        "models.dynamics": {"config"},
        "utils.errors": set(),
        "train": {"algos", "utils.runs"},
        "utils.runs": {"config"},
    }
    assert cycles(graph) == [["algos", "algos.mopo", "config"]]
    assert cycle_path(graph, ["algos", "algos.mopo", "config"]) == ["algos", "algos.mopo", "config", "algos"]
    assert back_edges(graph) == ["config (config) -> algos (algos)", "models.dynamics (models) -> config (config)"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_config_alone_imports_no_algorithm_and_says_so_when_asked_for_one() -> None:
    """At run time too: importing config.py loads nothing of algos/ or envs/, and reading its registry before
    `import algos` fails with the programming error that names the fix, not an "unknown algorithm" listing none."""
    code = (
        "import sys, config\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] in ('algos', 'envs'))\n"
        "assert not loaded, loaded\n"
        "try:\n"
        "    config.load_config('mopo', 'hopper-medium-v2')\n"
        "except config.RegistryNotFilled as err:\n"
        "    print(err)\n"
        "import algos\n"
        "print(type(config.load_config('mopo', 'hopper-medium-v2')).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    refusal, loaded = result.stdout.splitlines()
    assert refusal.startswith("no algorithm has registered its config class: import algos"), refusal
    assert loaded == "MOPOConfig"


if __name__ == "__main__":
    print(report(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
