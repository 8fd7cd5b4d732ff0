"""Ctrl-C exits with 130 (the shell's code for SIGINT), never with a refused input's 2, and without a traceback:
train.py keeps its checkpoint and prints the command that continues it, collect.py says where its state is, and an
interrupt no command catches is one line as well. sweep.py's is in tests/test_threads.py."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import collect
import score
import train
from utils.errors import EXIT_INTERRUPTED, run_cli

REPO = Path(__file__).resolve().parents[1]
TASK = "hopper-random-gen"
EPOCHS = 100  # one gradient step and one evaluation episode each: long enough to be interrupted, short to resume
BC = [f"epochs={EPOCHS}", "steps_per_epoch=1", "eval_episodes=1", "save_every=1", "hidden_dims=[8]"]


def interrupted_line(main, capsys: pytest.CaptureFixture[str]) -> str:
    """Run an entry point as its script would; assert exit code 130 and one stderr line, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def epochs_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "progress.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_sigint_stops_train_py_with_130_and_the_command_that_continues_it(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT to `python train.py` once it has checkpointed two epochs: exit 130, its last stderr line is the
    one-line message, and the command in it continues the run from its checkpoint."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = ["--task", TASK, "--algo", "bc", "--seed", "0", "--log-dir", str(tmp_path), "--no-progress", "--set", *BC]
    process = subprocess.Popen(
        [sys.executable, "train.py", *argv], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 180
    try:
        while process.poll() is None and time.monotonic() < deadline:
            runs = list((tmp_path / TASK / "bc").glob("*/progress.csv"))
            if runs and len(epochs_logged(runs[0].parent)) >= 2:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()  # nothing if it has exited
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 130, lines[-20:]
    assert "Traceback" not in stderr.decode()
    (run_dir,) = (tmp_path / TASK / "bc").iterdir()
    assert lines[-1] == f"error: interrupted; continue with: python train.py --resume {run_dir}"
    checkpointed = int(torch.load(run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)["epoch"])
    assert checkpointed >= 1
    assert checkpointed < EPOCHS

    command = shlex.split(lines[-1].split("continue with: ", 1)[1])
    assert train.main([*command[2:], "--no-progress"]) is not None
    assert epochs_logged(run_dir) == list(range(1, EPOCHS + 1))  # every epoch once, the interrupted ones included


def test_collect_train_interrupted_exits_130_and_says_where_its_state_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(collect.BehaviourTrainer, "train", interrupted)
    argv = ["train", "--env", "hopper", "--steps", "10", "--work-dir", str(tmp_path / "work"), "--no-progress"]
    err = interrupted_line(lambda: collect.main(argv), capsys)
    assert err == f"error: interrupted; checkpoint in {tmp_path / 'work'}, run the same command to continue"


def test_an_interrupt_no_command_catches_is_one_line_and_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """score.py has nothing to save: Ctrl-C while it reads runs is `error: interrupted`, exit 130, no traceback."""

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(score, "find_runs", interrupted)
    assert interrupted_line(lambda: score.main([str(tmp_path)]), capsys) == "error: interrupted"
