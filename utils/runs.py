"""Run directories and what they logged: finding them, reading metrics, grouping seeds, curves and final scores.

The shared core of `plot.py` and `score.py` (and of sweep tools): the CLIs only parse flags and write files.

A run directory is what train.py writes, `log/<task>/<algo>/seed<N>-<timestamp>/`: `config.yaml` (whose `task`,
`algo` and `seed` keys name the run), `progress.csv` (one row per evaluation) and TensorBoard event files. A metric
is a progress.csv column (`normalized_score_mean`, `return_mean`, ...) or any TensorBoard scalar tag (`loss/critic`,
`dynamics/holdout_loss`, ...); its x axis is the step it was logged at (gradient steps; model epochs for
`dynamics/*`).

Seeds of one (task, algo) group are averaged as follows: each seed's curve is smoothed over its own evaluations
(trailing moving average), then the seeds are aligned on the steps that every seed logged (the intersection, no
interpolation: seeds of one config evaluate at the same steps, so this only cuts the curve where the shortest seed
stops), and the mean and std over seeds are taken at each of those steps. Std is numpy's population std (ddof=0),
as OfflineRL-Kit and CORL report it. Final scores are the mean of each seed's last K evaluations, never the maximum
over training.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from utils.errors import UserError
from utils.logger import PROGRESS_COLUMNS

# Metrics read from progress.csv (every column but the x axis); anything else is looked up in TensorBoard.
PROGRESS_METRICS = tuple(c for c in PROGRESS_COLUMNS if c != "step")
DEFAULT_METRIC = "normalized_score_mean"
RAW_METRIC = "return_mean"
# Subdirectories of a run that never hold runs themselves (eval.py outputs, checkpoints).
_NOT_RUNS = {"eval", "checkpoints", "__pycache__", "node_modules"}


@dataclass(frozen=True)
class Run:
    """One run directory: its name (task, algo, seed) and its saved config as a plain mapping."""

    path: Path
    task: str
    algo: str
    seed: int
    config: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def group(self) -> tuple[str, str]:
        return self.task, self.algo

    @property
    def final_step(self) -> int | None:
        """The step the run ends at when it completes (epochs x steps_per_epoch), if the config says."""
        epochs, steps = self.config.get("epochs"), self.config.get("steps_per_epoch")
        return epochs * steps if isinstance(epochs, int) and isinstance(steps, int) else None


@dataclass(frozen=True)
class Series:
    """A metric of one run: strictly increasing steps and one value per step."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Curve:
    """A group's learning curve: mean and std over its seeds at the steps they all logged."""

    task: str
    algo: str
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    num_seeds: int


@dataclass(frozen=True)
class Score:
    """A group's final score: one value per seed (mean of its last K evaluations), their mean and std."""

    task: str
    algo: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values))

    @property
    def num_seeds(self) -> int:
        return len(self.values)


# ----------------------------------------------------------------------------------------------------------- finding


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def _runs_below(root: Path) -> list[Path]:
    """Every directory under root (root included) holding config.yaml and progress.csv; hidden dirs skipped."""
    found = []
    for directory, subdirs, files in os.walk(root):
        if "config.yaml" in files and "progress.csv" in files:
            found.append(Path(directory))
            subdirs.clear()  # a run's own subdirectories (eval/, checkpoints/) hold no runs
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in _NOT_RUNS)
    return found


def _run_dirs_for(source: str) -> list[Path]:
    """The run directories one command-line source names: a run dir, a root dir to search, or a glob of either."""
    is_glob = glob.has_magic(source)
    matches = sorted(Path(p) for p in glob.glob(source, recursive=True)) if is_glob else [Path(source)]
    if not is_glob and not matches[0].exists():
        raise UserError(f"no such run directory or root: {source}")
    if not matches:
        raise UserError(f"{source!r} matches no file or directory; pass run directories or a root such as log/")
    found: list[Path] = []
    for match in matches:
        if match.is_file() and match.name in ("config.yaml", "progress.csv"):
            match = match.parent
        if not match.is_dir():
            continue
        # A directory with config.yaml is a run named explicitly: its progress.csv must be there (checked on read).
        found.extend([match] if _is_run_dir(match) else _runs_below(match))
    if not found:
        raise UserError(
            f"{source!r} holds no run directory (a directory with config.yaml and progress.csv, as train.py writes)"
        )
    return found


def read_run(path: str | Path) -> Run:
    """A run's name and config from its config.yaml (plain YAML: runs of algorithms this code lacks still load)."""
    path = Path(path)
    config_path = path / "config.yaml"
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{config_path}: unreadable run config ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"{config_path}: not a run config (expected a YAML mapping with task, algo and seed)")
    task, algo, seed = data.get("task"), data.get("algo"), data.get("seed")
    if not isinstance(task, str) or not task or not isinstance(algo, str) or not algo or not isinstance(seed, int):
        raise UserError(f"{config_path}: not a run config of train.py (needs task, algo and an integer seed)")
    return Run(path=path, task=task, algo=algo, seed=seed, config=data)


