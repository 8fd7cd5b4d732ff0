"""Run directories and what they logged: finding them, reading metrics, grouping seeds, curves and final scores.

The shared core of `plot.py` and `score.py` (and of sweep tools): the CLIs only parse flags and write files.

A run directory is what train.py writes, `log/<task>/<algo>/seed<N>-<timestamp>/`: `config.yaml` (whose `task`,
`algo` and `seed` keys name the run), `progress.csv` (one row per evaluation) and TensorBoard event files. A metric
is a progress.csv column (`normalized_score_mean`, `return_mean`, ...) or any TensorBoard scalar tag (`loss/critic`,
`dynamics/holdout_loss`, ...); its x axis is the step it was logged at (gradient steps; model epochs for
`dynamics/*`).

Runs are grouped by task, algorithm and the config keys that differ between them, so two sweep grid points or two
configs of one algorithm are two groups (labelled `mopo penalty_coef=0.5`) and the runs of one group differ only in
seed. Configs are flattened to dotted keys (`dynamics.max_epochs`, `sac.actor_lr`; keys a run's config.yaml lacks take
the defaults of config.py, as `--resume` reads them). Within each (task, algo), among the runs being grouped (those
that logged the metric), every key whose value is not the same in all of them is a grouping key, except run
bookkeeping that never changes what a run learns or how it is measured: `seed` (what a group averages over),
`log_dir`, `device`, `save_every`, `dataset_path`, `download`, `dynamics_path` and `branch_from` (DEFAULT_IGNORED;
`dynamics_path` names where a shared model file lies, typically one per seed; WMOPO's `branch_from` names the run
whose iteration 0 a run took over, which leaves it bit for bit the run it would have been). `eval_every` and
`eval_episodes` do count: they change which evaluations last-K averages and how noisy each one is. `ignore` drops more
keys (dotted names or shell patterns, `dynamics` meaning `dynamics.*`); `group_by` replaces the automatic keys by
exactly the keys it names (ignored or not), averaging over whatever else differs (`averaged_over` names it). Two runs
of one seed in one group are refused, naming the keys they differ in and a `--group-by` that separates them.

Seeds of one group are averaged as follows: each seed's curve is smoothed over its own evaluations
(trailing moving average), then the seeds are aligned on the steps that every seed logged (the intersection, no
interpolation: seeds of one config evaluate at the same steps, so this only cuts the curve where the shortest seed
stops), and the mean and std over seeds are taken at each of those steps. Std is numpy's population std (ddof=0),
as OfflineRL-Kit and CORL report it. Final scores are the mean of each seed's last K evaluations, never the maximum
over training.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import fnmatch
import glob
import io
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, reduce
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from config import config_classes, config_to_dict, flatten_config, without_retired
from utils.algorithm_spec import AlgorithmSpec, known_algorithm
from utils.errors import UserError
from utils.logger import PROGRESS_COLUMNS
from utils.provenance import UNKNOWN, run_data, short_hash

# Metrics read from progress.csv (every column but the x axis); anything else is looked up in TensorBoard.
PROGRESS_METRICS = tuple(c for c in PROGRESS_COLUMNS if c != "step")
DEFAULT_METRIC = "normalized_score_mean"
RAW_METRIC = "return_mean"
# Subdirectories of a run that never hold runs themselves (eval.py outputs, checkpoints).
_NOT_RUNS = {"eval", "checkpoints", "__pycache__", "node_modules"}
# Keys that always separate groups (task, algo) or are what a group averages over (seed).
STRUCTURAL_KEYS = ("task", "algo", "seed")
# Run bookkeeping: config keys that never change what a run learns or how it is measured, so runs differing only in
# them are seeds of one group unless `group_by` names them. dynamics_path is where a shared model file lies.
DEFAULT_IGNORED = (
    "seed", "log_dir", "device", "save_every", "dataset_path", "download", "dynamics_path", "branch_from",
)  # fmt: skip


class _Unset:
    """The value of a key a run's config lacks (an algorithm without it, or a config from an older version)."""

    def __repr__(self) -> str:
        return "(unset)"


