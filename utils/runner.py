"""The one place a training loop's checkpoint is written and read back: the loop's own state plus the RNG states,
written atomically; on resume the loop gets its state back first and the RNG states are restored last. And the one
place Ctrl-C becomes a line saying how to continue (`Runner.run`).

Every resumable loop goes through here (the offline trainer, the NPG trainer, the Pendulum study, the behaviour SAC,
the resumable dynamics fit), so a resumed run continues on the same random streams whichever loop it is, and no
loop can forget the RNG states or write a half file. A loop that is a class subclasses `Runner` and says only what
its state is; the dynamics fit, a function, calls `write_checkpoint` and `restore_checkpoint` itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from utils.checkpoint import atomic_torch_save, capture_rng_state, restore_rng_state
from utils.errors import Interrupted
from utils.logger import RunLogger

T = TypeVar("T")

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


def run_interruptibly(train: Callable[[], T], resume_hint: str | Callable[[], str]) -> T:
    """`train()`, with Ctrl-C turned into one line (`Interrupted`, exit 130) that says how to continue from the last
    checkpoint, which the interrupted loop left whole (its writes are atomic). `resume_hint` may be a function: what
    continues a run can depend on what it has written by the time it is stopped."""
    try:
        return train()
    except KeyboardInterrupt:
        hint = resume_hint() if callable(resume_hint) else resume_hint
        raise Interrupted(f"interrupted; {hint}") from None


class Runner(ABC):
    """A resumable training loop. It says what its state is (`checkpoint_state`), how to take it back
    (`load_checkpoint_state`) and how a stopped run continues (`resume_hint`); writing the file, restoring from it
    and turning Ctrl-C into that hint are done here, the same for every loop."""

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

    @abstractmethod
    def train(self) -> Any:
        """Run the loop to its end, from wherever its state is (fresh, or restored from a checkpoint)."""

    @abstractmethod
    def resume_hint(self) -> str:
        """What continues this run once it is stopped, as the interrupted line says it (`continue with: ...`)."""

    def run(self, resume_hint: str | Callable[[], str] | None = None) -> Any:
        """`train`, stopped by Ctrl-C with one line naming how to continue (`resume_hint`, default this loop's)."""
        return run_interruptibly(self.train, resume_hint or self.resume_hint)

    def save_checkpoint(self) -> None:
        """Write the checkpoint: the logger's events flushed first, then state and RNG states in one atomic file."""
        if self.logger is not None:
            self.logger.flush()
        write_checkpoint(self.checkpoint_path, self.checkpoint_format, self.checkpoint_state())

    def restore_checkpoint(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint this loop wrote (already read from disk): its state, then the RNG states."""
        restore_checkpoint(state, self.load_checkpoint_state)
