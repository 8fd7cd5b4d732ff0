"""SAC core (docs/sac.md) and MOPO's reward penalty (docs/mopo.md), on tiny networks."""

from __future__ import annotations

import io
import math

import pytest
import torch
from conftest import random_batch
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform

from algos.mopo import MOPO, MOPOConfig
from algos.sac import SAC
from buffers.replay import Batch
from config import DynamicsConfig, SACConfig
from models.actor_critic import CriticEnsemble, TanhGaussianActor
from models.dynamics import EnsembleDynamics

OBS_DIM, ACT_DIM = 3, 2


def _cfg(**overrides: object) -> SACConfig:
    return SACConfig(**{"hidden_dims": [16, 16], **overrides})


def _sac(seed: int = 0, epochs: int = 10, **overrides: object) -> SAC:
    torch.manual_seed(seed)
    return SAC(OBS_DIM, ACT_DIM, _cfg(**overrides), epochs)


def _batch(n: int = 32, seed: int = 0) -> Batch:
    return random_batch(n, seed, OBS_DIM, ACT_DIM)


# ---------------------------------------------------------------------------------------------------- actor
def _actor(seed: int = 0, scale: float = 1.0, max_action: float = 1.0) -> TanhGaussianActor:
    torch.manual_seed(seed)
    actor = TanhGaussianActor(OBS_DIM, ACT_DIM, (16, 16), max_action=max_action)
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(scale)
    return actor


@pytest.mark.parametrize("max_action", [1.0, 2.0])
def test_actions_are_bounded(max_action: float) -> None:
    actor = _actor(scale=4.0, max_action=max_action)  # large weights: many pre-tanh values far in the tails
    obs = torch.randn(500, OBS_DIM) * 3
    with torch.no_grad():
        action, log_prob = actor(obs)
    assert action.shape == (500, ACT_DIM) and log_prob.shape == (500, 1)
    assert float(action.abs().max()) <= max_action
    assert float(action.abs().max()) > 0.9 * max_action  # the bound is reached, so the check is not vacuous
    assert bool(log_prob.isfinite().all())


def test_log_prob_matches_torch_distributions() -> None:
    actor = _actor()
    obs = torch.randn(64, OBS_DIM)
    mean, log_std = actor.distribution_params(obs)
    torch.manual_seed(1)
    noise = torch.randn_like(mean)
    torch.manual_seed(1)
    with torch.no_grad():
        action, log_prob = actor(obs)  # draws the same noise
        mean, log_std = mean.detach(), log_std.detach()
    pre_tanh = mean + log_std.exp() * noise
    torch.testing.assert_close(action, torch.tanh(pre_tanh))
    exact = (
        Normal(mean, log_std.exp()).log_prob(pre_tanh) - TanhTransform().log_abs_det_jacobian(pre_tanh, action)
    ).sum(-1, keepdim=True)
    # The only allowed difference is OfflineRL-Kit's +1e-6 inside log(1 − tanh²), which lowers the log-prob a little.
    guard = torch.log1p(1e-6 / (1 - action.square())).sum(-1, keepdim=True)
    assert float((exact - log_prob - guard).abs().max()) < 1e-4
    assert bool((log_prob <= exact + 1e-5).all())


