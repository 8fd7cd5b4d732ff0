"""The run logger: TensorBoard scalars, progress.csv (one row per evaluation) and a one-line summary per evaluation.

On resume it drops what was logged after the checkpoint it resumes from, so curves and the CSV have no duplicates.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path

from tqdm.auto import tqdm

from utils.checkpoint import atomic_write

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
    def __init__(self, run_dir: str | Path, resume_step: int | None = None, quiet: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import; only runs that log pay for it

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress_path = self.run_dir / "progress.csv"
        self.quiet = quiet
        if resume_step is not None:
            self._truncate_progress(resume_step)
        # purge_step hides events written after the checkpoint by the interrupted process.
        self.writer = SummaryWriter(str(self.run_dir), purge_step=resume_step)
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

    def evaluation(self, epoch: int, step: int, result: Mapping[str, float], wall_time: float) -> None:
        """Record one evaluation: TensorBoard (OfflineRL-Kit's eval/* names), a CSV row and a summary line."""
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
        if not self.quiet:
            tqdm.write(
                f"epoch {epoch:>5}  step {step:>8}  return {result['return_mean']:9.1f} ± {result['return_std']:7.1f}"
                f"  normalized {result['normalized_mean']:6.1f} ± {result['normalized_std']:5.1f}"
                f"  length {result['length_mean']:6.1f}  [{format_duration(wall_time)}]"
            )

    def close(self) -> None:
        self.writer.close()


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
