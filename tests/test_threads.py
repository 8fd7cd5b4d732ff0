"""Thread counts: --threads on train.py, --seeds and sweep.py; the user's OMP_NUM_THREADS is respected unless
overridden; --workers 0 and --threads 0 are refused; sweep.py on Ctrl-C prints the command that continues it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

import sweep
import train
import utils.launch as launch
from utils.errors import run_cli
from utils.launch import Job, RunRequest, threads_per_run

TASK = "hopper-random-gen"
TINY = ["epochs=1", "steps_per_epoch=5", "batch_size=8", "eval_episodes=1", "hidden_dims=[8]"]


def cli_error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


@pytest.fixture
def no_user_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_threads_default_splits_the_cores(no_user_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 8)
    assert threads_per_run(2) == 4
    assert threads_per_run(3) == 2
    assert threads_per_run(16) == 1
    assert threads_per_run(2, requested=3) == 3


def test_user_omp_num_threads_is_respected_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_run(2) == 3
    assert threads_per_run(2, requested=1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert threads_per_run(2) == 4


def test_child_runs_get_their_thread_count(no_user_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], dict[str, str]]] = []

    class FakeProcess:
        def __init__(self, argv: list[str], env: dict[str, str], **_: object) -> None:
            seen.append((argv, env))
            self.stdout = iter(["done\n"])

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(RunRequest, "existing_run", lambda self: None)
    request = RunRequest(TASK, "bc", 0, "log")
    launch.run_local([Job(request, None), Job(request, Path("log/run"))], workers=2, threads=3)
    for argv, env in seen:
        assert argv[argv.index("--threads") + 1] == "3"
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert "--resume" in seen[1][0]


def test_train_threads_sets_torch_threads(tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    before = torch.get_num_threads()
    try:
        train.main(["--task", TASK, "--algo", "bc", "--log-dir", str(tmp_path), "--no-progress", "--threads", "2",
                    "--set", *TINY])  # fmt: skip
        assert torch.get_num_threads() == 2
        assert "2 threads" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("main", "argv", "needle"),
    [
        (train.main, ["--task", TASK, "--algo", "bc", "--seeds", "0", "1", "--workers", "0"], "--workers must be"),
        (train.main, ["--task", TASK, "--algo", "bc", "--threads", "0"], "--threads must be"),
        (train.main, ["--task", TASK, "--algo", "bc", "--seeds", "0", "--threads", "-1"], "--threads must be"),
        (sweep.main, ["--tasks", TASK, "--algos", "bc", "--workers", "0"], "--workers must be"),
        (sweep.main, ["--tasks", TASK, "--algos", "bc", "--threads", "0"], "--threads must be"),
    ],
)
def test_zero_workers_or_threads_are_refused(main, argv: list[str], needle: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert needle in cli_error(main, argv, capsys)


def test_sweep_interrupted_prints_the_command_that_continues_it(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))

    def interrupted(*args: object, **kwargs: object) -> list[Job]:
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_local", interrupted)
    argv = ["--tasks", TASK, "--algos", "bc", "--seeds", "0", "1", "--log-dir", str(tmp_path), "--set", *TINY]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: sweep.main(argv))
    assert info.value.code == 130  # the shell's code for Ctrl-C, not a refused input's 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: interrupted; finished runs are kept")
    command = shlex.split(err.split("continue with: ", 1)[1])
    assert command[:2] == ["python", "sweep.py"]
    assert sweep.parse_args(command[2:]) == sweep.parse_args(argv)
