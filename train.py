"""Train an algorithm on a task: offline RL from a dataset (mopo, micro, combo, bc, bcq, td3bc, cql, morel, mago, wmopo
on D4RL or generated data), online model-based RL in a gymnasium environment (pal, mal), or the WMOPO Pendulum
study's model fits (wmopo-erm, wmopo-alg2, wmopo-alg1, wmopo-alg1-detached). --list-tasks says which tasks are which.

python train.py --task hopper-medium-v2 --algo mopo --seed 0
python train.py --task hopper-medium-v2 --algo mopo --set epochs=100 --set dynamics.max_epochs=50
python train.py --resume log/hopper-medium-v2/mopo/seed0-20261121-120000
python train.py --task hopper-medium-gen --algo bc --seeds 0 1 2 --workers 2
python train.py --task hopper-medium-gen --algo mopo --seeds 0 1 2 --stack-seeds   # one process, one batched update
python train.py --task Hopper-v4 --algo pal          # online: gymnasium ids are environment tasks
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch

from algos import runner_class
from algos.base import SeedOfStack, TrainableModule
from algos.train_run import OpenRun, read_checkpoint
from algos.trainer import OfflineTrainer, SeedStackedTrainer
from config import OfflineConfig, RunConfig, save_config
from envs import (
    OfflineDataset,
    TaskSpec,
    get_task,
    load_dataset,
)
from envs.generate import dataset_reference
from envs.task_config import load_run_config, load_task_config
from models.dynamics import read_fit_progress
from models.seed_stack import SeedStreams
from utils.algorithm_spec import algorithm_spec, algorithm_specs
from utils.allocator import keep_freed_memory
from utils.checkpoint import seed_everything
from utils.errors import UserError, run_cli
from utils.launch import (
    CHECKPOINT,
    FIT_PROGRESS,
    Job,
    RunRequest,
    can_resume,
    check_distinct,
    check_threads,
    check_workers,
    run_local,
    saved_its_model_only,
    summary,
)
from utils.logger import RunLogger, copy_logs
from utils.paths import create_run_dir
from utils.provenance import start_run
from utils.task_listing import task_listing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", help="task name, e.g. hopper-medium-v2 (see --list-tasks)")
    parser.add_argument("--algo", help=f"algorithm: {', '.join(sorted(algorithm_specs()))}")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", help="several seeds, each its own run (in parallel processes)")
    parser.add_argument("--workers", type=int, help="with --seeds: concurrent runs (default: the number of cores)")
    parser.add_argument(
        "--stack-seeds",
        action="store_true",
        help="with --seeds: train the seeds in this one process as one batched computation "
        f"({', '.join(spec.title for spec in algorithm_specs().values() if spec.stackable)}; each seed still writes "
        "its own run dir, identical to its run alone up to float rounding); with --resume: continue such seeds' run "
        "dirs together",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch/BLAS threads of this run (of each run with --seeds). Default: the user's OMP_NUM_THREADS if set, "
        "else PyTorch's default (one per physical core) for one run, and the cores split between runs with --seeds",
    )
    parser.add_argument("--config", help="extra YAML file (or preset name in configs/<algo>/) applied after the task's")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, dotted for nested blocks: --set dynamics.max_epochs=5",
    )
    parser.add_argument("--log-dir", help="root of run directories (default log)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        nargs="+",
        help="continue a run from its last checkpoint (with --stack-seeds: the run dirs of stacked seeds, together)",
    )
    parser.add_argument(
        "--list-tasks",
        action="store_true",
        help="print the tasks by kind (online, D4RL, generated, task files), with whether each one's data is here, "
        "and exit",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for provenance.json
    return args


def resolve_config(args: argparse.Namespace) -> tuple[RunConfig, Path, dict[str, Any] | None]:
    """The run's config, its directory (for a fresh start, the name wanted: open_run claims it or a free variant),
    and the checkpoint to resume from (None for a fresh start)."""
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass a directory under log/")
        if args.overrides or args.config:
            raise UserError("--resume continues with the run's saved config; drop --set/--config or start a new run")
        cfg = load_run_config(run_dir / "config.yaml")
        for flag in ("task", "algo", "seed"):
            given = getattr(args, flag)
            if given is not None and str(given) != str(getattr(cfg, flag)):
                raise UserError(f"--{flag} {given} does not match the run being resumed ({getattr(cfg, flag)})")
        if not can_resume(run_dir):
            raise nothing_to_resume(cfg, run_dir)
        checkpoint_path = run_dir / CHECKPOINT
        if not checkpoint_path.exists():  # killed while fitting its model: the fit continues (prepare_dynamics)
            return cfg, run_dir, None
        return cfg, run_dir, read_checkpoint(checkpoint_path)

    if not args.task or not args.algo:
        raise UserError("--task and --algo are required (or --resume RUN_DIR); see python train.py --help")
    cfg = load_task_config(
        args.algo,
        args.task,
        args.config,
        args.overrides,
        {"seed": args.seed, "device": args.device, "log_dir": args.log_dir},
    )
    spec = get_task(cfg.task)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cfg, Path(cfg.log_dir) / spec.name / cfg.algo / f"seed{cfg.seed}-{stamp}", None


def nothing_to_resume(cfg: RunConfig, run_dir: Path) -> UserError:
    """The refusal of `--resume` for a run directory without a checkpoint (nor a model fit in progress): it stopped
    before saving anything to continue from, so the run is started afresh in a new directory from its saved
    config, reusing its fitted model if it saved one; the directory itself is left as it is."""
    model = run_dir / "dynamics.pt"
    command = ["python", "train.py", "--task", cfg.task_file or cfg.task, "--algo", cfg.algo]
    command += ["--config", str(run_dir / "config.yaml")]
    if saved_its_model_only(cfg, run_dir):
        command += ["--set", "dynamics_only=false", f"dynamics_path={model}"]
        return UserError(
            f"{run_dir} is a dynamics_only run that saved its model, so it has nothing to resume; train on that "
            f"model with: {shlex.join(command)}"
        )
    if algorithm_spec(cfg.algo).model.fitted_first and model.is_file():
        command += ["--set", f"dynamics_path={model}"]
    return UserError(
        f"{run_dir} has no checkpoint to resume (it stopped before its first save); start the run afresh in a new "
        f"run directory with: {shlex.join(command)}"
    )


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but PyTorch sees no CUDA device; use --device cpu")
    return torch.device(name)


def train_seeds(args: argparse.Namespace) -> None:
    """`--seeds`: one fresh run per seed, as child processes sharing the cores (utils/launch.py)."""
    if args.resume or args.seed is not None:
        raise UserError("--seeds starts one new run per seed; it cannot be combined with --seed or --resume")
    if not args.task or not args.algo:
        raise UserError("--seeds needs --task and --algo")
    check_workers(args.workers)
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    log_dir = args.log_dir or OfflineConfig.log_dir
    requests = [
        RunRequest(args.task, args.algo, seed, log_dir, tuple(args.overrides), args.config, args.device)
        for seed in args.seeds
    ]
    for request in requests:
        request.resolved_config()  # a bad key or value stops everything before any run starts
    jobs = run_local([Job(request, None) for request in requests], workers, args.threads)
    print(summary(jobs))
    failed = [job for job in jobs if not job.outcome.startswith("finished")]
    if failed:
        raise UserError(f"{len(failed)} of {len(jobs)} seeds failed (see above); resume each with --resume RUN_DIR")


class TrainResult(dict[str, float]):
    """What one run's `train.main` returns: its last evaluation (return_mean, normalized_mean, ... ; empty when it
    evaluated nothing, e.g. a dynamics_only run) as a dict, as the CLI has always returned it, and where the run is
    (`run_dir`), so a script can go on with `algos.load_run(result.run_dir)` (docs/api.md)."""

    def __init__(self, metrics: dict[str, float] | None, run_dir: Path) -> None:
        super().__init__(metrics or {})
        self.run_dir = run_dir


def main(argv: list[str] | None = None) -> TrainResult | None:
    """train.py's command line, callable from Python with the same arguments: one run returns a TrainResult;
    --list-tasks, --seeds and --stack-seeds (several runs, or none) return None. Bad input raises UserError."""
    args = parse_args(argv)
    check_threads(args.threads)
    if args.list_tasks:
        print(task_listing())
        return None
    keep_freed_memory()  # a third of MICRO's CPU update time was re-faulting freed pages (utils/allocator.py)
    if args.seeds:
        check_distinct("--seeds", args.seeds)  # one seed twice would be one run trained twice
    if args.stack_seeds and not (args.seeds or args.resume):
        raise UserError(
            "--stack-seeds trains the seeds of --seeds (or continues the run dirs of --resume) in one process; pass "
            "--seeds 0 1 2 ..."
        )
    if args.stack_seeds:
        train_stacked(args)
        return None
    if args.resume and len(args.resume) > 1:
        raise UserError("--resume takes one RUN_DIR; several stacked seeds' run dirs continue with --stack-seeds")
    args.resume = args.resume[0] if args.resume else None
    if args.seeds:
        train_seeds(args)
        return None
    if args.workers is not None:
        raise UserError("--workers applies to --seeds; drop it or pass --seeds")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = open_run(*resolve_config(args), args)
    try:
        runner = runner_class(algorithm_spec(run.cfg.algo)).build(run)
        if runner is None:  # a dynamics_only run: its model is saved
            return TrainResult(None, run.run_dir)
        try:
            runner.start(run)
            result = runner.run()
        finally:
            runner.close()
    finally:
        run.logger.close()
    if result is not None:
        print(runner.result_line(result, run))
    return TrainResult(result, run.run_dir)


def open_run(cfg: RunConfig, run_dir: Path, checkpoint: dict[str, Any] | None, args: argparse.Namespace) -> OpenRun:
    """Seed the global streams, load the data, write the config and open the logger of one run."""
    spec = get_task(cfg.task)
    device = resolve_device(cfg.device)
    progress = not args.no_progress and sys.stderr.isatty()
    seed_everything(cfg.seed)

    dataset = None
    if not spec.online:
        dataset = load_dataset(spec, cfg.dataset_path, cfg.dataset_backend, cfg.download)
        dataset.validate(spec)
    # A fresh run may start from another run's saved state (WMOPO's branch_from), checked before anything is written.
    takeover = runner_class(algorithm_spec(cfg.algo)).takeover(cfg) if checkpoint is None else None
    if args.resume:  # refused here, before anything of the run changes, if its data changed since it started
        record_provenance(cfg, spec, run_dir, dataset, args)
    else:
        run_dir = create_run_dir(run_dir)  # exclusively: never a directory another run has claimed
        save_config(cfg, run_dir / "config.yaml")
        record_provenance(cfg, spec, run_dir, dataset, args)
    source = "online" if dataset is None else f"{dataset.num_transitions} transitions from {dataset.source}"
    print(f"run dir: {run_dir}  ({source}; {torch.get_num_threads()} threads)", flush=True)

    branched_from = None
    if takeover is not None:
        branched_from = takeover.run_dir
        copy_logs(branched_from, run_dir)
        for name in takeover.files:
            shutil.copyfile(branched_from / name, run_dir / name)
        checkpoint = read_checkpoint(takeover.checkpoint)

    # Resuming (or branching) drops what the interrupted process logged after its last checkpoint (or dynamics-fit
    # save), and keeps all it logged before.
    resume_step, resume_events = None, None
    if checkpoint:
        resume_step, resume_events = checkpoint["global_step"], checkpoint.get("num_events")
    elif args.resume:  # no checkpoint: a dynamics fit in progress (resolve_config refuses anything else)
        fit = read_fit_progress(run_dir / FIT_PROGRESS)
        resume_step, resume_events = fit["epoch"], fit["num_events"]
    logger = RunLogger(run_dir, resume_step, resume_events=resume_events)
    return OpenRun(cfg, run_dir, checkpoint, spec, device, dataset, logger, progress, branched_from)


def record_provenance(
    cfg: RunConfig, spec: TaskSpec, run_dir: Path, dataset: OfflineDataset | None, args: argparse.Namespace
) -> None:
    """The run's provenance.json (utils/provenance.py): its data, code, software, machine and command."""
    data = None
    if dataset is not None:
        path = Path(dataset.source)
        data = {
            "name": cfg.task,
            "path": str(path.resolve()) if path.is_file() else dataset.source,
            "sha256": dataset.content_hash,
            "transitions": dataset.num_transitions,
            **dataset_reference(spec, dataset),  # what the run's scores are read against
        }
    identity = {"task": cfg.task, "algo": cfg.algo, "seed": cfg.seed}
    start_run(run_dir, identity, data, getattr(args, "argv", []), torch.get_num_threads(), bool(args.resume))


