"""Where a run or a dataset came from: the data it learned from, the code, the software and the machine.

Every run directory holds `provenance.json` (docs/results.md, "Provenance"), written when the run starts and updated
as it trains: the dataset's name, path and content hash (none for online tasks), the package versions, CPU model and
thread count, the git commit and whether tracked files had uncommitted changes, the exact command line and the host.
A resumed run appends the same facts for each later segment under `resumes`, so a run continued on another machine
or commit says so. score.py reads the data hash to refuse averaging runs made on different data, and
`score.py publish` refuses runs without provenance.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.checkpoint import atomic_write
from utils.errors import UserError

PROVENANCE_FILE = "provenance.json"
PROVENANCE_FORMAT = 1
REPO = Path(__file__).resolve().parents[1]
# The packages whose versions decide what a run computes and what a generated dataset holds.
PACKAGES = ("mujoco", "gymnasium", "torch", "numpy", "h5py")
# What score.py and publish read as a run's data: a sha256 hex digest, or one of these.
ONLINE = "online"  # an online task: no dataset
UNKNOWN = "unknown"  # a run without provenance.json (made before runs recorded it)


def software_versions() -> dict[str, str | None]:
    """Versions of Python and of PACKAGES (None for one that is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), since float results can differ between CPU models."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (`dirty`); both None outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def machine() -> dict[str, Any]:
    """The facts of this machine and software that a dataset's or run's numbers can depend on."""
    return {"host": socket.gethostname(), "cpu": cpu_model(), "versions": software_versions()}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def segment(argv: Sequence[str], threads: int, script: str = "train.py") -> dict[str, Any]:
    """One process's part of a run: when it started, its command, machine, threads and code."""
    return {
        "started": now(),
        "command": shlex.join(["python", script, *argv]),
        "argv": list(argv),
        "cwd": os.getcwd(),
        "executable": sys.executable,
        **machine(),
        "threads": threads,
        "git": git_state(),
    }


def read_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's provenance.json, None when it has none; an unreadable file is a UserError naming it."""
    path = Path(run_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable provenance ({type(err).__name__}); restore it or remove the run") from None
    if not isinstance(data, dict) or data.get("format") != PROVENANCE_FORMAT:
        raise UserError(f"{path}: not a provenance file of this project; restore it or remove the run")
    return data


def _write(run_dir: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(Path(run_dir) / PROVENANCE_FILE, lambda handle: handle.write(text.encode()))


def start_run(
    run_dir: str | Path,
    identity: dict[str, Any],
    dataset: dict[str, Any] | None,
    argv: Sequence[str],
    threads: int,
    resumed: bool,
) -> bool:
    """Record a run's start in its provenance.json, or a resumed segment after the earlier ones; returns whether the
    file was written. A run resumed on data other than it started on is refused (the two parts would mix data); a run
    that started before runs recorded provenance is left without it, since its start cannot be told now."""
    run_dir = Path(run_dir)
    part = segment(argv, threads)
    if not resumed:
        _write(run_dir, {"format": PROVENANCE_FORMAT, **identity, "dataset": dataset, **part, "resumes": []})
        return True
    data = read_provenance(run_dir)
    if data is None:
        return False
    before = (data.get("dataset") or {}).get("sha256")
    after = (dataset or {}).get("sha256")
    if before != after:
        where = (dataset or {}).get("path", "its dataset")
        raise UserError(
            f"{run_dir} was trained on data with sha256 {short_hash(before)} but {where} now holds "
            f"{short_hash(after)}; put back the dataset it started on to resume it, or start a new run"
        )
    data.setdefault("resumes", []).append(part)
    _write(run_dir, data)
    return True


def record_wall_time(run_dir: str | Path, wall_time: float) -> None:
    """Update a run's training seconds (as progress.csv counts them) and the time of the update, when the run has a
    provenance.json (runs that started before provenance was recorded have none, and get none)."""
    data = read_provenance(run_dir)
    if data is None:
        return
    data["wall_time"] = round(float(wall_time), 2)
    data["updated"] = now()
    _write(Path(run_dir), data)


def run_data(run_dir: str | Path) -> str:
    """What a run learned from: its dataset's sha256, ONLINE, or UNKNOWN for a run without provenance."""
    data = read_provenance(run_dir)
    if data is None:
        return UNKNOWN
    dataset = data.get("dataset")
    if dataset is None:
        return ONLINE
    return str(dataset.get("sha256") or UNKNOWN)


def short_hash(digest: str | None) -> str:
    """The first 12 hex digits, enough to tell datasets apart in a table; `none` for no hash."""
    if digest is None:
        return "none"
    return digest if digest in (ONLINE, UNKNOWN) else digest[:12]