UNSET: Any = _Unset()


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
    def spec(self) -> AlgorithmSpec | None:
        """The record of the run's algorithm (utils/algorithm_spec.py); None for an algorithm this code lacks."""
        return known_algorithm(self.algo)

    @property
    def final_step(self) -> int | None:
        """The step the run ends at when it completes, as its algorithm's record reads it from the config (e.g.
        epochs x steps_per_epoch gradient steps); None when unknown: online runs end at a number of samples known
        only when they get there, and runs of algorithms this code lacks at a length it cannot read."""
        spec = self.spec
        return None if spec is None else spec.planned_length(self.config)

    @property
    def budget(self) -> str:
        """The planned length as budgets and tables write it, in the algorithm's own unit (`60k steps`, `50
        iterations`); `online` for runs that end at a number of samples, `?` for an algorithm this code lacks."""
        spec, steps = self.spec, self.final_step
        if spec is not None and steps is not None:
            return spec.unit.budget(steps)
        return "online" if spec is not None and spec.online else "?"

    @cached_property
    def data(self) -> str:
        """The sha256 of the dataset the run learned from (its provenance.json), ONLINE, or UNKNOWN for a run made
        before runs recorded provenance."""
        return run_data(self.path)

    @cached_property
    def settings(self) -> dict[str, Hashable]:
        """The config flattened to dotted keys with hashable values; keys the file lacks take config.py's defaults,
        and keys its algorithm retired at the value meaning what it does now are dropped, as `--resume` reads them."""
        cls = config_classes().get(self.algo)
        config = self.config if cls is None else without_retired(cls, self.config)
        return {**_default_settings(self.algo), **flatten_config(config)}


@cache
def _default_settings(algo: str) -> dict[str, Hashable]:
    """config.py's defaults of an algorithm this code knows (none for others), flattened."""
    cls = config_classes().get(algo)
    return flatten_config(config_to_dict(cls())) if cls is not None else {}


def _known_keys() -> set[str]:
    """Every dotted key of every algorithm config.py knows, and its block names."""
    keys = {key for algo in config_classes() for key in _default_settings(algo)}
    return keys | {key.rsplit(".", 1)[0] for key in keys if "." in key}


def format_value(value: Any) -> str:
    """A config value as `--set` spells it, short but lossless: 0.5, 3e-05, true, null, [200,200]."""
    if value is UNSET:
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        try:  # a string YAML would read as something else ("1", "true") is quoted, so labels never collide
            plain = yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain and value else repr(value)
    return str(value)


def _value_order(value: Any) -> tuple[Any, ...]:
    """Sort key over mixed config values: unset, null, numbers (numerically), strings, lists."""
    if value is UNSET:
        return (0,)
    if value is None:
        return (1,)
    if isinstance(value, (bool, int, float)):
        return (2, float(value))
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, tuple):
        return (4, tuple(_value_order(v) for v in value))
    return (5, repr(value))


Settings = tuple[tuple[str, Hashable], ...]


def settings_label(algo: str, settings: Settings) -> str:
    """`mopo` alone, or `mopo penalty_coef=0.5 rollout_length=5` with the settings that tell the group apart."""
    return " ".join([algo, *(f"{key}={format_value(value)}" for key, value in settings)])


def settings_order(algo: str, settings: Settings) -> tuple[Any, ...]:
    """Sort key of a group within a task: by algorithm, then by its settings with numbers in numeric order."""
    return algo, tuple((key, _value_order(value)) for key, value in settings)


@dataclass(frozen=True)
class Group:
    """What one line of a figure or one column of a table averages: runs of a task and algorithm that share the
    values of `settings` (the grouping keys of that task and algorithm) and differ only in seed."""

    task: str
    algo: str
    settings: Settings = ()

    @property
    def label(self) -> str:
        return settings_label(self.algo, self.settings)

    @property
    def order(self) -> tuple[Any, ...]:
        return self.task, *settings_order(self.algo, self.settings)


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
    settings: Settings = ()

    @property
    def label(self) -> str:
        """`algo` or `algo key=value ...`: the same text for the same configuration in every figure."""
        return settings_label(self.algo, self.settings)


@dataclass(frozen=True)
class Score:
    """A group's final score: one value per seed (mean of its last K evaluations), their mean and std."""

    task: str
    algo: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    settings: Settings = ()

    @property
    def label(self) -> str:
        return settings_label(self.algo, self.settings)

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


