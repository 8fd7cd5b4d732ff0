"""Algorithms by name: `from algos import MOPO`, or `build_algorithm(cfg, obs_dim, act_dim, device)`."""

from __future__ import annotations

import torch

from algos.mopo import MOPO
from algos.sac import SAC
from config import OfflineConfig
from utils.errors import UserError

ALGORITHMS = {"mopo": MOPO}


def build_algorithm(cfg: OfflineConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> SAC:
    if cfg.algo not in ALGORITHMS:
        raise UserError(f"unknown algorithm {cfg.algo!r}; choose one of: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[cfg.algo](obs_dim, act_dim, cfg, device)


__all__ = ["ALGORITHMS", "MOPO", "SAC", "build_algorithm"]
