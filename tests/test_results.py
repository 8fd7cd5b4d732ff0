"""The data behind score.py's tables (runs made on different data are not averaged unless asked) and the results
registry: `score.py publish` refuses unfinished runs and runs without provenance, and plot.py and score.py read
what it publishes like any folder of runs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_DATASET_TASK, TINY_MOPO_SETTINGS, write_run

import plot
import score
import train
from utils.provenance import PROVENANCE_FILE
from utils.runs import find_runs, read_metric

REPO = Path(__file__).resolve().parents[1]
TASK = "hopper-medium-v2"
DATA_A, DATA_B = "a" * 64, "b" * 64


def fake_run(root: Path, algo: str, seed: int, data: str | None, values: tuple[float, ...] = (10.0, 20.0)) -> Path:
    """A run directory with two evaluations and, unless `data` is None, a provenance.json naming its data."""
    config = {"task": TASK, "algo": algo, "seed": seed, "epochs": len(values), "steps_per_epoch": 1000}
    dataset = None if data is None else {"name": TASK, "path": "/data/x.hdf5", "sha256": data, "transitions": 10}
    run = root / TASK / algo / f"seed{seed}-20260101-000000"
    return write_run(run, config, [100 * value for value in values], [value + seed for value in values], dataset)


def score_rows(out: Path) -> list[dict[str, str]]:
    with open(out.with_suffix(".csv"), newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------- data in tables


def test_a_column_over_different_data_is_refused_unless_allowed(tmp_path: Path, capsys, cli_error) -> None:
    log = tmp_path / "log"
    for seed, data in ((0, DATA_A), (1, DATA_A), (2, DATA_B)):
        fake_run(log, "mopo", seed, data)
    out = tmp_path / "scores.md"
    err = cli_error(lambda: score.main([str(log), "--out", str(out)]))
    assert f"{TASK} / mopo" in err and "different data" in err
    assert f"sha256 {DATA_A[:12]} in seeds 0,1" in err and f"sha256 {DATA_B[:12]} in seed 2" in err
    assert "--allow-mixed-data" in err and not out.exists()

    (mopo,) = score.main([str(log), "--out", str(out), "--allow-mixed-data"])  # the flag the refusal names works
    assert mopo.seeds == (0, 1, 2)
    assert f"[data {DATA_A[:12]}, {DATA_B[:12]}]" not in out.read_text()  # one column: nothing to tell apart
    assert score_rows(out)[0]["data"] == f"{DATA_A};{DATA_B}"
    assert "average runs made on different data: hopper-medium-v2 / mopo" in capsys.readouterr().err


def test_columns_on_different_data_show_their_hashes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    for seed in (0, 1):
        fake_run(log, "mopo", seed, DATA_A)
        fake_run(log, "micro", seed, DATA_B)
    out = tmp_path / "scores.md"
    score.main([str(log), "--out", str(out)])
    table = out.read_text()
    assert f"(2) [data {DATA_B[:12]}] |" in table and f"(2) [data {DATA_A[:12]}] |" in table
    assert "[data X]" in table.splitlines()[0]  # the caption says what the brackets are
    assert {row["algo"]: row["data"] for row in score_rows(out)} == {"micro": DATA_B, "mopo": DATA_A}


def test_same_data_shows_no_hash_and_runs_without_provenance_are_noted(tmp_path: Path, capsys) -> None:
    log = tmp_path / "log"
    for seed in (0, 1):
        fake_run(log, "mopo", seed, DATA_A)
        fake_run(log, "micro", seed, DATA_A)
    fake_run(log, "micro", 2, None)  # an older run: unknown data, averaged and noted
    out = tmp_path / "scores.md"
    scores = {s.algo: s for s in score.main([str(log), "--out", str(out)])}
    assert scores["micro"].seeds == (0, 1, 2)
    assert "[data" not in out.read_text()
    err = capsys.readouterr().err
    assert "1 runs have no provenance.json" in err and "hopper-medium-v2/micro seed 2" in err
    assert {row["data"] for row in score_rows(out)} == {DATA_A}


# -------------------------------------------------------------------------------------------------------- publish


@pytest.fixture(scope="module")
def finished_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MOPO run trained to its end by train.py (2 epochs), with its provenance."""
    log_dir = tmp_path_factory.mktemp("publish_runs")
    argv = ["--task", TINY_DATASET_TASK, "--algo", "mopo", "--seed", "0", "--log-dir", str(log_dir), "--no-progress",
            "--set", "epochs=2", *TINY_MOPO_SETTINGS]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
        train.main(argv)
    (run_dir,) = (log_dir / TINY_DATASET_TASK / "mopo").iterdir()
    return run_dir


def copy_of(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where / run_dir.name))


