"""Algorithms by name: `from algos import MOPO`, or `build_algorithm(cfg, obs_dim, act_dim, device, dynamics)`; a
trained run in one call (`load_run`) and the evaluator that scores its policy (`run_evaluator`), docs/api.md."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import cast

import torch

from algos import bc, bcq, cql, game, mago, micro, mopo, morel, wmopo, wmopo_study
from algos.base import Algorithm, Study
from algos.bc import BC
from algos.bcq import BCQ
from algos.cql import CQL
from algos.game import ModelBasedNPG
from algos.mago import MAGO
from algos.micro import MICRO
from algos.mopo import MOPO
from algos.morel import MOReL
from algos.sac import SAC
from algos.trainer import read_checkpoint
from algos.wmopo import WMOPO
from config import LearnedModelConfig, RunConfig
from envs.datasets import OfflineDataset
from envs.evaluation import Evaluator
from envs.task_config import load_run_config
from envs.tasks import get_task
from models.dynamics import EnsembleDynamics
from utils.algorithm_spec import algorithm_spec, algorithm_specs, register_algorithm
from utils.errors import UserError

# Every algorithm's record (utils/algorithm_spec.py), declared in its own module, registered in this order: the order
# help texts list them in.
for _spec in (
    mopo.SPEC,
    micro.SPEC,
    bc.SPEC,
    bcq.SPEC,
    cql.SPEC,
    *game.SPECS,  # PAL and MAL are one algorithm in two game settings
    morel.SPEC,
    mago.SPEC,
    wmopo.SPEC,
    *wmopo_study.SPECS,
):
    register_algorithm(_spec)

# The algorithm class of every name that trains a policy (what `build_algorithm` builds).
ALGORITHMS: dict[str, type[Algorithm]] = {
    name: cast("type[Algorithm]", spec.runner) for name, spec in algorithm_specs().items() if not spec.study
}

# Runs that train no policy: the WMOPO Pendulum study's methods fit and score models of the pendulum (train.py runs
# them; eval.py has nothing to evaluate).
STUDIES: dict[str, type[Study]] = {
    name: cast("type[Study]", spec.runner) for name, spec in algorithm_specs().items() if spec.study
}


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
    if cls.needs_dataset:
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
    spec = algorithm_spec(cfg.algo)
    if spec.study:
        raise UserError(
            f"{run_dir} is a WMOPO Pendulum study run ({cfg.algo}): it fits models to evaluate a fixed policy and "
            "trains none; its results are in its progress.csv and TensorBoard logs (python score.py, plot.py)"
        )
    if task is not None and task != cfg.task:
        raise UserError(f"run {run_dir} was trained on {cfg.task}, not {task}; drop --task or pick a {task} run")
    if spec.model.fitted_first and cast(LearnedModelConfig, cfg).dynamics_only:
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
    task_spec = get_task(cfg.task)
    algo = build_algorithm(cfg, task_spec.obs_dim, task_spec.act_dim, device)
    algo.load_state_dict(state["algo_state"]["modules"])
    return cfg, algo.eval()


def run_evaluator(
    cfg: RunConfig, episodes: int, seed: int | None = None, device: torch.device | str = "cpu"
) -> Evaluator:
    """The evaluator a run's policy is scored with: its task's environment, its action repeat and (by default) its
    seed's episode resets, so `run_evaluator(cfg, cfg.eval_episodes).evaluate(algo.act)` repeats the run's own
    evaluations. Close it (or use it in a `with` block) to release the environments."""
    return Evaluator(get_task(cfg.task), episodes, cfg.seed if seed is None else seed, device, cfg.decision_repeat())


__all__ = [
    "ALGORITHMS",
    "BC",
    "BCQ",
    "CQL",
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
