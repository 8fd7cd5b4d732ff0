"""Seed stacking at the SAC update (MOPO's policy step, 256 x 256 networks, batch 256, hopper sizes): updates per
second of 1 seed, of S seeds stacked in one process (`SAC.stack`, models/seed_stack.py), and of S separate
processes running side by side, each with the same thread budget split between them.

    python bench/seed_stack_speed.py [--seeds 5] [--updates 200] [--threads 2] [--device cpu]

"per seed-update" is the cost of one update of one seed: stacking pays when the stacked figure is below the single
seed's (the S seeds share kernels); separate processes pay when they beat both. The issue's target is an epoch of
S stacked seeds within 2x one seed's epoch, i.e. a per-seed-update cost within 2/S of one seed's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algos.sac import SAC  # noqa: E402
from buffers.replay import Batch  # noqa: E402
from config import SACConfig  # noqa: E402
from models.seed_stack import SeedStreams  # noqa: E402

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


def timed_updates(algo: SAC, data: list[Batch], device: torch.device) -> float:
    """Seconds per update, after 5 warm-up updates."""
    for batch in data[:5]:
        algo.update(batch)
    sync(device)
    start = time.perf_counter()
    for batch in data[5:]:
        algo.update(batch)
    sync(device)
    return (time.perf_counter() - start) / (len(data) - 5)


def one_seed(updates: int, threads: int, device: str, seed: int = 0) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    algo = SAC(OBS_DIM, ACT_DIM, SACConfig(), epochs=1, device=dev)
    return timed_updates(algo, batches(updates + 5, None, dev), dev)


def stacked(num_seeds: int, updates: int, threads: int, device: str) -> float:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    rng, runs = SeedStreams(dev), []
    for seed in range(num_seeds):
        torch.manual_seed(seed)
        runs.append(SAC(OBS_DIM, ACT_DIM, SACConfig(), epochs=1, device=dev))
        rng.capture()
    algo = SAC.stack(runs, rng, epochs=1)
    return timed_updates(algo, batches(updates + 5, num_seeds, dev), dev)


def _worker(args: tuple[int, int, str, int]) -> float:
    return one_seed(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=200, help="timed updates per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads in all (split)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    seeds, threads = args.seeds, args.threads
    print(f"device {args.device} | {threads} threads in all | torch {torch.__version__} | SAC 256 x 256, batch {BATCH}")

    single = one_seed(args.updates, threads, args.device)
    print(f"1 seed                 {1 / single:8.1f} updates/s   {single * 1e3:7.2f} ms per seed-update")
    both = stacked(seeds, args.updates, threads, args.device)
    print(
        f"{seeds} seeds stacked        {1 / both:8.1f} updates/s   {both / seeds * 1e3:7.2f} ms per seed-update "
        f"({both / single:.2f}x one seed's update time)"
    )
    if args.device == "cpu":
        per_process = max(1, threads // seeds)
        with mp.get_context("spawn").Pool(seeds) as pool:
            start = time.perf_counter()
            times = pool.map(_worker, [(args.updates, per_process, "cpu", seed) for seed in range(seeds)])
            wall = time.perf_counter() - start
        slowest = max(times)
        print(
            f"{seeds} separate processes  {1 / slowest:8.1f} updates/s each   {slowest / seeds * 1e3:7.2f} ms per "
            f"seed-update ({per_process} thread(s) each; {wall:.0f} s wall including start-up)"
        )


if __name__ == "__main__":
    main()