def _close_keys(pattern: str, keys: Sequence[str]) -> str:
    """' (did you mean a, b?)' from keys spelled alike or ending in the same component (`max_epochs`)."""
    tail = pattern.rsplit(".", 1)[-1]
    same_tail = [k for k in keys if k.rsplit(".", 1)[-1] == tail]
    picks = list(dict.fromkeys(same_tail + difflib.get_close_matches(pattern, keys, n=3, cutoff=0.6)))[:3]
    return f" (did you mean {', '.join(picks)}?)" if picks else ""


def _key_matches(key: str, pattern: str) -> bool:
    """A key named exactly, as part of a block (`dynamics` covers `dynamics.lr`) or by a shell pattern."""
    return key == pattern or key.startswith(pattern + ".") or fnmatch.fnmatchcase(key, pattern)


def resolve_keys(patterns: Sequence[str], runs: Iterable[Run], flag: str) -> list[str]:
    """The dotted keys of the runs' configs that `--group-by`/`--ignore` items name, in order.

    An item is a key, a block (`dynamics`: all its keys), a shell pattern (`sac.*_lr`) or several of them joined by
    commas. One that names no key of any run nor of any config.py algorithm is a UserError suggesting close keys.
    task and algo always separate groups and seed is what a group averages over, so `--ignore task|algo` and
    `--group-by seed` are refused; the other combinations of those names change nothing.
    """
    present = list(dict.fromkeys(key for run in runs for key in run.settings))
    known = sorted(set(present) | _known_keys())
    resolved: list[str] = []
    for item in patterns:
        for pattern in (p.strip() for p in item.split(",")):
            if not pattern:
                raise UserError(f"{flag} takes config keys such as penalty_coef or dynamics.max_epochs, got {item!r}")
            if pattern in STRUCTURAL_KEYS:
                if flag == "--ignore" and pattern != "seed":
                    raise UserError(
                        f"--ignore {pattern}: runs of different {pattern}s are never averaged together; "
                        f"choose runs with --{pattern} instead"
                    )
                if flag == "--group-by" and pattern == "seed":
                    raise UserError("--group-by seed: seed is what each group averages over, so it cannot split them")
                continue
            if not any(_key_matches(key, pattern) for key in known):
                raise UserError(f"{flag} {pattern}: no run config has this key{_close_keys(pattern, known)}")
            resolved.extend(key for key in present if _key_matches(key, pattern) and key not in STRUCTURAL_KEYS)
    return list(dict.fromkeys(resolved))


def _named_keys(patterns: Sequence[str]) -> list[str]:
    """The items of `--group-by`, commas split; those spelled out as keys (not blocks or patterns) are always shown."""
    return list(dict.fromkeys(p.strip() for item in patterns for p in item.split(",")))


def _differing(runs: Sequence[Run], keys: Iterable[str]) -> list[str]:
    """The keys whose value is not the same in all the runs (a key a run lacks counts as its own value)."""
    return [key for key in keys if len({run.settings.get(key, UNSET) for run in runs}) > 1]


def group_runs(
    runs: Iterable[Run], group_by: Sequence[str] | None = None, ignore: Sequence[str] = ()
) -> dict[Group, list[Run]]:
    """Runs by task, algo and the config values that tell them apart, groups and seeds sorted.

    Without `group_by`, the grouping keys of each (task, algo) are the keys whose values differ among its runs, less
    DEFAULT_IGNORED and `ignore`. With `group_by`, exactly its keys, named ones always shown in the label and those
    from blocks or patterns only where they differ. One seed twice in a group is refused (it would count twice).
    """
    runs = list(runs)
    user_ignored = resolve_keys(ignore, runs, "--ignore")
    chosen = None if group_by is None else resolve_keys(group_by, runs, "--group-by")
    named = _named_keys(group_by or ())
    skip = set(DEFAULT_IGNORED) | set(user_ignored) | set(STRUCTURAL_KEYS)
    by_pair: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_pair.setdefault(run.group, []).append(run)
    groups: dict[Group, list[Run]] = {}
    for (task, algo), members in by_pair.items():
        present = list(dict.fromkeys(key for run in members for key in run.settings))
        differing = _differing(members, present)
        if chosen is None:
            keys = sorted(key for key in differing if key not in skip)
        else:
            keys = [key for key in chosen if key in present and (key in named or key in differing)]
        for run in members:
            settings = tuple((key, run.settings.get(key, UNSET)) for key in keys)
            groups.setdefault(Group(task, algo, settings), []).append(run)
    ordered = {group: sorted(groups[group], key=lambda r: r.seed) for group in sorted(groups, key=lambda g: g.order)}
    # A fix for a repeated seed keeps the --group-by items as given (blocks, patterns), else the automatic keys.
    base = [p for p in _named_keys(group_by) if p] if group_by is not None else []
    base = base or sorted({key for group in ordered for key, _ in group.settings})
    _refuse_repeated_seeds(ordered, base, set(user_ignored))
    return ordered