def train_stacked(args: argparse.Namespace) -> list[dict[str, float] | None]:
    """`--seeds ... --stack-seeds`: the seeds' runs built one by one exactly as alone (each under its own seed, with
    its own dynamics fit, run dir and checkpoint), then trained as one seed-stacked computation (docs/seeds.md)."""
    if args.seed is not None or (args.resume and args.seeds):
        raise UserError(
            "--stack-seeds starts the seeds of --seeds or continues the run dirs of --resume; pass one of them alone"
        )
    if args.workers is not None:
        raise UserError("--workers sets concurrent processes; --stack-seeds trains every seed in this one")
    check_distinct("--resume", [os.path.realpath(run_dir) for run_dir in args.resume or []])
    per_run = [{"seed": seed, "resume": None} for seed in args.seeds or []]
    per_run += [{"resume": run_dir} for run_dir in args.resume or []]
    resolved = [resolve_config(argparse.Namespace(**{**vars(args), **changes})) for changes in per_run]
    check_stackable_configs([cfg for cfg, _, _ in resolved], [run_dir for _, run_dir, _ in resolved])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    runs: list[OpenRun] = []
    trainers: list[OfflineTrainer] = []
    try:
        streams: SeedStreams | None = None
        for changes, (cfg, run_dir, checkpoint) in zip(per_run, resolved):
            run = open_run(cfg, run_dir, checkpoint, argparse.Namespace(**{**vars(args), **changes}))
            runs.append(run)
            trainer = cast("OfflineTrainer | None", runner_class(algorithm_spec(cfg.algo)).build(run))
            if trainer is None:  # dynamics_only: the seed's model is saved
                continue
            trainers.append(trainer)
            trainer.start(run)
            streams = streams or SeedStreams(run.device)
            streams.capture()
        if not trainers:
            return []
        assert streams is not None
        singles = [cast(TrainableModule, trainer.algo) for trainer in trainers]
        stacked = type(singles[0]).stack(singles, streams, runs[0].cfg.epochs)
        for seed, (trainer, single) in enumerate(zip(trainers, singles)):
            trainer.algo = SeedOfStack(stacked, seed, template=single)
        results = SeedStackedTrainer(trainers, stacked, streams, runs[0].progress).run()
    finally:
        for trainer in trainers:
            trainer.close()
        for run in runs:
            run.logger.close()
    for run, trainer, result in zip(runs, trainers, results):
        if result is not None:
            print(trainer.result_line(result, run))
    return results