def find_runs(sources: Sequence[str]) -> list[Run]:
    """Runs named by run dirs, root dirs and globs (each must name at least one), sorted by task, algo, seed."""
    if not sources:
        raise UserError("no runs given; pass run directories, globs or a root such as log/")
    seen: dict[Path, Path] = {}
    for source in sources:
        for path in _run_dirs_for(source):
            seen.setdefault(path.resolve(), path)
    runs = [read_run(path) for path in seen.values()]
    return sorted(runs, key=lambda r: (r.task, r.algo, r.seed, str(r.path)))


def filter_runs(runs: Sequence[Run], tasks: Sequence[str] = (), algos: Sequence[str] = ()) -> list[Run]:
    """Runs whose task and algo match one of the given names or shell patterns (empty: all); a filter must match."""
    for flag, patterns, attr in (("--task", tasks, "task"), ("--algo", algos, "algo")):
        if not patterns:
            continue
        have = sorted({getattr(r, attr) for r in runs})
        for pattern in patterns:
            if not fnmatch.filter(have, pattern):
                raise UserError(f"{flag} {pattern} matches none of the runs' {attr}s: {', '.join(have)}")
        runs = [r for r in runs if any(fnmatch.fnmatchcase(getattr(r, attr), p) for p in patterns)]
    return list(runs)


