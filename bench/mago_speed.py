"""MAGO throughput with its default sizes on hopper-sized synthetic data (obs 11, act 3): updates per second of the
whole update (game action, nature's move over 10 draws x 10 next states x 20 actions for 128 states, critic and
policy steps), and one epoch of the 100-member 4 x 256 ensemble's fit.

    python bench/mago_speed.py --device cpu [--updates 20] [--dynamics-steps 20] [--transitions 1000000]
    python bench/mago_speed.py --config cpu          # the CPU learning-check preset

The dynamics figure times `--dynamics-steps` gradient steps of batch 256 (after one warm-up step) and scales them
to one epoch over `--transitions` rows (D4RL hopper-medium-v2 has about 1e6), since a full CPU epoch takes minutes;
`--full-epoch` times a whole epoch instead.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algos import build_algorithm  # noqa: E402
from config import load_config  # noqa: E402
from envs import get_termination_fn  # noqa: E402
from envs.datasets import OfflineDataset  # noqa: E402
from models.dynamics import EnsembleDynamics  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mopo_speed import ACT_DIM, OBS_DIM, peak_memory_mb, sync, synthetic_hopper_data  # noqa: E402


def as_dataset(batch) -> OfflineDataset:
    """The synthetic transitions as an OfflineDataset (MAGO draws its game states from the data)."""
    arrays = [field.cpu().numpy() for field in batch]
    n = len(arrays[0])
    starts = np.zeros(n, dtype=bool)
    starts[::1000] = True
    return OfflineDataset(
        observations=arrays[0],
        actions=arrays[1],
        rewards=arrays[2],
        next_observations=arrays[3],
        terminals=arrays[4].astype(bool),
        episode_starts=starts,
        source="synthetic",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--updates", type=int, default=20, help="timed MAGO updates (after 2 warm-up updates)")
    parser.add_argument("--dynamics-steps", type=int, default=20, help="timed dynamics gradient steps")
    parser.add_argument("--transitions", type=int, default=1_000_000, help="rows of the epoch the steps scale to")
    parser.add_argument("--full-epoch", action="store_true", help="time one whole epoch over the synthetic data")
    parser.add_argument("--config", help="a preset in configs/mago/ (e.g. cpu) applied over the defaults")
    args = parser.parse_args()
    keep_freed_memory()  # as train.py does
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = load_config("mago", "hopper-medium-v2", config_file=args.config, cli={"device": args.device})
    print(
        f"device {device} | threads {torch.get_num_threads()} | torch {torch.__version__} | ensemble "
        f"{cfg.dynamics.num_ensemble} x {cfg.dynamics.hidden_dims} | game {cfg.adv_batch_size} states x "
        f"{cfg.num_models} draws x {cfg.num_state_samples} samples x {cfg.num_action_samples} actions",
        flush=True,
    )
    real = synthetic_hopper_data(device)
    data = real.storage
    dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics, get_termination_fn("hopper")).to(device)

    # One dynamics epoch: `fit` with max_epochs 1 on the synthetic data, or a few of its steps scaled up.
    if args.full_epoch:
        cfg.dynamics.max_epochs = 1
        sync(device)
        start = time.perf_counter()
        dynamics.fit(data.obs, data.act, data.next_obs, data.rew, progress=False)
        sync(device)
        epoch = time.perf_counter() - start
        print(f"dynamics epoch   {epoch:8.1f} s   ({len(data.obs)} transitions, measured)", flush=True)
    else:
        cfg.dynamics.max_epochs = 1

        def fit_seconds(num_steps: int) -> float:
            rows = num_steps * cfg.dynamics.batch_size
            sync(device)
            start = time.perf_counter()
            dynamics.fit(data.obs[:rows], data.act[:rows], data.next_obs[:rows], data.rew[:rows], progress=False)
            sync(device)
            return time.perf_counter() - start

        fit_seconds(1)  # warm-up
        per_step = (fit_seconds(args.dynamics_steps + 1) - fit_seconds(1)) / args.dynamics_steps
        steps = math.ceil(args.transitions / cfg.dynamics.batch_size)
        print(
            f"dynamics step    {per_step * 1000:8.1f} ms  (batch {cfg.dynamics.batch_size}, all members) -> one epoch "
            f"over {args.transitions} transitions ({steps} steps) ≈ {per_step * steps / 60:.1f} min",
            flush=True,
        )

    algo = build_algorithm(cfg, OBS_DIM, ACT_DIM, device, dynamics, as_dataset(data))
    for _ in range(2):
        algo.update(real.sample(cfg.batch_size))
    sync(device)
    start = time.perf_counter()
    for _ in range(args.updates):
        algo.update(real.sample(cfg.batch_size))
    sync(device)
    seconds = time.perf_counter() - start
    print(
        f"MAGO updates     {args.updates / seconds:8.2f} /s  ({seconds / args.updates * 1000:.0f} ms each; 1e6 updates "
        f"≈ {seconds / args.updates * 1e6 / 3600:.0f} h)",
        flush=True,
    )
    memory = "CUDA allocated" if device.type == "cuda" else "RSS"
    print(f"peak memory      {peak_memory_mb(device):8.0f} MB  ({memory})")


if __name__ == "__main__":
    main()
