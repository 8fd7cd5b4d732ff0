"""BCQ's VAE loss (algos/bcq.py, models/bcq.py) term by term, on a VAE whose weights are set by hand.

The official continuous BCQ: z = μ + σ ε with σ = exp(clamp(log σ, −4, 15)), recon = mean (G(s, z) − a)²,
KL = −0.5 · mean(1 + log σ² − μ² − σ²) over batch and latent dims, loss = recon + kl_weight · KL (0.5 there).
"A loss that falls" would not notice a sum instead of a mean, σ² used where σ is meant, or a dropped weight.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from algos import build_algorithm
from algos.bcq import BCQ
from buffers.replay import Batch
from config import load_config

TASK = "hopper-random-gen"
OBS_DIM, ACT_DIM, LATENT = 2, 2, 2
KL_WEIGHT, VAE_LR = 0.25, 0.01
# Encoder output (constant: its weights are zero): μ = (0.5, −1.0), raw log σ = (−6.0, 0.3); −6 is clamped to −4.
MU, RAW_LOG_STD, LOG_STD_MIN = (0.5, -1.0), (-6.0, 0.3), -4.0
LOG_STD = tuple(max(v, LOG_STD_MIN) for v in RAW_LOG_STD)
# Decoder: G(s, z) = tanh(A_j z_j + B_j) for action dim j (latent dim j feeds action dim j only).
A, B = (0.5, -0.8), (0.1, 0.2)
OBS = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.1]])
ACT = torch.tensor([[0.2, -0.4], [0.6, 0.1], [-0.3, 0.9]])


def _bcq(*overrides: str) -> BCQ:
    cfg = load_config(
        "bcq",
        TASK,
        overrides=[
            "vae_hidden_dims=[4]",
            f"latent_dim={LATENT}",
            f"kl_weight={KL_WEIGHT}",
            f"vae_log_std_min={LOG_STD_MIN}",
            "vae_log_std_max=15",
            f"vae_lr={VAE_LR}",
            "actor_hidden_dims=[8]",
            "critic_hidden_dims=[8]",
            *overrides,
        ],
    )
    algo = build_algorithm(cfg, OBS_DIM, ACT_DIM)
    assert isinstance(algo, BCQ)
    vae = algo.vae
    with torch.no_grad():
        for layer in (*vae.encoder, *vae.decoder):
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        vae.encoder[-1].bias.copy_(torch.tensor([*MU, *RAW_LOG_STD]))
        # Hidden units ReLU(±z_1), ReLU(±z_2) (decoder input is [s, z]); output A_j (ReLU(z_j) − ReLU(−z_j)) + B_j.
        first, last = vae.decoder[0], vae.decoder[-1]
        for j in range(LATENT):
            first.weight[2 * j, OBS_DIM + j], first.weight[2 * j + 1, OBS_DIM + j] = 1.0, -1.0
            last.weight[j, 2 * j], last.weight[j, 2 * j + 1] = A[j], -A[j]
        last.bias.copy_(torch.tensor(B))
    return algo


def _hand_terms(eps: torch.Tensor) -> tuple[float, float, float, list[float]]:
    """(loss, recon, KL, d loss / d encoder output bias [μ_1, μ_2, log σ_1, log σ_2]) for noise eps [rows, latent]."""
    rows = len(OBS)
    recon, grad = 0.0, [0.0] * (2 * LATENT)
    for b in range(rows):
        for j in range(ACT_DIM):
            sigma = math.exp(LOG_STD[j])
            z = MU[j] + sigma * float(eps[b, j])
            decoded = math.tanh(A[j] * z + B[j])
            error = decoded - float(ACT[b, j])
            recon += error**2 / (rows * ACT_DIM)
            d_recon_d_z = 2 * error / (rows * ACT_DIM) * (1 - decoded**2) * A[j]
            grad[j] += d_recon_d_z  # dz/dμ = 1
            if RAW_LOG_STD[j] > LOG_STD_MIN:  # dz/dlog σ = σ ε, and nothing through the clamp
                grad[LATENT + j] += d_recon_d_z * sigma * float(eps[b, j])
    kl_terms = [1 + 2 * LOG_STD[j] - MU[j] ** 2 - math.exp(2 * LOG_STD[j]) for j in range(LATENT)]
    kl = -0.5 * sum(kl_terms) / LATENT  # the same for every row: the mean over rows and dims is the mean over dims
    for j in range(LATENT):
        grad[j] += KL_WEIGHT * MU[j] / LATENT  # d KL / dμ_j summed over rows: rows · μ_j / (rows · LATENT)
        if RAW_LOG_STD[j] > LOG_STD_MIN:
            grad[LATENT + j] += KL_WEIGHT * -(1 - math.exp(2 * LOG_STD[j])) / LATENT
    return recon + KL_WEIGHT * kl, recon, kl, grad


def test_vae_loss_terms_and_gradient_by_hand() -> None:
    algo = _bcq()
    torch.manual_seed(3)
    loss, recon, kl = algo.vae_loss(OBS, ACT)
    torch.manual_seed(3)
    eps = torch.randn(len(OBS), LATENT)  # the reparameterisation noise ε of z = μ + σ ε
    hand_loss, hand_recon, hand_kl, hand_grad = _hand_terms(eps)
    # KL = −½ · ½ · [(1 − 8 − 0.25 − e⁻⁸) + (1 + 0.6 − 1 − e^0.6)] = 2.11811…
    assert hand_kl == pytest.approx(2.1181135, abs=1e-6)
    assert_close(kl, torch.tensor(hand_kl))
    assert_close(recon, torch.tensor(hand_recon))
    assert_close(loss, torch.tensor(hand_loss))
    loss.backward()
    assert_close(algo.vae.encoder[-1].bias.grad, torch.tensor(hand_grad))


def test_default_kl_weight_is_the_official_half() -> None:
    assert load_config("bcq", TASK).kl_weight == 0.5


def test_update_steps_the_vae_on_that_loss() -> None:
    """One update: the logged VAE terms are the hand values, and Adam's first step moves each encoder output bias by
    −lr · g / (|g| + 1e-8) with g the hand gradient (0 for the clamped log σ, which must not move)."""
    algo = _bcq()
    batch = Batch(OBS, ACT, torch.tensor([1.0, 0.0, -1.0]), OBS.flip(0), torch.tensor([0.0, 1.0, 0.0]))
    before = algo.vae.encoder[-1].bias.detach().clone()
    torch.manual_seed(4)
    metrics = algo.update(batch)
    torch.manual_seed(4)
    hand_loss, hand_recon, hand_kl, hand_grad = _hand_terms(torch.randn(len(OBS), LATENT))
    assert_close(metrics["loss/vae"], torch.tensor(hand_loss))
    assert_close(metrics["loss/recon"], torch.tensor(hand_recon))
    assert_close(metrics["loss/kl"], torch.tensor(hand_kl))
    grad = torch.tensor(hand_grad)
    assert float(grad[LATENT]) == 0.0  # log σ_1 sits below the clamp
    assert_close(algo.vae.encoder[-1].bias.detach(), before - VAE_LR * grad / (grad.abs() + 1e-8))
