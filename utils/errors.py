"""User-facing errors: anything the user can fix (bad task, bad config, missing data) raises UserError.

The CLIs catch it, print its one-line message to stderr and exit with code 2, so users never see a
traceback from deep inside for a mistake that is theirs to fix. Ctrl-C (SIGINT) is not a mistake: it exits
with 130, the shell's code for a process ended by SIGINT, so scripts can tell "stopped" from "refused".
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a process stopped by Ctrl-C


class UserError(Exception):
    """An error caused by input the user controls; the message names the problem and the fix."""


class Interrupted(Exception):
    """The user stopped a command with Ctrl-C; the message says what was kept and how to continue."""


def run_cli(main: Callable[[], T]) -> T:
    """Run a CLI entry point: a UserError becomes one stderr line and exit code 2; Ctrl-C (Interrupted, or a
    KeyboardInterrupt the command did not turn into one) becomes one line and exit code 130."""
    try:
        return main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except Interrupted as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
