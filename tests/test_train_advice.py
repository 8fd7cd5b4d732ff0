"""train.py's refusals of bad input: one line, exit code 2, nothing written, before any work; and every command a
refusal suggests is itself accepted by train.py up to the point where work would start (or run at tiny size)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MOPO_SETTINGS

import train
from config import config_classes

TASK = "hopper-random-gen"  # the tiny dataset's task


class ReachedWork(Exception):
    """Raised where train.py would open the run (its directory, data and logger): everything before it accepted."""


@pytest.fixture
def data_env(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))


def refusal(cli_error: Any, argv: list[str], log_dir: Path) -> str:
    """train.py's one-line refusal of `argv` (exit code 2), having written nothing under `log_dir`."""
    err = cli_error(lambda: train.main([*argv, "--log-dir", str(log_dir), "--no-progress"]))
    assert not log_dir.exists(), err
    return err


def suggested(err: str, program: str = "python train.py") -> list[str]:
    """The arguments of the command a message suggests: everything after the last `program` (the command ends it)."""
    assert program in err, err
    return shlex.split(err.rsplit(f"{program} ", 1)[1])


def assert_accepted(argv: list[str], log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.py accepts `argv` (config layers, validation, the task fit) and reaches the point where work starts."""

    def reached(*args: object, **kwargs: object) -> None:
        raise ReachedWork

    monkeypatch.setattr(train, "open_run", reached)
    with pytest.raises(ReachedWork):
        train.main([*argv, "--log-dir", str(log_dir), "--no-progress"])
    assert not log_dir.exists()


# ---------------------------------------------------------------------------------------------------- item 3
def test_mago_gamma_one_is_refused_before_the_dynamics_fit(tmp_path: Path, cli_error: Any) -> None:
    """γ = 1 passed MAGO's range check and divided by zero (its value clip 1/(1 − γ)) after the dynamics fit."""
    argv = ["--task", "hopper-medium-gen", "--algo", "mago", "--config", "quickstart", "--set", "gamma=1.0"]
    err = refusal(cli_error, argv, tmp_path / "log")
    assert "gamma=1.0 (from --set gamma=1.0) must be in [0, 1) (the critic targets are clipped to [0, 1/(1 − γ)])" in (
        err
    )


# ---------------------------------------------------------------------------------------------------- item 4
@pytest.mark.parametrize(
    ("algo", "item", "needle"),
    [
        ("mopo", "sac.gamma=1", "sac.gamma=1.0 (from --set sac.gamma=1) must be in [0, 1)"),
        ("micro", "sac.gamma=1", "sac.gamma=1.0 (from --set sac.gamma=1) must be in [0, 1)"),
        ("mopo", "penalty_coef=-1", "penalty_coef=-1.0 (from --set penalty_coef=-1) must be >= 0"),
        ("micro", "penalty_coef=-1", "penalty_coef=-1.0 (from --set penalty_coef=-1) must be >= 0"),
    ],
)
def test_values_outside_the_domain_are_refused_at_the_cli(
    algo: str, item: str, needle: str, tmp_path: Path, cli_error: Any
) -> None:
    err = refusal(cli_error, ["--task", "hopper-medium-gen", "--algo", algo, "--set", item], tmp_path / "log")
    assert needle in err


def test_npg_gamma_one_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NPG's paths are finite and nothing divides by 1 − γ: γ = 1, the undiscounted path return, stays allowed."""
    assert_accepted(["--task", "Hopper-v4", "--algo", "pal", "--set", "npg.gamma=1"], tmp_path / "log", monkeypatch)


# ---------------------------------------------------------------------------------------------------- item 8
def test_online_algorithm_on_pendulum_data_suggests_only_what_runs(
    tmp_path: Path, cli_error: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAL on a pendulum dataset: no Pendulum-v1 (not a task here); the env tasks named exist, and the suggested
    MOReL command carries the learned reward and the borrowed termination the pendulum needs."""
    err = refusal(cli_error, ["--task", "pendulum-medium-gen", "--algo", "mal"], tmp_path / "log")
    assert "Pendulum-v1" not in err and "Hopper-v4" in err
    for task in ("Hopper-v4", "Walker2d-v4", "HalfCheetah-v4"):
        assert_accepted(["--task", task, "--algo", "mal"], tmp_path / "log", monkeypatch)
    argv = suggested(err)
    assert argv[:4] == ["--task", "pendulum-medium-gen", "--algo", "morel"] and "reward_fn=learned" in argv
    assert_accepted(argv, tmp_path / "log", monkeypatch)


def test_morel_on_pendulum_names_every_missing_function_at_once(
    tmp_path: Path, cli_error: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = refusal(cli_error, ["--task", "pendulum-medium-gen", "--algo", "morel"], tmp_path / "log")
    assert "no reward function for env family 'pendulum'" in err and "termination" in err
    argv = suggested(err)
    assert argv[-3:] == ["--set", "reward_fn=learned", "termination_fn=mopo"]
    assert_accepted(argv, tmp_path / "log", monkeypatch)


@pytest.mark.parametrize("task", ["CustomPendulum-v0", "Hopper-v4"])
def test_offline_algorithm_on_an_online_task_lists_the_online_algorithms_from_the_registry(
    task: str, tmp_path: Path, cli_error: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online algorithms named are the registry's (wmopo-alg1-detached included), each one accepted on the task
    (with the settings its own refusal would name), and the dataset task suggested for MOPO is accepted."""
    err = refusal(cli_error, ["--task", task, "--algo", "mopo"], tmp_path / "log")
    listed = err.split("collect their own samples (", 1)[1].split(")", 1)[0].split(", ")
    from envs.task_config import suggest_train

    online = sorted(name for name, cls in config_classes().items() if cls.online)
    assert listed == [name for name in online if suggest_train(name, task)]
    if task == "CustomPendulum-v0":
        assert {"wmopo-erm", "wmopo-alg2", "wmopo-alg1", "wmopo-alg1-detached"} <= set(listed)
    for algo in listed:
        command = suggest_train(algo, task)
        assert command is not None
        assert_accepted(shlex.split(command), tmp_path / "log", monkeypatch)
    argv = suggested(err)
    assert argv[2:4] == ["--algo", "mopo"]
    assert_accepted(argv, tmp_path / "log", monkeypatch)


def test_study_on_a_dataset_task_suggests_accepted_commands(
    tmp_path: Path, cli_error: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = refusal(cli_error, ["--task", "hopper-medium-gen", "--algo", "wmopo-alg1-detached"], tmp_path / "log")
    assert_accepted(suggested(err), tmp_path / "log", monkeypatch)
    err = refusal(cli_error, ["--task", "custom_pendulum-medium-gen", "--algo", "wmopo-erm"], tmp_path / "log")
    assert "CustomPendulum-v0" in err
    assert_accepted(suggested(err), tmp_path / "log", monkeypatch)


def tiny_run(log_dir: Path, algo: str, settings: list[str]) -> Path:
    train.main(["--task", TASK, "--algo", algo, "--seed", "0", "--log-dir", str(log_dir), "--no-progress", "--set",
                *settings])  # fmt: skip
    (run_dir,) = (log_dir / TASK / algo).iterdir()
    return run_dir


def test_stacking_runs_of_two_algorithms_names_the_algorithms(
    tmp_path: Path, cli_error: Any, capsys: pytest.CaptureFixture[str], data_env: None
) -> None:
    """MOPO seed 0 and BC seed 0: the refusal names the algorithm mismatch (not "seed 0 twice"), touches neither run,
    and the command it suggests resumes a run on its own."""
    mopo = tiny_run(tmp_path / "mopo", "mopo", ["epochs=1", *TINY_MOPO_SETTINGS])
    bc = tiny_run(tmp_path / "bc", "bc", ["epochs=1", "steps_per_epoch=5", "eval_episodes=1"])
    before = {path: path.stat().st_mtime_ns for run in (mopo, bc) for path in run.rglob("*")}
    err = cli_error(lambda: train.main(["--stack-seeds", "--resume", str(mopo), str(bc), "--no-progress"]))
    assert f"{bc} is a bc run on {TASK} but {mopo} a mopo run on {TASK}" in err and "twice" not in err
    assert {path: path.stat().st_mtime_ns for run in (mopo, bc) for path in run.rglob("*")} == before
    argv = suggested(err)
    assert argv == ["--resume", str(bc)]
    capsys.readouterr()
    train.main([*argv, "--no-progress"])  # a finished run resumes to its end
    assert "final normalized score" in capsys.readouterr().out
