"""Keep freed CPU memory in the process instead of returning it to the kernel after every tensor.

glibc's malloc serves large blocks (above 128 KiB, rising to 32 MiB) with fresh `mmap`s and hands them back on free,
and trims the top of the heap once 128 KiB are free. A training step allocates the same multi-megabyte activations
every time (MICRO's uncertainty set is 12,200 states x 256 units per layer), so each step pays to page in and zero
the memory again: on a 2-core machine that was a third of MICRO's update time (docs/seeds.md, "Allocator").
Serving every block from the heap and never trimming it makes later steps reuse earlier steps' pages (after a few
steps, once the heap's free blocks have settled), as PyTorch's CPU guidance obtains with jemalloc or tcmalloc; the
numbers computed are unchanged.

The cost is that a run keeps its largest heap resident until it exits (a few times one step's transient memory).
It applies to glibc on Linux only, and not when the user has chosen an allocator or glibc settings of their own
(LD_PRELOAD naming a malloc, MALLOC_* or GLIBC_TUNABLES environment variables).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt accepts (an int)

_applied: bool | None = None


def user_chose_allocator(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the environment already selects an allocator or tunes glibc's."""
    preload = environ.get("LD_PRELOAD", "")
    tuned = any(key.startswith("MALLOC_") for key in environ) or "GLIBC_TUNABLES" in environ
    return "malloc" in preload or tuned


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap (no per-block mmap) and never trim it; True when glibc took both settings.

    Idempotent; a no-op returning False off Linux, off glibc, or when `user_chose_allocator()`.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or user_chose_allocator():
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
    return _applied