def group_runs(runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (task, algo), sorted; one seed appearing twice in a group is refused (it would count twice)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    for (task, algo), members in groups.items():
        by_seed: dict[int, list[Run]] = {}
        for run in members:
            by_seed.setdefault(run.seed, []).append(run)
        for seed, same in by_seed.items():
            if len(same) > 1:
                raise UserError(
                    f"{task} / {algo} has seed {seed} in {len(same)} runs ({', '.join(str(r.path) for r in same)}); "
                    "reruns or other settings would count as extra seeds: pass the run directories to compare"
                )
    return {key: sorted(groups[key], key=lambda r: r.seed) for key in sorted(groups)}


# ----------------------------------------------------------------------------------------------------------- reading


def read_progress(run: Run) -> dict[str, np.ndarray]:
    """progress.csv as one float array per column; a missing or malformed file is a UserError naming it."""
    path = run.path / "progress.csv"

    def corrupt(reason: str) -> UserError:
        return UserError(f"{path}: corrupt progress.csv ({reason}); fix or remove this run")

    if not path.is_file():
        raise UserError(f"{path}: missing progress.csv; {run.path} is not a complete run directory")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise corrupt("empty file, no header")
            if "step" not in header:
                raise corrupt(f"no step column in header {','.join(header)}")
            rows = []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise corrupt(f"line {reader.line_num} has {len(row)} fields, the header {len(header)}")
                try:
                    rows.append([float(v) for v in row])
                except ValueError:
                    raise corrupt(f"line {reader.line_num} is not numeric: {','.join(row)}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise corrupt(type(err).__name__) from None
    data = np.asarray(rows, dtype=float).reshape(len(rows), len(header))
    return {name: data[:, i] for i, name in enumerate(header)}


def read_tensorboard(run: Run) -> dict[str, Series]:
    """Every TensorBoard scalar tag of the run directory (its own event files, not eval/'s), all points loaded."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(run.path), size_guidance={SCALARS: 0})  # 0: keep every point
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()[SCALARS]:
        events = accumulator.Scalars(tag)
        scalars[tag] = _series([e.step for e in events], [e.value for e in events])
    return scalars


def _series(steps: Sequence[float], values: Sequence[float]) -> Series:
    """Sorted by step; where a step repeats (a resumed run), the value logged last wins."""
    last = {int(s): float(v) for s, v in zip(steps, values)}
    order = sorted(last)
    return Series(np.asarray(order, dtype=np.int64), np.asarray([last[s] for s in order], dtype=float))


def metric_series(runs: Sequence[Run], metric: str) -> tuple[dict[Run, Series], list[Run]]:
    """Each run's series of `metric`, and the runs that have no point of it (skipped; e.g. not evaluated yet).

    Every run's progress.csv is read (and must be well formed) whatever the metric; a metric no run has is a
    UserError listing the metrics they do have.
    """
    progress = {run: read_progress(run) for run in runs}
    columns = {c for table in progress.values() for c in table if c != "step"}
    from_progress = metric in PROGRESS_METRICS or metric in columns
    tensorboard = {} if from_progress else {run: read_tensorboard(run) for run in runs}
    series = {}
    for run in runs:
        source = progress[run] if from_progress else tensorboard[run]
        if metric in source:
            found = _series(progress[run]["step"], source[metric]) if from_progress else source[metric]
            if len(found):
                series[run] = found
    if not series:
        if from_progress and metric in columns:
            raise UserError(f"none of the {len(runs)} runs has an evaluation yet (progress.csv has no rows)")
        scalars = tensorboard.values() if tensorboard else (read_tensorboard(run) for run in runs)
        tags = {tag for tags_of_run in scalars for tag in tags_of_run}
        available = ", ".join(sorted(columns) + sorted(tags - columns))
        raise UserError(f"no run logged the metric {metric!r}; available: {available}")
    return series, [run for run in runs if run not in series]


# ------------------------------------------------------------------------------------------------------ aggregation


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (fewer at the start); window 1 returns the values unchanged."""
    if window < 1:
        raise UserError(f"smoothing window must be >= 1, got {window}")
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def align(series: Sequence[Series]) -> tuple[np.ndarray, np.ndarray]:
    """The steps every series logged (intersection) and the values there, shaped [num_series, num_steps]."""
    common = reduce(np.intersect1d, [s.steps for s in series])
    values = np.stack([s.values[np.searchsorted(s.steps, common)] for s in series]) if len(common) else None
    return common, values if values is not None else np.empty((len(series), 0))


def group_curve(task: str, algo: str, series: Sequence[Series], window: int) -> Curve:
    """Mean and std over seeds: each seed smoothed over its own evaluations, then aligned on the common steps."""
    smoothed = [Series(s.steps, smooth(s.values, window)) for s in series]
    steps, values = align(smoothed)
    if not len(steps):
        raise UserError(
            f"the {len(series)} seeds of {task} / {algo} share no logged step; were they run with different eval_every?"
        )
    return Curve(task, algo, steps, values.mean(axis=0), values.std(axis=0), len(series))


def learning_curves(series: dict[Run, Series], window: int) -> list[Curve]:
    """One curve per (task, algo) group of the runs that have the metric."""
    return [
        group_curve(task, algo, [series[run] for run in members], window)
        for (task, algo), members in group_runs(series).items()
    ]


def last_k_mean(run: Run, series: Series, last: int) -> float:
    """The mean of a run's last `last` values (its final score); fewer values than that is a UserError."""
    if last < 1:
        raise UserError(f"--last must be >= 1, got {last}")
    if len(series) < last:
        raise UserError(f"{run.path} has {len(series)} evaluations, fewer than --last {last}")
    return float(series.values[-last:].mean())


def final_scores(series: dict[Run, Series], last: int) -> list[Score]:
    """One Score per (task, algo) group: the mean of each seed's last `last` evaluations."""
    return [
        Score(task, algo, tuple(r.seed for r in members), tuple(last_k_mean(r, series[r], last) for r in members))
        for (task, algo), members in group_runs(series).items()
    ]


def unfinished(series: dict[Run, Series]) -> list[Run]:
    """Runs whose last logged step is short of the end their config sets (still training, or killed)."""
    return [r for r, s in series.items() if r.final_step is not None and len(s) and s.steps[-1] < r.final_step]


# ------------------------------------------------------------------------------------------------------- reporting


def describe(runs: Iterable[Run]) -> str:
    """Runs in a few words, by group: `hopper-medium-v2/mopo seeds 0,2; walker2d-medium-v2/bc seed 1`."""
    seeds: dict[tuple[str, str], list[int]] = {}
    for run in runs:
        seeds.setdefault(run.group, []).append(run.seed)
    parts = []
    for (task, algo), numbers in sorted(seeds.items()):
        parts.append(f"{task}/{algo} seed{'s' * (len(numbers) > 1)} {','.join(map(str, sorted(numbers)))}")
    return "; ".join(parts)


def format_cell(score: Score | None, digits: int = 1) -> str:
    """`72.3 ± 4.1 (3)`: mean ± std over seeds and the seed count; `–` for a missing cell."""
    if score is None:
        return "–"
    return f"{score.mean:.{digits}f} ± {score.std:.{digits}f} ({score.num_seeds})"


def markdown_table(scores: Sequence[Score], caption: str, digits: int = 1) -> str:
    """Tasks as rows, algorithms as columns, a caption line above."""
    tasks = sorted({s.task for s in scores})
    algos = sorted({s.algo for s in scores})
    cells = {(s.task, s.algo): s for s in scores}
    lines = [caption, "", "| task | " + " | ".join(algos) + " |", "|---|" + "---:|" * len(algos)]
    for task in tasks:
        lines.append(f"| {task} | " + " | ".join(format_cell(cells.get((task, a)), digits) for a in algos) + " |")
    return "\n".join(lines) + "\n"


SCORE_CSV_COLUMNS = ("task", "algo", "metric", "last_k", "mean", "std", "n_seeds", "seeds", "values")


def scores_csv(scores: Sequence[Score], metric: str, last: int) -> str:
    """One row per (task, algo); `seeds` and `values` list the per-seed numbers, `;`-separated, in the same order."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SCORE_CSV_COLUMNS)
    for s in scores:
        writer.writerow(
            [
                s.task,
                s.algo,
                metric,
                last,
                f"{s.mean:.6g}",
                f"{s.std:.6g}",
                s.num_seeds,
                ";".join(map(str, s.seeds)),
                ";".join(f"{v:.6g}" for v in s.values),
            ]
        )
    return text.getvalue()
