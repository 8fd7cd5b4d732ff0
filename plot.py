"""Learning curves over seeds: one PNG per task, one line per group (mean ± std over seeds).

python plot.py log/                                         # every run below log/, normalized score
python plot.py "log/hopper-*/*/seed*" --metric loss/critic --smooth 1
python plot.py log/ --task hopper-medium-v2 --algo mopo --algo micro --out figures/
python plot.py log/ --group-by penalty_coef            # one line per penalty_coef, whatever else differs
python plot.py log/ --ignore "dynamics.*" eval_episodes   # these never split lines
python plot.py log/ --algo mago --figures mago               # MAGO's README figures: adv-q, ensemble-std, reward

Runs are run directories, roots to search (every directory below holding config.yaml and progress.csv) or globs of
either. `--metric` is a progress.csv column (default normalized_score_mean) or any TensorBoard scalar tag (several
give one figure each); the x axis is the step it was logged at. `--figures mago` draws MAGO's three figures per
task: nature's value in the evaluation rollouts (monitor/adv_q_target/mean), the log ensemble std of its draws
(monitor/ensemble_std/mean) and the normalized score. Runs are grouped by task, algorithm and the config keys whose
values differ between the runs of that task and algorithm (run bookkeeping such as log_dir, device and save_every
aside), each line labelled `mopo penalty_coef=0.5`; `--group-by KEY...` groups by exactly those keys instead,
`--ignore KEY...` leaves keys out (dotted keys, blocks such as `dynamics`, or shell patterns). A label has one
colour in every figure. Each seed is smoothed with a trailing moving average over `--smooth` evaluations (1: none),
the seeds are aligned on the steps they all logged (intersection, nothing interpolated: the curve stops where the
shortest seed stops), and the line is their mean with a ±std band.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import algos  # noqa: F401  (registers every algorithm's config class, which run configs are read with)
from envs.tasks import get_task
from utils.algorithm_spec import RunFigure, Unit, figure_sets, known_algorithm
from utils.errors import UserError, run_cli
from utils.plotting import BandCurve, curves_in_panels, curves_with_bands, group_styles
from utils.runs import (
    DEFAULT_METRIC,
    RAW_METRIC,
    Run,
    add_selection_arguments,
    averaged_over,
    describe,
    filter_runs,
    find_runs,
    group_runs,
    learning_curves,
    read_metric,
    resolve_keys,
    settings_order,
)

AXIS_LABELS = {
    "normalized_score_mean": "Normalized score",
    "eval/normalized_episode_reward": "Normalized score",
    "return_mean": "Return",
    "eval/episode_reward": "Return",
    "length_mean": "Episode length",
    "eval/episode_length": "Episode length",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories, roots to search, or globs of either")
    parser.add_argument(
        "--metric", nargs="+", default=[DEFAULT_METRIC], help="progress.csv column(s) or TensorBoard scalar tag(s)"
    )
    sets = figure_sets()
    per_run = "".join(f"; {name}: {each.run_figure.help}" for name, (each, _) in sets.items() if each.run_figure)
    parser.add_argument("--figures", choices=sorted(sets), help=f"a named set of metrics (replaces --metric){per_run}")
    parser.add_argument(
        "--smooth",
        type=int,
        default=10,
        help="moving-average window in logged points, i.e. evaluations (default 10; 1: none)",
    )
    add_selection_arguments(parser)
    parser.add_argument("--single-figure", action="store_true", help="all runs in one figure (they must share a task)")
    parser.add_argument("--out", default="plots", help="output directory, or a .png file for a single figure")
    return parser.parse_args(argv)


def axis_label(metric: str) -> str:
    """The y-axis label of a metric: the shared ones above, those of the metrics an algorithm's figure sets draw
    (utils/algorithm_spec.py), else the metric's own name."""
    family = {key: label for figures, _ in figure_sets().values() for key, label in figures.axis_labels.items()}
    return {**AXIS_LABELS, **family}.get(metric, metric)


def figure_path(out: Path, task: str, metric: str, name: str | None = None) -> Path:
    """`<out>/<task>.png` for the default metric, `<out>/<task>_<metric>.png` otherwise (`/` becomes `_`; a metric
    that a figure set draws takes that figure's name), or `<out>/<task>_<name>.png` for a named figure."""
    if out.suffix.lower() == ".png":
        return out
    if name is not None:
        return out / f"{task}_{name}.png"
    named = {key: figure for figures, _ in figure_sets().values() for key, figure in figures.curves.items()}
    suffix = "" if metric == DEFAULT_METRIC else "_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", named.get(metric, metric))
    return out / f"{task}{suffix}.png"


