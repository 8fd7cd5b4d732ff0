"""COMBO: Conservative Offline Model-Based Policy Optimization (Yu, Kumar, Rafailov, Rajeswaran, Levine & Finn,
NeurIPS 2021; docs/combo.md), as OfflineRL-Kit runs it (KIT offlinerlkit/policy/model_based/combo.py,
run_example/run_combo.py): no official code of the authors is public.

1. Fit a probabilistic ensemble p̂(s', r | s, a) to the offline data (models/dynamics.py), as MOPO does.
2. Every `rollout_freq` steps, branch `rollout_batch_size` short rollouts (h = `rollout_length`) from dataset states
   with the current stochastic policy; store them with the model's reward, unpenalised.
3. Train SAC on batches of `real_ratio` dataset rows and model rows, with CQL's regulariser added to each critic's
   loss (algos/cql.py), taken on COMBO's rows:

       L(Q_j) = mean_{d_f} (Q_j(s, a) − y)² + β · [ T · mean_{s ~ ρ} logsumexp(X_j(s, ·) / T) − mean_{μ} Q_j(s, a) ]

   with X_j CQL's importance-weighted values of uniform and policy actions at s. ρ (`push_down`) is the batch's
   states, dataset and model rows alike (`mix`, KIT as run) or its model rows only (`model`, KIT's --rho-s model;
   the paper's d^π_M̂); μ (`push_up`) is every row of the batch (`batch`, KIT as run: its q1 is the mixed batch's)
   or its dataset rows only (`data`, the paper's E_{s,a ~ D}).

The rollouts, buffers and mixing are the shared trainer's, the update CQL's; COMBO's own piece is which rows the
regulariser pushes down at and up on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from algos.cql import CQL, CQL_TERM_RULES, CQLTermConfig, RegulariserRows
from buffers.replay import Batch
from config import ModelBasedConfig, Rule, SACConfig, one_of, register_config
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, planned_updates

PUSH_DOWN_ROWS = ("mix", "model")
PUSH_UP_ROWS = ("batch", "data")


def _kit_combo_sac() -> SACConfig:
    """SAC as run_combo.py builds it: 3 hidden layers of 256, cosine actor lr over the epochs (l. 120), and α without
    the clamp at 1 of KIT's SAC (combo.py l. 132)."""
    return SACConfig(hidden_dims=[256, 256, 256], alpha_max=None, lr_schedule="cosine")


def _kit_combo_cql() -> CQLTermConfig:
    """CQL's block as run_combo.py runs COMBOPolicy, which inherits KIT's CQL: its per-draw logsumexp (the discarded
    reshape, combo.py l. 184-192) and its actor-first order (l. 118-132), no warm-up, τ 10 (unused)."""
    return CQLTermConfig(
        weight=5.0,
        temperature=1.0,
        num_actions=10,
        logsumexp="per_draw",
        lagrange=False,
        target_action_gap=10.0,
        lagrange_lr=3e-4,
        deterministic_backup=True,
        max_q_backup=False,
        bc_steps=0,
        update_order="actor_first",
    )


def _rows_exist(which: str) -> Rule:
    """`push_down=model` needs model rows in every batch, `push_up=data` dataset rows."""

    def rule(value: Any, cfg: Any) -> str | None:
        num_real = int(cfg.batch_size * cfg.real_ratio)
        if which == "model" and value == "model" and cfg.batch_size - num_real < 1:
            return "mix, or model rows in every batch (int(batch_size * real_ratio) < batch_size)"
        if which == "data" and value == "data" and num_real < 1:
            return "batch, or dataset rows in every batch (int(batch_size * real_ratio) >= 1)"
        return None

    return rule


def _both(*rules: Rule) -> Rule:
    return lambda value, cfg: next((msg for rule in rules if (msg := rule(value, cfg)) is not None), None)


@register_config("combo")
@dataclass
class COMBOConfig(ModelBasedConfig):
    """COMBO (docs/combo.md): MBPO-style rollouts without a reward penalty, and CQL's regulariser on COMBO's rows.
    Defaults: KIT run_example/run_combo.py as run (docs/combo.md#defaults)."""

    rules: ClassVar[dict[str, Rule]] = {
        **CQL_TERM_RULES,
        "push_down": _both(one_of(*PUSH_DOWN_ROWS), _rows_exist("model")),
        "push_up": _both(one_of(*PUSH_UP_ROWS), _rows_exist("data")),
    }

    epochs: int = 1000
    rollout_length: int = 5
    real_ratio: float = 0.5
    push_down: str = "mix"  # ρ: mix = every state of the batch (KIT --rho-s mix); model = the model rows' states
    push_up: str = "batch"  # μ: batch = every row of the batch (KIT as run); data = the dataset rows (the paper)
    sac: SACConfig = field(default_factory=_kit_combo_sac)
    cql: CQLTermConfig = field(default_factory=_kit_combo_cql)


class COMBO(CQL):
    """CQL's update (algos/cql.py) on mixed dataset and model batches, its regulariser on COMBO's rows."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: COMBOConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(obs_dim, act_dim, cfg, device)
        self.push_down, self.push_up = cfg.push_down, cfg.push_up

    def regulariser_rows(self, batch: Batch, num_real: int, q: torch.Tensor) -> RegulariserRows:
        """ρ and μ of the batch, whose first `num_real` rows are dataset rows and the rest model rows: down at every
        state (`mix`) or at the model rows' (`model`, with their next states for the π(·|s') draws); up on every
        row (`batch`, with the TD loss's Q) or on the dataset rows (`data`)."""
        down_obs, down_next_obs = batch.obs, batch.next_obs
        if self.push_down == "model":
            down_obs, down_next_obs = batch.obs[..., num_real:, :], batch.next_obs[..., num_real:, :]
        up_obs, up_act, up_q = batch.obs, batch.act, q
        if self.push_up == "data":
            up_obs, up_act, up_q = batch.obs[..., :num_real, :], batch.act[..., :num_real, :], q[..., :num_real]
        if down_obs.shape[-2] == 0 or up_obs.shape[-2] == 0:
            raise ValueError(
                f"COMBO's regulariser has no rows to push {'down at' if down_obs.shape[-2] == 0 else 'up on'}: "
                f"{num_real} dataset rows of {batch.obs.shape[-2]} with push_down={self.push_down}, "
                f"push_up={self.push_up}"
            )
        return RegulariserRows(down_obs, down_next_obs, up_obs, up_act, up_q)

    def critic_metrics(self, q: torch.Tensor, num_real: int) -> dict[str, torch.Tensor]:
        """Mean Q(s, a) over critics of the dataset rows and of the model rows (COMBO's claim: less conservative
        on the data than on the model's rows)."""
        metrics = {}
        if num_real > 0:
            metrics["combo/q_data"] = q[..., :num_real].mean((-2, -1))
        if num_real < q.shape[-1]:
            metrics["combo/q_model"] = q[..., num_real:].mean((-2, -1))
        return metrics


SPEC = AlgorithmSpec(
    "combo", "COMBO", COMBOConfig, COMBO, Loop.EPOCHS, Unit.GRADIENT_STEPS, planned_updates, ModelUse.ROLLOUTS
)
