"""Publish finished runs into the results registry, `results/<task>/<label>/<run name>/` (docs/results.md).

A published run is the small part of a run directory that tables and figures need: config.yaml, progress.csv (every
evaluation) and provenance.json, plus, when asked for, scalars.csv with chosen TensorBoard scalars (tag,step,value)
in place of the event files. plot.py and score.py read the registry like any folder of runs.

Only finished runs with provenance are published; anything else is refused in one line before anything is copied:
a run whose checkpoint has not reached its planned epochs (the test sweep.py uses to skip finished runs), whose
progress.csv stops before its last step, with no provenance.json, with no dataset hash (offline tasks) or with a
segment trained outside a git checkout (no commit).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from envs.task_config import load_run_config
from utils.errors import UserError
from utils.launch import REPO, can_resume, run_status, saved_its_model_only
from utils.provenance import PROVENANCE_FILE, read_provenance
from utils.runs import SCALARS_FILE, Run, find_runs, metric_hint, read_progress, read_tensorboard

RESULTS_DIR = REPO / "results"
PUBLISHED_FILES = ("config.yaml", "progress.csv", PROVENANCE_FILE)
MAX_SCALARS_BYTES = 2_000_000  # a published run stays small: a few chosen curves, not every logged scalar
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]*")


def _is_online(task: str) -> bool:
    from envs.tasks import get_task  # envs is the world's layer; imported late, as utils.runs does

    try:
        return get_task(task).online
    except UserError:  # a task file not on this machine: its runs are offline ones
        return False


def check_finished(run: Run) -> None:
    """Refuse a run that has not done all it was configured to do, by sweep.py's test (its checkpoint's epoch
    against the planned epochs) and by its progress.csv (an evaluation at its last step)."""
    cfg = load_run_config(run.path / "config.yaml")
    if saved_its_model_only(cfg, run.path):
        raise UserError(f"{run.path} is a dynamics_only run: it saved a model and has no evaluation to publish")
    done, planned = run_status(run.path)
    if done < planned:
        if can_resume(run.path):
            fix = f"finish it with python train.py --resume {run.path}, then publish it"
        else:
            fix = "it stopped before its first checkpoint, so there is nothing to publish"
        raise UserError(f"{run.path} is unfinished (checkpointed {done} of {planned} epochs); {fix}")
    steps = read_progress(run)["step"]
    if not len(steps):
        raise UserError(f"{run.path} has no evaluation in progress.csv; it has nothing to publish")
    if run.final_step is not None and steps[-1] < run.final_step:
        raise UserError(
            f"{run.path}: progress.csv stops at step {int(steps[-1])} of {run.final_step} (evaluations lost after "
            f"its last checkpoint); resume it with python train.py --resume {run.path}, then publish it"
        )


def check_provenance(run: Run) -> list[str]:
    """Refuse a run whose provenance cannot say what it learned from and which code made it; returns notes (a run
    trained from a tree with uncommitted changes is published, and said so)."""
    provenance = read_provenance(run.path)
    if provenance is None:
        raise UserError(
            f"{run.path} has no {PROVENANCE_FILE} (trained before runs recorded their data and code), so what made "
            "it is unknown; train it again with this version to publish it"
        )
    if not _is_online(run.task) and not (provenance.get("dataset") or {}).get("sha256"):
        raise UserError(f"{run.path}: its {PROVENANCE_FILE} records no dataset hash; train it again to publish it")
    segments = [provenance, *provenance.get("resumes", [])]
    if any(not (segment.get("git") or {}).get("commit") for segment in segments):
        raise UserError(
            f"{run.path}: its {PROVENANCE_FILE} records no git commit for (part of) its training, which ran outside "
            "a git checkout; train it again from a checkout to publish it"
        )
    if any((segment.get("git") or {}).get("dirty") for segment in segments):
        return [f"{run.path} was trained with uncommitted changes to tracked files (its provenance says so)"]
    return []


def scalars_csv(run: Run, patterns: Sequence[str]) -> str:
    """The TensorBoard scalars whose tags match `patterns` (names or shell patterns), as tag,step,value rows; a
    pattern matching no tag is refused with the run's close tags."""
    scalars = read_tensorboard(run)
    chosen: list[str] = []
    for pattern in patterns:
        matches = sorted(tag for tag in scalars if fnmatch.fnmatchcase(tag, pattern))
        if not matches:
            raise UserError(f"--scalars {pattern}: {run.path} logged no such tag; {metric_hint(pattern, scalars)}")
        chosen += [tag for tag in matches if tag not in chosen]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["tag", "step", "value"])
    for tag in chosen:
        series = scalars[tag]
        writer.writerows([tag, int(step), repr(float(value))] for step, value in zip(series.steps, series.values))
    return text.getvalue()


def _same_files(source: dict[str, bytes], target: Path) -> bool:
    present = {path.name for path in target.iterdir()}
    return present == set(source) and all((target / name).read_bytes() == data for name, data in source.items())


def publish(
    sources: Sequence[str],
    results: str | Path = RESULTS_DIR,
    label: str | None = None,
    scalars: Sequence[str] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Copy each finished run's published files to `results/<task>/<label or algo>/<run name>/`; every run is
    checked (and every file read) before anything is written, so a refusal leaves the registry as it was."""
    if label is not None and not _LABEL.fullmatch(label):
        raise UserError(
            f"--label {label!r} must be one folder name of letters, digits and _ . , = + - (e.g. baseline-tuned)"
        )
    runs = find_runs(sources)
    results = Path(results)
    planned: dict[Path, tuple[Run, dict[str, bytes]]] = {}
    notes: list[str] = []
    for run in runs:
        check_finished(run)
        notes += check_provenance(run)
        target = results / run.task / (label or run.algo) / run.path.name
        if target in planned:
            raise UserError(
                f"{planned[target][0].path} and {run.path} would both be published as {target}; publish them "
                "with different --label values"
            )
        files = {name: (run.path / name).read_bytes() for name in PUBLISHED_FILES}
        if scalars:
            text = scalars_csv(run, scalars).encode()
            if len(text) > MAX_SCALARS_BYTES:
                raise UserError(
                    f"--scalars {' '.join(scalars)} makes a {len(text) / 1e6:.1f} MB {SCALARS_FILE} for {run.path} "
                    f"(the registry keeps runs under {MAX_SCALARS_BYTES / 1e6:.0f} MB); choose fewer tags"
                )
            files[SCALARS_FILE] = text
        if target.exists() and not overwrite and not _same_files(files, target):
            raise UserError(
                f"{target} already holds a different published run; pass --overwrite to replace it, or a --label"
            )
        planned[target] = (run, files)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    written = []
    for target, (run, files) in planned.items():
        if target.exists() and _same_files(files, target):
            print(f"{run.path}: already published as {target}")
            continue
        _write_run(target, files)
        size = sum(len(data) for data in files.values())
        print(f"published {run.path} -> {target} ({size / 1024:.0f} kB)")
        written.append(target)
    return written


def _write_run(target: Path, files: dict[str, bytes]) -> None:
    """Write the files into a hidden folder beside `target`, then rename it into place (an older publication is moved
    aside first and removed last), so the registry never holds a half-written run."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.publishing.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, data in files.items():
        (staging / name).write_bytes(data)
    old = target.parent / f".{target.name}.replaced.{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
