"""MOPO throughput on hopper-sized synthetic data (200,000 transitions, obs 11, act 3) with the default sizes:
7 x 4 x 200 ensemble, SAC 256 x 256, batch 256, 50,000 x 5 rollouts.

    python bench/mopo_speed.py --device cpu [--repeats 3] [--precision fp32|bf16]

Prints the median over repeats of: seconds per dynamics epoch, seconds per rollout event, SAC updates per
second, seconds per training epoch (rollout + 1000 updates + 10 evaluation episodes), and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algos import build_algorithm  # noqa: E402
from algos.trainer import OfflineTrainer  # noqa: E402
from buffers.replay import Batch, ReplayBuffer, sample_mixed  # noqa: E402
from config import load_config  # noqa: E402
from envs import Evaluator, get_task, get_termination_fn  # noqa: E402
from models.dynamics import EnsembleDynamics  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402

NUM_TRANSITIONS, OBS_DIM, ACT_DIM = 200_000, 11, 3


def synthetic_hopper_data(device: torch.device) -> ReplayBuffer:
    """Hopper-shaped transitions whose next states stay healthy, so rollouts run their full length."""
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(NUM_TRANSITIONS, OBS_DIM, generator=generator) * 0.05
    obs[:, 0] += 1.25  # torso height well above hopper's 0.7 threshold
    act = torch.rand(NUM_TRANSITIONS, ACT_DIM, generator=generator) * 2 - 1
    next_obs = obs + 0.01 * torch.randn(NUM_TRANSITIONS, OBS_DIM, generator=generator)
    rew = torch.randn(NUM_TRANSITIONS, generator=generator)
    done = torch.zeros(NUM_TRANSITIONS)
    buffer = ReplayBuffer(NUM_TRANSITIONS, OBS_DIM, ACT_DIM, device)
    buffer.add(Batch(obs, act, rew, next_obs, done))
    return buffer


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NullLogger:
    def scalars(self, metrics: dict, step: int) -> None:
        pass

    def evaluation(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is printed")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="dynamics matmul precision (default: config)")
    parser.add_argument("--updates", type=int, default=1000, help="SAC updates per timing")
    args = parser.parse_args()
    keep_freed_memory()  # as train.py does
    device = torch.device(args.device)
    torch.manual_seed(0)

    overrides = [] if args.precision is None else [f"dynamics.precision={args.precision}"]
    cfg = load_config("mopo", "hopper-medium-v2", overrides=overrides, cli={"device": args.device})
    cfg.dynamics.max_epochs = args.repeats + 1  # the first epoch is a warm-up
    spec = get_task("hopper-medium-v2")
    print(
        f"device {device} | threads {torch.get_num_threads()} | torch {torch.__version__} | "
        f"dynamics precision {cfg.dynamics.precision} | {NUM_TRANSITIONS} transitions, rollout_length "
        f"{cfg.rollout_length}, rollout_batch_size {cfg.rollout_batch_size}",
        flush=True,
    )

    real = synthetic_hopper_data(device)
    dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics, get_termination_fn("hopper")).to(device)
    stamps: list[float] = []

    def stamp(metrics: dict, epoch: int) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    sync(device)
    start = time.perf_counter()
    data = real.storage
    dynamics.fit(data.obs, data.act, data.next_obs, data.rew, log_fn=stamp, progress=False)
    epoch_seconds = [b - a for a, b in zip([start, *stamps[:-1]], stamps)][1:]
    print(f"dynamics epoch   {statistics.median(epoch_seconds):7.2f} s   (all: {fmt(epoch_seconds)})", flush=True)

    algo = build_algorithm(cfg, OBS_DIM, ACT_DIM, device)
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = Evaluator(spec, cfg.eval_episodes, 0, device)
        trainer = OfflineTrainer(cfg, algo, real, evaluator, NullLogger(), tmp, dynamics, progress=False)
        rollout_seconds = timed(lambda: trainer.rollout(), args.repeats + 1, device)[1:]
        print(
            f"rollout event    {statistics.median(rollout_seconds):7.2f} s   (50,000 x {cfg.rollout_length}: "
            f"{fmt(rollout_seconds)}; {len(trainer.fake_buffer)} transitions stored)",
            flush=True,
        )

        def updates() -> None:
            for _ in range(args.updates):
                algo.update(*sample_mixed(real, trainer.fake_buffer, cfg.batch_size, cfg.real_ratio))

        update_seconds = timed(updates, args.repeats + 1, device)[1:]
        rates = [args.updates / s for s in update_seconds]
        print(
            f"SAC updates      {statistics.median(rates):7.1f} /s  (batch {cfg.batch_size}: {fmt(rates)})", flush=True
        )

        eval_seconds = timed(lambda: evaluator.evaluate(algo.act), args.repeats, device)
        result = evaluator.evaluate(algo.act)
        per_epoch = [r + 1000 / u + e for r, u, e in zip(rollout_seconds, rates, eval_seconds)]
        print(
            f"evaluation       {statistics.median(eval_seconds):7.2f} s   ({cfg.eval_episodes} episodes, mean length "
            f"{result['length_mean']:.0f} with this untrained policy)",
            flush=True,
        )
        print(f"training epoch   {statistics.median(per_epoch):7.2f} s   (rollout + 1000 updates + evaluation)")
    print(
        f"peak memory      {peak_memory_mb(device):7.0f} MB  ({'CUDA allocated' if device.type == 'cuda' else 'RSS'})"
    )


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
