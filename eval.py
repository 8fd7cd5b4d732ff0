"""Evaluate a trained run: clean score, sim2real physics shifts, observation attacks (MICRO's robustness suite).

python eval.py --run log/hopper-medium-gen/micro/seed0-20261121-120000 --choice clean
python eval.py --run RUN --choice sim2real                                   # friction x gravity, MICRO's grid
python eval.py --run RUN --choice sim2real --physics mass=0.5:1.5:5 friction=0.5,1,1.5
python eval.py --run RUN --choice attack --attack-mode min_Q                 # eps in linspace(0, 0.2, 10)
python eval.py --run RUN --choice attack --attack-mode action_diff --attack-steps 10   # + projected gradient steps

Values are `start:stop:num` (numpy.linspace) or a comma list. Each setting plays `--episodes` deterministic episodes
side by side, reset with the same seeds in every setting. Results go to RUN/eval/: a CSV and a PNG per evaluation,
TensorBoard scalars, and a short table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from algos import load_run
from envs import Evaluator, get_task, load_dataset
from envs.attacks import ATTACK_MODES, ObservationAttack
from envs.physics import PHYSICS_AXES, check_axes, effective_scales, scaled_physics
from utils.checkpoint import atomic_write
from utils.errors import UserError, run_cli
from utils.plotting import curve_with_band, heatmaps

# MICRO's eval.py grids (ALGORITHMS.md §3).
DEFAULT_PHYSICS = {"friction": "0.5:1.5:10", "gravity": "0.5:5:10"}
DEFAULT_EPSILONS = "0:0.2:10"


def parse_values(text: str, name: str) -> list[float]:
    """`start:stop:num` -> numpy.linspace(start, stop, num); `a,b,c` -> [a, b, c]."""
    try:
        if ":" in text:
            start, stop, num = text.split(":")
            if int(num) < 1:
                raise ValueError
            return [float(v) for v in np.linspace(float(start), float(stop), int(num))]
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{name} {text!r} is not start:stop:num or a comma list of numbers, e.g. 0.5:1.5:10") from None


def parse_physics(items: Sequence[str]) -> dict[str, list[float]]:
    """`axis=values` items (default: MICRO's friction x gravity grid); axes not given stay at scale 1."""
    pairs = [item.partition("=") for item in items] if items else [(k, "=", v) for k, v in DEFAULT_PHYSICS.items()]
    axes: dict[str, list[float]] = {}
    for axis, eq, values in pairs:
        if not eq:
            raise UserError(f"--physics {axis!r} is not axis=values; write e.g. --physics friction=0.5:1.5:10")
        check_axes({axis: 1.0})
        axes[axis] = parse_values(values, f"--physics {axis}")
    return axes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory written by train.py")
    parser.add_argument("--choice", choices=("clean", "sim2real", "attack"), default="clean")
    parser.add_argument("--task", help="optional check: the run must have been trained on this task")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per setting (default 10, as MICRO)")
    parser.add_argument("--seed", type=int, help="episode reset seeds and attack noise (default: the run's seed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--physics",
        nargs="+",
        default=[],
        metavar="AXIS=VALUES",
        help=f"sim2real grid over {', '.join(PHYSICS_AXES)} scales (default: friction=0.5:1.5:10 gravity=0.5:5:10)",
    )
    parser.add_argument(
        "--micro-gravity-quirk",
        action="store_true",
        help="keep gravity nominal on hopper/walker2d, as MICRO's XML files (without gravity) did",
    )
    parser.add_argument("--attack-mode", choices=ATTACK_MODES, default="random")
    parser.add_argument("--epsilons", default=DEFAULT_EPSILONS, help="attack budgets in units of the dataset's obs std")
    parser.add_argument("--num-candidates", type=int, default=50, help="sampled perturbations per step (MICRO: 50)")
    parser.add_argument("--attack-steps", type=int, default=0, help="projected gradient steps after sampling")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def evaluate_settings(
    settings: Sequence[dict[str, float]],
    run_one: Callable[[dict[str, float]], dict[str, float]],
    description: str,
    progress: bool,
) -> list[dict[str, float]]:
    rows = []
    for setting in tqdm(settings, desc=description, unit="setting", disable=not progress, dynamic_ncols=True):
        rows.append({**setting, **run_one(setting)})
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))


