"""plot.py and score.py on fake run directories with known values, and utils/runs.py's smoothing and alignment."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

import plot
import score
from utils.errors import run_cli
from utils.logger import PROGRESS_COLUMNS
from utils.runs import Series, find_runs, group_curve, learning_curves, metric_series, smooth

TASKS = ("hopper-medium-v2", "walker2d-medium-v2")
ALGOS = ("micro", "mopo")
SEEDS = (0, 1, 2)
STEPS = (1000, 2000, 3000, 4000, 5000)
BASE = {("hopper-medium-v2", "mopo"): 50.0, ("hopper-medium-v2", "micro"): 60.0}
BASE |= {("walker2d-medium-v2", "mopo"): 70.0, ("walker2d-medium-v2", "micro"): 80.0}


def normalized(task: str, algo: str, seed: int, index: int) -> float:
    """Evaluation `index` of a seed: base + 10 seed + index, so every statistic is easy to work out by hand."""
    return BASE[task, algo] + 10 * seed + index


def write_run(
    root: Path, task: str, algo: str, seed: int, values: list[float] | None = None, stamp: str = "20260101-000000"
) -> Path:
    run = root / task / algo / f"seed{seed}-{stamp}"
    run.mkdir(parents=True)
    config = {"task": task, "algo": algo, "seed": seed, "epochs": len(STEPS), "steps_per_epoch": 1000}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if values is None:
        values = [normalized(task, algo, seed, i) for i in range(len(STEPS))]
    with open(run / "progress.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PROGRESS_COLUMNS)
        for i, value in enumerate(values):
            writer.writerow([i + 1, STEPS[i], 100 * value + 7, 3.0, value, 1.0, 1000, 10.0 * i])
    return run


@pytest.fixture
def log_root(tmp_path: Path) -> Path:
    """2 tasks x 2 algos x 3 seeds, 5 evaluations each; plus an eval/ output dir that must be ignored."""
    root = tmp_path / "log"
    for task in TASKS:
        for algo in ALGOS:
            for seed in SEEDS:
                run = write_run(root, task, algo, seed)
    (run / "eval").mkdir()
    (run / "eval" / "clean.csv").write_text("return_mean\n1.0\n")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_score_table_last_evaluation(log_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.md"
    scores = score.main([str(log_root), "--out", str(out)])
    assert [(s.task, s.algo) for s in scores] == [(t, a) for t in TASKS for a in ALGOS]
    for s in scores:
        expected = [normalized(s.task, s.algo, seed, 4) for seed in SEEDS]  # base + 10 seed + 4
        assert s.seeds == SEEDS and s.values == pytest.approx(expected)
        assert s.mean == pytest.approx(BASE[s.task, s.algo] + 14) and s.std == pytest.approx(np.std([0, 10, 20]))
        assert s.num_seeds == 3

    table = out.read_text()
    assert capsys.readouterr().out == table
    lines = table.splitlines()
    assert "D4RL normalized score" in lines[0] and "last evaluation" in lines[0]
    assert lines[2] == "| task | micro | mopo |"
    assert lines[4] == "| hopper-medium-v2 | 74.0 ± 8.2 (3) | 64.0 ± 8.2 (3) |"
    assert lines[5] == "| walker2d-medium-v2 | 94.0 ± 8.2 (3) | 84.0 ± 8.2 (3) |"

    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == 4
    row = rows[1]
    assert (row["task"], row["algo"], row["metric"], row["last_k"]) == (
        "hopper-medium-v2",
        "mopo",
        "normalized_score_mean",
        "1",
    )
    assert float(row["mean"]) == pytest.approx(64.0) and float(row["std"]) == pytest.approx(8.16497, rel=1e-4)
    assert row["n_seeds"] == "3" and row["seeds"] == "0;1;2" and row["values"] == "54;64;74"


def test_score_last_k_and_raw(log_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.md"
    scores = {(s.task, s.algo): s for s in score.main([str(log_root), "--last", "3", "--out", str(out)])}
    # Last 3 evaluations are indices 2, 3, 4: per-seed mean base + 10 seed + 3; never the maximum (index 4).
    hopper_mopo = scores["hopper-medium-v2", "mopo"]
    assert hopper_mopo.values == pytest.approx([53.0, 63.0, 73.0]) and hopper_mopo.mean == pytest.approx(63.0)
    assert "mean over its last 3 evaluations" in out.read_text()

    raw = {(s.task, s.algo): s for s in score.main([str(log_root), "--raw", "--out", str(out)])}
    assert raw["walker2d-medium-v2", "micro"].values == pytest.approx([100 * (84 + 10 * s) + 7 for s in SEEDS])
    assert out.read_text().startswith("Return")
    assert read_csv(out.with_suffix(".csv"))[0]["metric"] == "return_mean"


def test_score_filters_globs_and_skips_runs_without_evaluations(
    log_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(log_root, "hopper-medium-v2", "mopo", 3, values=[])  # dynamics_only or not evaluated yet
    write_run(log_root, "hopper-medium-v2", "mopo", 4, values=[1.0, 2.0])  # still running: 2 of 5 epochs
    out = tmp_path / "scores.md"
    scores = score.main([str(log_root / "hopper-*" / "mopo" / "seed*"), "--out", str(out)])
    assert len(scores) == 1 and scores[0].seeds == (0, 1, 2, 4)
    err = capsys.readouterr().err
    assert "1 runs have no evaluation yet" in err and "hopper-medium-v2/mopo seed 3" in err
    assert "1 runs stop short of their last epoch" in err and "hopper-medium-v2/mopo seed 4" in err

    scores = score.main([str(log_root), "--task", "walker2d-*", "--algo", "micro", "--out", str(out)])
    assert [(s.task, s.algo) for s in scores] == [("walker2d-medium-v2", "micro")]


def test_plot_writes_one_png_per_task(log_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    written = plot.main([str(log_root), "--out", str(out), "--smooth", "2"])
    assert sorted(p.name for p in written) == [f"{task}.png" for task in TASKS]
    assert sorted(p.name for p in out.iterdir()) == [f"{task}.png" for task in TASKS]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000

    single = plot.main(
        [str(log_root), "--task", "hopper-medium-v2", "--single-figure", "--out", str(tmp_path / "h.png")]
    )
    assert single == [tmp_path / "h.png"] and single[0].is_file()
    other = plot.main([str(log_root), "--metric", "return_mean", "--out", str(out)])
    assert sorted(p.name for p in other) == [f"{task}_return_mean.png" for task in TASKS]


def test_smoothing_window() -> None:
    values = np.array([0.0, 3.0, 6.0, 9.0, 12.0])
    assert smooth(values, 1) == pytest.approx(values)
    # Trailing window: the first points average what there is so far.
    assert smooth(values, 2) == pytest.approx([0.0, 1.5, 4.5, 7.5, 10.5])
    assert smooth(values, 3) == pytest.approx([0.0, 1.5, 3.0, 6.0, 9.0])
    assert smooth(values, 10) == pytest.approx([0.0, 1.5, 3.0, 4.5, 6.0])


def test_seeds_are_aligned_on_common_steps_after_smoothing() -> None:
    long = Series(np.array([10, 20, 30, 40]), np.array([1.0, 2.0, 3.0, 4.0]))
    short = Series(np.array([10, 20, 30]), np.array([3.0, 6.0, 9.0]))
    offset = Series(np.array([0, 10, 20, 30, 40]), np.array([0.0, 5.0, 5.0, 5.0, 5.0]))
    curve = group_curve("t", "a", [long, short], window=1)
    assert curve.steps.tolist() == [10, 20, 30]  # intersection: the shortest seed ends the curve
    assert curve.mean == pytest.approx([2.0, 4.0, 6.0]) and curve.std == pytest.approx([1.0, 2.0, 3.0])
    assert curve.num_seeds == 2
    # Each seed is smoothed over its own evaluations first: offset's step 10 averages its values at steps 0 and 10.
    curve = group_curve("t", "a", [long, offset], window=2)
    assert curve.steps.tolist() == [10, 20, 30, 40]
    assert curve.mean == pytest.approx([(1.0 + 2.5) / 2, (1.5 + 5) / 2, (2.5 + 5) / 2, (3.5 + 5) / 2])


def test_learning_curves_from_runs(log_root: Path) -> None:
    series, skipped = metric_series(find_runs([str(log_root)]), "normalized_score_mean")
    assert not skipped and len(series) == 12
    curves = {(c.task, c.algo): c for c in learning_curves(series, window=3)}
    curve = curves["walker2d-medium-v2", "mopo"]
    assert curve.steps.tolist() == list(STEPS) and curve.num_seeds == 3
    # Seed values are 70 + 10 seed + index; smoothed over 3 the index part is 0, 0.5, 1, 2, 3.
    assert curve.mean == pytest.approx(80 + np.array([0.0, 0.5, 1.0, 2.0, 3.0]))
    assert curve.std == pytest.approx(np.full(5, np.std([0, 10, 20])))


def test_tensorboard_metric(log_root: Path, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    runs = [r for r in find_runs([str(log_root)]) if r.group == ("hopper-medium-v2", "mopo")]
    for run in runs:
        with SummaryWriter(str(run.path)) as writer:
            for step in (100, 200, 300):
                writer.add_scalar("loss/critic", step / 100 + run.seed, step)
    series, skipped = metric_series(find_runs([str(log_root)]), "loss/critic")
    assert len(series) == 3 and len(skipped) == 9  # the other groups never logged it: left out, not an error
    assert series[runs[1]].steps.tolist() == [100, 200, 300]
    assert series[runs[1]].values == pytest.approx([2.0, 3.0, 4.0])
    curve = learning_curves(series, window=1)[0]
    assert curve.mean == pytest.approx([2.0, 3.0, 4.0])

    written = plot.main([str(log_root), "--metric", "loss/critic", "--out", str(tmp_path / "plots")])
    assert [p.name for p in written] == ["hopper-medium-v2_loss_critic.png"]


def cli_error(cli, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: cli.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("cli", [plot, score], ids=["plot", "score"])
def test_bad_input(cli, log_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / ("scores.md" if cli is score else "plots"))]
    err = cli_error(cli, [str(tmp_path / "nothing-*"), *out], capsys)
    assert "matches no file or directory" in err
    err = cli_error(cli, [str(tmp_path / "missing"), *out], capsys)
    assert "no such run directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = cli_error(cli, [str(empty), *out], capsys)
    assert "holds no run directory" in err
    err = cli_error(cli, [str(log_root), "--task", "ant-*", *out], capsys)
    assert "--task ant-* matches none" in err and "hopper-medium-v2, walker2d-medium-v2" in err
    err = cli_error(cli, [str(log_root), "--algo", "cql", *out], capsys)
    assert "--algo cql matches none" in err and "micro, mopo" in err

    broken = write_run(tmp_path / "broken", "hopper-medium-v2", "bc", 0, values=[1.0])
    (broken / "progress.csv").write_text("epoch,step,normalized_score_mean\n1,1000,5.0\n2,2000\n")
    err = cli_error(cli, [str(log_root), str(broken), *out], capsys)
    assert str(broken / "progress.csv") in err and "corrupt" in err
    (broken / "progress.csv").write_text("")
    err = cli_error(cli, [str(broken), *out], capsys)
    assert "corrupt" in err and "empty" in err
    (broken / "progress.csv").unlink()
    err = cli_error(cli, [str(broken), *out], capsys)
    assert str(broken / "progress.csv") in err and "missing" in err
    (broken / "config.yaml").write_text("task: [unclosed\n")
    err = cli_error(cli, [str(broken), *out], capsys)
    assert str(broken / "config.yaml") in err

    rerun = write_run(tmp_path / "rerun", "hopper-medium-v2", "mopo", 0, stamp="20260202-000000")
    err = cli_error(cli, [str(log_root), str(rerun), *out], capsys)
    assert "seed 0 in 2 runs" in err and str(rerun) in err

    if cli is plot:
        err = cli_error(plot, [str(log_root), "--metric", "loss/nothing", *out], capsys)
        assert "loss/nothing" in err and "normalized_score_mean" in err and "return_mean" in err
        err = cli_error(plot, [str(log_root), "--single-figure", *out], capsys)
        assert "different tasks" in err and "hopper-medium-v2, walker2d-medium-v2" in err
        err = cli_error(plot, [str(log_root), "--out", str(tmp_path / "one.png")], capsys)
        assert "different tasks" in err
        err = cli_error(plot, [str(log_root), "--smooth", "0", *out], capsys)
        assert "--smooth" in err
    else:
        err = cli_error(score, [str(log_root), "--last", "6", *out], capsys)
        assert "5 evaluations, fewer than --last 6" in err
        err = cli_error(score, [str(log_root), "--out", str(tmp_path / "scores.txt")], capsys)
        assert "must end in .md" in err
