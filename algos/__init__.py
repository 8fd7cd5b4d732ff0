"""Algorithms by name: `from algos import MOPO`, or `build_algorithm(cfg, obs_dim, act_dim, device, dynamics)`; a
trained run in one call (`load_run`) and the evaluator that scores its policy (`run_evaluator`), docs/api.md."""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from algos.base import Algorithm
from algos.bc import BC
from algos.bcq import BCQ
from algos.game import ModelBasedNPG
from algos.mago import MAGO
from algos.micro import MICRO
from algos.mopo import MOPO
from algos.morel import MOReL
from algos.sac import SAC
from algos.trainer import read_checkpoint
from algos.wmopo import WMOPO
from algos.wmopo_study import PendulumStudy, PendulumStudyConfig
from config import RunConfig
from envs.datasets import OfflineDataset
from envs.evaluation import Evaluator
from envs.task_config import load_run_config
from envs.tasks import get_task
from models.dynamics import EnsembleDynamics
from utils.errors import UserError

ALGORITHMS: dict[str, type[Algorithm]] = {
    "mopo": MOPO,
    "micro": MICRO,
    "bc": BC,
    "bcq": BCQ,
    "pal": ModelBasedNPG,  # PAL and MAL are one algorithm in two game settings (algos/game.py)
    "mal": ModelBasedNPG,
    "morel": MOReL,
    "mago": MAGO,
    "wmopo": WMOPO,
}

# Runs that train no policy: the WMOPO Pendulum study's methods fit and score models of the pendulum (train.py runs
# them; eval.py has nothing to evaluate).
STUDIES: dict[str, type[PendulumStudy]] = dict.fromkeys(
    ("wmopo-erm", "wmopo-alg2", "wmopo-alg1", "wmopo-alg1-detached"), PendulumStudy
)


def build_algorithm(
    cfg: RunConfig,
    obs_dim: int,
    act_dim: int,
    device: torch.device | str = "cpu",
    dynamics: EnsembleDynamics | None = None,
    dataset: OfflineDataset | None = None,
) -> Algorithm:
    """The algorithm named by `cfg.algo`; `dynamics` is handed to those whose updates query the model, `dataset` to
    those that also draw states from the data themselves (MAGO's game)."""
    if cfg.algo not in ALGORITHMS:
        raise UserError(f"unknown algorithm {cfg.algo!r}; choose one of: {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[cfg.algo]
    if getattr(cls, "needs_dataset", False):
        algo = cls(obs_dim, act_dim, cfg, device, dynamics=dynamics, dataset=dataset)
    elif cls.needs_dynamics:
        algo = cls(obs_dim, act_dim, cfg, device, dynamics=dynamics)
    else:
        algo = cls(obs_dim, act_dim, cfg, device)
    algo.obs_dim = obs_dim  # what `action` checks its inputs against
    return algo


def load_run(
    run_dir: str | Path, device: torch.device | str = "cpu", task: str | None = None
) -> tuple[RunConfig, Algorithm]:
    """A trained run in one call: its config and its algorithm with the last checkpoint's weights (for acting and
    evaluation; the dynamics model is not loaded). `task`, if given, must be the run's task."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        inside = next(run_dir.glob("**/config.yaml"), None) if run_dir.is_dir() else None
        hint = f"it holds runs, e.g. {inside.parent}" if inside else "pass a directory under log/"
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); {hint}")
    cfg = load_run_config(run_dir / "config.yaml")
    if isinstance(cfg, PendulumStudyConfig):
        raise UserError(
            f"{run_dir} is a WMOPO Pendulum study run ({cfg.algo}): it fits models to evaluate a fixed policy and "
            "trains none; its results are in its progress.csv and TensorBoard logs (python score.py, plot.py)"
        )
    if task is not None and task != cfg.task:
        raise UserError(f"run {run_dir} was trained on {cfg.task}, not {task}; drop --task or pick a {task} run")
    if getattr(cfg, "dynamics_only", False):
        model = run_dir / "dynamics.pt"
        raise UserError(
            f"{run_dir} is a dynamics_only run: it fits a model ({model}) and trains no policy; train one on that "
            f"model with python train.py --task {shlex.quote(cfg.task_file or cfg.task)} --algo {cfg.algo} --set "
            f"{shlex.quote(f'dynamics_path={model}')}"
        )
    state = read_checkpoint(run_dir / "checkpoints" / "checkpoint.pt")
    if (state["task"], state["algo"]) != (cfg.task, cfg.algo):
        raise UserError(
            f"checkpoint in {run_dir} is from {state['algo']} on {state['task']}, but the run's config.yaml says "
            f"{cfg.algo} on {cfg.task}; the directory mixes two runs"
        )
    spec = get_task(cfg.task)
    algo = build_algorithm(cfg, spec.obs_dim, spec.act_dim, device)
    algo.load_state_dict(state["algo_state"]["modules"])
    return cfg, algo.eval()


def run_evaluator(
    cfg: RunConfig, episodes: int, seed: int | None = None, device: torch.device | str = "cpu"
) -> Evaluator:
    """The evaluator a run's policy is scored with: its task's environment, its action repeat and (by default) its
    seed's episode resets, so `run_evaluator(cfg, cfg.eval_episodes).evaluate(algo.act)` repeats the run's own
    evaluations. Close it (or use it in a `with` block) to release the environments."""
    return Evaluator(
        get_task(cfg.task), episodes, cfg.seed if seed is None else seed, device, getattr(cfg, "act_repeat", 1)
    )


__all__ = [
    "ALGORITHMS",
    "BC",
    "BCQ",
    "MAGO",
    "MICRO",
    "MOPO",
    "MOReL",
    "SAC",
    "WMOPO",
    "Algorithm",
    "ModelBasedNPG",
    "STUDIES",
    "build_algorithm",
    "load_run",
    "run_evaluator",
]
