"""plot.py and score.py on fake run directories with known values, and utils/runs.py's smoothing and alignment."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import plot
import score
from config import config_classes, config_to_dict
from utils.errors import UserError, run_cli
from utils.logger import PROGRESS_COLUMNS
from utils.runs import (
    Series,
    averaged_over,
    find_runs,
    format_value,
    group_curve,
    group_runs,
    learning_curves,
    metric_series,
    smooth,
)

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
    assert "left out 1 runs with no evaluation yet: hopper-medium-v2/mopo seed 3" in err
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

    # Several metrics: one figure each; one .png for several is refused.
    hopper = [str(log_root), "--task", "hopper-medium-v2"]
    written = plot.main([*hopper, "--metric", "loss/critic", "return_mean", "--out", str(tmp_path / "two")])
    assert [p.name for p in written] == ["hopper-medium-v2_loss_critic.png", "hopper-medium-v2_return_mean.png"]
    with pytest.raises(UserError, match="pass a directory"):
        plot.main([*hopper, "--metric", "loss/critic", "return_mean", "--out", str(tmp_path / "one.png")])


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
        assert "none of the 12 runs with normalized_score_mean has 6 evaluations (the most is 5)" in err
        assert err.endswith("pass --last 5 or less")
        assert len(score.main([str(log_root), "--last", "5", *out])) == 4  # the --last it suggests works
        capsys.readouterr()
        err = cli_error(score, [str(log_root), "--out", str(tmp_path / "scores.txt")], capsys)
        assert "must end in .md" in err


# --------------------------------------------------------------------------------------- grouping by what differs


def write_full_run(
    root: Path,
    task: str,
    algo: str,
    seed: int,
    score_value: float,
    settings: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """A run as train.py, `--seeds` and sweep.py write it: the full merged config (nested blocks, log_dir = root) and
    five evaluations of constant score, so every final score is `score_value`. `settings` are dotted overrides,
    `drop` dotted keys removed (a config.yaml from before those options existed)."""
    config = config_to_dict(config_classes()[algo]())
    config |= {"task": task, "algo": algo, "seed": seed, "log_dir": str(root), "epochs": len(STEPS)}
    config["steps_per_epoch"] = 1000
    for dotted, value in (settings or {}).items():
        *blocks, leaf = dotted.split(".")
        node = config
        for block in blocks:
            node = node[block]
        node[leaf] = value
    for dotted in drop:
        *blocks, leaf = dotted.split(".")
        node = config
        for block in blocks:
            node = node[block]
        del node[leaf]
    run = write_run(root, task, algo, seed, values=[score_value] * len(STEPS))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def sweep_point(log: Path, **point: Any) -> Path:
    """sweep.py's log root of a grid point: `<log-dir>/<k=v_...>` (values as given on the command line)."""
    return log / "_".join(f"{key}={value}" for key, value in point.items())


def scores_by_label(argv: list[str]) -> dict[tuple[str, str], tuple[tuple[int, ...], tuple[float, ...]]]:
    return {(s.task, s.label): (s.seeds, s.values) for s in score.main(argv)}


def test_value_formatting() -> None:
    assert [format_value(v) for v in (0.5, 1.0, 3e-4, 2.5e-5, 10, True, False, None)] == [
        "0.5", "1", "0.0003", "2.5e-05", "10", "true", "false", "null",
    ]  # fmt: skip
    assert format_value(1 / 3) == repr(1 / 3)  # %g would lose digits and could merge two groups' labels
    assert format_value((200, 200)) == "[200,200]" and format_value("aleatoric") == "aleatoric"
    assert format_value("1") == "'1'"  # a string that reads as a number stays distinguishable from 1


