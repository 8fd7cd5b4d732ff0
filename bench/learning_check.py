"""Learning check (not a CI test): train MOPO on a generated dataset for a stated budget and print its normalized
score next to the behaviour policy's, so a regression in learning shows up as a number.

    python bench/learning_check.py [--task hopper-medium-gen] [--transitions 200000] [--epochs 50] [--seed 0]
                                   [--dynamics-epochs 30] [--dynamics-path FILE]

The dataset is generated from the committed behaviour policy if it is not there yet. Dynamics training is capped at
`--dynamics-epochs`; the rest of the config is the task's (configs/mopo/<task>.yaml).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from envs import get_task  # noqa: E402
from envs.behaviour import load_behaviour_policy  # noqa: E402
from envs.datasets import find_dataset  # noqa: E402
from envs.generate import BEHAVIOUR_ROOT, write_dataset  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="hopper-medium-gen")
    parser.add_argument("--transitions", type=int, default=200_000, help="dataset size if it must be generated")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--dynamics-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="log/learning_check")
    parser.add_argument("--dynamics-path", help="reuse a saved dynamics model instead of fitting one")
    args = parser.parse_args()

    spec = get_task(args.task)
    if find_dataset(spec, None) is None:
        write_dataset(spec.name, args.transitions)
    sets = [f"epochs={args.epochs}", f"dynamics.max_epochs={args.dynamics_epochs}", f"save_every={args.epochs}"]
    if args.dynamics_path:
        sets.append(f"dynamics_path={args.dynamics_path}")
    result = train.main(
        ["--task", spec.name, "--algo", "mopo", "--seed", str(args.seed), "--log-dir", args.log_dir, "--set", *sets]
    )
    behaviour = ""
    if spec.level in ("medium", "expert"):
        _, info = load_behaviour_policy(BEHAVIOUR_ROOT / spec.family / f"{spec.level}.pt", spec)
        behaviour = f" | behaviour policy ({spec.level}.pt): {info['evaluation']['normalized_mean']:.1f}"
    print(
        f"learning check {spec.name}, {args.epochs} epochs x 1000 steps, seed {args.seed}: MOPO normalized "
        f"{result['normalized_mean']:.1f} ± {result['normalized_std']:.1f}{behaviour}"
    )


if __name__ == "__main__":
    run_cli(main)