def _refuse_repeated_seeds(groups: Mapping[Group, Sequence[Run]], base: Sequence[str], user_ignored: set[str]) -> None:
    """A UserError for a seed found twice in a group, naming the keys those runs differ in and a fix that works.

    Runs with identical configs are reported first (no grouping tells them apart); otherwise the suggested
    `--group-by` adds the differing keys of every repeated seed at once, so running it is not refused again.
    """
    repeats = []
    for group, members in groups.items():
        by_seed: dict[int, list[Run]] = {}
        for run in members:
            by_seed.setdefault(run.seed, []).append(run)
        repeats += [(group, seed, same) for seed, same in by_seed.items() if len(same) > 1]
    if not repeats:
        return

    def config_of(run: Run) -> tuple[tuple[str, Hashable], ...]:
        return tuple(sorted((k, v) for k, v in run.settings.items() if k not in STRUCTURAL_KEYS))

    def where(group: Group, seed: int, same: Sequence[Run]) -> str:
        paths = ", ".join(str(r.path) for r in same)
        return f"{group.task} / {group.label} has seed {seed} in {len(same)} runs ({paths})"

    for group, seed, same in repeats:
        configs: dict[tuple[tuple[str, Hashable], ...], list[Run]] = {}
        for run in same:
            configs.setdefault(config_of(run), []).append(run)
        twins = next((runs for runs in configs.values() if len(runs) > 1), None)
        if twins is not None:
            raise UserError(
                f"{where(group, seed, same)}; {' and '.join(str(r.path) for r in twins)} have identical configs "
                "(a rerun?): remove or move all but one of them, or pass only the run directories to compare"
            )
    keys_of = []  # per repeat: the keys they differ in, experiment settings before bookkeeping
    needed: list[str] = []  # the fewest of those (settings first) that tell every repeat's runs apart
    for _, _, same in repeats:
        differing = _differing(same, dict.fromkeys(k for r in same for k in r.settings if k not in STRUCTURAL_KEYS))
        keys_of.append(sorted(differing, key=lambda k: k in DEFAULT_IGNORED))
        settings = [k for k in differing if k not in DEFAULT_IGNORED]
        apart = len({tuple(r.settings.get(k, UNSET) for k in settings) for r in same}) == len(same)
        needed += settings if apart else differing
    suggest = list(dict.fromkeys([*base, *needed]))
    group, seed, same = repeats[0]

    def why(key: str) -> str:
        values = ", ".join(sorted({format_value(r.settings.get(key, UNSET)) for r in same}))
        reason = "; ignored by default" if key in DEFAULT_IGNORED else "; --ignore" if key in user_ignored else ""
        return f"{key} ({values}{reason})"

    raise UserError(
        f"{where(group, seed, same)} that differ in {', '.join(why(k) for k in keys_of[0])}, which the grouping leaves "
        f"out: pass --group-by {' '.join(suggest)} to show them apart, or remove the runs you do not want"
    )


def averaged_over(groups: Mapping[Group, Sequence[Run]]) -> list[str]:
    """Experiment settings (not DEFAULT_IGNORED) that differ inside a group: what `--group-by`/`--ignore` average."""
    skip = set(DEFAULT_IGNORED) | set(STRUCTURAL_KEYS)
    keys = {key for members in groups.values() for key in _differing(members, {k for r in members for k in r.settings})}
    return sorted(keys - skip)


