"""Density-ratio estimation by probabilistic classification (models/density_ratio.py, docs/wmopo.md)."""

from __future__ import annotations

import math

import pytest
import torch

from models.density_ratio import DensityRatio, RatioFitConfig, classification_loss


def test_the_loss_is_minimised_by_the_true_odds() -> None:
    """At one point with data density p and simulated density q the pointwise loss p·log(1 + r) + q·(log(1 + r) − log r)
    is smallest at r = q/p."""
    p, q = 0.3, 0.6
    grid = torch.linspace(0.05, 6.0, 2000)
    pointwise = p * torch.log1p(grid) + q * (torch.log1p(grid) - torch.log(grid))
    assert abs(float(grid[pointwise.argmin()]) - q / p) < 0.01
    # The batch loss is the two means.
    ratio_data, ratio_sim = torch.tensor([1.0, 3.0]), torch.tensor([0.5])
    expected = (math.log(2) + math.log(4)) / 2 + (math.log(1.5) - math.log(0.5))
    assert float(classification_loss(ratio_data, ratio_sim)) == pytest.approx(expected)


def test_classifier_recovers_the_ratio_of_two_gaussians() -> None:
    """Data N(0, 1), simulated N(1, 1) in one dimension: p_sim/p_data = exp(x − ½). Within the bulk of both samples
    (−0.5 to 1.5) the fitted log-ratio is within 0.25 of the truth, and the data weights average 1."""
    torch.manual_seed(0)
    data, sim = torch.randn(4000, 1), torch.randn(4000, 1) + 1.0
    model = DensityRatio(1, (16, 16))
    cfg = RatioFitConfig(hidden_dims=(16, 16), lr=1e-2, weight_decay=0.0, batch_size=256, patience=10, max_epochs=60)
    metrics = model.fit(data, sim, cfg)
    assert metrics["ratio/epochs"] >= 5
    x = torch.linspace(-0.5, 1.5, 9).unsqueeze(-1)
    with torch.no_grad():
        error = (torch.log(model(x)) - (x.squeeze(-1) - 0.5)).abs()
    assert float(error.max()) < 0.25, error
    weights = model.weights(data)
    assert float(weights.mean()) == pytest.approx(1.0) and bool((weights >= 0).all())
