"""Atomic checkpoint files and RNG state capture, so a killed run never leaves a half-written file and a
resumed run continues bit-for-bit where the last checkpoint left off."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def fsync_dir(directory: Path) -> None:
    """Persist a rename: the directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Any) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_project_file(
    path: str | Path, file_format: str, missing: str, unreadable: str, foreign: str, map_location: Any = "cpu"
) -> dict[str, Any]:
    """torch.load a file this project wrote (a dict tagged with `file_format`), turning a missing, unreadable or
    foreign file into the caller's one-line UserError. `unreadable` gets the error appended in parentheses."""
    from utils.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(missing)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise UserError(f"{unreadable} ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise UserError(foreign)
    return payload