def group_data(groups: Mapping[Group, Sequence[Run]], allow_mixed: bool = False) -> dict[Group, str]:
    """Each group's data: the one dataset hash its runs learned from (ONLINE, or UNKNOWN when none of its runs
    recorded it), or `a;b` when it averages runs made on different data. That is refused, naming the group, the
    hashes and their seeds, unless `allow_mixed`; runs without provenance are left out of the comparison (unknown
    data is noted by the caller, not refused)."""
    out = {}
    for group, members in groups.items():
        seeds: dict[str, list[int]] = {}
        for run in members:
            if run.data != UNKNOWN:
                seeds.setdefault(run.data, []).append(run.seed)
        if len(seeds) > 1 and not allow_mixed:
            which = " and ".join(
                f"sha256 {short_hash(digest)} in seed{'s' * (len(of) > 1)} {','.join(map(str, of))}"
                for digest, of in seeds.items()
            )
            raise UserError(
                f"{group.task} / {group.label} would average runs made on different data ({which}): pass the run "
                "directories of one dataset, or --allow-mixed-data to average them anyway"
            )
        out[group] = ";".join(seeds) if seeds else UNKNOWN
    return out


def data_notes(groups: Mapping[Group, str]) -> dict[tuple[str, str], str]:
    """`(task, label) -> "data 1a2b3c4d5e6f"` for the cells of tasks whose groups differ in data (what a table shows
    so that columns learned from different datasets are not read as comparable); none where they agree."""
    by_task: dict[str, set[str]] = {}
    for group, data in groups.items():
        by_task.setdefault(group.task, set()).add(data)
    return {
        (group.task, group.label): "data " + ", ".join(short_hash(part) for part in data.split(";"))
        for group, data in groups.items()
        if len(by_task[group.task]) > 1
    }


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


SCALARS_FILE = "scalars.csv"  # a published run's TensorBoard scalars (tag,step,value), in place of its event files


def read_scalars_csv(path: Path) -> dict[str, Series]:
    """The scalars of a published run's scalars.csv, by tag; a malformed file is a UserError naming it."""
    points: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            if next(reader, None) != ["tag", "step", "value"]:
                raise UserError(f"{path}: not a scalars file (its header must be tag,step,value); restore it")
            for row in reader:
                if not row:
                    continue
                steps, values = points.setdefault(row[0], ([], []))
                steps.append(float(row[1]))
                values.append(float(row[2]))
    except (OSError, UnicodeDecodeError, csv.Error, IndexError, ValueError) as err:
        raise UserError(f"{path}: corrupt scalars file ({type(err).__name__}); restore it") from None
    return {tag: _series(steps, values) for tag, (steps, values) in points.items()}


def read_tensorboard(run: Run) -> dict[str, Series]:
    """Every TensorBoard scalar tag of the run directory (its own event files, not eval/'s), all points loaded; a
    published run's scalars.csv instead when it has one (docs/results.md)."""
    if (run.path / SCALARS_FILE).is_file():
        return read_scalars_csv(run.path / SCALARS_FILE)
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


@dataclass(frozen=True)
class MetricRead:
    """One metric read from many runs: each run's series, and why the others have none, so the CLIs can say which
    runs they leave out and why (not evaluated yet, or evaluated but never logging this metric)."""

    metric: str
    series: dict[Run, Series]
    not_evaluated: list[Run]  # progress.csv has no row yet: nothing to read so far
    lacking: list[Run]  # evaluated, but this metric is not theirs (another algorithm's)

    @property
    def nan_only(self) -> list[Run]:
        """Runs that logged the metric as NaN only (the WMOPO study's normalized score, a task without reference
        returns): nothing to draw or average, though the column is there."""
        return [run for run, series in self.series.items() if np.isnan(series.values).all()]

    def notes(self) -> list[str]:
        """One line per reason a run is left out, naming the runs (empty when none is)."""
        lines = []
        if self.not_evaluated:
            lines.append(
                f"left out {len(self.not_evaluated)} runs with no evaluation yet: {describe(self.not_evaluated)}"
            )
        if self.lacking:
            algos = ", ".join(sorted({run.algo for run in self.series}))
            lines.append(
                f"left out {len(self.lacking)} runs that do not log {self.metric} (only {algos} runs here do): "
                f"{describe(self.lacking)}"
            )
        return lines