def test_deterministic_action_is_tanh_of_mean() -> None:
    actor = _actor()
    obs = torch.randn(16, OBS_DIM)
    mean, log_std = actor.distribution_params(obs)
    action, log_prob = actor(obs, deterministic=True)
    torch.testing.assert_close(action, torch.tanh(mean))
    torch.testing.assert_close(actor.act(obs), torch.tanh(mean).detach())
    # At the mode, the Gaussian part is the density peak: −Σ log σ − |A|/2 log 2π, minus the tanh correction.
    peak = (-log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    correction = torch.log(1 - action.square() + 1e-6).sum(-1, keepdim=True)
    torch.testing.assert_close(log_prob, peak - correction)


def test_log_std_is_clamped() -> None:
    actor = _actor()
    obs = torch.randn(8, OBS_DIM)
    with torch.no_grad():
        actor.net[-1].bias[ACT_DIM:] = torch.tensor([50.0, -50.0])
    _, log_std = actor.distribution_params(obs)
    assert torch.equal(log_std[:, 0], torch.full((8,), 2.0))
    assert torch.equal(log_std[:, 1], torch.full((8,), -5.0))


# ---------------------------------------------------------------------------------------------------- critics
def test_critic_ensemble_members_are_independent_mlps() -> None:
    torch.manual_seed(0)
    critics = CriticEnsemble(OBS_DIM, ACT_DIM, (16, 16), num_critics=3)
    obs, act = torch.randn(10, OBS_DIM), torch.randn(10, ACT_DIM)
    q = critics(obs, act)
    assert q.shape == (3, 10)
    assert not torch.allclose(q[0], q[1]) and not torch.allclose(q[1], q[2])
    for j in range(3):  # member j is the plain ReLU MLP made of slice j of every layer
        x = torch.cat([obs, act], -1)
        for layer in critics.net.hidden:
            x = torch.relu(x @ layer.weight[j] + layer.bias[j])
        out = critics.net.output
        torch.testing.assert_close(q[j], (x @ out.weight[j] + out.bias[j]).squeeze(-1))
    # No gradient crosses members.
    q[0].sum().backward()
    for layer in critics.net.layers:
        assert float(layer.weight.grad[1:].abs().max()) == 0.0
        assert float(layer.weight.grad[0].abs().max()) > 0.0


# ---------------------------------------------------------------------------------------------------- updates
def test_critic_target_matches_the_formula() -> None:
    sac = _sac(num_critics=3, gamma=0.9, auto_alpha=False, alpha=0.3)
    with torch.no_grad():  # targets must differ from the online critics for the test to see which one is used
        for p in sac.target_critics.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = _batch()
    torch.manual_seed(42)
    target, _ = sac.critic_target(batch, num_real=len(batch.rew))

    torch.manual_seed(42)
    mean, log_std = sac.actor.distribution_params(batch.next_obs)
    noise = torch.randn_like(mean)
    with torch.no_grad():
        pre_tanh = mean + log_std.exp() * noise
        next_act = torch.tanh(pre_tanh)
        log_prob = Normal(mean, log_std.exp()).log_prob(pre_tanh).sum(-1) - torch.log(1 - next_act.square() + 1e-6).sum(
            -1
        )
        q = sac.target_critics(batch.next_obs, next_act)
        min_q = torch.minimum(torch.minimum(q[0], q[1]), q[2])
    expected = batch.rew + 0.9 * (1 - batch.done) * (min_q - 0.3 * log_prob)
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(target[batch.done == 1], batch.rew[batch.done == 1])  # no bootstrap through terminals


def test_polyak_moves_targets_by_tau() -> None:
    sac = _sac(tau=0.05)
    with torch.no_grad():
        for p in sac.target_critics.parameters():
            p.add_(torch.randn_like(p))
    before = [p.detach().clone() for p in sac.target_critics.parameters()]
    sac.update(_batch())
    online = list(sac.critics.parameters())
    for old, new, current in zip(before, sac.target_critics.parameters(), online):
        assert not torch.equal(new, old)
        torch.testing.assert_close(new, old + 0.05 * (current.detach() - old), rtol=1e-6, atol=1e-7)
    assert not any(p.requires_grad for p in sac.target_critics.parameters())


def test_learns_a_one_step_bandit() -> None:
    """done = 1 everywhere, r = −‖a − a*‖²: Q(s, a) = r, so the policy mean must move to a*."""
    torch.manual_seed(0)
    n, best = 1024, torch.tensor([0.5, -0.3])
    act = torch.rand(n, ACT_DIM) * 2 - 1
    data = Batch(torch.randn(n, OBS_DIM), act, -(act - best).square().sum(-1), torch.randn(n, OBS_DIM), torch.ones(n))
    sac = _sac(hidden_dims=[32, 32], actor_lr=3e-3, critic_lr=3e-3, alpha_lr=3e-3, lr_schedule="none")
    start_distance = float((sac.act(data.obs) - best).norm(dim=-1).mean())
    critic_losses = []
    for _ in range(400):
        rows = torch.randint(n, (128,))
        critic_losses.append(float(sac.update(Batch(*(field[rows] for field in data)))["loss/critic"]))
    distance = (sac.act(torch.randn(200, OBS_DIM)) - best).norm(dim=-1)
    assert float(distance.mean()) < 0.1 < 0.4 < start_distance  # ‖a*‖ ≈ 0.58 from the initial tanh(μ) ≈ 0
    assert float(distance.max()) < 0.3
    assert sum(critic_losses[-20:]) < 0.05 * sum(critic_losses[:20])


# ---------------------------------------------------------------------------------------------------- alpha
@pytest.mark.parametrize("alpha_max", [1.0, None])
def test_auto_alpha_clamp(alpha_max: float | None) -> None:
    # A target entropy far above the policy's drives α up every step.
    sac = _sac(target_entropy=10.0, alpha_lr=0.1, alpha_max=alpha_max)
    for step in range(15):
        metrics = sac.update(_batch(seed=step))
        if alpha_max is not None:
            assert float(metrics["alpha"]) <= alpha_max
    raw = float(sac.log_alpha.detach().exp())
    assert raw > 1.5  # log α itself keeps growing; only the α used is clamped
    assert float(sac.alpha) == pytest.approx(1.0 if alpha_max is not None else raw)


def test_fixed_alpha() -> None:
    sac = _sac(auto_alpha=False, alpha=0.3)
    log_alpha = float(sac.log_alpha.detach())
    for step in range(3):
        metrics = sac.update(_batch(seed=step))
    assert float(sac.alpha) == pytest.approx(0.3) and float(metrics["alpha"]) == pytest.approx(0.3)
    assert float(sac.log_alpha.detach()) == log_alpha
    assert "loss/alpha" not in metrics


def test_default_target_entropy_drives_alpha() -> None:
    sac = _sac()
    assert sac.target_entropy == -ACT_DIM
    assert _sac(target_entropy=-0.5).target_entropy == -0.5
    # α grows when the policy entropy is below the target and shrinks above it; this holds only if −|A| is used.
    metrics = sac.update(_batch())
    entropy = float(metrics["entropy"])
    assert abs(entropy - ACT_DIM) > 0.2 and abs(entropy + ACT_DIM) > 0.2  # either sign error would show
    assert (float(sac.log_alpha.detach()) > 0) == (entropy < -ACT_DIM)


# ---------------------------------------------------------------------------------------------------- schedule, state
def test_cosine_actor_lr_schedule() -> None:
    sac = _sac(epochs=4, actor_lr=1e-3, critic_lr=3e-4)
    sac.update(_batch())  # as in training: optimiser steps before the first scheduler step
    sac.end_epoch()
    sac.end_epoch()
    assert sac.actor_optim.param_groups[0]["lr"] == pytest.approx(5e-4)  # half way down the cosine
    sac.end_epoch()
    sac.end_epoch()
    assert sac.actor_optim.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert sac.critic_optim.param_groups[0]["lr"] == 3e-4 and sac.alpha_optim.param_groups[0]["lr"] == 1e-4


def test_no_lr_schedule() -> None:
    sac = _sac(epochs=4, actor_lr=1e-3, lr_schedule="none")
    sac.update(_batch())
    for _ in range(4):
        sac.end_epoch()
    assert sac.actor_optim.param_groups[0]["lr"] == 1e-3


def test_training_state_round_trip_continues_identically() -> None:
    original = _sac(seed=0, epochs=5)
    for step in range(5):
        original.update(_batch(seed=step))
    original.end_epoch()
    original.end_epoch()
    buffer = io.BytesIO()
    torch.save(original.training_state(), buffer)  # as a checkpoint would: a copy, not live tensors
    buffer.seek(0)
    restored = _sac(seed=99, epochs=5)  # different initial weights, optimiser moments and lr
    restored.load_training_state(torch.load(buffer, weights_only=False))

    for sac in (original, restored):
        torch.manual_seed(7)
        for step in range(5, 9):
            sac.update(_batch(seed=step))
        sac.end_epoch()
    for (name, a), (_, b) in zip(original.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name
    for name, optim in original.optimizers().items():
        other = restored.optimizers()[name]
        if isinstance(optim, torch.optim.Optimizer):
            assert optim.param_groups[0]["lr"] == other.param_groups[0]["lr"], name
            for sa, sb in zip(optim.state.values(), other.state.values()):
                assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert original.actor_optim.param_groups[0]["lr"] < 1e-4  # the schedule state came along (3 of 5 steps)


# ---------------------------------------------------------------------------------------------------- MOPO
def test_plain_sac_keeps_model_reward() -> None:
    sac = _sac()
    reward = torch.randn(5)
    assert sac.rollout_uncertainty is None
    assert torch.equal(sac.model_reward(reward, {"uncertainty": torch.ones(5)}), reward)


@pytest.mark.parametrize("penalty_type", ["aleatoric", "pairwise_diff"])
def test_mopo_reward_is_penalised_by_uncertainty(penalty_type: str) -> None:
    torch.manual_seed(0)
    cfg = MOPOConfig(penalty_coef=2.5, penalty_type=penalty_type, sac=_cfg(), epochs=3)
    mopo = MOPO(OBS_DIM, ACT_DIM, cfg)
    assert mopo.penalty_type == penalty_type
    dyn_cfg = DynamicsConfig(num_ensemble=3, num_elites=2, hidden_dims=[8], weight_decay=[0.0, 0.0])
    dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, dyn_cfg)
    obs = torch.randn(20, OBS_DIM)
    _, reward, _, info = dynamics.step(obs, mopo.act(obs, deterministic=False), mopo.rollout_uncertainty)
    penalised = mopo.model_reward(reward, info)
    assert bool((info["uncertainty"] > 0).all())
    torch.testing.assert_close(penalised, reward - 2.5 * info["uncertainty"])
    torch.testing.assert_close(
        mopo.model_reward(torch.tensor([1.0, 2.0]), {"uncertainty": torch.tensor([0.4, 0.0])}),
        torch.tensor([0.0, 2.0]),
    )
