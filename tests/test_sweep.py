"""sweep.py and train.py --seeds: grids run as processes, finished runs are skipped, interrupted ones resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sweep
import train
from utils.errors import run_cli
from utils.launch import RunRequest, plan

TASK = "hopper-random-gen"
TINY = [
    "epochs=1",
    "steps_per_epoch=20",
    "batch_size=16",
    "rollout_freq=20",
    "rollout_batch_size=50",
    "eval_episodes=1",
    "save_every=1",
    "dynamics.num_ensemble=2",
    "dynamics.num_elites=1",
    "dynamics.hidden_dims=[8]",
    "dynamics.weight_decay=[0,0]",
    "dynamics.max_epochs=1",
    "sac.hidden_dims=[8]",
]


@pytest.fixture
def data_env(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("config.yaml"))


def sweep_args(root: Path, *extra: str) -> list[str]:
    return ["--tasks", TASK, "--algos", "mopo", "--log-dir", str(root), "--workers", "2", "--set", *TINY, *extra]


def test_two_by_two_grid_runs_then_skips_then_resumes(
    data_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = ["--seeds", "0", "1", "--grid", "penalty_coef=0.5,2"]
    assert sweep.main(sweep_args(tmp_path, *grid)) == 0
    runs = run_dirs(tmp_path)
    assert len(runs) == 4
    assert {run.parents[2].name for run in runs} == {"penalty_coef=0.5", "penalty_coef=2"}
    assert all((run / "checkpoints" / "checkpoint.pt").is_file() for run in runs)
    assert "penalty_coef: 2.0" in (tmp_path / "penalty_coef=2").rglob("config.yaml").__next__().read_text()
    capsys.readouterr()

    assert sweep.main(sweep_args(tmp_path, *grid)) == 0
    out = capsys.readouterr().out
    assert "4 already finished, 0 to resume, 0 to start" in out
    assert run_dirs(tmp_path) == runs

    # An interrupted run (its checkpoint is behind its configured epochs) is resumed in place.
    checkpoint = runs[0] / "checkpoints" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    state["epoch"], state["global_step"] = 0, 0
    torch.save(state, checkpoint)
    assert sweep.main(sweep_args(tmp_path, *grid)) == 0
    assert "3 already finished, 1 to resume, 0 to start" in capsys.readouterr().out
    assert run_dirs(tmp_path) == runs
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1


def test_changed_settings_start_new_runs(data_env: None, tmp_path: Path) -> None:
    request = RunRequest(TASK, "mopo", 0, str(tmp_path), tuple(TINY))
    assert plan([request])[0][0].resume is None  # nothing there yet
    assert sweep.main(sweep_args(tmp_path)) == 0
    to_run, finished = plan([request])
    assert not to_run and len(finished) == 1
    other = RunRequest(TASK, "mopo", 0, str(tmp_path), (*TINY, "penalty_coef=9"))
    to_run, finished = plan([other])
    assert len(to_run) == 1 and to_run[0].resume is None and not finished


def test_train_with_several_seeds(data_env: None, tmp_path: Path) -> None:
    train.main(["--task", TASK, "--algo", "mopo", "--seeds", "3", "4", "--log-dir", str(tmp_path), "--set", *TINY])
    names = sorted(p.name.split("-")[0] for p in (tmp_path / TASK / "mopo").iterdir())
    assert names == ["seed3", "seed4"]


def one_line_error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    err = one_line_error(sweep.main, sweep_args(tmp_path, "--grid", "penalty_coeff=1,2"), capsys)
    assert "penalty_coeff" in err and "penalty_coef" in err
    err = one_line_error(sweep.main, sweep_args(tmp_path, "--grid", "penalty_coef"), capsys)
    assert "key=v1,v2" in err
    assert not tmp_path.joinpath(TASK).exists()
    err = one_line_error(train.main, ["--task", TASK, "--algo", "mopo", "--seeds", "0", "--seed", "1"], capsys)
    assert "--seeds" in err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    err = one_line_error(sweep.main, sweep_args(tmp_path, "--backend", "ray"), capsys)
    assert "pip install" in err and "ray" in err


def test_ray_backend_on_a_local_instance(data_env: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    with capfd.disabled():  # a local Ray instance stalls for minutes on pytest's captured file descriptors
        assert sweep.main(sweep_args(tmp_path, "--backend", "ray", "--seeds", "0")) == 0
    (run,) = run_dirs(tmp_path)
    assert (run / "checkpoints" / "checkpoint.pt").is_file()
