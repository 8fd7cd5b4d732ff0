"""Final-score table over tasks x groups: mean ± std over seeds of each seed's mean of its last K evaluations.

python score.py log/                                   # D4RL normalized scores, last evaluation of each seed
python score.py "log/*-medium-v2/*/seed*" --last 10    # mean of each seed's last 10 evaluations
python score.py log/ --raw --out results/returns.md    # raw returns instead of normalized scores
python score.py log/ --group-by penalty_coef            # one column per algo and penalty_coef
python score.py log/CustomPendulum-v0 --metric result/evaluation_error   # any logged scalar, last value per seed
python score.py results/                               # the published runs (docs/results.md)
python score.py publish log/hopper-medium-gen/mopo/seed0-20261121-120000 [--label L]   # publish finished runs
python score.py tables [--check]                       # README's and docs' results tables from the registry

Never the maximum over training. Cells read `72.3 ± 4.1 (3)`: mean ± std (numpy's, ddof=0) over seeds, and the seed
count. Runs are grouped as plot.py groups them: by task, algorithm and the config keys whose values differ between
the runs of that task and algorithm (run bookkeeping aside), or exactly `--group-by KEY...`, less `--ignore KEY...`;
each group is a column labelled `mopo penalty_coef=0.5`. The Markdown table goes to stdout and to --out (.md); a CSV
beside it (same name, .csv) has one row per group with a column per grouping key, mean, std, n_seeds and the
per-seed values.

Each run's provenance.json names the dataset it learned from by a content hash. A column that would average runs
made on different data (a regenerated or replaced dataset) is refused unless --allow-mixed-data; where the columns of
one task learned from different data, its cells show `[data 1a2b3c4d5e6f]`, and the CSV has each group's hash. Runs
without provenance.json (made before runs recorded it) count as unknown data: noted when the table also has runs of
known data, never refused.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

import algos  # noqa: F401  (registers every algorithm's config class, which run configs are read with)
from utils.checkpoint import atomic_write
from utils.errors import UserError, run_cli
from utils.provenance import UNKNOWN
from utils.publish import RESULTS_DIR, publish
from utils.runs import (
    DEFAULT_METRIC,
    RAW_METRIC,
    Group,
    Run,
    Score,
    Series,
    add_selection_arguments,
    averaged_over,
    data_notes,
    describe,
    filter_runs,
    final_scores,
    find_runs,
    group_data,
    group_runs,
    markdown_table,
    read_metric,
    resolve_keys,
    scores_csv,
    unfinished,
)
from utils.tables import read_figure_spec, regenerate

REPOSITORY = Path(__file__).resolve().parent  # where the tables' files (README.md, docs/...) lie


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories, roots to search, or globs of either")
    parser.add_argument("--last", type=int, default=1, metavar="K", help="mean of each seed's last K evaluations")
    parser.add_argument("--raw", action="store_true", help="raw returns (return_mean) instead of normalized scores")
    parser.add_argument(
        "--metric", help="any progress.csv column or TensorBoard scalar tag instead (e.g. result/evaluation_error)"
    )
    add_selection_arguments(parser)
    parser.add_argument(
        "--allow-mixed-data",
        action="store_true",
        help="average runs made on different data (dataset content hashes) instead of refusing",
    )
    parser.add_argument("--out", default="plots/scores.md", help="Markdown file; the CSV goes beside it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Score]:
    args = parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != ".md":
        raise UserError(f"--out {out} must end in .md (the CSV is written beside it with .csv)")
    if args.last < 1:
        raise UserError(f"--last is a number of evaluations, at least 1; got {args.last}")
    runs = filter_runs(find_runs(args.runs), args.task, args.algo)
    resolve_keys(args.group_by or [], runs, "--group-by")  # a misspelt key fails before any file is read
    resolve_keys(args.ignore, runs, "--ignore")
    if args.metric and args.raw:
        raise UserError("--raw and --metric both pick the metric; pass one of them")
    metric = args.metric or (RAW_METRIC if args.raw else DEFAULT_METRIC)
    read = read_metric(runs, metric)
    series, short = enough_evaluations(read.series, args.last, metric)
    groups = group_runs(series, args.group_by, args.ignore)  # may refuse: before any note, so a refusal is one line
    data = group_data(groups, args.allow_mixed_data)  # refuses a column over different data, unless allowed
    for line in read.notes():
        print(f"note: {line}", file=sys.stderr)
    if short:
        counts = " or ".join(map(str, sorted({len(read.series[run]) for run in short})))
        print(
            f"note: left out {len(short)} runs with fewer than --last {args.last} evaluations (they have {counts}): "
            f"{describe(short)}",
            file=sys.stderr,
        )
    running = unfinished(series)
    if running:
        print(
            f"note: {len(running)} runs stop short of their last epoch (running or killed): {describe(running)}",
            file=sys.stderr,
        )

    mixed = averaged_over(groups)
    if mixed:
        print(f"note: each column averages runs that differ in {', '.join(mixed)} (not grouped on)", file=sys.stderr)
    for line in data_notes_lines(groups, data):
        print(f"note: {line}", file=sys.stderr)
    scores = final_scores(series, args.last, groups)
    what = args.metric or ("Return" if args.raw else "D4RL normalized score")
    last = "last evaluation" if args.last == 1 else f"mean over its last {args.last} evaluations"
    notes = data_notes(data)
    caption = f"{what}: mean ± std over seeds (seed count) of each seed's {last}."
    if notes:
        caption += " [data X]: the data a cell's runs learned from (sha256 prefix), where a task's columns differ."
    by_label = {(group.task, group.label): value for group, value in data.items()}
    table = markdown_table(scores, caption, notes=notes)
    # Cells where every seed's value is NaN read n/a (format_cell); the table and a note say whose and why.
    not_available = [run for s, members in zip(scores, groups.values()) if np.isnan(s.values).all() for run in members]
    if not_available:
        table += f"\nn/a: {metric} is NaN in every seed of these runs: {describe(not_available)}.\n"
        print(f"note: {not_available_note(not_available, metric, args)}", file=sys.stderr)
    csv_text = scores_csv(scores, metric, args.last, by_label)
    atomic_write(out, lambda handle: handle.write(table.encode()))
    atomic_write(out.with_suffix(".csv"), lambda handle: handle.write(csv_text.encode()))
    print(table, end="")
    print(f"written: {out}, {out.with_suffix('.csv')}", file=sys.stderr)
    return scores


def data_notes_lines(groups: dict[Group, list[Run]], data: dict[Group, str]) -> list[str]:
    """What to say about the data behind the table: runs whose data is unknown (no provenance.json) among runs whose
    data is known (a table of older runs only has nothing to compare), and columns that average different data
    (--allow-mixed-data)."""
    lines = []
    runs = [run for members in groups.values() for run in members]
    unknown = [run for run in runs if run.data == UNKNOWN]
    if unknown and len(unknown) < len(runs):
        lines.append(
            f"{len(unknown)} runs have no provenance.json (made before runs recorded their data), so their data is "
            f"unknown and not compared with the others': {describe(unknown)}"
        )
    mixed = [group for group, value in data.items() if ";" in value]
    if mixed:
        names = "; ".join(f"{group.task} / {group.label}" for group in mixed)
        lines.append(f"--allow-mixed-data: these columns average runs made on different data: {names}")
    return lines


def enough_evaluations(series: dict[Run, Series], last: int, metric: str) -> tuple[dict[Run, Series], list[Run]]:
    """The runs with at least `last` evaluations, and those left out for having fewer (a study's single result, a
    run still early on); only when none has enough is it an error, naming the --last that would work."""
    short = [run for run, points in series.items() if len(points) < last]
    if len(short) == len(series):
        most = max(len(points) for points in series.values())
        raise UserError(
            f"none of the {len(series)} runs with {metric} has {last} evaluations (the most is {most}); "
            f"pass --last {most} or less"
        )
    return {run: points for run, points in series.items() if len(points) >= last}, short


def not_available_note(runs: list[Run], metric: str, args: argparse.Namespace) -> str:
    """Why cells read n/a and, for the default normalized score (NaN where a task or method has none, as the WMOPO
    Pendulum study), the command that scores those runs by their return: this one's selection and grouping, narrowed
    to their tasks."""
    note = f"{describe(runs)} logged {metric} as NaN (n/a in the table)"
    if metric != DEFAULT_METRIC:
        return note
    command = ["python", "score.py", *args.runs]
    command += [arg for task in sorted({run.task for run in runs}) for arg in ("--task", task)]
    command += [arg for algo in args.algo for arg in ("--algo", algo)]
    command += ["--raw"] + (["--last", str(args.last)] if args.last != 1 else [])
    command += ["--allow-mixed-data"] if args.allow_mixed_data else []
    command += (["--group-by", *args.group_by] if args.group_by else []) + (
        ["--ignore", *args.ignore] if args.ignore else []
    )
    return f"{note}: they have no normalized score; their returns: {shlex.join(command)}"


def publish_main(argv: list[str] | None = None) -> list[Path]:
    """`score.py publish`: copy finished runs into the results registry (utils/publish.py, docs/results.md)."""
    parser = argparse.ArgumentParser(
        prog="score.py publish",
        description="Copy finished runs (config.yaml, progress.csv, provenance.json) into the results registry, "
        "results/<task>/<label>/<run name>/ (docs/results.md). Unfinished runs and runs without provenance are "
        "refused before anything is copied.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories, roots to search, or globs of either")
    parser.add_argument("--label", help="the folder under the task (default: the run's algorithm), e.g. ALGO-tuned")
    parser.add_argument("--results", default=str(RESULTS_DIR), help="the registry's root (default: results/)")
    parser.add_argument(
        "--scalars",
        nargs="+",
        default=[],
        metavar="TAG",
        help="TensorBoard tags (or shell patterns, e.g. 'monitor/*') to keep in scalars.csv for plot.py --metric",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a different run published under the name")
    args = parser.parse_args(argv)
    return publish(args.runs, args.results, args.label, args.scalars, args.overwrite)


def tables_main(argv: list[str] | None = None, root: Path = REPOSITORY) -> list[str]:
    """`score.py tables`: regenerate the results tables in README and docs from the registry (utils/tables.py)."""
    parser = argparse.ArgumentParser(
        prog="score.py tables",
        description="Rewrite every generated results table (the blocks results/tables.yaml names in README.md and "
        "docs/) and draw each registry task's learning curves, from the published runs in the registry "
        "(docs/results.md#tables-and-figures-from-the-registry).",
    )
    parser.add_argument("--results", default=str(RESULTS_DIR), help="the registry's root (default: results/)")
    parser.add_argument(
        "--check", action="store_true", help="rewrite nothing; exit 1 and print the difference where a block is stale"
    )
    parser.add_argument("--no-figures", action="store_true", help="tables only: leave the learning-curve figures")
    args = parser.parse_args(argv)
    results = Path(args.results)
    stale = regenerate(results, root, check=args.check)
    if args.check and stale:
        print("\n".join(stale))
        raise SystemExit(f"{len(stale)} files hold tables that differ from the registry; run python score.py tables")
    print(f"{'stale' if args.check else 'rewritten'}: {', '.join(stale)}" if stale else "every table is up to date")
    figures = None if args.check or args.no_figures else read_figure_spec(results)
    if figures is not None:
        import plot  # the figures are plot.py's own; only this subcommand needs matplotlib

        out = root / figures.out
        for task in sorted(path.name for path in results.iterdir() if path.is_dir()):
            written = plot.main([str(results / task), "--smooth", str(figures.smooth), "--out", str(out)])
            stale += [str(path) for path in written]
        print(f"figures: {out}")
    return stale


def cli() -> list[Score] | list[Path] | list[str]:
    """The script's entry point: `score.py publish ...` publishes, `score.py tables` writes the results tables,
    anything else scores."""
    if sys.argv[1:2] == ["publish"]:
        return publish_main(sys.argv[2:])
    if sys.argv[1:2] == ["tables"]:
        return tables_main(sys.argv[2:])
    return main()


if __name__ == "__main__":
    run_cli(cli)
