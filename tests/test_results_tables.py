"""Results tables generated from the registry (utils/tables.py, `score.py tables`): README's table is what the
committed registry gives, cells are last-5 means over seeds next to the baseline on the same data, and a stale or
unmarked file is reported in one line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_run

import score
from utils.errors import UserError
from utils.tables import BEGIN, END, read_specs, regenerate, render

REPO = Path(__file__).resolve().parents[1]
TASK = "hopper-medium-gen"
DATA_A, DATA_B = "a" * 64, "b" * 64
REFERENCE = {"episodes": 666, "episode_return_mean": 862.0, "episode_normalized_mean": 27.1}
REFERENCE["behaviour_normalized"] = 34.4


def published(
    root: Path, label: str, algo: str, seed: int, values: list[float], data: str = DATA_A, task: str = TASK
) -> Path:
    """A registry run as `score.py publish` leaves it: config.yaml, progress.csv (one evaluation per 1000 steps) and
    provenance.json with the dataset facts."""
    config = {"task": task, "algo": algo, "seed": seed, "epochs": len(values), "steps_per_epoch": 1000}
    dataset = {"name": task, "path": "/d.hdf5", "sha256": data, "transitions": 200_000, **REFERENCE}
    run = root / task / label / f"seed{seed}-20261207-000000"
    return write_run(run, config, [10 * value for value in values], values, dataset)


def registry(tmp_path: Path) -> Path:
    """MOPO seeds 0 and 1 and BC seeds 0 and 1 on one dataset; 6 evaluations each, so last-5 leaves out the first."""
    results = tmp_path / "results"
    published(results, "mopo-check-cpu", "mopo", 0, [99.0, 30.0, 30.0, 40.0, 40.0, 40.0])  # last 5: 36.0
    published(results, "mopo-check-cpu", "mopo", 1, [0.0, 20.0, 20.0, 20.0, 20.0, 20.0])  # last 5: 20.0
    published(results, "bc-check-cpu", "bc", 0, [1.0, 30.0, 30.0, 30.0, 30.0, 30.0])  # 30.0
    published(results, "bc-check-cpu", "bc", 1, [1.0, 32.0, 32.0, 32.0, 32.0, 32.0])  # 32.0
    (results / "tables.yaml").write_text("tables:\n  readme: {file: README.md, baseline: bc-check-cpu}\n")
    return results


def test_a_row_is_each_seeds_last_five_mean_next_to_the_baseline_on_the_same_data(tmp_path: Path) -> None:
    results = registry(tmp_path)
    (spec,) = read_specs(results)
    header, rule, *rows = render(spec, results).splitlines()
    assert "| BC |" in header and "beats BC?" in header and len(rows) == 1  # BC is the column, not a row
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells == [
        f"{TASK} (200k, sha256 {'a' * 12})",
        "MOPO",
        "**28.0 ± 8.0** (2)",  # seeds 36 and 20: mean 28, population std 8
        "36.0, 20.0",
        "6k steps",
        "31.0 ± 1.0 (2)",  # BC's seeds 30 and 32
        "34.4 / 27.1",  # behaviour policy / dataset episodes, from provenance
        "no (1 of 2 seeds)",  # 36 > 31, 20 < 31
        "no (1 of 2 seeds)",  # 36 > 34.4
    ]


def test_a_baseline_on_other_data_is_not_compared(tmp_path: Path) -> None:
    results = registry(tmp_path)
    published(results, "mopo-check-cpu", "mopo", 2, [5.0] * 6, data=DATA_B, task="walker2d-medium-gen")
    (spec,) = read_specs(results)
    rows = render(spec, results).splitlines()[2:]
    walker = next(row for row in rows if row.startswith("| walker2d"))
    cells = [cell.strip() for cell in walker.strip("|").split("|")]
    assert cells[5] == "–" and cells[7] == "n/a" and cells[8] == "no (0 of 1 seeds)"


def test_labels_choose_the_rows(tmp_path: Path) -> None:
    results = registry(tmp_path)
    published(results, "morel-check-cpu", "morel", 0, [40.0] * 6)
    spec = dataclasses.replace(read_specs(results)[0], labels=("morel-check-cpu",))
    rows = render(spec, results).splitlines()[2:]
    assert [row.split("|")[2].strip() for row in rows] == ["MOReL"]
    assert rows[0].split("|")[6].strip() == "31.0 ± 1.0 (2)"  # the baseline stays the column


def test_budgets_choose_the_rows_within_a_label(tmp_path: Path) -> None:
    """One label folder holding MOPO at two checks' budgets (6k and 8k steps): `budgets` keeps one group's row."""
    results = registry(tmp_path)
    published(results, "mopo-check-cpu", "mopo", 3, [10.0] * 8)  # another budget: its own group
    spec = read_specs(results)[0]
    budgets = [row.split("|")[5].strip() for row in render(spec, results).splitlines()[2:]]
    assert budgets == ["6k steps", "8k steps"]
    rows = render(dataclasses.replace(spec, budgets=("8k steps",)), results).splitlines()[2:]
    assert [row.split("|")[4].strip() for row in rows] == ["10.0"]


def test_regenerate_rewrites_the_block_and_check_reports_it_stale(tmp_path: Path) -> None:
    results = registry(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN.format(name='readme')}\nold rows\n{END.format(name='readme')}\n\nafter\n")
    (diff,) = regenerate(results, tmp_path, check=True)
    assert "-old rows" in diff and "+| hopper-medium-gen" in diff
    assert "old rows" in readme.read_text()  # check writes nothing
    assert regenerate(results, tmp_path) == [str(readme)]
    text = readme.read_text()
    assert "old rows" not in text and text.endswith("\nafter\n") and "**28.0 ± 8.0** (2)" in text
    assert regenerate(results, tmp_path, check=True) == []  # up to date now


def test_the_command_writes_the_tables_and_one_figure_per_task(tmp_path: Path) -> None:
    results = registry(tmp_path)
    with open(results / "tables.yaml", "a") as handle:
        handle.write("figures: {out: figures, smooth: 1}\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN.format(name='readme')}\n{END.format(name='readme')}\n")
    written = score.tables_main(["--results", str(results)], root=tmp_path)
    assert written == [str(readme), str(tmp_path / "figures" / f"{TASK}.png")]
    assert (tmp_path / "figures" / f"{TASK}.png").stat().st_size > 1000 and "| MOPO |" in readme.read_text()
    assert score.tables_main(["--results", str(results), "--check"], root=tmp_path) == []


def test_a_file_without_the_markers_is_one_line_naming_them(tmp_path: Path) -> None:
    results = registry(tmp_path)
    (tmp_path / "README.md").write_text("# no block here\n")
    with pytest.raises(UserError, match="needs the generated block 'readme' once"):
        regenerate(results, tmp_path)


def test_fewer_than_five_evaluations_are_refused(tmp_path: Path) -> None:
    results = registry(tmp_path)
    published(results, "mopo-check-cpu", "mopo", 2, [1.0, 2.0, 3.0])
    with pytest.raises(UserError, match="fewer than 5 evaluations"):
        render(read_specs(results)[0], results)


def test_readme_and_docs_tables_are_what_the_committed_registry_gives() -> None:
    """The repository's own tables: `python score.py tables --check` finds nothing stale."""
    done = subprocess.run(
        [sys.executable, "score.py", "tables", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
