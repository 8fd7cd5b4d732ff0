"""Results tables generated from the registry: what README and docs show is what `results/` holds, by one command.

`python score.py tables` rewrites every generated block named in `results/tables.yaml`; `--check` rewrites nothing
and fails when a block differs from what the registry gives (tests/test_results_tables.py runs it on README). A block
sits between two marker lines in its Markdown file:

    <!-- generated: NAME (python score.py tables; edit results/tables.yaml, not this block) -->
    ...
    <!-- end generated: NAME -->

Each table has one row per group of published runs (grouped as score.py groups them: task, algorithm, the config
keys that differ) other than its baseline's: the score (mean ± std over seeds of each seed's mean of its last
LAST_K evaluations), each seed's value, the budget, the baseline's score on the same task and data, the behaviour
policy and the dataset's episodes as the runs' provenance recorded them, and whether the row beats the baseline and
the behaviour policy. The last single evaluation is never a cell.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from utils.algorithm_spec import known_algorithm
from utils.checkpoint import atomic_write
from utils.errors import UserError
from utils.provenance import ONLINE, UNKNOWN, read_provenance, short_hash
from utils.runs import (
    DEFAULT_METRIC,
    Group,
    Run,
    Score,
    final_scores,
    find_runs,
    group_data,
    group_runs,
    read_metric,
)

LAST_K = 5  # each seed's score: the mean of its last 5 evaluations (the project's learning claim)
SPEC_FILE = "tables.yaml"  # in the registry's root: which tables exist, where they go, their baseline
BEGIN = "<!-- generated: {name} (python score.py tables; edit results/tables.yaml, not this block) -->"
END = "<!-- end generated: {name} -->"
HEADER = (
    "| task (data) | algorithm | score | per seed | budget | {baseline} | behaviour / dataset | beats {baseline}? "
    "| beats behaviour? |"
)


@dataclass(frozen=True)
class TableSpec:
    """One generated table: the block `name` in `file`, the registry tasks it shows (all when empty) and the label
    folder whose runs are the baseline column (compared on the same task and data) instead of rows."""

    name: str
    file: str
    baseline: str
    tasks: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # the label folders whose runs are rows (all but the baseline's when empty)
    # The planned budgets (`Run.budget`: `60k steps`, `50 iterations`) of the rows shown (every one when empty): one
    # label folder may hold a comparator at two checks' budgets (MOPO at MAGO's 5k and at WMOPO's 60k steps).
    budgets: tuple[str, ...] = ()


@dataclass(frozen=True)
class FigureSpec:
    """The learning curves drawn from the registry: one PNG per registry task (python plot.py results/<task>)."""

    out: str
    smooth: int = 1


def _read_spec_file(results: Path) -> dict[str, Any]:
    path = results / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: the registry's table list; restore it (git checkout {path})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not YAML ({type(err).__name__}); restore it (git checkout {path})") from None
    return raw if isinstance(raw, dict) else {}


def read_specs(results: Path) -> list[TableSpec]:
    """The tables `results/tables.yaml` declares under `tables:`; a missing or malformed file is one line naming it."""
    path = results / SPEC_FILE
    try:
        specs = [
            TableSpec(
                name,
                str(entry["file"]),
                str(entry["baseline"]),
                tuple(entry.get("tasks") or ()),
                tuple(entry.get("labels") or ()),
                tuple(entry.get("budgets") or ()),
            )
            for name, entry in (_read_spec_file(results).get("tables") or {}).items()
        ]
    except (TypeError, KeyError, AttributeError) as err:
        raise UserError(
            f"{path}: malformed table ({type(err).__name__}: {err}); each is NAME: {{file: PATH, baseline: LABEL, "
            "tasks: [TASK, ...], labels: [LABEL, ...], budgets: [BUDGET, ...]}} under tables:"
        ) from None
    if not specs:
        raise UserError(f"{path} declares no table; add one under tables: as readme: {{file: README.md, baseline: L}}")
    return specs


def read_figure_spec(results: Path) -> FigureSpec | None:
    """The `figures:` entry of `results/tables.yaml` (out: a folder, smooth: a window), None when it has none."""
    entry = _read_spec_file(results).get("figures")
    if entry is None:
        return None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("out"), str)
        or not isinstance(entry.get("smooth", 1), int)
    ):
        raise UserError(f"{results / SPEC_FILE}: figures: must be {{out: FOLDER, smooth: N}}")
    return FigureSpec(entry["out"], entry.get("smooth", 1))


def title(algo: str) -> str:
    """An algorithm as tables write it (its record's title: MOReL, MOPO), or its name when this code lacks it."""
    spec = known_algorithm(algo)
    return algo if spec is None else spec.title


def label_of(run: Run) -> str:
    """The registry folder a published run lies in (`results/<task>/<label>/<run>`)."""
    return run.path.parent.name


def data_reference(runs: Sequence[Run]) -> dict[str, Any]:
    """The dataset facts the runs' provenance recorded (episodes, their normalized mean, the behaviour policy's
    score, transitions); empty for online runs or runs older than these fields."""
    for run in runs:
        dataset = (read_provenance(run.path) or {}).get("dataset") or {}
        if "episodes" in dataset:
            return dataset
    return {}


def _number(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.1f}"


def _beats(score: Score, reference: float | None) -> str:
    """`yes (3 of 3 seeds)`: the seeds' mean above the reference, and how many seeds are."""
    if reference is None or not np.isfinite(reference):
        return "n/a"
    above = int(sum(value > reference for value in score.values))
    verdict = "yes" if score.mean > reference else "no"
    return f"{verdict} ({above} of {score.num_seeds} seeds)"


def render(spec: TableSpec, results: Path) -> str:
    """The Markdown rows of one table (header included) from the published runs under `results`."""
    roots = [results / task for task in spec.tasks] if spec.tasks else [results]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        raise UserError(f"{', '.join(missing)}: no published runs of that task; publish them or edit {SPEC_FILE}")
    runs = find_runs([str(root) for root in roots])
    read = read_metric(runs, DEFAULT_METRIC)
    short = sorted(str(run.path) for run, points in read.series.items() if len(points) < LAST_K)
    if short:
        raise UserError(f"{short[0]} has fewer than {LAST_K} evaluations; a table cell is a mean of the last {LAST_K}")
    groups = group_runs(read.series)
    data = group_data(groups)
    scores = dict(zip(groups, final_scores(read.series, LAST_K, groups)))

    def is_baseline(group: Group) -> bool:
        return all(label_of(run) == spec.baseline for run in groups[group])

    baselines = {(group.task, data[group]): scores[group] for group in groups if is_baseline(group)}
    names = {title(group.algo) for group in groups if is_baseline(group)}
    baseline_name = names.pop() if len(names) == 1 else spec.baseline
    lines = [HEADER.format(baseline=baseline_name), "|---|---|---:|---|---|---:|---|---|---|"]
    for group, members in groups.items():
        if is_baseline(group) or (spec.labels and not all(label_of(run) in spec.labels for run in members)):
            continue
        if spec.budgets and not all(run.budget in spec.budgets for run in members):
            continue
        score, digest = scores[group], data[group]
        reference = data_reference(members)
        baseline = baselines.get((group.task, digest))
        behaviour = reference.get("behaviour_normalized")
        if digest in (ONLINE, UNKNOWN):
            task = f"{group.task} ({digest})"
        else:
            transitions = reference.get("transitions")
            size = f"{transitions // 1000}k, " if isinstance(transitions, int) else ""
            task = f"{group.task} ({size}sha256 {short_hash(digest)})"
        budgets = sorted({run.budget for run in members})
        per_seed = ", ".join(f"{value:.1f}" for value in score.values)
        cells = [
            task,
            title(group.algo) + group.label[len(group.algo) :],
            f"**{score.mean:.1f} ± {score.std:.1f}** ({score.num_seeds})",
            per_seed,
            " / ".join(budgets),
            "–" if baseline is None else f"{baseline.mean:.1f} ± {baseline.std:.1f} ({baseline.num_seeds})",
            f"{_number(behaviour)} / {_number(reference.get('episode_normalized_mean'))}",
            "n/a" if baseline is None else _beats(score, baseline.mean),
            _beats(score, behaviour),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, body: str, path: Path) -> str:
    """`text` with the block `name` holding `body`; a file without both markers is one line naming the fix."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise UserError(
            f"{path}: needs the generated block {name!r} once, as a line {begin} and a later line {end}; add both "
            "lines where the table belongs"
        )
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def regenerate(results: Path, root: Path, check: bool = False) -> list[str]:
    """Rewrite every declared block (or, with `check`, rewrite nothing and return a unified diff per stale file)."""
    specs = read_specs(results)
    by_file: dict[str, list[TableSpec]] = {}
    for spec in specs:
        by_file.setdefault(spec.file, []).append(spec)
    stale = []
    for name, file_specs in by_file.items():
        path = root / name
        if not path.is_file():
            raise UserError(
                f"{path} not found: {results / SPEC_FILE} puts table {file_specs[0].name!r} there; fix its file: entry"
            )
        before = path.read_text(encoding="utf-8")
        after = before
        for spec in file_specs:
            after = replace_block(after, spec.name, render(spec, results), path)
        if after == before:
            continue
        if check:
            diff = difflib.unified_diff(before.splitlines(), after.splitlines(), str(path), "from the registry", n=0)
            stale.append("\n".join(diff))
        else:
            atomic_write(path, lambda handle, text=after: handle.write(text.encode()))
            stale.append(str(path))
    return stale
