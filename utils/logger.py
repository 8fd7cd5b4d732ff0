"""The run logger: TensorBoard scalars, progress.csv (one row per evaluation) and a one-line summary per evaluation.

On resume it keeps exactly what was logged up to the checkpoint it resumes from and drops the rest, so curves and
the CSV have every point once: the checkpoint records how many scalars had been logged (`num_events`, after a
flush), and the run's event files are rewritten into one file holding those first scalars in their logged order.
Counting, rather than purging by step, matters because a step is logged both before and after a checkpoint (the
evaluation at step T precedes the checkpoint at T; the rollout at T follows it), which TensorBoard's step-based
`purge_step` cannot tell apart.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from tqdm.auto import tqdm

from utils.checkpoint import atomic_write
from utils.provenance import record_wall_time

EVENT_FILE_MARK = "tfevents"  # TensorBoard reads every file whose name contains this

PROGRESS_COLUMNS = (
    "epoch",
    "step",
    "return_mean",
    "return_std",
    "normalized_score_mean",
    "normalized_score_std",
    "length_mean",
    "wall_time",
)


class RunLogger:
    """`resume_step` / `resume_events`: the checkpoint's global step and its `num_events` when continuing a run
    (None for a fresh run; `resume_events` None for checkpoints written before events were counted, which then
    keep the scalars logged at steps <= resume_step)."""

    def __init__(
        self,
        run_dir: str | Path,
        resume_step: int | None = None,
        quiet: bool = False,
        resume_events: int | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import; only runs that log pay for it

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress_path = self.run_dir / "progress.csv"
        self.quiet = quiet
        self.num_events = 0  # scalars logged by this run so far, over all resumed segments
        if resume_step is not None:
            self._truncate_progress(resume_step)
            self.num_events = truncate_events(self.run_dir, resume_events, resume_step)
        self.writer = SummaryWriter(str(self.run_dir))
        self.wall_time: float | None = None  # training seconds at the last evaluation (provenance.json gets them)
        if not self.progress_path.exists():
            atomic_write(self.progress_path, lambda f: f.write((",".join(PROGRESS_COLUMNS) + "\n").encode()))

    def _truncate_progress(self, resume_step: int) -> None:
        if not self.progress_path.exists():
            return
        with open(self.progress_path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, PROGRESS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.progress_path, lambda f: f.write(text.getvalue().encode()))

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.num_events += len(metrics)

    def flush(self) -> None:
        """Put every logged scalar on disk; a checkpoint's `num_events` must count only events that are there."""
        self.writer.flush()

    def evaluation(
        self, epoch: int, step: int, result: Mapping[str, float], wall_time: float, unit: str = "epoch"
    ) -> None:
        """Record one evaluation: TensorBoard (OfflineRL-Kit's eval/* names), a CSV row and a summary line whose
        counter is named `unit` (the NPG family's loop counts iterations; the CSV column stays `epoch`)."""
        self.scalars(
            {
                "eval/normalized_episode_reward": result["normalized_mean"],
                "eval/normalized_episode_reward_std": result["normalized_std"],
                "eval/episode_reward": result["return_mean"],
                "eval/episode_length": result["length_mean"],
                "eval/episode_length_std": result["length_std"],
            },
            step,
        )
        row = {
            "epoch": epoch,
            "step": step,
            "return_mean": result["return_mean"],
            "return_std": result["return_std"],
            "normalized_score_mean": result["normalized_mean"],
            "normalized_score_std": result["normalized_std"],
            "length_mean": result["length_mean"],
            "wall_time": round(wall_time, 2),
        }
        with open(self.progress_path, "a", newline="") as handle:
            csv.DictWriter(handle, PROGRESS_COLUMNS, lineterminator="\n").writerow(row)
        self.writer.flush()
        self.wall_time = wall_time
        record_wall_time(self.run_dir, wall_time)
        if not self.quiet:
            normalized = (  # tasks without reference returns (task files) have no normalized score
                ""
                if math.isnan(result["normalized_mean"])
                else f"  normalized {result['normalized_mean']:6.1f} ± {result['normalized_std']:5.1f}"
            )
            tqdm.write(
                f"{unit} {epoch:>5}  step {step:>8}  return {result['return_mean']:9.1f} ± {result['return_std']:7.1f}"
                f"{normalized}  length {result['length_mean']:6.1f}  [{format_duration(wall_time)}]"
            )

    def close(self) -> None:
        self.writer.close()
        if self.wall_time is not None:  # the run's end (or interruption): provenance.json says when
            record_wall_time(self.run_dir, self.wall_time)


def copy_logs(source: Path, target: Path) -> None:
    """Another run's progress.csv and TensorBoard event files, copied into `target` (a run that branches off
    another starts from its logs; its logger, resumed at the branch point, then keeps exactly what was logged up to
    there)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and (EVENT_FILE_MARK in path.name or path.name == "progress.csv"):
            shutil.copyfile(path, target / path.name)


def _event_files(run_dir: Path) -> list[Path]:
    """The run's event files in the order they were written (by the wall time of their first record)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    def started(path: Path) -> tuple[float, str]:
        first = next(iter(EventFileLoader(str(path)).Load()), None)
        return (first.wall_time if first is not None else math.inf), path.name

    return sorted((p for p in run_dir.iterdir() if EVENT_FILE_MARK in p.name and p.is_file()), key=started)


def truncate_events(run_dir: Path, keep: int | None, max_step: int) -> int:
    """Rewrite the run's TensorBoard event files as one file holding the first `keep` scalar events in logged order
    (or, with `keep` None, every scalar event at a step <= `max_step`); returns how many it kept.

    The new file is written under a name TensorBoard ignores, synced, and renamed into place before the old files
    are removed, so an interruption never loses the events being kept.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    files = _event_files(run_dir)
    if not files:
        return 0
    # Raw records, copied byte for byte: EventFileLoader would hand back events migrated to tensor summaries, which
    # EventAccumulator.Scalars (plot.py, score.py) no longer sees as scalars.
    kept: list[bytes] = []
    header, first_time = None, None
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            first_time = event.wall_time if first_time is None else first_time
            if event.HasField("file_version"):
                header = header or record
                continue
            if not event.HasField("summary"):
                continue
            if keep is None and event.step > max_step:
                continue
            if keep is not None and len(kept) >= keep:
                break
            kept.append(record)
    records = ([header] if header is not None else []) + kept
    target = run_dir / f"events.out.{EVENT_FILE_MARK}.{int(first_time or 0):010d}.resumed.{os.getpid()}"
    staging = run_dir / ".events-being-rewritten"
    with open(staging, "wb") as handle:
        writer = RecordWriter(handle)
        for event in records:
            writer.write(event)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, target)
    for path in files:
        if path != target:
            path.unlink()
    return len(kept)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
