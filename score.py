"""Final-score table over tasks x groups: mean ± std over seeds of each seed's mean of its last K evaluations.

python score.py log/                                   # D4RL normalized scores, last evaluation of each seed
python score.py "log/*-medium-v2/*/seed*" --last 10    # mean of each seed's last 10 evaluations
python score.py log/ --raw --out results/returns.md    # raw returns instead of normalized scores
python score.py log/ --group-by penalty_coef            # one column per algo and penalty_coef
python score.py log/CustomPendulum-v0 --metric result/evaluation_error   # any logged scalar, last value per seed

Never the maximum over training. Cells read `72.3 ± 4.1 (3)`: mean ± std (numpy's, ddof=0) over seeds, and the seed
count. Runs are grouped as plot.py groups them: by task, algorithm and the config keys whose values differ between
the runs of that task and algorithm (run bookkeeping aside), or exactly `--group-by KEY...`, less `--ignore KEY...`;
each group is a column labelled `mopo penalty_coef=0.5`. The Markdown table goes to stdout and to --out (.md); a CSV
beside it (same name, .csv) has one row per group with a column per grouping key, mean, std, n_seeds and the
per-seed values.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from utils.checkpoint import atomic_write
from utils.errors import UserError, run_cli
from utils.runs import (
    DEFAULT_METRIC,
    RAW_METRIC,
    Run,
    Score,
    Series,
    add_selection_arguments,
    averaged_over,
    describe,
    filter_runs,
    final_scores,
    find_runs,
    group_runs,
    markdown_table,
    read_metric,
    resolve_keys,
    scores_csv,
    unfinished,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories, roots to search, or globs of either")
    parser.add_argument("--last", type=int, default=1, metavar="K", help="mean of each seed's last K evaluations")
    parser.add_argument("--raw", action="store_true", help="raw returns (return_mean) instead of normalized scores")
    parser.add_argument(
        "--metric", help="any progress.csv column or TensorBoard scalar tag instead (e.g. result/evaluation_error)"
    )
    add_selection_arguments(parser)
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
    scores = final_scores(series, args.last, groups)
    what = args.metric or ("Return" if args.raw else "D4RL normalized score")
    last = "last evaluation" if args.last == 1 else f"mean over its last {args.last} evaluations"
    table = markdown_table(scores, f"{what}: mean ± std over seeds (seed count) of each seed's {last}.")
    # Cells where every seed's value is NaN read n/a (format_cell); the table and a note say whose and why.
    not_available = [run for s, members in zip(scores, groups.values()) if np.isnan(s.values).all() for run in members]
    if not_available:
        table += f"\nn/a: {metric} is NaN in every seed of these runs: {describe(not_available)}.\n"
        print(f"note: {not_available_note(not_available, metric, args)}", file=sys.stderr)
    csv_text = scores_csv(scores, metric, args.last)
    atomic_write(out, lambda handle: handle.write(table.encode()))
    atomic_write(out.with_suffix(".csv"), lambda handle: handle.write(csv_text.encode()))
    print(table, end="")
    print(f"written: {out}, {out.with_suffix('.csv')}", file=sys.stderr)
    return scores


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
    command += (["--group-by", *args.group_by] if args.group_by else []) + (
        ["--ignore", *args.ignore] if args.ignore else []
    )
    return f"{note}: they have no normalized score; their returns: {shlex.join(command)}"


if __name__ == "__main__":
    run_cli(main)
