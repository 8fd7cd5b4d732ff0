"""Launch many training runs: several seeds from one `train.py` call, and `sweep.py` grids.

Every run is its own `python train.py` process (so a crash or a kill touches one run only), with the machine's cores
split between concurrent runs. Before launching, a run that already finished is skipped and an interrupted one is
resumed from its run directory, which makes re-running a sweep after a kill the way to finish it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from config import LearnedModelConfig, OfflineConfig, RunConfig, config_to_dict
from envs.task_config import load_run_config, load_task_config
from utils.algorithm_spec import algorithm_spec
from utils.errors import UserError
from utils.paths import CHECKPOINT, FIT_PROGRESS

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunRequest:
    """One training run: what `python train.py` is told, and the log root its run directory goes under."""

    task: str
    algo: str
    seed: int
    log_dir: str
    overrides: tuple[str, ...] = ()
    config: str | None = None
    device: str | None = None
    threads: int | None = None  # torch/BLAS threads of the run's process (None: see threads_per_run)

    @property
    def label(self) -> str:
        extra = f" [{' '.join(self.overrides)}]" if self.overrides else ""
        return f"{self.algo} {self.task} seed {self.seed}{extra}"

    def resolved_config(self) -> OfflineConfig:
        """The merged config train.py will run with (raises the one-line error of a bad key or value)."""
        cli = {"seed": self.seed, "device": self.device, "log_dir": self.log_dir}
        return load_task_config(self.algo, self.task, self.config, self.overrides, cli)

    def existing_run(self) -> Path | None:
        """The newest run directory under the log root made with exactly this request's config, if any."""
        wanted = config_to_dict(self.resolved_config())
        parent = Path(self.log_dir) / wanted["task"] / self.algo
        for run_dir in sorted(parent.glob(f"seed{self.seed}-*"), reverse=True):
            try:
                if config_to_dict(load_run_config(run_dir / "config.yaml")) == wanted:
                    return run_dir
            except UserError:  # not a run directory, or another algorithm's: not ours to resume
                continue
        return None

    def command(self, resume: Path | None) -> list[str]:
        train = [sys.executable, str(REPO / "train.py"), "--no-progress"]
        if resume is not None:
            return [*train, "--resume", str(resume), *(["--threads", str(self.threads)] if self.threads else [])]
        argv = [*train, "--task", self.task, "--algo", self.algo, "--seed", str(self.seed), "--log-dir", self.log_dir]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        if self.config:
            argv += ["--config", self.config]
        if self.device:
            argv += ["--device", self.device]
        if self.overrides:
            argv += ["--set", *self.overrides]
        return argv


def can_resume(run_dir: Path) -> bool:
    """Whether `train.py --resume` has something to continue: a checkpoint, or a dynamics fit in progress. A run
    directory with neither stopped before it saved anything to resume; a new run starts it afresh."""
    return (run_dir / CHECKPOINT).is_file() or (run_dir / FIT_PROGRESS).is_file()


def saved_its_model_only(cfg: RunConfig, run_dir: Path) -> bool:
    """A `dynamics_only` run that did all it was asked: fit the model and save it (it never checkpoints)."""
    if not algorithm_spec(cfg.algo).model.fitted_first:  # only a config with a model fitted first has the key
        return False
    return cast(LearnedModelConfig, cfg).dynamics_only and (run_dir / "dynamics.pt").is_file()


def check_distinct(flag: str, values: Sequence[object]) -> None:
    """Refuse a value listed twice (`--seeds 0 0`): it would be one run trained twice, and two runs of one config
    must never share a run directory or be mistaken for each other when a sweep resumes."""
    seen: list[object] = []
    for value in values:
        if value in seen:
            once = " ".join(str(v) for v in dict.fromkeys(values))
            raise UserError(f"{flag} lists {value} twice; give each value once ({flag} {once})")
        seen.append(value)


def run_status(run_dir: Path) -> tuple[int, int]:
    """(epochs checkpointed, epochs configured) of a run directory — iterations for the NPG family; (0, epochs)
    when it has no checkpoint yet."""
    cfg = load_run_config(run_dir / "config.yaml")
    epochs = cfg.planned_epochs()
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        return 0, epochs
    try:  # mmap: only the counters are read, not the networks and buffers
        done = int(torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)["epoch"])
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is resumed (and reported) by train.py itself
        done = 0
    return done, epochs


@dataclass
class Job:
    request: RunRequest
    resume: Path | None  # run directory to continue, None for a fresh run
    outcome: str = ""  # "finished", "failed (exit N): last line", "skipped (already finished)"
    run_dir: Path | None = None
    score: float | None = None
    log_lines: list[str] = field(default_factory=list)