def metric_hint(metric: str, logged: Iterable[str]) -> str:
    """What to say about a metric no run logged, given what they do log, in a few words: close names (`did you mean
    loss/critic?`), else the names under the metric's own prefix, else the progress.csv columns and how many
    TensorBoard tags lie under which prefixes (never the whole list, which runs to a hundred names)."""
    names = sorted(set(logged))
    close = difflib.get_close_matches(metric, names, n=3, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(close)}?"
    prefix = metric.split("/", 1)[0] + "/" if "/" in metric else None
    siblings = [name for name in names if prefix and name.startswith(prefix)]
    if siblings:
        more = f" and {len(siblings) - 6} more" if len(siblings) > 6 else ""
        return f"under {prefix} they log {', '.join(siblings[:6])}{more}"
    columns = [name for name in names if "/" not in name]
    prefixes: dict[str, int] = {}
    for name in names:
        if "/" in name:
            head = name.split("/", 1)[0] + "/"
            prefixes[head] = prefixes.get(head, 0) + 1
    parts = [f"columns {', '.join(columns)}"] if columns else []
    if prefixes:
        counted = ", ".join(f"{head} ({count})" for head, count in prefixes.items())
        parts.append(f"{sum(prefixes.values())} TensorBoard tags under {counted}")
    return "they log " + " and ".join(parts) if parts else "they log nothing yet"


def read_metric(runs: Sequence[Run], metric: str) -> MetricRead:
    """Each run's series of `metric`, and the runs without a point of it, by reason.

    Every run's progress.csv is read (and must be well formed) whatever the metric; a metric no run has is a
    UserError saying so in one line, with close names or a summary of what the runs do log.
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
        raise UserError(f"no run logged the metric {metric!r}; {metric_hint(metric, columns | tags)}")
    missing = [run for run in runs if run not in series]
    not_evaluated = [run for run in missing if not len(progress[run]["step"])]
    lacking = [run for run in missing if len(progress[run]["step"])]
    return MetricRead(metric, series, not_evaluated, lacking)


def metric_series(runs: Sequence[Run], metric: str) -> tuple[dict[Run, Series], list[Run]]:
    """Each run's series of `metric`, and the runs that have no point of it (skipped); `read_metric` says why."""
    read = read_metric(runs, metric)
    return read.series, [run for run in runs if run not in read.series]


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


def group_curve(task: str, algo: str, series: Sequence[Series], window: int, settings: Settings = ()) -> Curve:
    """Mean and std over seeds: each seed smoothed over its own evaluations, then aligned on the common steps.

    Online runs log at the environment samples taken so far, which differ between seeds (episodes end at different
    steps); their seeds are aligned on the evaluation (iteration) index instead, at the seeds' mean sample count.
    """
    smoothed = [Series(s.steps, smooth(s.values, window)) for s in series]
    if _is_online(task):
        count = min(len(s) for s in smoothed)
        steps = np.mean([s.steps[:count] for s in smoothed], axis=0)
        values = np.stack([s.values[:count] for s in smoothed])
    else:
        steps, values = align(smoothed)
    if not len(steps):
        raise UserError(
            f"the {len(series)} seeds of {task} / {settings_label(algo, settings)} share no logged step; "
            "were they run with different eval_every?"
        )
    return Curve(task, algo, steps, values.mean(axis=0), values.std(axis=0), len(series), settings)


def _is_online(task: str) -> bool:
    from envs.tasks import get_task  # envs imports nothing from utils.runs; imported late to keep this module light

    try:
        return get_task(task).online
    except UserError:  # a task file no longer on this machine: its runs are offline ones
        return False


def learning_curves(
    series: Mapping[Run, Series], window: int, groups: Mapping[Group, Sequence[Run]] | None = None
) -> list[Curve]:
    """One curve per group of the runs that have the metric (`groups` from group_runs; default: its automatic ones)."""
    groups = group_runs(series) if groups is None else groups
    return [
        group_curve(group.task, group.algo, [series[run] for run in members], window, group.settings)
        for group, members in groups.items()
    ]


def last_k_mean(run: Run, series: Series, last: int) -> float:
    """The mean of a run's last `last` values (its final score); fewer values than that is a UserError."""
    if last < 1:
        raise UserError(f"--last must be >= 1, got {last}")
    if len(series) < last:
        raise UserError(f"{run.path} has {len(series)} evaluations, fewer than --last {last}")
    return float(series.values[-last:].mean())


