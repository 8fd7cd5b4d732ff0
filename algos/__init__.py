"""Algorithms by name: `from algos import MOPO`, or `build_algorithm(cfg, obs_dim, act_dim, device, dynamics)`; a
trained run in one call (`load_run`) and the evaluator that scores its policy (`run_evaluator`), docs/api.md."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import cast

import torch

from algos import bc, bcq, combo, cql, game, mago, micro, mopo, morel, td3bc, wmopo, wmopo_study
from algos.base import Algorithm
from algos.bc import BC
from algos.bcq import BCQ
from algos.build import build_algorithm, run_evaluator
from algos.combo import COMBO
from algos.cql import CQL
from algos.game import ModelBasedNPG
from algos.mago import MAGO
from algos.micro import MICRO
from algos.mopo import MOPO
from algos.morel import MOReL
from algos.npg_trainer import NPGTrainer
from algos.sac import SAC
from algos.td3bc import TD3BC
from algos.train_run import RunRunner, read_checkpoint
from algos.trainer import OfflineTrainer
from algos.wmopo import WMOPO
from config import LearnedModelConfig, RunConfig
from envs.task_config import load_run_config
from envs.tasks import get_task
from utils.algorithm_spec import AlgorithmSpec, Loop, algorithm_spec, algorithm_specs, register_algorithm
from utils.errors import UserError

# Every algorithm's record (utils/algorithm_spec.py), declared in its own module, registered in this order: the order
# help texts list them in.
for _spec in (
    mopo.SPEC,
    micro.SPEC,
    bc.SPEC,
    bcq.SPEC,
    td3bc.SPEC,
    cql.SPEC,
    combo.SPEC,
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
STUDIES: dict[str, type[RunRunner]] = {
    name: cast("type[RunRunner]", spec.runner) for name, spec in algorithm_specs().items() if spec.study
}


def runner_class(spec: AlgorithmSpec) -> type[RunRunner]:
    """The loop train.py runs an algorithm's runs with: the trainer its record names, else its loop's own (a study
    is its own loop)."""
    if spec.trainer is not None:
        return spec.trainer
    loops: dict[Loop, type[RunRunner]] = {
        Loop.EPOCHS: OfflineTrainer,
        Loop.NPG: NPGTrainer,
        Loop.STUDY: cast("type[RunRunner]", spec.runner),
    }
    return loops[spec.loop]


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


__all__ = [
    "ALGORITHMS",
    "BC",
    "BCQ",
    "COMBO",
    "CQL",
    "MAGO",
    "MICRO",
    "MOPO",
    "MOReL",
    "SAC",
    "TD3BC",
    "WMOPO",
    "Algorithm",
    "ModelBasedNPG",
    "STUDIES",
    "build_algorithm",
    "runner_class",
    "load_run",
    "run_evaluator",
]
