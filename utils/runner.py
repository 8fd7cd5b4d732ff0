"""The one place a training loop's checkpoint is written and read back: the loop's own state plus the RNG states,
written atomically; on resume the loop gets its state back first and the RNG states are restored last.

Every resumable loop goes through here (the offline trainer, the NPG trainer, the Pendulum study, the behaviour SAC,
the resumable dynamics fit), so a resumed run continues on the same random streams whichever loop it is, and no
loop can forget the RNG states or write a half file. A loop that is a class subclasses `Runner` and says only what
its state is; the dynamics fit, a function, calls `write_checkpoint` and `restore_checkpoint` itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from utils.checkpoint import atomic_torch_save, capture_rng_state, restore_rng_state
from utils.logger import RunLogger

RNG_KEY = "rng"  # where every checkpoint keeps the RNG states, as checkpoints have always named it


def write_checkpoint(path: str | Path, file_format: str, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, tagged with `file_format` (first) and with the RNG states as they are now
    (last): captured after `state` is built, so building it may draw random numbers without the resume missing them."""
    atomic_torch_save({"format": file_format, **state, RNG_KEY: capture_rng_state()}, path)


def restore_checkpoint(state: dict[str, Any], load: Callable[[dict[str, Any]], None]) -> None:
    """Hand a loop its checkpoint `state` (`load`), then restore the RNG states saved with it: last, so whatever the
    loop does while loading cannot move the streams the resumed run continues on."""
    load(state)
    restore_rng_state(state[RNG_KEY])


class Runner(ABC):
    """A resumable training loop. It says what its state is (`checkpoint_state`) and how to take it back
    (`load_checkpoint_state`); writing the file and restoring from it are done here, the same for every loop."""

    checkpoint_format: ClassVar[str]
    checkpoint_path: Path
    logger: RunLogger | None = None  # flushed before each checkpoint: its events must be on disk when the file says so

    @abstractmethod
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resumed run needs except the format tag and the RNG states, under the keys this loop's
        checkpoint files have always used (old files must keep loading)."""

    @abstractmethod
    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Take back what `checkpoint_state` returned; the RNG states are restored after this returns."""

    def save_checkpoint(self) -> None:
        """Write the checkpoint: the logger's events flushed first, then state and RNG states in one atomic file."""
        if self.logger is not None:
            self.logger.flush()
        write_checkpoint(self.checkpoint_path, self.checkpoint_format, self.checkpoint_state())

    def restore_checkpoint(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint this loop wrote (already read from disk): its state, then the RNG states."""
        restore_checkpoint(state, self.load_checkpoint_state)
