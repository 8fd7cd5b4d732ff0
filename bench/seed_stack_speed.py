"""Seed stacking (docs/seeds.md) on hopper sizes: 1 seed, S seeds stacked in one process, and S separate processes
running side by side with the thread budget split between them.

- SAC updates (MOPO's policy step, 256 x 256 networks, batch 256): updates per second. `--algo micro` times MICRO's
  update instead (hopper settings: the critic target values 5 elites x 10 sampled next states per model row).
- `--epoch`: one MOPO training epoch on synthetic hopper data (200,000 transitions, the default 7 x 4 x 200 ensemble
  untrained, rollouts of 50,000 x 5 every 250 steps, 1000 updates, evaluation of 10 episodes), per seed's run.

    python bench/seed_stack_speed.py [--seeds 5] [--updates 200] [--threads 2] [--device cpu] [--epoch]
                                     [--algo sac|micro] [--compile [MODE]] [--default-malloc]

`--compile` also times the same updates under `torch.compile` (compilation happens in the warm-up), to decide where
compiling the update pays; MODE is torch.compile's (default "default"; on a GPU "reduce-overhead" replays CUDA graphs).

Like train.py, the bench keeps freed memory in the process (utils/allocator.py); `--default-malloc` measures glibc's
default behaviour instead, for comparison.

"per seed-update" is the cost of one update of one seed: stacking pays when the stacked figure is below the single
seed's (the S seeds share kernels); separate processes pay when they beat both. The issue's target is an epoch of
S stacked seeds within 2x one seed's epoch, i.e. a per-seed-update cost within 2/S of one seed's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algos import build_algorithm  # noqa: E402
from algos.base import SeedOfStack  # noqa: E402
from algos.sac import SAC  # noqa: E402
from algos.trainer import OfflineTrainer, SeedStackedTrainer  # noqa: E402
from buffers.replay import Batch  # noqa: E402
from config import SACConfig, load_config  # noqa: E402
from envs import Evaluator, get_task, get_termination_fn  # noqa: E402
from models.dynamics import EnsembleDynamics  # noqa: E402
from models.seed_stack import SeedStreams  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mopo_speed import synthetic_hopper_data  # noqa: E402

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256


def batches(num: int, seeds: int | None, device: torch.device) -> list[Batch]:
    """Random hopper-sized batches ([S, B, ...] with seeds), made before timing."""
    shape = (BATCH,) if seeds is None else (seeds, BATCH)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(num):
        fields = (
            torch.randn(*shape, OBS_DIM, generator=gen),
            torch.rand(*shape, ACT_DIM, generator=gen) * 2 - 1,
            torch.randn(*shape, generator=gen),
            torch.randn(*shape, OBS_DIM, generator=gen),
            torch.zeros(*shape),
        )
        out.append(Batch(*(field.to(device) for field in fields)))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_updates(algo: SAC, data: list[Batch], device: torch.device, compile_mode: str | None = None) -> float:
    """Seconds per update, after 5 warm-up updates (which, with a `compile_mode`, include torch.compile's compilation);
    the first 5% of each batch are dataset rows (MOPO's and MICRO's real_ratio 0.05), the rest model rows (which
    MICRO's backup penalises)."""
    num_real = int(0.05 * BATCH)
    update = algo.update if compile_mode is None else torch.compile(algo.update, mode=compile_mode)
    for batch in data[:5]:
        update(batch, num_real)
    sync(device)
    start = time.perf_counter()
    for batch in data[5:]:
        update(batch, num_real)
    sync(device)
    return (time.perf_counter() - start) / (len(data) - 5)


def update_algorithm(algo: str, dev: torch.device) -> SAC:
    """A freshly initialised "sac" (MOPO's policy step) or "micro" (hopper-medium-v2 settings, untrained model)."""
    if algo == "sac":
        return SAC(OBS_DIM, ACT_DIM, SACConfig(), epochs=1, device=dev)
    cfg = load_config(algo, "hopper-medium-v2", cli={"device": str(dev)})
    dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics, get_termination_fn("hopper")).to(dev)
    return cast(SAC, build_algorithm(cfg, OBS_DIM, ACT_DIM, dev, dynamics=dynamics))


def one_seed(
    algo: str, updates: int, threads: int, device: str, seed: int = 0, compile_mode: str | None = None
) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    return timed_updates(update_algorithm(algo, dev), batches(updates + 5, None, dev), dev, compile_mode)


def stacked(
    algo: str, num_seeds: int, updates: int, threads: int, device: str, compile_mode: str | None = None
) -> float:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    rng, runs = SeedStreams(dev), []
    for seed in range(num_seeds):
        torch.manual_seed(seed)
        runs.append(update_algorithm(algo, dev))
        rng.capture()
    stack = type(runs[0]).stack(runs, rng, epochs=1)
    return timed_updates(stack, batches(updates + 5, num_seeds, dev), dev, compile_mode)


def _worker(args: tuple[str, int, int, str, int]) -> float:
    return one_seed(*args)


class NullLogger:
    num_events = 0

    def scalars(self, metrics: dict, step: int) -> None:
        pass

    def evaluation(self, *args: object) -> None:
        pass

    def flush(self) -> None:
        pass


def mopo_epoch(num_seeds: int | None, threads: int, device: str, updates: int, seed: int = 0) -> float:
    """Seconds of one MOPO epoch: one seed's run (num_seeds None) or num_seeds stacked seeds' runs."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    cfg = load_config("mopo", "hopper-medium-v2", cli={"device": device})
    cfg.epochs, cfg.steps_per_epoch = 1, updates
    spec, real = get_task("hopper-medium-v2"), synthetic_hopper_data(dev)
    seeds = [seed] if num_seeds is None else list(range(num_seeds))
    trainers, streams = [], SeedStreams(dev)
    with tempfile.TemporaryDirectory() as tmp:
        for each in seeds:
            torch.manual_seed(each)
            dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics, get_termination_fn("hopper")).to(dev)
            algo = build_algorithm(cfg, OBS_DIM, ACT_DIM, dev)
            evaluator = Evaluator(spec, cfg.eval_episodes, each, dev)
            run_dir = Path(tmp) / str(each)
            trainers.append(OfflineTrainer(cfg, algo, real, evaluator, NullLogger(), run_dir, dynamics, False))
            streams.capture()
        sync(dev)
        start = time.perf_counter()
        if num_seeds is None:
            trainers[0].train()
        else:
            singles = [trainer.algo for trainer in trainers]
            stacked = type(singles[0]).stack(singles, streams, cfg.epochs)
            for index, (trainer, single) in enumerate(zip(trainers, singles)):
                trainer.algo = SeedOfStack(stacked, index, single)
            SeedStackedTrainer(trainers, stacked, streams, progress=False).train()
        sync(dev)
        return time.perf_counter() - start


def _epoch_worker(args: tuple[int, str, int, int]) -> float:
    threads, device, updates, seed = args
    return mopo_epoch(None, threads, device, updates, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=200, help="timed updates per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads in all (split)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epoch", action="store_true", help="also time one MOPO epoch (1000 updates) each way")
    parser.add_argument("--algo", choices=("sac", "micro"), default="sac", help="whose update to time (default sac)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        metavar="MODE",
        help="also time the update under torch.compile in this mode (default: default), 1 seed and stacked",
    )
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's allocator as it is (train.py tunes it)"
    )
    args = parser.parse_args()
    seeds, threads, algo, allocator = args.seeds, args.threads, args.algo, not args.default_malloc
    if allocator:
        keep_freed_memory()
    print(
        f"device {args.device} | {threads} threads in all | torch {torch.__version__} | {algo} update, 256 x 256, "
        f"batch {BATCH} | allocator {'kept freed memory' if allocator else 'glibc default'}"
    )

    # Separate processes start as train.py does: with the allocator setting of this run.
    worker_pool = partial(mp.get_context("spawn").Pool, seeds, initializer=keep_freed_memory if allocator else None)
    single = one_seed(algo, args.updates, threads, args.device)
    print(f"1 seed                 {1 / single:8.1f} updates/s   {single * 1e3:7.2f} ms per seed-update")
    both = stacked(algo, seeds, args.updates, threads, args.device)
    print(
        f"{seeds} seeds stacked        {1 / both:8.1f} updates/s   {both / seeds * 1e3:7.2f} ms per seed-update "
        f"({both / single:.2f}x one seed's update time)"
    )
    if args.compile:
        single_compiled = one_seed(algo, args.updates, threads, args.device, compile_mode=args.compile)
        both_compiled = stacked(algo, seeds, args.updates, threads, args.device, compile_mode=args.compile)
        print(
            f"torch.compile ({args.compile}): 1 seed {single_compiled * 1e3:7.2f} ms per update "
            f"({single_compiled / single:.2f}x eager), {seeds} stacked {both_compiled / seeds * 1e3:7.2f} ms per "
            f"seed-update ({both_compiled / both:.2f}x eager)"
        )
    if args.device == "cpu":
        per_process = max(1, threads // seeds)
        with worker_pool() as pool:
            start = time.perf_counter()
            times = pool.map(_worker, [(algo, args.updates, per_process, "cpu", seed) for seed in range(seeds)])
            wall = time.perf_counter() - start
        slowest = max(times)
        print(
            f"{seeds} separate processes  {1 / slowest:8.1f} updates/s each   {slowest / seeds * 1e3:7.2f} ms per "
            f"seed-update ({per_process} thread(s) each; {wall:.0f} s wall including start-up)"
        )
    if args.epoch:
        one = mopo_epoch(None, threads, args.device, 1000)
        print(f"MOPO epoch, 1 seed          {one:7.1f} s")
        together = mopo_epoch(seeds, threads, args.device, 1000)
        print(f"MOPO epoch, {seeds} stacked       {together:7.1f} s  ({together / one:.2f}x one seed's)")
        if args.device == "cpu":
            per_process = max(1, threads // seeds)
            with worker_pool() as pool:
                start = time.perf_counter()
                pool.map(_epoch_worker, [(per_process, "cpu", 1000, seed) for seed in range(seeds)])
                wall = time.perf_counter() - start
            print(
                f"MOPO epoch, {seeds} processes     {wall:7.1f} s  ({wall / one:.2f}x one seed's; wall, with start-up)"
            )


if __name__ == "__main__":
    main()