def test_sweep_grid_points_are_separate_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    task = "hopper-medium-v2"
    for coef in (0.5, 2.0, 10.0):  # numeric order 0.5 < 2 < 10, unlike the strings' "10" < "2"
        for seed in (0, 1):
            # save_every differs between seeds: run bookkeeping, never a group of its own
            settings = {"penalty_coef": coef, "save_every": 5 + seed, "dynamics.max_epochs": 3}
            write_full_run(sweep_point(log, penalty_coef=f"{coef:g}"), task, "mopo", seed, coef + seed, settings)
    out = tmp_path / "scores.md"
    scores = score.main([str(log), "--out", str(out)])
    assert [s.label for s in scores] == ["mopo penalty_coef=0.5", "mopo penalty_coef=2", "mopo penalty_coef=10"]
    assert [s.settings for s in scores] == [(("penalty_coef", c),) for c in (0.5, 2.0, 10.0)]
    for s, coef in zip(scores, (0.5, 2.0, 10.0)):
        assert s.seeds == (0, 1) and s.values == pytest.approx([coef, coef + 1])
    lines = out.read_text().splitlines()
    assert lines[2] == "| task | mopo penalty_coef=0.5 | mopo penalty_coef=2 | mopo penalty_coef=10 |"
    assert lines[4] == f"| {task} | 1.0 ± 0.5 (2) | 2.5 ± 0.5 (2) | 10.5 ± 0.5 (2) |"
    rows = read_csv(out.with_suffix(".csv"))
    assert list(rows[0])[:4] == ["task", "algo", "penalty_coef", "metric"]
    assert [(r["algo"], r["penalty_coef"], r["seeds"], r["values"]) for r in rows] == [
        ("mopo", "0.5", "0;1", "0.5;1.5"),
        ("mopo", "2", "0;1", "2;3"),
        ("mopo", "10", "0;1", "10;11"),
    ]
    assert "note:" not in capsys.readouterr().err  # nothing averaged over but bookkeeping


def test_runs_differing_only_in_seed_and_bookkeeping_are_one_group(tmp_path: Path) -> None:
    task = "walker2d-medium-v2"
    bookkeeping = [
        {"device": "cpu", "save_every": 10, "dataset_path": None},
        {"device": "cuda", "save_every": 50, "dataset_path": "/data/walker.hdf5", "download": False},
        {"dynamics_path": "/shared/dynamics-seed2.pt"},
    ]
    for seed, settings in enumerate(bookkeeping):  # each seed in its own log root, as after three train.py calls
        write_full_run(tmp_path / f"root{seed}", task, "micro", seed, 40.0 + seed, settings)
    runs = find_runs([str(tmp_path)])
    groups = group_runs(runs)
    assert [(g.task, g.algo, g.settings, g.label) for g in groups] == [(task, "micro", (), "micro")]
    assert [r.seed for r in next(iter(groups.values()))] == [0, 1, 2] and averaged_over(groups) == []
    scores = score.main([str(tmp_path), "--out", str(tmp_path / "s.md")])
    assert len(scores) == 1 and scores[0].values == pytest.approx([40.0, 41.0, 42.0])


def test_runs_saved_before_wmopos_rollout_keys_moved_group_with_newer_ones(tmp_path: Path) -> None:
    """A MOPO run saved before `rollout_mode` and its kin moved to WMOPO's config holds them at the values meaning
    what MOPO does now, so a newer seed without them is the same setting; another value still tells runs apart."""
    task, retired = "hopper-medium-v2", {"rollout_mode": "branch", "update_after": 0, "rollout_random_steps": 0}
    write_full_run(tmp_path / "old", task, "mopo", 0, 40.0, {**retired, "model_episode_length": 1000})
    write_full_run(tmp_path / "new", task, "mopo", 1, 41.0)
    groups = group_runs(find_runs([str(tmp_path)]))
    assert [(g.algo, g.settings) for g in groups] == [("mopo", ())]
    write_full_run(tmp_path / "other", task, "mopo", 2, 42.0, {"rollout_mode": "episodes"})
    groups = group_runs(find_runs([str(tmp_path)]))
    assert sorted(len(runs) for runs in groups.values()) == [1, 2]


def grid_2x2(log: Path, seeds_of: dict[tuple[float, int], tuple[int, ...]]) -> None:
    """mopo on hopper at penalty_coef x rollout_length points, with the given seeds; score 10 coef + rl + seed/10."""
    for (coef, length), seeds in seeds_of.items():
        root = sweep_point(log, penalty_coef=f"{coef:g}", rollout_length=length)
        for seed in seeds:
            settings = {"penalty_coef": coef, "rollout_length": length}
            write_full_run(root, "hopper-medium-v2", "mopo", seed, 10 * coef + length + seed / 10, settings)


