"""Behaviour policies and D4RL-style datasets from gymnasium MuJoCo envs (for machines without D4RL's data).

python collect.py train --env hopper [--steps 1000000]          # behaviour SAC; rerun to continue (needs training.pt)
python collect.py policies --env hopper                          # pick medium/expert, export medium-replay log
python collect.py dataset --task hopper-medium-gen [--overwrite] # write one dataset (--help: all flags)
python collect.py dataset --env hopper                           # every level of one env
python collect.py stats --env hopper                             # D4RL-style statistics of the local datasets
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np

from algos.behaviour import TRAINING_FILE, BehaviourConfig, BehaviourTrainer
from envs import generate
from envs.behaviour import export_policies
from envs.datasets import find_dataset, load_dataset
from envs.tasks import GENERATED_LEVELS, TaskSpec, get_task, normalized_score
from utils.errors import UserError, run_cli

ENVS = ("hopper", "walker2d", "halfcheetah", "pendulum", "custom_pendulum")


def env_spec(env: str) -> TaskSpec:
    if env not in ENVS:
        raise UserError(f"unknown env {env!r}; choose one of: {', '.join(ENVS)}")
    return get_task(f"{env}-random-gen")


def exported_run(work_dir: Path) -> list[Path]:
    """What an earlier training run left in `work_dir` besides its state: exported policies, the medium-replay log,
    snapshots. A clone holds these (not snapshots) but not training.pt, which git does not track."""
    exported = [work_dir / name for name in ("medium.pt", "expert.pt", generate.MEDIUM_REPLAY_FILE)]
    return [path for path in (*exported, *sorted((work_dir / "snapshots").glob("step*.pt"))) if path.is_file()]


def train_command(args: argparse.Namespace, from_scratch: bool) -> str:
    """The `collect.py train` command with the flags given, and --from-scratch when asked for."""
    words = ["python", "collect.py", "train", "--env", args.env]
    for flag, value, default in (
        ("--steps", args.steps, BehaviourConfig.total_steps),
        ("--seed", args.seed, BehaviourConfig.seed),
        ("--snapshot-every", args.snapshot_every, BehaviourConfig.snapshot_every),
        ("--work-dir", args.work_dir, None),
    ):
        words += [flag, str(value)] if value != default else []
    words += ["--no-progress"] * args.no_progress + ["--from-scratch"] * from_scratch
    return shlex.join(words)


def train(args: argparse.Namespace) -> None:
    spec = env_spec(args.env)
    cfg = dataclasses.replace(
        BehaviourConfig(), total_steps=args.steps, seed=args.seed, snapshot_every=args.snapshot_every
    )
    work_dir = args.work_dir or generate.BEHAVIOUR_ROOT / args.env
    state = work_dir / TRAINING_FILE
    if args.from_scratch and state.exists():
        raise UserError(
            f"{state} exists and --from-scratch would start over from step 0; continue it with "
            f"{train_command(args, from_scratch=False)} (or move the file away to discard it)"
        )
    if not args.from_scratch and not state.exists() and exported_run(work_dir):
        raise UserError(
            f"{state} is missing, so training cannot continue (a clone carries the policies and medium-replay log "
            f"exported from a run, not its training state); recreate it by training again from step 0: "
            f"{train_command(args, from_scratch=True)}"
        )
    trainer = BehaviourTrainer(spec, cfg, work_dir, progress=not args.no_progress and sys.stderr.isatty())
    if trainer.resume():
        print(f"resumed {work_dir} at env step {trainer.env_steps}", flush=True)

    def resume_hint() -> str:
        if args.from_scratch and state.exists():  # the same command would now be refused: continue without the flag
            return f"checkpoint in {work_dir}, continue with {train_command(args, from_scratch=False)}"
        return trainer.resume_hint()

    trainer.run(resume_hint)
    print(f"trained {trainer.env_steps} env steps; state in {trainer.training_path}")


def policies(args: argparse.Namespace) -> None:
    spec = env_spec(args.env)
    work_dir = args.work_dir or generate.BEHAVIOUR_ROOT / args.env
    chosen = export_policies(spec, work_dir, generate.BEHAVIOUR_ROOT / args.env, args.medium_fraction)
    for level, info in chosen.items():
        evaluation = info["evaluation"]
        print(
            f"{args.env} {level}: snapshot at env step {info['env_steps']}, return {evaluation['return_mean']:.1f} "
            f"(normalized {evaluation['normalized_mean']:.1f})"
        )


def dataset(args: argparse.Namespace) -> list[Path]:
    tasks = dataset_tasks(args)
    if args.out is not None and len(tasks) > 1:
        raise UserError(f"--out names one file but {len(tasks)} datasets are asked for; drop --out or give one --task")
    return [
        generate.write_dataset(task, args.transitions, args.seed, args.max_episode_steps, args.out, args.overwrite)
        for task in tasks
    ]


def _generated(task: str) -> bool:
    """Whether `task` names a task whose dataset this project generates."""
    try:
        return get_task(task).version == "gen"
    except UserError:
        return False


def dataset_tasks(args: argparse.Namespace) -> list[str]:
    """The generated tasks a dataset or stats command names: --task names, or every level of --env (never both:
    one of them would be ignored)."""
    if args.env and args.task:
        choices = [f"--task {task}" for task in args.task if _generated(task)]
        choices += [f"--env {args.env}"] if args.env in ENVS else []
        example = f", e.g. python collect.py {args.command} {choices[0]}" if choices else ""
        raise UserError(
            f"--task and --env both name datasets (--task {' '.join(args.task)}; --env {args.env}: every "
            f"{args.env} level); pass one of them{example}"
        )
    tasks = [f"{env_spec(args.env).family}-{level}-gen" for level in GENERATED_LEVELS] if args.env else args.task
    if not tasks:
        raise UserError(
            f"{args.command} needs --task TASK or --env ENV; e.g. python collect.py {args.command} "
            "--task hopper-medium-gen"
        )
    return tasks


def stats(args: argparse.Namespace) -> list[dict[str, float | str]]:
    """D4RL-style statistics of each dataset found locally: transitions, episodes, mean ± std of the episode return
    and of its normalized score (the last, possibly cut, episode included, as D4RL's own counts do)."""
    rows: list[dict[str, float | str]] = []
    lines = ["| dataset | transitions | episodes | return | normalized |", "|---|---:|---:|---:|---:|"]
    for task in dataset_tasks(args):
        spec = get_task(task)
        if find_dataset(spec, None) is None:
            lines.append(f"| {task} | not generated (python collect.py dataset --task {task}) | | | |")
            continue
        data = load_dataset(spec, download=False)
        returns = data.episode_returns()
        scores = normalized_score(spec, returns)
        row = {
            "task": task,
            "transitions": float(data.num_transitions),
            "episodes": float(len(returns)),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "normalized_mean": float(np.mean(scores)),
            "normalized_std": float(np.std(scores)),
        }
        rows.append(row)
        lines.append(
            f"| {task} | {data.num_transitions:,} | {len(returns):,} "
            f"| {row['return_mean']:.1f} ± {row['return_std']:.1f} "
            f"| {row['normalized_mean']:.1f} ± {row['normalized_std']:.1f} |"
        )
    print("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> list[Path] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train (or continue training) a behaviour SAC online")
    train_parser.add_argument("--env", required=True, help=f"one of: {', '.join(ENVS)}")
    train_parser.add_argument("--steps", type=int, default=BehaviourConfig.total_steps, help="total env steps")
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--work-dir", type=Path, help="training.pt and snapshots/ (default behaviour/ENV)")
    train_parser.add_argument("--snapshot-every", type=int, default=BehaviourConfig.snapshot_every)
    train_parser.add_argument("--no-progress", action="store_true")
    train_parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="start at step 0 where a run's exported policies are but its training.pt is not (as in a clone)",
    )
    policies_parser = commands.add_parser("policies", help="choose medium/expert snapshots, export medium-replay")
    policies_parser.add_argument("--env", required=True, help=f"one of: {', '.join(ENVS)}")
    policies_parser.add_argument("--work-dir", type=Path, help="the training run (default behaviour/ENV)")
    policies_parser.add_argument(
        "--medium-fraction",
        type=float,
        default=1 / 3,
        help="medium = earliest snapshot with normalized score >= 100 x this",
    )
    dataset_parser = commands.add_parser(
        "dataset",
        help="write generated datasets",
        description="Write D4RL-layout datasets generated from the committed behaviour policies.",
    )
    dataset_parser.add_argument("--task", nargs="+", default=[], help="generated task names, e.g. hopper-medium-gen")
    dataset_parser.add_argument("--env", help=f"every generated level of this env ({', '.join(ENVS)})")
    generate.add_dataset_arguments(dataset_parser)
    stats_parser = commands.add_parser("stats", help="D4RL-style statistics of the local generated datasets")
    stats_parser.add_argument("--task", nargs="+", default=[], help="generated task names, e.g. hopper-medium-gen")
    stats_parser.add_argument("--env", help=f"every generated level of this env ({', '.join(ENVS)})")
    args = parser.parse_args(argv)
    if args.command == "dataset":
        return dataset(args)
    if args.command == "stats":
        stats(args)
        return None
    if args.command == "train":
        train(args)
    else:
        policies(args)
    return None


if __name__ == "__main__":
    run_cli(main)