def x_unit(task: str, algo: str, metric: str) -> str:
    """What the logged step of one algorithm's runs counts, i.e. its x axis, as its record says (gradient steps,
    NPG iterations, environment samples, the study's model index); dynamics epochs for the model fit's curves of
    gradient-step algorithms. An algorithm this code lacks counts environment samples on online tasks, else
    gradient steps."""
    spec = known_algorithm(algo)
    unknown = Unit.ENV_SAMPLES if spec is None and get_task(task).online else Unit.GRADIENT_STEPS
    unit = unknown if spec is None else spec.unit
    if unit is Unit.GRADIENT_STEPS and metric.startswith("dynamics/"):
        return "Dynamics model epochs"
    return unit.value


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.smooth < 1:
        raise UserError(f"--smooth is a window of evaluations, at least 1 (1: no smoothing); got {args.smooth}")
    runs = filter_runs(find_runs(args.runs), args.task, args.algo)
    resolve_keys(args.group_by or [], runs, "--group-by")  # a misspelt key fails before any file is read
    resolve_keys(args.ignore, runs, "--ignore")
    out = Path(args.out)
    tasks = sorted({run.task for run in runs})
    if (args.single_figure or out.suffix.lower() == ".png") and len(tasks) > 1:
        why = "--single-figure" if args.single_figure else f"--out {out}"
        raise UserError(
            f"{why} would mix runs of different tasks into one figure: {', '.join(tasks)}; pick one with --task"
        )

    names: dict[str, str | None] = dict.fromkeys(args.metric)
    if args.figures:
        check_figure_runs(args.figures, runs)
        figures, owners = figure_sets()[args.figures]
        if figures.run_figure is not None:
            return [run_figure(run, out, figures.run_figure) for run in runs if run.algo in owners]
        names = dict(figures.curves)
    if out.suffix.lower() == ".png" and len(names) > 1:
        raise UserError(
            f"--out {out} is one file, but {len(names)} metrics make {len(names)} figures; pass a directory"
        )
    written = []
    for metric, name in names.items():
        written += plot_metric(runs, metric, name, args, out)
    return written


def check_figure_runs(figures: str, runs: list[Run]) -> None:
    """A named figure set draws one family's metrics: refuse, in one line, runs of which none is of that family."""
    figure_set, names = figure_sets()[figures]
    what = figure_set.what
    if not any(run.algo in names for run in runs):
        given = ", ".join(sorted({run.algo for run in runs}))
        raise UserError(
            f"--figures {figures} draws {what} runs (algo {', '.join(sorted(names))}), but the {len(runs)} runs "
            f"given are {given} runs; pass {what} run directories"
        )


def plot_metric(runs: list, metric: str, name: str | None, args: argparse.Namespace, out: Path) -> list[Path]:
    """One figure per task for one metric; runs with nothing to draw are left out with a note saying why, and a task
    with nothing left gets no figure."""
    read = read_metric(runs, metric)
    nan_only = read.nan_only
    series = {run: points for run, points in read.series.items() if run not in nan_only}
    instead = f", e.g. {suggest_metric(args, RAW_METRIC)}" if metric == DEFAULT_METRIC else ""
    if not series:
        raise UserError(
            f"nothing to plot: every run with {metric} logged it as NaN only ({describe(nan_only)}); "
            f"plot another metric{instead}"
        )
    groups = group_runs(series, args.group_by, args.ignore)  # may refuse: before any note, so a refusal is one line
    for line in read.notes():
        print(f"note: {line}", file=sys.stderr)
    if nan_only:
        print(
            f"note: nothing to plot for {describe(nan_only)}: they logged {metric} as NaN only; plot another "
            f"metric for them{instead}",
            file=sys.stderr,
        )
    mixed = averaged_over(groups)
    if mixed:
        print(f"note: each line averages runs that differ in {', '.join(mixed)} (not grouped on)", file=sys.stderr)
    curves = learning_curves(series, args.smooth, groups)
    # Labels sorted by algorithm then settings (numbers numerically) over every task: one style per label per call.
    ordered = sorted(curves, key=lambda c: settings_order(c.algo, c.settings))
    styles = group_styles([(c.algo, c.label) for c in ordered])
    ylabel = axis_label(metric)
    written = []
    for task in sorted({c.task for c in curves}):
        panels: dict[str, list[BandCurve]] = {}  # x unit -> its lines: two units never share an axis
        for c in curves:
            if c.task == task:
                label = f"{c.label} ({c.num_seeds} seed{'s' * (c.num_seeds != 1)})"
                line = BandCurve(label, c.steps, c.mean, c.std, *styles[c.label])
                panels.setdefault(x_unit(task, c.algo, metric), []).append(line)
        path = figure_path(out, task, metric, name)
        if len(panels) == 1:
            ((unit, lines),) = panels.items()
            curves_with_bands(path, lines, unit, ylabel, task)
        else:
            curves_in_panels(path, list(panels.items()), ylabel, task)
        written.append(path)
        print(path)
    return written


def suggest_metric(args: argparse.Namespace, metric: str) -> str:
    """This call's command with `--metric metric` instead of its metric or figure set (a hint that works as given)."""
    command = ["python", "plot.py", *args.runs, "--metric", metric, "--smooth", str(args.smooth), "--out", args.out]
    command += [arg for task in args.task for arg in ("--task", task)]
    command += [arg for algo in args.algo for arg in ("--algo", algo)]
    command += ["--single-figure"] if args.single_figure else []
    command += (["--group-by", *args.group_by] if args.group_by else []) + (
        ["--ignore", *args.ignore] if args.ignore else []
    )
    return shlex.join(command)


def run_figure(run: Run, out: Path, figure: RunFigure) -> Path:
    """One run's figure of a per-run figure set (its algorithm draws it from the run's own files): `out` itself if
    it is a .png, else `<out>/<task>_<algo>_seed<N>_<name>.png`."""
    path = out if out.suffix.lower() == ".png" else out / f"{run.task}_{run.algo}_seed{run.seed}_{figure.name}.png"
    figure.draw(run.path, path, f"{run.algo} seed {run.seed}")
    print(path)
    return path


if __name__ == "__main__":
    run_cli(main)
