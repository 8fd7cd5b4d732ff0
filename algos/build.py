"""An algorithm and its evaluator from a run config, by the algorithm's record (utils/algorithm_spec.py): what the
trainers build their runs from and `algos.load_run` rebuilds a trained policy with. Kept below the trainers, which
cannot import the `algos` package that registers them."""

from __future__ import annotations

from typing import cast

import torch

from algos.base import Algorithm
from config import RunConfig
from envs.datasets import OfflineDataset
from envs.evaluation import Evaluator
from envs.tasks import get_task
from models.dynamics import EnsembleDynamics
from utils.algorithm_spec import algorithm_specs
from utils.errors import UserError


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
    policies = {name: spec for name, spec in algorithm_specs().items() if not spec.study}
    if cfg.algo not in policies:
        raise UserError(f"unknown algorithm {cfg.algo!r}; choose one of: {', '.join(sorted(policies))}")
    cls = cast("type[Algorithm]", policies[cfg.algo].runner)
    if cls.needs_dataset:
        algo = cls(obs_dim, act_dim, cfg, device, dynamics=dynamics, dataset=dataset)  # type: ignore[call-arg]
    elif cls.needs_dynamics:
        algo = cls(obs_dim, act_dim, cfg, device, dynamics=dynamics)  # type: ignore[call-arg]
    else:
        algo = cls(obs_dim, act_dim, cfg, device)  # type: ignore[call-arg]
    algo.obs_dim = obs_dim  # what `action` checks its inputs against
    return algo


def run_evaluator(
    cfg: RunConfig, episodes: int, seed: int | None = None, device: torch.device | str = "cpu"
) -> Evaluator:
    """The evaluator a run's policy is scored with: its task's environment, its action repeat and (by default) its
    seed's episode resets, so `run_evaluator(cfg, cfg.eval_episodes).evaluate(algo.act)` repeats the run's own
    evaluations. Close it (or use it in a `with` block) to release the environments."""
    return Evaluator(get_task(cfg.task), episodes, cfg.seed if seed is None else seed, device, cfg.decision_repeat())
