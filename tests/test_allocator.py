"""utils/allocator.py: freed tensor memory is reused without page faults, and user choices are respected."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from utils.allocator import user_chose_allocator

REPO = Path(__file__).resolve().parents[1]

# Page faults taken while writing a 64 MiB tensor after identical ones were allocated, written and freed, as a
# training step does with its activations (glibc reaches a steady layout after a few rounds of 64-byte-aligned
# blocks).
FAULTS_SNIPPET = """
import resource, sys, torch
sys.path.insert(0, {repo!r})
from utils.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
for _ in range(8):
    torch.ones(16 * 2**20).add_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(16 * 2**20).add_(1)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[str, int]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.pop("LD_PRELOAD", None)
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_SNIPPET.format(repo=str(REPO)), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
def test_freed_memory_is_reused_without_page_faults() -> None:
    applied, faults_on = page_faults("on")
    _, faults_off = page_faults("off")
    assert applied == "True"
    pages = 64 * 2**20 // 4096
    assert faults_off > pages // 2  # glibc's default: the block is mmapped afresh and every page faults again
    assert faults_on < pages // 20  # kept: the freed block's pages are reused


def test_user_allocator_choices_are_left_alone() -> None:
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    assert user_chose_allocator({"MALLOC_ARENA_MAX": "2"})
    assert user_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert not user_chose_allocator({"PATH": "/usr/bin", "LD_PRELOAD": "libfoo.so"})