def log_scalars(out_dir: Path, tag: str, rows: Sequence[dict[str, float]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out_dir)) as writer:
        for index, row in enumerate(rows):
            for key in ("normalized_mean", "normalized_std", "return_mean"):
                writer.add_scalar(f"{tag}/{key}", row[key], index)


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


def sim2real_outputs(out_dir: Path, rows: list[dict[str, float]], axes: dict[str, list[float]], title: str) -> str:
    varying = [axis for axis, values in axes.items() if len(values) > 1]
    png = out_dir / "sim2real.png"
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
    heatmaps(
        png,
        grids,
        axes[row_axis],
        axes[col_axis],
        f"{row_axis} scale",
        f"{col_axis} scale",
        panel_titles,
        title,
        "normalized score",
    )
    return grid_table(rows, row_axis, col_axis) if not panel_axes else table(rows, list(axes))


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
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

    # Validate the choice's own flags before building environments.
    if args.choice == "sim2real":
        axes = parse_physics(args.physics)
        settings = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    elif args.choice == "attack":
        epsilons = parse_values(args.epsilons, "--epsilons")
        if min(epsilons) < 0:
            raise UserError(f"--epsilons must be non-negative, got {args.epsilons}")
        critics = getattr(algo, "critics", None)
        ObservationAttack(
            args.attack_mode, 0.0, torch.zeros(spec.obs_dim), algo.actor, critics, steps=args.attack_steps
        )

    evaluator = Evaluator(spec, args.episodes, seed, device)
    try:
        if args.choice == "clean":
            rows = [evaluator.evaluate(algo.act)]
            write_csv(out_dir / "clean.csv", rows)
            log_scalars(out_dir, "clean", rows)
            print(
                f"{name}: normalized score {rows[0]['normalized_mean']:.1f} ± {rows[0]['normalized_std']:.1f} "
                f"(return {rows[0]['return_mean']:.1f}, {args.episodes} episodes)"
            )
            return rows

        if args.choice == "sim2real":

            def run_physics(setting: dict[str, float]) -> dict[str, float]:
                with scaled_physics(evaluator.envs, effective_scales(setting, spec.family, args.micro_gravity_quirk)):
                    return evaluator.evaluate(algo.act)

            rows = evaluate_settings(settings, run_physics, "sim2real", progress)
            stem, title = "sim2real", "sim2real"
            summary = sim2real_outputs(out_dir, rows, axes, f"{title}: {name}")
        else:
            dataset = load_dataset(spec, cfg.dataset_path, cfg.dataset_backend, cfg.download)
            obs_std = torch.as_tensor(np.asarray(dataset.observations, dtype=np.float64).std(0), dtype=torch.float32)
            obs_std = obs_std.to(device)

            def run_attack(setting: dict[str, float]) -> dict[str, float]:
                attack = ObservationAttack(
                    args.attack_mode,
                    setting["epsilon"],
                    obs_std,
                    algo.actor,
                    getattr(algo, "critics", None),
                    args.num_candidates,
                    args.attack_steps,
                    seed,
                )
                return evaluator.evaluate(lambda obs: algo.act(attack(obs)))

            rows = evaluate_settings([{"epsilon": e} for e in epsilons], run_attack, args.attack_mode, progress)
            stem = f"attack-{args.attack_mode}" + (f"-pgd{args.attack_steps}" if args.attack_steps else "")
            title = f"{args.attack_mode} attack" + (f" + {args.attack_steps} PGD steps" if args.attack_steps else "")
            curve_with_band(
                out_dir / f"{stem}.png",
                epsilons,
                [r["normalized_mean"] for r in rows],
                [r["normalized_std"] for r in rows],
                "ε (× dataset obs std)",
                "normalized score",
                f"{title}: {name}",
            )
            summary = table(rows, ["epsilon"])
    finally:
        evaluator.close()
    write_csv(out_dir / f"{stem}.csv", rows)
    log_scalars(out_dir, stem, rows)
    print(f"{title}: {name}\n{summary}\nwrote {out_dir / stem}.csv and .png; tensorboard --logdir {out_dir}")
    return rows


if __name__ == "__main__":
    run_cli(main)