def check_stackable_configs(configs: list[RunConfig], run_dirs: list[Path]) -> None:
    """Stacked seeds share one stackable algorithm and every setting but the seed (resumed run dirs included)."""
    algo = configs[0].algo
    if not algorithm_spec(algo).stackable:
        stackable = sorted(name for name, spec in algorithm_specs().items() if spec.stackable)
        raise UserError(
            f"--stack-seeds supports {', '.join(stackable)} so far, not {algo}; drop --stack-seeds to train the "
            "seeds as separate processes"
        )
    first = {key: value for key, value in asdict(configs[0]).items() if key != "seed"}
    for cfg, run_dir in zip(configs[1:], run_dirs[1:]):
        for key in ("algo", "task"):  # the differences that make two runs different experiments, named first
            if getattr(cfg, key) != getattr(configs[0], key):
                raise UserError(
                    f"{run_dir} is a {cfg.algo} run on {cfg.task} but {run_dirs[0]} a {algo} run on "
                    f"{configs[0].task}; stacked seeds share one {key}, so resume each run on its own: python "
                    f"train.py --resume {run_dir}"
                )
        other = {key: value for key, value in asdict(cfg).items() if key != "seed"}
        differing = sorted(key for key in first.keys() | other.keys() if first.get(key) != other.get(key))
        if differing:
            raise UserError(
                f"{run_dir} differs from {run_dirs[0]} in {', '.join(differing)}; stacked seeds share every setting "
                f"but the seed, so resume each run on its own: python train.py --resume {run_dir}"
            )
    seeds = [cfg.seed for cfg in configs]
    if len(set(seeds)) < len(seeds):
        raise UserError(f"--stack-seeds got seed {max(set(seeds), key=seeds.count)} twice; stack distinct seeds")


if __name__ == "__main__":
    run_cli(main)
