"""MOPO: Model-based Offline Policy Optimization (Yu et al., NeurIPS 2020; docs/mopo.md).

1. Fit a probabilistic ensemble p̂(s', r | s, a) to the offline data (models/dynamics.py).
2. Every `rollout_freq` steps, branch `rollout_batch_size` short rollouts (h = `rollout_length`) from dataset states
   with the current stochastic policy; store them with the uncertainty-penalised reward

       r̃(s, a) = r̂(s, a) − λ · u(s, a),    u(s, a) = max_i ‖σ_i(s, a)‖₂   (penalty_type="aleatoric"),

   where u is computed from all ensemble members and all output dims (reward included).
3. Train SAC on batches of `real_ratio` dataset transitions (unpenalised) and model transitions (penalised).

The rollouts, buffers and SAC updates are the shared trainer's and SAC's; MOPO's own piece is the penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from algos.sac import SAC
from config import ModelBasedConfig, Rule, one_of, penalty_weight, register_config


@register_config("mopo")
@dataclass
class MOPOConfig(ModelBasedConfig):
    """MOPO (docs/mopo.md): reward penalised by lambda * u(s, a)."""

    rules: ClassVar[dict[str, Rule]] = {
        "penalty_type": one_of("aleatoric", "pairwise_diff", "ensemble_std"),
        "penalty_coef": penalty_weight,
    }

    penalty_coef: float = 2.5
    penalty_type: str = "aleatoric"  # aleatoric | pairwise_diff | ensemble_std


class MOPO(SAC):
    def __init__(self, obs_dim: int, act_dim: int, cfg: MOPOConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(obs_dim, act_dim, cfg.sac, cfg.epochs, device)
        self.penalty_coef = cfg.penalty_coef
        self.penalty_type = cfg.penalty_type  # the trainer asks the model for this uncertainty during rollouts

    def model_reward(self, reward: torch.Tensor, info: dict[str, torch.Tensor]) -> torch.Tensor:
        """r̃ = r̂ − λ u(s, a)."""
        return reward - self.penalty_coef * info["uncertainty"]
