"""User-facing errors: anything the user can fix (bad task, bad config, missing data) raises UserError.

The CLIs catch it, print its one-line message to stderr and exit with code 2, so users never see a
traceback from deep inside for a mistake that is theirs to fix.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error caused by input the user controls; the message names the problem and the fix."""


def run_cli(main: Callable[[], T]) -> T:
    """Run a CLI entry point, turning UserError into one stderr line and exit code 2."""
    try:
        return main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
