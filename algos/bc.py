"""Behaviour cloning, OfflineRL-Kit's BC (docs/bc.md; KIT offlinerlkit/policy/model_free/bc.py).

A deterministic policy π(s) = max_action · tanh(f(s)) regresses the dataset's actions:

    L(π) = E_{(s, a) ~ D} mean_i (π(s)_i − a_i)²

with Adam. Acting is π(s) (there is nothing to sample). There are no critics, so eval.py's min_Q attack refuses BC,
and no Gaussian, so action_diff refuses it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from algos.base import TrainableModule
from algos.sac import adam
from buffers.replay import Batch
from config import OfflineConfig, Rule, all_positive, positive, register_config
from models.actor_critic import DeterministicActor
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, planned_updates


@register_config("bc")
@dataclass
class BCConfig(OfflineConfig):
    """Behaviour cloning (docs/bc.md, OfflineRL-Kit's BC): deterministic tanh policy fitted to the dataset's
    actions by mean squared error. Defaults are OfflineRL-Kit's run_bc.py."""

    rules: ClassVar[dict[str, Rule]] = {"hidden_dims": all_positive, "actor_lr": positive}

    epochs: int = 200
    eval_episodes: int = 20
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    actor_lr: float = 3e-4


class BC(TrainableModule):
    needs_dynamics: ClassVar[bool] = False
    stackable: ClassVar[bool] = True  # docs/seeds.md

    def __init__(self, obs_dim: int, act_dim: int, cfg: BCConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        self.actor = DeterministicActor(obs_dim, act_dim, cfg.hidden_dims).to(device)
        self._build_optimizers(cfg.epochs)

    def _build_optimizers(self, epochs: int) -> None:
        self.actor_optim = adam(self.actor.parameters(), self.cfg.actor_lr)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs)[0]

    def update(self, batch: Batch, num_real: int = 0) -> dict[str, torch.Tensor]:
        """One Adam step on the mean squared error between π(s) and the dataset action (per seed when stacked:
        each seed's mean, summed over seeds)."""
        actor_loss = (self.actor(batch.obs)[0] - batch.act).square().mean((-2, -1))
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optim.step()
        return {"loss/actor": actor_loss.detach()}

    def end_epoch(self) -> None:
        pass  # no learning-rate schedule

    def optimizers(self) -> dict[str, Any]:
        return {"actor_optim": self.actor_optim}


SPEC = AlgorithmSpec("bc", "BC", BCConfig, BC, Loop.EPOCHS, Unit.GRADIENT_STEPS, planned_updates, ModelUse.NONE)
