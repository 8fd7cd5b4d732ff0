"""eval.py end to end on tiny MOPO and MICRO runs: clean, sim2real and attack outputs, and bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

import eval as evaluate_cli
import train
from utils.errors import run_cli

TASK = "hopper-random-gen"
TINY = [
    "epochs=2",
    "steps_per_epoch=40",
    "batch_size=32",
    "rollout_freq=40",
    "rollout_batch_size=100",
    "rollout_length=2",
    "eval_every=1",
    "eval_episodes=2",
    "save_every=1",
    "dynamics.num_ensemble=3",
    "dynamics.num_elites=2",
    "dynamics.hidden_dims=[16,16]",
    "dynamics.weight_decay=[2.5e-5,5e-5,1e-4]",
    "dynamics.max_epochs=2",
    "sac.hidden_dims=[32,32]",
]
EXTRA = {"mopo": [], "micro": ["num_samples=3"]}


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    log_dir = tmp_path_factory.mktemp("log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        for algo in ("mopo", "micro"):
            args = ["--task", TASK, "--algo", algo, "--log-dir", str(log_dir), "--no-progress"]
            train.main([*args, "--set", *TINY, *EXTRA[algo]])
    return {algo: next((log_dir / TASK / algo).iterdir()) for algo in ("mopo", "micro")}


@pytest.fixture
def data_env(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_eval(run_dir: Path, *args: str) -> list[dict[str, float]]:
    return evaluate_cli.main(["--run", str(run_dir), "--no-progress", *args])


@pytest.mark.parametrize("algo", ["mopo", "micro"])
def test_clean_reproduces_the_last_training_evaluation(runs: dict[str, Path], algo: str) -> None:
    (row,) = run_eval(runs[algo], "--choice", "clean", "--episodes", "2")
    last = read_rows(runs[algo] / "progress.csv")[-1]
    assert row["normalized_mean"] == pytest.approx(float(last["normalized_score_mean"]))
    assert (runs[algo] / "eval" / "clean.csv").is_file()


@pytest.mark.parametrize("algo", ["mopo", "micro"])
def test_sim2real_grid_writes_csv_png_and_events(runs: dict[str, Path], algo: str) -> None:
    rows = run_eval(
        runs[algo], "--choice", "sim2real", "--episodes", "1", "--physics", "friction=0.5,1.5", "gravity=1:3:3"
    )
    out = runs[algo] / "eval"
    written = read_rows(out / "sim2real.csv")
    assert len(rows) == len(written) == 6
    assert {(float(r["friction"]), float(r["gravity"])) for r in written} == {
        (f, g) for f in (0.5, 1.5) for g in (1.0, 2.0, 3.0)
    }
    assert (out / "sim2real.png").stat().st_size > 0
    assert list(out.glob("events.out.tfevents.*"))
    nominal = run_eval(runs[algo], "--choice", "clean", "--episodes", "1")[0]
    shifted = {(r["friction"], r["gravity"]): r["return_mean"] for r in rows}
    assert shifted[(0.5, 3.0)] != nominal["return_mean"]


def test_sim2real_single_axis_is_a_curve(runs: dict[str, Path]) -> None:
    rows = run_eval(runs["mopo"], "--choice", "sim2real", "--episodes", "1", "--physics", "mass=0.5:1.5:3")
    assert [r["mass"] for r in rows] == [0.5, 1.0, 1.5]
    assert (runs["mopo"] / "eval" / "sim2real.png").is_file()


@pytest.mark.parametrize("algo", ["mopo", "micro"])
def test_min_q_attack_outputs_and_zero_budget_is_clean(runs: dict[str, Path], algo: str, data_env: None) -> None:
    rows = run_eval(
        runs[algo], "--choice", "attack", "--attack-mode", "min_Q", "--epsilons", "0,0.2", "--episodes", "2"
    )
    clean = run_eval(runs[algo], "--choice", "clean", "--episodes", "2")[0]
    assert [r["epsilon"] for r in rows] == [0.0, 0.2]
    assert rows[0]["return_mean"] == clean["return_mean"]
    out = runs[algo] / "eval"
    assert len(read_rows(out / "attack-min_Q.csv")) == 2
    assert (out / "attack-min_Q.png").stat().st_size > 0


def test_gradient_attack_has_its_own_files(runs: dict[str, Path], data_env: None) -> None:
    run_eval(
        runs["micro"], "--choice", "attack", "--attack-mode", "action_diff", "--attack-steps", "2",
        "--epsilons", "0.1", "--episodes", "1", "--num-candidates", "5",
    )  # fmt: skip
    assert (runs["micro"] / "eval" / "attack-action_diff-pgd2.csv").is_file()


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: evaluate_cli.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_input(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = str(runs["mopo"])
    err = cli_error(["--run", run, "--task", "walker2d-medium-v2"], capsys)
    assert "hopper-random-gen" in err and "walker2d-medium-v2" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "wind=1,2"], capsys)
    assert "unknown physics axis wind" in err
    err = cli_error(["--run", run, "--choice", "sim2real", "--physics", "friction=a:b"], capsys)
    assert "friction" in err
    err = cli_error(["--run", str(tmp_path)], capsys)
    assert "not a run directory" in err

    no_checkpoint = tmp_path / "fresh"
    no_checkpoint.mkdir()
    shutil.copy(runs["mopo"] / "config.yaml", no_checkpoint / "config.yaml")
    err = cli_error(["--run", str(no_checkpoint)], capsys)
    assert "no checkpoint" in err

    mixed = tmp_path / "mixed"
    shutil.copytree(runs["mopo"], mixed)
    state = torch.load(mixed / "checkpoints" / "checkpoint.pt", weights_only=False)
    state["task"] = "walker2d-random-gen"
    torch.save(state, mixed / "checkpoints" / "checkpoint.pt")
    err = cli_error(["--run", str(mixed)], capsys)
    assert "walker2d-random-gen" in err and "hopper-random-gen" in err