def test_group_by_and_ignore_average_knowingly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    # rollout_length 5 was run with other seeds, so pooling it with rollout_length 1 is legitimate.
    grid_2x2(log, {(0.5, 1): (0, 1), (0.5, 5): (2, 3), (1.0, 1): (0, 1)})
    out = ["--out", str(tmp_path / "s.md")]
    task = "hopper-medium-v2"
    auto = scores_by_label([str(log), *out])
    assert list(auto) == [
        (task, "mopo penalty_coef=0.5 rollout_length=1"),
        (task, "mopo penalty_coef=0.5 rollout_length=5"),
        (task, "mopo penalty_coef=1 rollout_length=1"),
    ]
    assert "note:" not in capsys.readouterr().err

    pooled = scores_by_label([str(log), "--group-by", "penalty_coef", *out])
    assert pooled == {
        (task, "mopo penalty_coef=0.5"): ((0, 1, 2, 3), pytest.approx([6.0, 6.1, 10.2, 10.3])),
        (task, "mopo penalty_coef=1"): ((0, 1), pytest.approx([11.0, 11.1])),
    }
    assert "averages runs that differ in rollout_length" in capsys.readouterr().err

    ignored = scores_by_label([str(log), "--ignore", "rollout_length", *out])
    assert ignored == pooled
    assert "averages runs that differ in rollout_length" in capsys.readouterr().err

    # A named --group-by key stays in the label even where it does not differ; a block only where it differs.
    half = [str(log / "penalty_coef=0.5_rollout_length=1"), str(log / "penalty_coef=0.5_rollout_length=5")]
    assert list(scores_by_label([*half, *out])) == [(task, "mopo rollout_length=1"), (task, "mopo rollout_length=5")]
    named = scores_by_label([*half, "--group-by", "penalty_coef,rollout_length", "--group-by", "dynamics", *out])
    assert list(named) == [
        (task, "mopo penalty_coef=0.5 rollout_length=1"),
        (task, "mopo penalty_coef=0.5 rollout_length=5"),
    ]
    assert named[task, "mopo penalty_coef=0.5 rollout_length=5"] == ((2, 3), pytest.approx([10.2, 10.3]))
    # Shell patterns and blocks in --ignore.
    pooled_all = scores_by_label([*half, "--ignore", "penalty_*", "rollout_*", *out])
    assert pooled_all == {(task, "mopo"): ((0, 1, 2, 3), pytest.approx([6.0, 6.1, 10.2, 10.3]))}
    capsys.readouterr()
    settings = {"penalty_coef": 1.0, "rollout_length": 1, "dynamics.max_epochs": 3}
    write_full_run(sweep_point(log, penalty_coef=1, rollout_length=1), task, "mopo", 2, 11.2, settings)
    split = scores_by_label([str(log), *out])
    assert list(split) == [
        (task, "mopo dynamics.max_epochs=null penalty_coef=0.5 rollout_length=1"),
        (task, "mopo dynamics.max_epochs=null penalty_coef=0.5 rollout_length=5"),
        (task, "mopo dynamics.max_epochs=null penalty_coef=1 rollout_length=1"),
        (task, "mopo dynamics.max_epochs=3 penalty_coef=1 rollout_length=1"),
    ]
    merged = scores_by_label([str(log), "--ignore", "dynamics", *out])
    assert list(merged) == list(auto)
    assert merged[task, "mopo penalty_coef=1 rollout_length=1"] == ((0, 1, 2), pytest.approx([11.0, 11.1, 11.2]))
    assert "averages runs that differ in dynamics.max_epochs" in capsys.readouterr().err


def suggested_group_by(message: str) -> list[str]:
    found = re.search(r"pass --group-by (.+?) to show them apart", message)
    assert found, message
    return found.group(1).split()


