"""Paths a training run reads and writes: inputs named per seed (`dynamics_path`, WMOPO's `branch_from`) and the
run directory it claims.

Kept apart from utils/runs.py, which browses finished runs for plot.py and score.py, so that training code (train.py,
algos/) resolves its inputs without importing the results tools.
"""

from __future__ import annotations

import glob
from pathlib import Path

from utils.errors import UserError

# A run directory's files that say where the run is (utils/launch.py reads them to tell finished from resumable).
CHECKPOINT = Path("checkpoints") / "checkpoint.pt"  # a run's last checkpoint, relative to its run directory
FIT_PROGRESS = "dynamics_fit.pt"  # an interrupted dynamics fit's state, in the run directory


def resolve_seed_path(pattern: str, seed: int, key: str, kind: str) -> Path:
    """A path setting with `{seed}` replaced by the run's seed and wildcards expanded to exactly one match, so each
    seed of a group can name its own earlier run: `dynamics_path=log/T/mopo/seed{seed}-*/dynamics.pt`. `key` and
    `kind` name the setting and what it should match in the one-line refusal."""
    path = pattern.replace("{seed}", str(seed))
    if not any(char in path for char in "*?["):
        return Path(path)
    matches = sorted(glob.glob(path))
    if len(matches) != 1:
        found = (
            "nothing"
            if not matches
            else f"{len(matches)} paths ({', '.join(matches[:3])}{', ...' * (len(matches) > 3)})"
        )
        raise UserError(f"{key} {pattern} matches {found} for seed {seed}; make it match exactly one {kind}")
    return Path(matches[0])


def create_run_dir(wanted: Path) -> Path:
    """Create a new, empty run directory at `wanted`, or at `wanted-1`, `wanted-2`, ... when that name is taken.
    Each name is claimed with an exclusive mkdir (it fails if the directory exists), so two runs started at the same
    second with the same seed, even by separate processes, never share a directory."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = wanted, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = wanted.with_name(f"{wanted.name}-{suffix}")