def final_scores(
    series: Mapping[Run, Series], last: int, groups: Mapping[Group, Sequence[Run]] | None = None
) -> list[Score]:
    """One Score per group (default: group_runs' automatic ones): the mean of each seed's last `last` evaluations."""
    groups = group_runs(series) if groups is None else groups
    return [
        Score(
            group.task,
            group.algo,
            tuple(r.seed for r in members),
            tuple(last_k_mean(r, series[r], last) for r in members),
            group.settings,
        )
        for group, members in groups.items()
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
    """`72.3 ± 4.1 (3)`: mean ± std over seeds and the seed count; `–` for a missing cell; `n/a (2)` where every
    seed's value is NaN (a metric logged as NaN, e.g. no normalized score) and `NaN in 1 of 3 seeds` where some
    are (a seed that diverged), never a bare `nan ± nan`."""
    if score is None:
        return "–"
    nans = int(np.isnan(score.values).sum())
    if nans == score.num_seeds:
        return f"n/a ({score.num_seeds})"
    if nans:
        return f"NaN in {nans} of {score.num_seeds} seeds"
    return f"{score.mean:.{digits}f} ± {score.std:.{digits}f} ({score.num_seeds})"


def markdown_table(
    scores: Sequence[Score], caption: str, digits: int = 1, notes: Mapping[tuple[str, str], str] | None = None
) -> str:
    """Tasks as rows, one column per group label (`mopo`, `mopo penalty_coef=0.5`), a caption line above; `notes`
    adds `[note]` to the cells of (task, label) it names (data_notes)."""
    notes = notes or {}
    tasks = sorted({s.task for s in scores})
    order = {s.label: settings_order(s.algo, s.settings) for s in scores}
    labels = sorted(order, key=lambda label: order[label])
    cells = {(s.task, s.label): s for s in scores}
    header = " | ".join(label.replace("|", "\\|") for label in labels)
    lines = [caption, "", f"| task | {header} |", "|---|" + "---:|" * len(labels)]
    for task in tasks:
        row = [format_cell(cells.get((task, a)), digits) for a in labels]
        row = [f"{cell} [{notes[task, a]}]" if (task, a) in notes else cell for cell, a in zip(row, labels)]
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


SCORE_CSV_COLUMNS = ("task", "algo", "metric", "last_k", "mean", "std", "n_seeds", "seeds", "values", "data")


def scores_csv(
    scores: Sequence[Score], metric: str, last: int, data: Mapping[tuple[str, str], str] | None = None
) -> str:
    """One row per group; after `algo`, one column per grouping key (empty where a group lacks it); `seeds` and
    `values` list the per-seed numbers, `;`-separated, in the same order; `data` the group's dataset sha256 (`;`
    between several, `online`, or `unknown` for runs without provenance), from `data` keyed by (task, label)."""
    data = data or {}
    keys = list(dict.fromkeys(key for s in scores for key, _ in s.settings))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    names = [f"config.{key}" if key in SCORE_CSV_COLUMNS else key for key in keys]
    writer.writerow([*SCORE_CSV_COLUMNS[:2], *names, *SCORE_CSV_COLUMNS[2:]])
    for s in scores:
        values = dict(s.settings)
        writer.writerow(
            [
                s.task,
                s.algo,
                *(format_value(values[key]) if key in values else "" for key in keys),
                metric,
                last,
                f"{s.mean:.6g}",
                f"{s.std:.6g}",
                s.num_seeds,
                ";".join(map(str, s.seeds)),
                ";".join(f"{v:.6g}" for v in s.values),
                data.get((s.task, s.label), UNKNOWN),
            ]
        )
    return text.getvalue()


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags plot.py and score.py share: which runs to read and which config keys split them into groups."""
    parser.add_argument("--task", action="append", default=[], help="only these tasks (name or shell pattern)")
    parser.add_argument("--algo", action="append", default=[], help="only these algorithms (name or shell pattern)")
    parser.add_argument(
        "--group-by",
        nargs="+",
        action="extend",
        metavar="KEY",
        help="group by exactly these config keys (and task, algo) instead of every key that differs "
        "(name the runs before --group-by and --ignore, which take every word after them)",
    )
    parser.add_argument(
        "--ignore", nargs="+", action="extend", default=[], metavar="KEY", help="config keys that never split groups"
    )