@pytest.mark.parametrize("cli", [plot, score], ids=["plot", "score"])
def test_repeated_seed_names_differing_keys_and_a_fix_that_works(
    cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    grid_2x2(log, {(0.5, 1): (0, 1), (0.5, 5): (0, 1), (1.0, 1): (0, 1), (1.0, 5): (0, 1)})
    out = ["--out", str(tmp_path / ("s.md" if cli is score else "plots"))]
    err = cli_error(cli, [str(log), "--group-by", "penalty_coef", *out], capsys)
    assert "seed 0 in 2 runs" in err and "differ in rollout_length (1, 5)" in err
    assert suggested_group_by(err) == ["penalty_coef", "rollout_length"]
    assert len(cli.main([str(log), "--group-by", *suggested_group_by(err), *out])) == (4 if cli is score else 1)
    capsys.readouterr()

    err = cli_error(cli, [str(log), "--ignore", "rollout_length", *out], capsys)
    assert "differ in rollout_length (1, 5; --ignore)" in err
    fix = ["--group-by", *suggested_group_by(err)]
    assert fix == ["--group-by", "penalty_coef", "rollout_length"]
    cli.main([str(log), "--ignore", "rollout_length", *fix, *out])  # --group-by wins over --ignore: not refused
    capsys.readouterr()

    # The same config run into two log roots differs only in bookkeeping (log_dir): named, and --group-by fixes it.
    other = write_full_run(tmp_path / "log2", "walker2d-medium-v2", "bc", 0, 30.0)
    first = write_full_run(tmp_path / "log1", "walker2d-medium-v2", "bc", 0, 20.0)
    err = cli_error(cli, [str(first), str(other), *out], capsys)
    assert f"differ in log_dir ({tmp_path / 'log1'}, {tmp_path / 'log2'}; ignored by default)" in err
    assert suggested_group_by(err) == ["log_dir"]
    if cli is score:
        fixed = scores_by_label([str(first), str(other), "--group-by", "log_dir", *out])
        assert fixed == {
            ("walker2d-medium-v2", f"bc log_dir={tmp_path / 'log1'}"): ((0,), pytest.approx([20.0])),
            ("walker2d-medium-v2", f"bc log_dir={tmp_path / 'log2'}"): ((0,), pytest.approx([30.0])),
        }


@pytest.mark.parametrize("cli", [plot, score], ids=["plot", "score"])
def test_bad_grouping_keys(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    grid_2x2(log, {(0.5, 1): (0, 1), (1.0, 1): (0, 1)})
    out = ["--out", str(tmp_path / ("s.md" if cli is score else "plots"))]
    err = cli_error(cli, [str(log), "--ignore", "max_epochs", *out], capsys)
    assert err.startswith("error: --ignore max_epochs: no run config has this key") and "dynamics.max_epochs" in err
    err = cli_error(cli, [str(log), "--group-by", "penalty_cof", *out], capsys)
    assert "--group-by penalty_cof" in err and "penalty_coef" in err
    err = cli_error(cli, [str(log), "--group-by", "sac.*_rate", *out], capsys)
    assert "--group-by sac.*_rate: no run config has this key" in err
    err = cli_error(cli, [str(log), "--group-by", "seed", *out], capsys)
    assert "seed is what each group averages over" in err
    err = cli_error(cli, [str(log), "--ignore", "algo", *out], capsys)
    assert "--ignore algo" in err and "--algo" in err


def test_colours_fixed_per_label_across_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log"
    for coef in (0.5, 1.0):
        for seed in (0, 1):
            for task in TASKS:
                write_full_run(sweep_point(log, penalty_coef=coef), task, "mopo", seed, coef, {"penalty_coef": coef})
    for seed in (0, 1):  # micro only on hopper: per-figure colours would shift mopo's between the two figures
        write_full_run(log, "hopper-medium-v2", "micro", seed, 5.0)
    figures: dict[str, list[Any]] = {}
    monkeypatch.setattr(plot, "curves_with_bands", lambda path, lines, *rest: figures.setdefault(rest[-1], lines))
    plot.main([str(log), "--out", str(tmp_path / "plots")])
    styles = {task: {line.label: (line.color, line.linestyle) for line in lines} for task, lines in figures.items()}
    assert list(styles["hopper-medium-v2"]) == [
        "micro (2 seeds)",
        "mopo penalty_coef=0.5 (2 seeds)",
        "mopo penalty_coef=1 (2 seeds)",
    ]
    assert list(styles["walker2d-medium-v2"]) == ["mopo penalty_coef=0.5 (2 seeds)", "mopo penalty_coef=1 (2 seeds)"]
    for label, style in styles["walker2d-medium-v2"].items():
        assert styles["hopper-medium-v2"][label] == style
    colours = [colour for colour, _ in styles["hopper-medium-v2"].values()]
    assert len(set(colours)) == 3 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    # Two algorithms with several configurations each: one line style per algorithm keeps them apart.
    assert [style for _, style in styles["hopper-medium-v2"].values()] == ["-", "--", "--"]


def test_plot_and_score_over_train_seeds_and_sweep_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    task = "hopper-medium-v2"
    # train.py --seed 0, then train.py --seeds 1 2 (same layout); seed 0 from before dynamics.precision and the
    # termination block existed, which must read as their defaults.
    write_full_run(log, task, "mopo", 0, 60.0, {"penalty_coef": 2.5}, drop=("dynamics.precision", "termination"))
    for seed in (1, 2):
        write_full_run(log, task, "mopo", seed, 60.0 + seed, {"penalty_coef": 2.5, "save_every": 1})
    write_full_run(log, task, "bc", 0, 30.0)  # another algorithm, no penalty_coef at all
    # sweep.py --grid penalty_coef=0.5 --seeds 0 1 (the same seeds as the train.py runs), and a sweep without --grid.
    for seed in (0, 1):
        write_full_run(sweep_point(log, penalty_coef=0.5), task, "mopo", seed, 50.0 + seed, {"penalty_coef": 0.5})
        write_full_run(log, "walker2d-medium-v2", "mopo", seed, 70.0 + seed)
    out = tmp_path / "scores.md"
    scores = {(s.task, s.label): (s.seeds, s.values) for s in score.main([str(log), "--out", str(out)])}
    assert scores == {
        (task, "bc"): ((0,), pytest.approx([30.0])),
        (task, "mopo penalty_coef=0.5"): ((0, 1), pytest.approx([50.0, 51.0])),
        (task, "mopo penalty_coef=2.5"): ((0, 1, 2), pytest.approx([60.0, 61.0, 62.0])),
        ("walker2d-medium-v2", "mopo"): ((0, 1), pytest.approx([70.0, 71.0])),
    }
    lines = out.read_text().splitlines()
    assert lines[2] == "| task | bc | mopo | mopo penalty_coef=0.5 | mopo penalty_coef=2.5 |"
    assert lines[4] == f"| {task} | 30.0 ± 0.0 (1) | – | 50.5 ± 0.5 (2) | 61.0 ± 0.8 (3) |"
    assert lines[5] == "| walker2d-medium-v2 | – | 70.5 ± 0.5 (2) | – | – |"
    rows = read_csv(out.with_suffix(".csv"))
    assert [(r["task"], r["algo"], r["penalty_coef"]) for r in rows] == [
        (task, "bc", ""),
        (task, "mopo", "0.5"),
        (task, "mopo", "2.5"),
        ("walker2d-medium-v2", "mopo", ""),
    ]

    figures = plot.main([str(log), "--out", str(tmp_path / "plots")])
    assert [p.name for p in figures] == [f"{t}.png" for t in TASKS] and all(p.is_file() for p in figures)
    series, _ = metric_series(find_runs([str(log)]), "normalized_score_mean")
    curves = {(c.task, c.label): c for c in learning_curves(series, window=1)}
    assert curves[task, "mopo penalty_coef=2.5"].mean == pytest.approx(np.full(5, 61.0))
    assert curves[task, "mopo penalty_coef=2.5"].num_seeds == 3
    assert "note:" not in capsys.readouterr().err


def test_group_runs_rejects_unknown_keys_directly(log_root: Path) -> None:
    runs = find_runs([str(log_root)])
    with pytest.raises(UserError, match="--group-by rollout_lenght: no run config has this key.*rollout_length"):
        group_runs(runs, group_by=["rollout_lenght"])


# ------------------------------------------------------------------------------------ a folder of many algorithms

PENDULUM = "CustomPendulum-v0"


def write_steps_run(
    root: Path, task: str, algo: str, seed: int, steps: list[int], values: list[float], returns: list[float]
) -> Path:
    """A run evaluated at `steps` (gradient steps, iterations or a study's single result) with these normalized
    scores and returns."""
    run = root / task / algo / f"seed{seed}-20260101-000000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"task": task, "algo": algo, "seed": seed}))
    with open(run / "progress.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PROGRESS_COLUMNS)
        for i, (step, value, ret) in enumerate(zip(steps, values, returns)):
            writer.writerow([i + 1, step, ret, 1.0, value, 0.1, 200, 1.0])
    return run


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """What a shared log folder holds: BC (5 evaluations at gradient steps, loss/critic in TensorBoard), MOReL (5 at
    iterations 1-5) and WMOPO Pendulum study runs (one result at iteration 0, normalized score NaN, `result/*` in
    TensorBoard; seed 2 not evaluated yet)."""
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path / "log"
    for seed in (0, 1):
        bc = write_steps_run(root, "hopper-medium-gen", "bc", seed, list(STEPS), [30.0 + seed] * 5, [900.0] * 5)
        with SummaryWriter(str(bc)) as writer:
            writer.add_scalar("loss/critic", 1.0 + seed, 1000)
        write_steps_run(root, "hopper-medium-gen", "morel", seed, [1, 2, 3, 4, 5], [40.0 + seed] * 5, [1200.0] * 5)
        study = write_steps_run(root, PENDULUM, "wmopo-erm", seed, [0], [float("nan")], [-70.0 - seed])
        with SummaryWriter(str(study)) as writer:
            writer.add_scalar("result/evaluation_error", 55.0 + seed, 0)
            writer.add_scalar("result/real_return", -13.0 - seed, 0)
    write_steps_run(root, PENDULUM, "wmopo-erm", 2, [], [], [])
    return root


def suggested_command(err: str, script: str) -> list[str]:
    """The arguments of the `python <script> ...` command a message suggests, ready for that script's main."""
    found = re.search(rf"python {script} (.+)$", err, re.MULTILINE)
    assert found, err
    return shlex.split(found.group(1))


def test_score_last_k_leaves_out_runs_with_fewer_evaluations(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.md"
    scores = score.main([str(mixed_root), "--last", "2", "--out", str(out)])
    assert [(s.task, s.algo, s.values) for s in scores] == [
        ("hopper-medium-gen", "bc", pytest.approx((30.0, 31.0))),
        ("hopper-medium-gen", "morel", pytest.approx((40.0, 41.0))),
    ]
    err = capsys.readouterr().err
    assert f"left out 2 runs with fewer than --last 2 evaluations (they have 1): {PENDULUM}/wmopo-erm seeds 0,1" in err
    table = out.read_text()
    assert PENDULUM not in table and "| hopper-medium-gen | 30.5 ± 0.5 (2) | 40.5 ± 0.5 (2) |" in table
    err = cli_error(score, [str(mixed_root), "--last", "6", "--out", str(out)], capsys)
    assert "none of the 6 runs with normalized_score_mean has 6 evaluations (the most is 5)" in err


def test_score_shows_n_a_where_runs_have_no_normalized_score(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "scores.md"
    scores = score.main([str(mixed_root), "--out", str(out)])
    assert [s.num_seeds for s in scores if s.task == PENDULUM] == [2]
    table = out.read_text()
    assert "nan ±" not in table.lower()
    assert f"| {PENDULUM} | – | – | n/a (2) |" in table
    assert f"n/a: normalized_score_mean is NaN in every seed of these runs: {PENDULUM}/wmopo-erm seeds 0,1." in table
    err = capsys.readouterr().err
    assert f"left out 1 runs with no evaluation yet: {PENDULUM}/wmopo-erm seed 2" in err
    assert "they have no normalized score; their returns: python score.py" in err
    # The command the note suggests works as given (run where its default --out lands in a scratch directory).
    monkeypatch.chdir(tmp_path)
    (returns,) = score.main(suggested_command(err, "score.py"))
    assert (returns.task, returns.values) == (PENDULUM, pytest.approx((-70.0, -71.0)))
    assert f"| {PENDULUM} | -70.5 ± 0.5 (2) |" in (tmp_path / "plots" / "scores.md").read_text()


def test_score_says_a_metric_is_missing_from_runs_that_were_evaluated(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.md"
    (study,) = score.main([str(mixed_root), "--metric", "result/evaluation_error", "--out", str(out)])
    assert study.values == pytest.approx((55.0, 56.0))
    err = capsys.readouterr().err
    assert "left out 4 runs with no evaluation yet" not in err  # they were evaluated, just not on this metric
    assert (
        "left out 4 runs that do not log result/evaluation_error (only wmopo-erm runs here do): "
        "hopper-medium-gen/bc seeds 0,1; hopper-medium-gen/morel seeds 0,1"
    ) in err
    assert f"left out 1 runs with no evaluation yet: {PENDULUM}/wmopo-erm seed 2" in err
    assert f"| {PENDULUM} | 55.5 ± 0.5 (2) |" in out.read_text()


def test_plot_writes_no_empty_figure_and_says_why(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    written = plot.main([str(mixed_root), "--out", str(out)])
    assert [p.name for p in written] == ["hopper-medium-gen.png"]
    assert sorted(p.name for p in out.iterdir()) == ["hopper-medium-gen.png"]  # no legend-only Pendulum figure
    err = capsys.readouterr().err
    assert f"nothing to plot for {PENDULUM}/wmopo-erm seeds 0,1: they logged normalized_score_mean as NaN only" in err
    # Its suggestion draws them.
    again = plot.main(suggested_command(err, "plot.py"))
    assert [p.name for p in again] == [f"{PENDULUM}_return_mean.png", "hopper-medium-gen_return_mean.png"]
    capsys.readouterr()

    only_study = tmp_path / "study_plots"
    err = cli_error(plot, [str(mixed_root / PENDULUM), "--out", str(only_study)], capsys)
    assert err.startswith("error: nothing to plot: every run with normalized_score_mean logged it as NaN only")
    assert f"({PENDULUM}/wmopo-erm seeds 0,1)" in err and not only_study.exists()
    assert [p.name for p in plot.main(suggested_command(err, "plot.py"))] == [f"{PENDULUM}_return_mean.png"]

    written = plot.main([str(mixed_root), "--metric", "result/evaluation_error", "--out", str(out)])
    assert [p.name for p in written] == [f"{PENDULUM}_result_evaluation_error.png"]
    err = capsys.readouterr().err
    assert "left out 4 runs that do not log result/evaluation_error (only wmopo-erm runs here do)" in err


def test_plot_never_puts_two_step_units_on_one_axis(
    mixed_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import utils.plotting

    drawn: dict[str, list[tuple[str, list[str]]]] = {}
    save = utils.plotting._save

    def record(fig: Any, path: Any) -> None:  # what each saved figure's axes show, read from the figure itself
        axes = [(ax.get_xlabel(), [t.get_text() for t in ax.get_legend().get_texts()]) for ax in fig.axes]
        drawn[Path(path).name] = axes
        save(fig, path)

    monkeypatch.setattr(utils.plotting, "_save", record)
    written = plot.main([str(mixed_root), "--out", str(tmp_path / "plots"), "--smooth", "1"])
    assert written[0].is_file()
    assert drawn == {
        "hopper-medium-gen.png": [
            ("Gradient steps", ["bc (2 seeds)"]),
            ("Iterations", ["morel (2 seeds)"]),
        ]
    }


def test_plot_misspelt_metric_suggests_close_names_in_one_short_line(
    mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    err = cli_error(plot, [str(mixed_root), "--metric", "loss/critc", "--out", str(out)], capsys)
    assert err == "error: no run logged the metric 'loss/critc'; did you mean loss/critic?"
    err = cli_error(plot, [str(mixed_root), "--metric", "nothing/like/it", "--out", str(out)], capsys)
    assert "normalized_score_mean" in err and "3 TensorBoard tags under loss/ (1), result/ (2)" in err
    assert len(err) < 250 and not out.exists()


@pytest.mark.parametrize(
    ("figures", "needs"),
    [
        ("mago", "MAGO runs (algo mago)"),
        ("wmopo-em", "WMOPO (D4RL-style) runs (algo wmopo)"),
        ("wmopo", "WMOPO Pendulum study runs (algo wmopo-alg1, wmopo-alg1-detached, wmopo-alg2, wmopo-erm)"),
        ("wmopo-states", "WMOPO Pendulum study runs (algo wmopo-alg1"),
    ],
)
def test_plot_figure_sets_name_the_runs_they_need(
    figures: str, needs: str, mixed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    bc_runs = str(mixed_root / "hopper-medium-gen" / "bc")
    err = cli_error(plot, [bc_runs, "--figures", figures, "--out", str(out)], capsys)
    assert f"--figures {figures} draws {needs}" in err and "the 2 runs given are bc runs" in err
    assert not out.exists()