def edit_provenance(run_dir: Path, change) -> None:
    path = run_dir / PROVENANCE_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_publish_then_score_and_plot_read_the_registry(finished_run: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    (published,) = score.publish_main([str(finished_run), "--results", str(results), "--scalars", "loss/*"])
    assert published == results / TINY_DATASET_TASK / "mopo" / finished_run.name
    assert sorted(path.name for path in published.iterdir()) == [
        "config.yaml",
        "progress.csv",
        PROVENANCE_FILE,
        "scalars.csv",
    ]
    for name in ("config.yaml", "progress.csv", PROVENANCE_FILE):
        assert (published / name).read_bytes() == (finished_run / name).read_bytes()
    assert sum(path.stat().st_size for path in published.iterdir()) < 200_000

    original = score.main([str(finished_run), "--out", str(tmp_path / "log.md")])
    registry = score.main([str(results), "--out", str(tmp_path / "results.md")])
    assert [(s.task, s.algo, s.seeds, s.values) for s in registry] == [
        (s.task, s.algo, s.seeds, s.values) for s in original
    ]
    assert (
        score_rows(tmp_path / "results.md")[0]["data"]
        == json.loads((finished_run / PROVENANCE_FILE).read_text())["dataset"]["sha256"]
    )
    (curve,) = plot.main([str(results), "--smooth", "1", "--out", str(tmp_path / "plots")])
    assert curve.is_file()
    # A TensorBoard curve comes from scalars.csv, the same points the event files hold.
    from_events = read_metric(find_runs([str(finished_run)]), "loss/critic").series
    from_registry = read_metric(find_runs([str(results)]), "loss/critic").series
    ((_, expected),) = from_events.items()
    ((_, published_series),) = from_registry.items()
    assert list(published_series.steps) == list(expected.steps)
    assert list(published_series.values) == list(expected.values)
    (figure,) = plot.main([str(results), "--metric", "loss/critic", "--out", str(tmp_path / "plots")])
    assert figure.name.endswith("loss_critic.png")

    # Publishing again is a no-op; under another label it is a second column.
    assert score.publish_main([str(finished_run), "--results", str(results), "--scalars", "loss/*"]) == []
    score.publish_main([str(finished_run), "--results", str(results), "--label", "mopo-again"])
    assert (results / TINY_DATASET_TASK / "mopo-again" / finished_run.name / "progress.csv").is_file()


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda run: (run / PROVENANCE_FILE).unlink(), ["no provenance.json", "train it again"]),
        (
            lambda run: edit_provenance(run, lambda data: data["dataset"].update(sha256=None)),
            ["records no dataset hash"],
        ),
        (lambda run: edit_provenance(run, lambda data: data["git"].update(commit=None)), ["no git commit"]),
        (
            lambda run: edit_provenance(
                run, lambda data: data["resumes"].append({"git": {"commit": None, "dirty": None}})
            ),
            ["no git commit for (part of) its training"],
        ),
    ],
    ids=["no-provenance", "no-data-hash", "no-commit", "resumed-outside-git"],
)
def test_publish_refuses_runs_without_provenance(
    finished_run: Path, tmp_path: Path, cli_error, break_it, expected: list[str]
) -> None:
    run = copy_of(finished_run, tmp_path)
    break_it(run)
    results = tmp_path / "results"
    err = cli_error(lambda: score.publish_main([str(run), "--results", str(results)]))
    assert str(run) in err and all(text in err for text in expected), err
    assert not results.exists()


def test_publish_refuses_unfinished_runs_and_says_how_to_finish(finished_run: Path, tmp_path: Path, cli_error) -> None:
    run = copy_of(finished_run, tmp_path / "longer")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": 5}))
    good = copy_of(finished_run, tmp_path / "good")
    results = tmp_path / "results"
    err = cli_error(lambda: score.publish_main([str(good), str(run), "--results", str(results)]))
    assert f"{run} is unfinished (checkpointed 2 of 5 epochs)" in err
    assert f"python train.py --resume {run}" in err
    assert not results.exists()  # the finished run listed first was not published either

    # Evaluations lost after the last checkpoint: progress.csv stops short of the run's last step.
    cut = copy_of(finished_run, tmp_path / "cut")
    lines = (cut / "progress.csv").read_text().splitlines()
    (cut / "progress.csv").write_text("\n".join(lines[:-1]) + "\n")
    err = cli_error(lambda: score.publish_main([str(cut), "--results", str(results)]))
    assert "progress.csv stops at step 60 of 120" in err


def test_publish_never_replaces_another_run_silently(
    finished_run: Path, tmp_path: Path, cli_error, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    score.publish_main([str(finished_run), "--results", str(results)])
    other = copy_of(finished_run, tmp_path / "other")  # same name, another config file
    (other / "config.yaml").write_text((other / "config.yaml").read_text() + "# edited\n")
    capsys.readouterr()
    err = cli_error(lambda: score.publish_main([str(other), "--results", str(results)]))
    assert "already holds a different published run" in err and "--overwrite" in err
    target = results / TINY_DATASET_TASK / "mopo" / finished_run.name
    assert (target / "config.yaml").read_bytes() == (finished_run / "config.yaml").read_bytes()
    score.publish_main([str(other), "--results", str(results), "--overwrite"])
    assert (target / "config.yaml").read_bytes() == (other / "config.yaml").read_bytes()
    assert [path.name for path in target.parent.iterdir()] == [finished_run.name]  # nothing left behind

    capsys.readouterr()
    err = cli_error(lambda: score.publish_main([str(finished_run), "--results", str(results), "--label", "a/b"]))
    assert "--label 'a/b'" in err
    err = cli_error(lambda: score.publish_main([str(finished_run), "--results", str(results), "--scalars", "los/*"]))
    assert "--scalars los/*" in err and "loss/" in err


def test_score_py_publish_from_the_shell(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    (run / PROVENANCE_FILE).unlink()
    done = subprocess.run(
        [sys.executable, "score.py", "publish", str(run), "--results", str(tmp_path / "results")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and "no provenance.json" in done.stderr
