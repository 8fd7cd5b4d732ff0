"""Sweep a grid of tasks x algorithms x seeds x config values; re-running it skips finished runs and resumes
interrupted ones.

python sweep.py --tasks hopper-medium-gen walker2d-medium-gen --algos mopo micro --seeds 0 1 2 --set epochs=200
python sweep.py --tasks hopper-medium-gen --algos mopo --seeds 0 1 --grid penalty_coef=0.5,1,5 rollout_length=1,5
python sweep.py ... --backend ray --address auto       # on a Ray cluster (nodes share this repo and log dir)

Runs of one grid point go under `<log-dir>/<key=value_...>/<task>/<algo>/seed<N>-<time>/` (directly under
`<log-dir>` without `--grid`); `plot.py` and `score.py` show each grid point as its own group, labelled by the
swept keys (`mopo penalty_coef=0.5`). A run is found again by its merged config: changing `--set` values starts new
runs instead of resuming old ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
from pathlib import Path

import algos  # noqa: F401  (registers every algorithm's config class, which run configs are read with)
from config import config_to_dict
from utils.errors import Interrupted, UserError, run_cli
from utils.launch import (
    RunRequest,
    check_distinct,
    check_threads,
    check_workers,
    plan,
    run_local,
    run_ray,
    summary,
    threads_per_run,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--algos", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="for every run")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2", help="swept config values")
    parser.add_argument("--config", help="extra YAML file or preset name (as train.py --config)")
    parser.add_argument("--device", help="cpu or cuda (as train.py --device)")
    parser.add_argument("--log-dir", default="log", help="root of the sweep's run directories (default log)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="local: concurrent runs (default: cores)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch/BLAS threads per run (default: the user's OMP_NUM_THREADS if set, else local: cores / concurrent "
        "runs, ray: --cpus-per-run)",
    )
    parser.add_argument("--address", help="ray: cluster address (default: start a local Ray instance)")
    parser.add_argument("--cpus-per-run", type=int, default=1, help="ray: CPUs reserved (and threads) per run")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    return parser.parse_args(argv)


def grid_points(items: list[str]) -> list[tuple[str, ...]]:
    """`key=v1,v2` items -> every combination as a tuple of `key=value` overrides."""
    axes = []
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key or not values:
            raise UserError(f"--grid {item!r} is not key=v1,v2,...; write e.g. --grid penalty_coef=0.5,1.0")
        listed = values.split(",")
        twice = next((value for i, value in enumerate(listed) if value in listed[:i]), None)
        if twice is not None:
            once = ",".join(dict.fromkeys(listed))
            raise UserError(f"--grid {item} lists {key}={twice} twice; give each value once: --grid {key}={once}")
        axes.append([f"{key}={value}" for value in listed])
    return list(itertools.product(*axes)) if axes else [()]


def point_dir(log_dir: str, point: tuple[str, ...]) -> str:
    return str(Path(log_dir) / "_".join(point)) if point else log_dir


def build_requests(args: argparse.Namespace) -> list[RunRequest]:
    """Every run of the grid, each checked before anything starts; a run listed twice is refused, since its two
    copies would train the same config twice and a re-run could not tell which one to resume."""
    check_distinct("--tasks", args.tasks)
    check_distinct("--algos", args.algos)
    check_distinct("--seeds", args.seeds)
    requests = [
        RunRequest(
            task, algo, seed, point_dir(args.log_dir, point), (*args.overrides, *point), args.config, args.device
        )
        for point in grid_points(args.grid)
        for task in args.tasks
        for algo in args.algos
        for seed in args.seeds
    ]
    seen: dict[str, RunRequest] = {}
    for request in requests:  # every key and value is checked before anything starts
        try:
            config = config_to_dict(request.resolved_config())
        except UserError as err:
            raise UserError(f"{request.algo} on {request.task}: {err}") from None
        config.pop("log_dir")  # one config under two grid points' roots is still one run done twice
        same = seen.setdefault(json.dumps(config, sort_keys=True, default=str), request)
        if same is not request:
            raise UserError(
                f"{same.label} and {request.label} are one run (the same merged config); list each task, algorithm, "
                "seed and --grid value once"
            )
    return requests


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_workers(args.workers)
    check_threads(args.threads)
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError('--backend ray needs Ray: pip install -e ".[ray]" (or use --backend local)') from None
    requests = build_requests(args)
    to_run, finished = plan(requests)
    resumed = sum(job.resume is not None for job in to_run)
    print(
        f"sweep: {len(requests)} runs; {len(finished)} already finished, {resumed} to resume, "
        f"{len(to_run) - resumed} to start ({args.backend})",
        flush=True,
    )
    if args.dry_run:
        for job in to_run:
            print(f"  {'resume' if job.resume else 'start '} {job.request.label}  {job.resume or job.request.log_dir}")
        return 0
    if not to_run:
        print(summary(finished))
        return 0
    try:
        if args.backend == "local":
            threads = threads_per_run(min(args.workers, max(len(to_run), 1)), args.threads)
            print(f"local pool: {args.workers} concurrent runs, {threads} threads each", flush=True)
            done = run_local(to_run, args.workers, threads)
        else:
            done = run_ray(to_run, args.address, args.cpus_per_run, args.threads)
    except KeyboardInterrupt:
        again = shlex.join(["python", "sweep.py", *(sys.argv[1:] if argv is None else argv)])
        raise Interrupted(f"interrupted; finished runs are kept, continue with: {again}") from None
    print(summary([*finished, *done]))
    failed = [job for job in done if job.outcome.startswith("failed")]
    if failed:
        print(f"{len(failed)} of {len(done)} runs failed; fix the cause and run the same command to continue")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main) or 0)
