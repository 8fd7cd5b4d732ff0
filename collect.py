"""Behaviour policies and D4RL-style datasets from gymnasium MuJoCo envs (for machines without D4RL's data).

python collect.py train --env hopper [--steps 1000000] [--work-dir behaviour/hopper]   # resumes by itself
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from envs.behaviour import BehaviourConfig, BehaviourTrainer
from envs.tasks import get_task
from utils.errors import UserError, run_cli

ENVS = ("hopper", "walker2d", "halfcheetah")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or continue training) a behaviour SAC online")
    train.add_argument("--env", required=True, help=f"one of: {', '.join(ENVS)}")
    train.add_argument("--steps", type=int, default=BehaviourConfig.total_steps, help="total env steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--work-dir", type=Path, help="where training.pt and snapshots live (default behaviour/ENV)")
    train.add_argument("--snapshot-every", type=int, default=BehaviourConfig.snapshot_every)
    train.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.env not in ENVS:
        raise UserError(f"unknown env {args.env!r}; choose one of: {', '.join(ENVS)}")
    spec = get_task(f"{args.env}-random-gen")
    cfg = dataclasses.replace(
        BehaviourConfig(), total_steps=args.steps, seed=args.seed, snapshot_every=args.snapshot_every
    )
    work_dir = args.work_dir or Path("behaviour") / args.env
    trainer = BehaviourTrainer(spec, cfg, work_dir, progress=not args.no_progress and sys.stderr.isatty())
    if trainer.resume():
        print(f"resumed {work_dir} at env step {trainer.env_steps}", flush=True)
    try:
        trainer.train()
    except KeyboardInterrupt:
        raise UserError(
            f"interrupted; the last checkpoint is in {work_dir}, run the same command to continue"
        ) from None
    print(f"trained {trainer.env_steps} env steps; state in {trainer.training_path}")


if __name__ == "__main__":
    run_cli(main)
