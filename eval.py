"""Evaluate a trained run: clean score, sim2real physics shifts, observation attacks (MICRO's robustness suite).

python eval.py --run log/hopper-medium-gen/micro/seed0-20261121-120000 --choice clean
python eval.py --run RUN --choice sim2real                                   # friction x gravity, MICRO's grid
python eval.py --run RUN --choice sim2real --physics mass=0.5:1.5:5 friction=0.5,1,1.5
python eval.py --run RUN --choice attack --attack-mode min_Q                 # eps in linspace(0, 0.2, 10)
python eval.py --run RUN --choice attack --attack-mode action_diff --attack-steps 10   # + projected gradient steps

Values are `start:stop:num` (numpy.linspace) or a comma list, sorted and de-duplicated. Each setting plays
`--episodes` deterministic episodes side by side, reset with the same seeds in every setting. A choice's own flags
(the sim2real and attack groups of --help) given with another choice are refused, not ignored.

Outputs go to RUN/eval/ under a name (stem) that encodes every setting that changes the numbers, so evaluations with
different settings never overwrite each other and a re-run with the same settings replaces exactly its own files:

  clean      eval/clean_ep10.csv
  sim2real   eval/sim2real_friction=0.5-1.5x10_gravity=0.5-5x10_ep10.csv and .png (heatmap; a curve for one axis)
  attack     eval/attack-min_Q_eps=0-0.2x10_cand50_ep10.csv and .png (score against epsilon)

plus TensorBoard scalars in eval/tensorboard/STEM/ (tags STEM/normalized_mean, ...) and a table on stdout. Stem
tokens: `axis=START-STOPxNUM` (evenly spaced), `axis=a,b,c` (short list) or `axis=MIN-MAXxNUM~HASH` (long irregular
list: range, count and a hash of the exact values); `eps=...` likewise; `candK` (sampled candidates, action_diff and
min_Q), `pgdK` (gradient steps, when K > 0), `epN` (episodes), `seedS` (only when not the run's own seed),
`quirk-micro-gravity`. Every CSV row also records the settings (choice, task, algo, run, episodes, seed, and the
choice's own flags) next to its results.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from algos import load_run, run_evaluator
from algos.train_run import read_checkpoint
from envs import get_task, load_dataset
from envs.attacks import ATTACK_MODES, ObservationAttack, applicable_modes, mode_problem
from envs.physics import PHYSICS_AXES, check_axes, effective_scales, scaled_physics
from utils.checkpoint import atomic_write
from utils.errors import UserError, run_cli
from utils.plotting import curve_with_band, heatmaps

# MICRO's eval.py grids (docs/micro.md#robustness-evaluation).
DEFAULT_PHYSICS = {"friction": "0.5:1.5:10", "gravity": "0.5:5:10"}
DEFAULT_EPSILONS = "0:0.2:10"
DEFAULT_ATTACK_MODE = "random"
DEFAULT_CANDIDATES = 50  # as MICRO
# The flags that belong to one --choice, with their defaults. The parser leaves them None, so a flag the user gave is
# told from one left out: a flag given with another choice is refused, not silently ignored.
CHOICE_FLAGS: dict[str, dict[str, object]] = {
    "sim2real": {"physics": [], "micro_gravity_quirk": False, "vmin": None, "vmax": None},
    "attack": {
        "attack_mode": DEFAULT_ATTACK_MODE,
        "epsilons": DEFAULT_EPSILONS,
        "num_candidates": DEFAULT_CANDIDATES,
        "attack_steps": 0,
    },
}
# A comma list longer than this goes into file names as range, count and a hash of the exact values.
MAX_LISTED_CHARS = 24
QUIRK_TOKEN = "quirk-micro-gravity"


def parse_values(text: str, name: str) -> list[float]:
    """`start:stop:num` -> numpy.linspace(start, stop, num); `a,b,c` -> [a, b, c]; sorted and de-duplicated, so the
    same set of values always names the same output files. Values must be finite and non-negative (scales, budgets)."""
    try:
        if ":" in text:
            start, stop, num = text.split(":")
            if int(num) < 1:
                raise ValueError
            values = [float(v) for v in np.linspace(float(start), float(stop), int(num))]
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{name} {text!r} is not start:stop:num or a comma list of numbers, e.g. 0.5:1.5:10") from None
    if not all(np.isfinite(v) and v >= 0 for v in values):
        raise UserError(f"{name} {text!r} must hold finite, non-negative numbers")
    return sorted(set(values))


def parse_physics(items: Sequence[str]) -> dict[str, list[float]]:
    """`axis=values` items (default: MICRO's friction x gravity grid); axes not given stay at scale 1. Axes come back
    in the fixed order friction, gravity, mass, whatever order they were given in, so the file name and the figure
    (rows, columns, one panel per mass value) depend on the grid alone."""
    pairs = [item.partition("=") for item in items] if items else [(k, "=", v) for k, v in DEFAULT_PHYSICS.items()]
    parsed: dict[str, list[float]] = {}
    for axis, eq, values in pairs:
        if not eq:
            raise UserError(f"--physics {axis!r} is not axis=values; write e.g. --physics friction=0.5:1.5:10")
        check_axes({axis: 1.0})
        if axis in parsed:
            raise UserError(f"--physics gives {axis} twice; give each axis once, e.g. {axis}=0.5,1,1.5")
        parsed[axis] = parse_values(values, f"--physics {axis}")
    return {axis: parsed[axis] for axis in PHYSICS_AXES if axis in parsed}


def format_number(value: float) -> str:
    """The shortest decimal that reads back as exactly `value`, never in exponent form (no `-` or `+` in names)."""
    return np.format_float_positional(float(value), trim="-")


def compact_values(values: Sequence[float]) -> str:
    """A readable, filesystem-safe token that names exactly these sorted values: `1`, `0.5-1.5x10` (evenly spaced,
    numpy.linspace), `0.5,1,2` (a short list) or `0.1-3x7~1a2b3c4d` (range, count and a hash of the exact values)."""
    if len(values) == 1:
        return format_number(values[0])
    start, stop, num = values[0], values[-1], len(values)
    if num >= 3 and np.array_equal(np.linspace(start, stop, num), np.asarray(values, dtype=float)):
        return f"{format_number(start)}-{format_number(stop)}x{num}"
    listed = ",".join(format_number(v) for v in values)
    if len(listed) <= MAX_LISTED_CHARS:
        return listed
    digest = hashlib.sha256(",".join(repr(float(v)) for v in values).encode()).hexdigest()[:8]
    return f"{format_number(start)}-{format_number(stop)}x{num}~{digest}"


@dataclass(frozen=True)
class Evaluation:
    """Every setting that changes an evaluation's numbers: `stem` names its files, `columns` go into each CSV row and
    `caption` into its figure, so a file alone tells how it was made and no two settings share a file."""

    choice: str
    task: str
    algo: str
    run: str
    episodes: int
    seed: int
    run_seed: int
    axes: dict[str, list[float]] = field(default_factory=dict)  # sim2real
    micro_gravity_quirk: bool = False  # sim2real
    attack_mode: str = ""  # attack
    epsilons: list[float] = field(default_factory=list)  # attack
    num_candidates: int = 0  # attack
    attack_steps: int = 0  # attack

    @property
    def stem(self) -> str:
        if self.choice == "sim2real":
            tokens = ["sim2real", *(f"{axis}={compact_values(values)}" for axis, values in self.axes.items())]
        elif self.choice == "attack":
            tokens = [f"attack-{self.attack_mode}", f"eps={compact_values(self.epsilons)}"]
            if self.attack_mode != "random":  # random draws one perturbation; the candidate count plays no part
                tokens.append(f"cand{self.num_candidates}")
            if self.attack_steps:
                tokens.append(f"pgd{self.attack_steps}")
        else:
            tokens = [self.choice]
        tokens.append(f"ep{self.episodes}")
        if self.seed != self.run_seed:
            tokens.append(f"seed{self.seed}")
        if self.choice == "sim2real" and self.micro_gravity_quirk:
            tokens.append(QUIRK_TOKEN)
        return "_".join(tokens)

    def columns(self) -> dict[str, object]:
        """The settings shared by every row of the CSV (per-row grid values and results follow them)."""
        common: dict[str, object] = {
            "choice": self.choice,
            "task": self.task,
            "algo": self.algo,
            "run": self.run,
            "episodes": self.episodes,
            "seed": self.seed,
        }
        if self.choice == "sim2real":
            common["micro_gravity_quirk"] = self.micro_gravity_quirk
        elif self.choice == "attack":
            common.update(
                attack_mode=self.attack_mode, num_candidates=self.num_candidates, attack_steps=self.attack_steps
            )
        return common

    @property
    def caption(self) -> str:
        """The settings line under a figure's title."""
        parts = []
        if self.choice == "attack" and self.attack_mode != "random":
            parts.append(f"{self.num_candidates} candidates")
        if self.attack_steps:
            parts.append(f"{self.attack_steps} PGD steps")
        parts.append(f"{self.episodes} episode" + "s" * (self.episodes != 1))
        parts.append(f"seed {self.seed}" + (" (the run's)" if self.seed == self.run_seed else ""))
        if self.choice == "sim2real" and self.micro_gravity_quirk:
            parts.append("MICRO gravity quirk: gravity nominal on hopper/walker2d")
        return ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    """Every option's help states its default; which files a choice writes is in the description above."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory written by train.py (required)")
    parser.add_argument(
        "--choice",
        choices=("clean", "sim2real", "attack"),
        default="clean",
        help="clean: score without perturbation, writes eval/clean_epN.csv; sim2real: physics grid, writes "
        "eval/sim2real_<grid>_epN.csv and .png; attack: observation attack over --epsilons, writes "
        "eval/attack-<mode>_eps=<budgets>[_candK][_pgdK]_epN.csv and .png (default: %(default)s)",
    )
    parser.add_argument("--task", help="optional check: the run must have been trained on this task (default: none)")
    parser.add_argument(
        "--episodes", type=int, default=10, help="episodes per setting (default: %(default)s, as MICRO)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="episode reset seeds and attack noise; a seed other than the run's adds seedS to the file name "
        "(default: the run's seed)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the policy (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown on a tty)")

    sim2real = parser.add_argument_group("sim2real (--choice sim2real)")
    sim2real.add_argument(
        "--physics",
        nargs="+",
        metavar="AXIS=VALUES",
        help=f"grid over {', '.join(PHYSICS_AXES)} scales, VALUES as start:stop:num or a comma list; axes not given "
        "stay at 1 (default: MICRO's friction=0.5:1.5:10 gravity=0.5:5:10)",
    )
    sim2real.add_argument(
        "--micro-gravity-quirk",
        action="store_true",
        help="keep gravity nominal on hopper/walker2d, as MICRO's XML files (without gravity) did; adds "
        f"{QUIRK_TOKEN} to the file name and the figure (default: off, gravity is scaled)",
    )
    sim2real.add_argument(
        "--vmin",
        type=float,
        help="lower end of the heatmaps' shared colour range, to compare figures on one scale; changes the figure "
        "only, not the numbers or the file name (default: the lowest score over all panels)",
    )
    sim2real.add_argument(
        "--vmax",
        type=float,
        help="upper end of the heatmaps' shared colour range (default: the highest score over all panels)",
    )

    attack = parser.add_argument_group("attack (--choice attack)")
    attack.add_argument(
        "--attack-mode",
        choices=ATTACK_MODES,
        help=f"how δ is chosen, see docs/micro.md#robustness-evaluation (default: {DEFAULT_ATTACK_MODE})",
    )
    attack.add_argument(
        "--epsilons",
        help=f"attack budgets in units of the dataset's obs std, start:stop:num or a comma list (default: "
        f"{DEFAULT_EPSILONS})",
    )
    attack.add_argument(
        "--num-candidates",
        type=int,
        help=f"sampled perturbations per step for action_diff and min_Q (default: {DEFAULT_CANDIDATES}, as MICRO)",
    )
    attack.add_argument(
        "--attack-steps",
        type=int,
        help="projected gradient steps after sampling, for action_diff and min_Q (default: 0, sampling only)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with each choice's own flags refused under another choice, then set to their defaults."""
    args = build_parser().parse_args(argv)
    candidates_given = args.num_candidates is not None
    for choice, flags in CHOICE_FLAGS.items():
        given = [name for name in flags if getattr(args, name) not in (None, False)]
        if given and args.choice != choice:
            names = " and ".join(f"--{name.replace('_', '-')}" for name in given)
            raise UserError(
                f"{names} {'belongs' if len(given) == 1 else 'belong'} to --choice {choice}, not --choice "
                f"{args.choice}; drop {'it' if len(given) == 1 else 'them'} or pass --choice {choice}"
            )
        for name, default in flags.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
    if args.attack_mode == "random" and candidates_given:
        raise UserError(
            "--num-candidates applies to --attack-mode action_diff and min_Q; the random attack draws one "
            "perturbation, so drop it or pick one of those modes"
        )
    return args


def evaluate_settings(
    settings: Sequence[dict[str, float]],
    run_one: Callable[[dict[str, float]], dict[str, float]],
    description: str,
    progress: bool,
) -> list[dict[str, float]]:
    """One row per setting: the setting's values, then what `run_one` returns for it."""
    rows = []
    for setting in tqdm(settings, desc=description, unit="setting", disable=not progress, dynamic_ncols=True):
        rows.append({**setting, **run_one(setting)})
    return rows


def write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Atomically, so an interrupted re-run leaves the previous file whole."""
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))


def log_scalars(out_dir: Path, stem: str, rows: Sequence[Mapping[str, object]]) -> Path:
    """TensorBoard scalars (x: the setting's index) in out_dir/tensorboard/STEM/ under tags STEM/...: each evaluation
    is its own TensorBoard run with its own tags, and a re-run swaps in a freshly written directory, so its points
    replace the old ones instead of piling onto them, and other evaluations' events are never touched."""
    from torch.utils.tensorboard import SummaryWriter

    root = out_dir / "tensorboard"
    root.mkdir(parents=True, exist_ok=True)
    final = root / stem
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=root))
    try:
        with SummaryWriter(str(staging)) as writer:
            for index, row in enumerate(rows):
                for key in ("normalized_mean", "normalized_std", "return_mean"):
                    writer.add_scalar(f"{stem}/{key}", float(row[key]), index)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def table(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> str:
    """Rows of `keys` then the normalized score mean ± std."""
    header = "  ".join(f"{key:>9}" for key in keys) + "   normalized score"
    lines = [header]
    for row in rows:
        cells = "  ".join(f"{row[key]:9.3g}" for key in keys)
        lines.append(f"{cells}   {row['normalized_mean']:7.1f} ± {row['normalized_std']:.1f}")
    return "\n".join(lines)


def grid_table(rows: Sequence[dict[str, float]], row_axis: str, col_axis: str) -> str:
    """A matrix of normalized scores: one line per `row_axis` value, one column per `col_axis` value."""
    row_values = sorted({row[row_axis] for row in rows})
    col_values = sorted({row[col_axis] for row in rows})
    score = {(row[row_axis], row[col_axis]): row["normalized_mean"] for row in rows}
    lines = [f"{row_axis} \\ {col_axis}".ljust(18) + "".join(f"{v:7.3g}" for v in col_values)]
    for r in row_values:
        lines.append(f"{r:<18.3g}" + "".join(f"{score[(r, c)]:7.1f}" for c in col_values))
    return "\n".join(lines)


def sim2real_outputs(
    png: Path,
    rows: list[dict[str, float]],
    axes: dict[str, list[float]],
    title: str,
    vmin: float | None = None,
    vmax: float | None = None,
) -> str:
    """A curve for one varying axis, else heatmaps (rows x columns, one panel per value of a third axis) on one colour
    range shared by every panel and stated on the colour bar; returns the stdout summary."""
    varying = [axis for axis, values in axes.items() if len(values) > 1]
    fixed = [f"{axis} ×{format_number(values[0])}" for axis, values in axes.items() if len(values) == 1]
    if fixed and varying:
        title = f"{title}, {', '.join(fixed)}"
    if len(varying) <= 1:
        axis = varying[0] if varying else next(iter(axes))
        x = [row[axis] for row in rows]
        curve_with_band(
            png,
            x,
            [r["normalized_mean"] for r in rows],
            [r["normalized_std"] for r in rows],
            f"{axis} scale",
            "normalized score",
            title,
        )
        return table(rows, list(axes))
    row_axis, col_axis, *panel_axes = varying
    panels = list(itertools.product(*(axes[a] for a in panel_axes)))
    grids, panel_titles = [], []
    for panel in panels:
        fixed = dict(zip(panel_axes, panel))
        chosen = [r for r in rows if all(r[a] == v for a, v in fixed.items())]
        score = {(r[row_axis], r[col_axis]): r["normalized_mean"] for r in chosen}
        grids.append(np.array([[score[(i, j)] for j in axes[col_axis]] for i in axes[row_axis]]))
        panel_titles.append(", ".join(f"{a} ×{v:.3g}" for a, v in fixed.items()))
    low, high = heatmaps(
        png,
        grids,
        axes[row_axis],
        axes[col_axis],
        f"{row_axis} scale",
        f"{col_axis} scale",
        panel_titles,
        title,
        "normalized score",
        vmin=vmin,
        vmax=vmax,
    )
    summary = grid_table(rows, row_axis, col_axis) if not panel_axes else table(rows, list(axes))
    return f"{summary}\nheatmap colour range {low:.3g} to {high:.3g}" + (" (all panels)" if len(grids) > 1 else "")


def observation_std(cfg: Any, spec: Any, run_dir: Path) -> torch.Tensor:
    """Per-dimension std of the observations the policy learned from, the unit of attack budgets: the dataset's,
    or for an online run (no dataset) the real samples in its last checkpoint's buffer."""
    if spec.online:
        observations = read_checkpoint(run_dir / "checkpoints" / "checkpoint.pt")["path_buffer"]["data"][0]
        return observations.double().std(0, unbiased=False).float()
    dataset = load_dataset(spec, cfg.dataset_path, cfg.dataset_backend, cfg.download)
    return torch.as_tensor(np.asarray(dataset.observations, dtype=np.float64).std(0), dtype=torch.float32)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Run one evaluation; returns its CSV rows (settings, then results)."""
    args = parse_args(argv)
    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    for flag, value in (("--vmin", args.vmin), ("--vmax", args.vmax)):
        if value is not None and not np.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
    if args.vmin is not None and args.vmax is not None and args.vmin >= args.vmax:
        raise UserError(f"--vmin {args.vmin:g} must be below --vmax {args.vmax:g}")
    run_dir = Path(args.run)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for, but PyTorch sees no CUDA device; use --device cpu")
    cfg, algo = load_run(run_dir, device, args.task)
    spec = get_task(cfg.task)
    seed = cfg.seed if args.seed is None else args.seed
    progress = not args.no_progress and sys.stderr.isatty()
    out_dir = run_dir / "eval"
    name = f"{cfg.algo} on {cfg.task} ({run_dir.name})"
    common = {
        "choice": args.choice,
        "task": cfg.task,
        "algo": cfg.algo,
        "run": run_dir.name,
        "episodes": args.episodes,
        "seed": seed,
        "run_seed": cfg.seed,
    }

    # Validate the choice's own flags before building environments.
    if args.choice == "sim2real":
        axes = parse_physics(args.physics)
        settings = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
        evaluation = Evaluation(**common, axes=axes, micro_gravity_quirk=args.micro_gravity_quirk)
    elif args.choice == "attack":
        epsilons = parse_values(args.epsilons, "--epsilons")
        critics = algo.attack_critics()
        problem = mode_problem(args.attack_mode, args.attack_steps, algo.actor, critics)
        if problem is not None:  # the one line names what this run's policy can take, as a command
            mode = args.attack_mode if args.attack_mode in applicable_modes(algo.actor, critics) else "random"
            raise UserError(
                f"{cfg.algo} run: {problem}; e.g. python eval.py --run {shlex.quote(str(run_dir))} --choice attack "
                f"--attack-mode {mode}"
            )
        ObservationAttack(
            args.attack_mode,
            0.0,
            torch.zeros(spec.obs_dim),
            algo.actor,
            critics,
            num_candidates=args.num_candidates,
            steps=args.attack_steps,
        )
        evaluation = Evaluation(
            **common,
            attack_mode=args.attack_mode,
            epsilons=epsilons,
            num_candidates=args.num_candidates,
            attack_steps=args.attack_steps,
        )
    else:
        evaluation = Evaluation(**common)
    stem = evaluation.stem
    title = f"{name}\n{evaluation.caption}"

    evaluator = run_evaluator(cfg, args.episodes, seed, device)
    try:
        if args.choice == "clean":
            rows = [evaluator.evaluate(algo.act)]
            summary = (
                f"normalized score {rows[0]['normalized_mean']:.1f} ± {rows[0]['normalized_std']:.1f} "
                f"(return {rows[0]['return_mean']:.1f}, {args.episodes} episodes)"
            )
            written = f"{out_dir / stem}.csv"
        elif args.choice == "sim2real":

            def run_physics(setting: dict[str, float]) -> dict[str, float]:
                applied = effective_scales(setting, spec.family, args.micro_gravity_quirk)
                with scaled_physics(evaluator.envs, applied):
                    return {
                        **{f"applied_{axis}": scale for axis, scale in applied.items()},
                        **evaluator.evaluate(algo.act),
                    }

            rows = evaluate_settings(settings, run_physics, "sim2real", progress)
            summary = sim2real_outputs(out_dir / f"{stem}.png", rows, axes, f"sim2real: {title}", args.vmin, args.vmax)
            written = f"{out_dir / stem}.csv and .png"
        else:
            obs_std = observation_std(cfg, spec, run_dir).to(device)

            def run_attack(setting: dict[str, float]) -> dict[str, float]:
                attack = ObservationAttack(
                    args.attack_mode,
                    setting["epsilon"],
                    obs_std,
                    algo.actor,
                    algo.attack_critics(),
                    args.num_candidates,
                    args.attack_steps,
                    seed,
                )
                return evaluator.evaluate(lambda obs: algo.act(attack(obs)))

            rows = evaluate_settings([{"epsilon": e} for e in epsilons], run_attack, args.attack_mode, progress)
            curve_with_band(
                out_dir / f"{stem}.png",
                epsilons,
                [r["normalized_mean"] for r in rows],
                [r["normalized_std"] for r in rows],
                "ε (× dataset obs std)",
                "normalized score",
                f"{args.attack_mode} attack: {title}",
            )
            summary = table(rows, ["epsilon"])
            written = f"{out_dir / stem}.csv and .png"
    finally:
        evaluator.close()
    rows = [{**evaluation.columns(), **row} for row in rows]
    write_csv(out_dir / f"{stem}.csv", rows)
    log_scalars(out_dir, stem, rows)
    print(f"{args.choice}: {name} ({evaluation.caption})\n{summary}")
    print(f"wrote {written}; tensorboard --logdir {out_dir / 'tensorboard'}")
    return rows


if __name__ == "__main__":
    run_cli(main)
