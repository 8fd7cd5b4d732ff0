"""Density-ratio estimation by probabilistic classification (WMOPO's weights; docs/wmopo.md).

A network r_ψ(x) = softplus(f_ψ(x)) ≥ 0 is trained to tell "simulated" samples (the target policy rolled out in the
model) from the offline data with the logistic loss

    L(ψ) = −E_data[log 1/(1 + r_ψ(x))] − E_sim[log r_ψ(x)/(1 + r_ψ(x))],

whose minimiser is r = p_sim / p_data (the classifier's odds). The data's weights are r on the data rows, made
non-negative and divided by their mean (mean 1), as Hishinuma and Senda's code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.actor_critic import mlp

TINY = 1e-30  # keeps log r finite where softplus underflows (the original adds 1e-30 too)


def classification_loss(ratio_data: torch.Tensor, ratio_sim: torch.Tensor) -> torch.Tensor:
    """The logistic loss above for ratios predicted on a batch of data rows and a batch of simulated rows."""
    on_data = torch.log1p(ratio_data).mean()
    on_sim = (torch.log1p(ratio_sim) - torch.log(ratio_sim + TINY)).mean()
    return on_data + on_sim


@dataclass
class RatioFitConfig:
    """How r_ψ is fitted; the Pendulum study's and the D4RL experiment's settings differ (docs/wmopo.md)."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    lr: float = 1e-4
    weight_decay: float = 1e-4  # Adam's coupled L2, as the original
    batch_size: int = 512
    holdout_ratio: float = 0.1  # 0: early stopping on the training loss instead
    patience: int = 5  # epochs without improvement before stopping
    max_epochs: int = 10_000


class DensityRatio(nn.Module):
    """r_ψ(x) = softplus(MLP_tanh(x)) for inputs x = [s, a]; no input scaling, as the original."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (256, 256, 256, 256)) -> None:
        super().__init__()
        self.net = mlp(in_dim, 1, hidden_dims, nn.Tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.net(x)).squeeze(-1)

    @torch.no_grad()
    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Weights of the rows x: relu(r(x)) / mean, so they average 1 (the weighted MLE's w)."""
        ratio = self(x).clamp(min=0.0)
        return ratio / ratio.mean()

    def fit(self, data: torch.Tensor, sim: torch.Tensor, cfg: RatioFitConfig) -> dict[str, float]:
        """Fit on data rows [N, d] and simulated rows [M, d] with Adam: every epoch passes over the simulated rows in
        whole batches, each paired with a random batch of data rows; stops after `patience` epochs without a lower
        holdout loss (or, with holdout_ratio 0, training loss). Returns the last epoch's losses and the epoch count."""
        device = data.device
        num_data_holdout, num_sim_holdout = int(cfg.holdout_ratio * len(data)), int(cfg.holdout_ratio * len(sim))
        data, sim = data[torch.randperm(len(data), device=device)], sim[torch.randperm(len(sim), device=device)]
        data_holdout, data_train = data[:num_data_holdout], data[num_data_holdout:]
        sim_holdout, sim_train = sim[:num_sim_holdout], sim[num_sim_holdout:]
        batch = min(cfg.batch_size, len(sim_train), len(data_train))
        optimizer = torch.optim.Adam(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, stale, epoch, train_loss, holdout_loss = float("inf"), 0, 0, float("nan"), float("nan")
        while epoch < cfg.max_epochs and stale < cfg.patience:
            epoch += 1
            total, batches = 0.0, 0
            for rows in torch.randperm(len(sim_train), device=device)[: len(sim_train) // batch * batch].split(batch):
                data_rows = torch.randint(len(data_train), (batch,), device=device)
                loss = classification_loss(self(data_train[data_rows]), self(sim_train[rows]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, batches = total + loss.item(), batches + 1
            train_loss = total / batches
            if num_data_holdout and num_sim_holdout:
                with torch.no_grad():
                    holdout_loss = float(classification_loss(self(data_holdout), self(sim_holdout)))
            monitored = holdout_loss if num_data_holdout and num_sim_holdout else train_loss
            if monitored < best:
                best, stale = monitored, 0
            else:
                stale += 1
        return {"ratio/train_loss": train_loss, "ratio/holdout_loss": holdout_loss, "ratio/epochs": float(epoch)}