def plan(requests: Sequence[RunRequest]) -> tuple[list[Job], list[Job]]:
    """Split requests into jobs to run (fresh or resumed) and runs that already finished. A run directory with
    nothing to resume (killed before its first checkpoint) is left as it is and the run starts in a new one."""
    to_run, finished = [], []
    for request in requests:
        existing = request.existing_run()
        if existing is not None and saved_its_model_only(request.resolved_config(), existing):
            finished.append(Job(request, None, "skipped (model already saved)", existing))
            continue
        if existing is None or not can_resume(existing):
            to_run.append(Job(request, None))
            continue
        done, epochs = run_status(existing)
        if done >= epochs:
            finished.append(Job(request, None, "skipped (already finished)", existing, last_score(existing)))
        else:
            to_run.append(Job(request, existing))
    return to_run, finished


def last_score(run_dir: Path) -> float | None:
    """The run's last normalized score, or None where it has none (no evaluation yet, or a task without reference
    scores such as the Pendulum study, whose progress.csv holds nan)."""
    progress = run_dir / "progress.csv"
    if not progress.is_file():
        return None
    lines = progress.read_text().strip().splitlines()
    if len(lines) < 2:
        return None
    header, last = lines[0].split(","), lines[-1].split(",")
    score = float(last[header.index("normalized_score_mean")])
    return score if math.isfinite(score) else None


def user_threads() -> int | None:
    """The thread count the user asked for through OMP_NUM_THREADS, if any (a positive integer)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def threads_per_run(workers: int, requested: int | None = None) -> int:
    """Threads of each of `workers` concurrent runs: `--threads` if given, else the user's OMP_NUM_THREADS, else the
    machine's cores split evenly between the runs (so concurrent runs do not oversubscribe the cores)."""
    return requested or user_threads() or max(1, (os.cpu_count() or 1) // workers)


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}; omit it to use the default")


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}; omit it to run as many runs as cores at once")


def execute(job: Job, threads: int, echo: Callable[[str], None]) -> Job:
    """Run one job as a child process with `threads` threads, echoing its lines prefixed with the run's label."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    process = subprocess.Popen(
        dataclasses.replace(job.request, threads=threads).command(job.resume),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        job.log_lines.append(line)
        echo(f"[{job.request.label}] {line}")
    code = process.wait()
    job.run_dir = job.request.existing_run()
    if code == 0:
        job.outcome = "finished"
        job.score = None if job.run_dir is None else last_score(job.run_dir)
    else:
        last = job.log_lines[-1] if job.log_lines else "no output"
        job.outcome = f"failed (exit {code}): {last}"
    return job


def run_local(jobs: Sequence[Job], workers: int, threads: int | None = None) -> list[Job]:
    """Run jobs in a pool of `workers` concurrent processes on this machine, `threads` threads each (None: see
    threads_per_run)."""
    check_workers(workers)
    check_threads(threads)
    lock = threading.Lock()

    def echo(line: str) -> None:
        with lock:
            print(line, flush=True)

    threads = threads_per_run(min(workers, max(len(jobs), 1)), threads)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: execute(job, threads, echo), jobs))


def run_ray(jobs: Sequence[Job], address: str | None, cpus_per_run: int, threads: int | None = None) -> list[Job]:
    """Run jobs as Ray tasks (one task reserving `cpus_per_run` CPUs per run, `threads` threads each, default as many
    as it reserves). The cluster's nodes must see this repository and the log directory at the same paths (a shared
    filesystem), since runs write there."""
    check_threads(threads)
    try:
        import ray
    except ImportError:
        raise UserError('--backend ray needs Ray: pip install -e ".[ray]" (or use --backend local)') from None
    # A local instance starts without the dashboard (seconds instead of minutes on small machines); options such as
    # include_dashboard may only be given when Ray starts the instance, not when joining a cluster.
    local_only = {"include_dashboard": False} if address is None else {}
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **local_only)
    try:

        @ray.remote(num_cpus=cpus_per_run)
        def remote_execute(job: Job) -> Job:
            return execute(job, threads or cpus_per_run, lambda line: None)

        return ray.get([remote_execute.remote(job) for job in jobs])
    finally:
        ray.shutdown()


def summary(jobs: Sequence[Job]) -> str:
    lines = []
    for job in jobs:
        score = "" if job.score is None else f"  normalized {job.score:.1f}"
        where = f"  {job.run_dir}" if job.run_dir else ""
        lines.append(f"{job.request.label}: {job.outcome}{score}{where}")
    return "\n".join(lines)
