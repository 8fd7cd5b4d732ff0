"""Ensemble dynamics (docs/dynamics.md): batched layers, MOPO penalties by hand, fitting, elites, persistence."""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

import pytest
import torch

from algos.mopo import uncertainty
from config import DynamicsConfig
from models.dynamics import INFERENCE_CHUNK, EnsembleDynamics
from models.dynamics_recipes import BatchLoss, FreshBootstrap, SharedShuffle, recipe_for, with_loss
from models.ensemble import EnsembleLinear
from utils.errors import UserError

OBS_DIM, ACT_DIM = 2, 1
NOISE = 0.1


def _cfg(**overrides: object) -> DynamicsConfig:
    base = {
        "num_ensemble": 3,
        "num_elites": 2,
        "hidden_dims": [32, 32],
        "weight_decay": [2.5e-5, 5e-5, 1e-4],
        "lr": 3e-3,
        "max_epochs": 80,
        "max_epochs_since_update": 1000,
    }
    base.update(overrides)
    return DynamicsConfig(**base)


def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Homoscedastic toy transitions: Δs and r are smooth functions of (s, a) plus N(0, NOISE²) noise."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, OBS_DIM, generator=gen) * 4 - 2
    act = torch.rand(n, ACT_DIM, generator=gen) * 2 - 1
    delta = torch.stack([torch.sin(2 * obs[:, 0]) + 0.5 * act[:, 0], 0.5 * obs[:, 1] * act[:, 0]], -1)
    next_obs = obs + delta + NOISE * torch.randn(n, OBS_DIM, generator=gen)
    rew = torch.cos(obs[:, 0]) + NOISE * torch.randn(n, generator=gen)
    return obs, act, next_obs, rew


def _targets(obs: torch.Tensor, next_obs: torch.Tensor, rew: torch.Tensor) -> torch.Tensor:
    return torch.cat([next_obs - obs, rew[:, None]], -1)


def _test_mse(model: EnsembleDynamics, data: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per-member MSE of the predicted mean on independent data."""
    obs, act, next_obs, rew = data
    with torch.no_grad():
        mean, _ = model(obs, act)
    return (mean - _targets(obs, next_obs, rew)).square().mean((1, 2))


@pytest.fixture(scope="module")
def fitted() -> dict[str, object]:
    """One fit of the toy problem shared by several tests (the slowest thing in this file, ~1 s)."""
    torch.manual_seed(0)
    train, test = _toy_data(2000, seed=1), _toy_data(500, seed=2)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg())
    before = _test_mse(model, test)
    torch.manual_seed(123)
    permutation = torch.randperm(2000)  # fit's first random draw: the holdout split
    torch.manual_seed(123)
    epochs_logged: list[int] = []
    metrics = model.fit(*train, log_fn=lambda m, epoch: epochs_logged.append(epoch), progress=False)
    return {
        "model": model,
        "train": train,
        "test": test,
        "before": before,
        "metrics": metrics,
        "permutation": permutation,
        "epochs_logged": epochs_logged,
    }


# ---------------------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("init", ["truncated_normal", "uniform"])
def test_ensemble_linear_matches_per_member_loop(init: str) -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(4, 5, 3, init=init)
    with torch.no_grad():
        layer.bias.normal_()  # non-zero biases so a missing or mis-broadcast bias shows
    shared = torch.randn(7, 5)
    per_member = torch.randn(4, 7, 5)
    out_shared, out_member = layer(shared), layer(per_member)
    assert out_shared.shape == out_member.shape == (4, 7, 3)
    for i in range(4):
        w, b = layer.weight[i], layer.bias[i, 0]
        torch.testing.assert_close(out_shared[i], shared @ w + b)
        torch.testing.assert_close(out_member[i], per_member[i] @ w + b)


def test_truncated_normal_init_scale() -> None:
    torch.manual_seed(0)
    weight = EnsembleLinear(7, 400, 200).weight.detach()
    std = 1 / (2 * math.sqrt(400))
    assert abs(float(weight.std()) / std - 0.88) < 0.05  # a normal truncated at ±2σ has std 0.88σ
    assert float(weight.abs().max()) <= 2 * std + 1e-7


def test_chunked_inference_equals_one_pass() -> None:
    torch.manual_seed(0)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(hidden_dims=[8, 8]))
    rows = INFERENCE_CHUNK["fp32"] * 2 + 900
    obs, act = torch.randn(rows, OBS_DIM), torch.randn(rows, ACT_DIM)
    with torch.no_grad():
        chunked = model(obs, act)
    one_pass = model(obs, act)  # with grad enabled: no chunking
    torch.testing.assert_close(chunked[0], one_pass[0].detach())
    torch.testing.assert_close(chunked[1], one_pass[1].detach())


def test_standardizer_keeps_constant_dims_finite() -> None:
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(hidden_dims=[8, 8]))
    inputs = torch.randn(50, OBS_DIM + ACT_DIM) * torch.tensor([3.0, 1.0, 0.5]) + torch.tensor([1.0, -2.0, 0.0])
    inputs[:, 1] = 4.0  # a constant input dimension: std 0 is replaced by 1, not divided by
    model.input_scaler.fit(inputs)
    scaled = model.input_scaler(inputs)
    torch.testing.assert_close(scaled[:, 1], torch.zeros(50))
    torch.testing.assert_close(scaled[:, [0, 2]].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled[:, [0, 2]].std(0, unbiased=False), torch.ones(2))


# ---------------------------------------------------------------------------------------------------- penalties
def _hand_made_predictions() -> tuple[torch.Tensor, torch.Tensor]:
    """E=3 members, B=2 rows, obs_dim=2 (+ reward last); numbers chosen so every mode has a round answer."""
    mean = torch.tensor(
        [
            [[0.0, 0.0, 100.0], [1.0, 1.0, 0.0]],
            [[3.0, 0.0, -100.0], [1.0, 1.0, 50.0]],
            [[0.0, 3.0, 0.0], [4.0, 5.0, -50.0]],
        ]
    )
    std = torch.tensor(
        [
            [[1.0, 2.0, 2.0], [3.0, 4.0, 0.0]],  # norms 3, 5
            [[0.0, 0.0, 4.0], [1.0, 0.0, 0.0]],  # norms 4 (reward dim only), 1
            [[2.0, 2.0, 1.0], [0.0, 0.0, 0.0]],  # norms 3, 0
        ]
    )
    return mean, std


@pytest.mark.parametrize(
    ("penalty_type", "expected"),
    [
        # max_i ||σ_i||, reward dim included (row 0's max comes from the reward std alone).
        ("aleatoric", [4.0, 5.0]),
        # max_i ||μ_i^{s'} − mean_j μ_j^{s'}||: row 0 mean (1, 1) -> max sqrt(5); row 1 mean (2, 7/3) -> 10/3.
        ("pairwise_diff", [math.sqrt(5.0), 10.0 / 3.0]),
        # sqrt(mean_d Var_i μ_i^{s'}): row 0 variances (2, 2); row 1 (2, 32/9) -> sqrt(25/9).
        ("ensemble_std", [math.sqrt(2.0), 5.0 / 3.0]),
    ],
)
def test_uncertainty_by_hand(penalty_type: str, expected: list[float]) -> None:
    mean, std = _hand_made_predictions()
    got = uncertainty(mean, std, penalty_type)
    torch.testing.assert_close(got, torch.tensor(expected))


def test_unknown_penalty_type_is_a_user_error() -> None:
    mean, std = _hand_made_predictions()
    with pytest.raises(UserError, match="penalty_type"):
        uncertainty(mean, std, "max_std")


def _random_model(seed: int = 0, termination_fn: object = None, **overrides: object) -> EnsembleDynamics:
    """A model whose members disagree clearly (larger weights than the init) and whose scaler is not identity."""
    torch.manual_seed(seed)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(hidden_dims=[16, 16], **overrides), termination_fn)
    with torch.no_grad():
        for layer in model.net.layers:
            layer.weight.mul_(4)
            layer.bias.normal_(0, 0.3)
        model.input_scaler.fit(torch.randn(100, OBS_DIM + ACT_DIM) * 2 + 1)
    return model


def _batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, OBS_DIM, generator=gen), torch.randn(n, ACT_DIM, generator=gen)


@pytest.mark.parametrize("penalty_type", ["aleatoric", "pairwise_diff", "ensemble_std"])
def test_step_uncertainty_equals_uncertainty_of_forward(penalty_type: str) -> None:
    model = _random_model()
    obs, act = _batch(64)
    with torch.no_grad():
        mean, logvar = model(obs, act)
    expected = uncertainty(mean, torch.exp(0.5 * logvar), penalty_type)
    _, _, _, info = model.step(obs, act, partial(uncertainty, penalty_type=penalty_type), deterministic=True)
    assert info["uncertainty"].shape == (64,)
    torch.testing.assert_close(info["uncertainty"], expected, rtol=1e-5, atol=1e-5)
    _, _, _, plain = model.step(obs, act)
    assert "uncertainty" not in plain


def test_deterministic_step_rows_follow_one_elite_each() -> None:
    model = _random_model()
    model.elites.copy_(torch.tensor([2, 0]))
    obs, act = _batch(300)
    with torch.no_grad():
        mean, _ = model(obs, act)
    next_obs, reward, done, info = model.step(obs, act, deterministic=True)
    assert next_obs.shape == (300, OBS_DIM) and reward.shape == (300,) and done.shape == (300,)
    assert not done.any()  # no termination function: never done
    torch.testing.assert_close(info["raw_reward"], reward)
    predicted = torch.cat([obs + mean[..., :OBS_DIM], mean[..., OBS_DIM:]], -1)  # [E, B, obs+1]
    chosen = torch.cat([next_obs, reward[:, None]], -1)
    matches = ((predicted - chosen).abs().amax(-1) < 1e-5).T  # [B, E]: which member each row equals
    assert bool((matches.sum(1) == 1).all()), "every row must equal exactly one member's prediction"
    used = matches.float().argmax(1)
    assert set(used.tolist()) == {0, 2}  # only elites, and both of them


@pytest.mark.parametrize("member", [0, 1, 2])
def test_single_elite_step(member: int) -> None:
    model = _random_model()
    model.elites.fill_(member)
    obs, act = _batch(50)
    with torch.no_grad():
        mean, logvar = model(obs, act)
    next_obs, reward, _, _ = model.step(obs, act, deterministic=True)
    torch.testing.assert_close(next_obs, obs + mean[member, :, :OBS_DIM])
    torch.testing.assert_close(reward, mean[member, :, OBS_DIM])


def test_stochastic_step_samples_with_the_members_std() -> None:
    model = _random_model()
    model.elites.fill_(1)
    obs, act = _batch(1, seed=3)
    obs, act = obs.expand(4000, -1).contiguous(), act.expand(4000, -1).contiguous()
    with torch.no_grad():
        mean, logvar = model(obs, act)
    torch.manual_seed(5)
    next_obs, reward, _, _ = model.step(obs, act)
    sample = torch.cat([next_obs - obs, reward[:, None]], -1)
    z = (sample - mean[1]) / torch.exp(0.5 * logvar[1])  # standardised noise: must be N(0, 1) per dim
    assert float(z.mean(0).abs().max()) < 0.1
    assert float((z.std(0) - 1).abs().max()) < 0.1


def test_done_comes_from_the_termination_function() -> None:
    calls: list[tuple[torch.Tensor, ...]] = []

    def termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        calls.append((obs, act, next_obs))
        return next_obs[:, 0] > obs[:, 0]

    model = _random_model(termination_fn=termination)
    obs, act = _batch(200)
    torch.manual_seed(0)
    next_obs, _, done, _ = model.step(obs, act)
    assert len(calls) == 1
    torch.testing.assert_close(calls[0][0], obs)
    torch.testing.assert_close(calls[0][1], act)
    torch.testing.assert_close(calls[0][2], next_obs)  # the sampled next state, the one returned
    assert torch.equal(done, next_obs[:, 0] > obs[:, 0])
    assert 0 < int(done.sum()) < 200  # both outcomes occur, so the comparison means something


# ---------------------------------------------------------------------------------------------------- loss
def _loss_inputs(model: EnsembleDynamics, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(model.num_members, batch, OBS_DIM + ACT_DIM, generator=gen)
    y = torch.randn(model.num_members, batch, OBS_DIM + 1, generator=gen)
    return x, y


def _nll_data_terms(model: EnsembleDynamics, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per member: mean_{b,d} (μ−y)² e^{−logvar} + mean_{b,d} logvar, with soft-clamped logvar (docs/dynamics.md)."""
    out = model.net(x)
    mean, raw_logvar = out[..., : OBS_DIM + 1], out[..., OBS_DIM + 1 :]
    logvar = model.max_logvar - torch.nn.functional.softplus(model.max_logvar - raw_logvar)
    logvar = model.min_logvar + torch.nn.functional.softplus(logvar - model.min_logvar)
    return torch.stack(
        [((mean[i] - y[i]).square() * torch.exp(-logvar[i])).mean() + logvar[i].mean() for i in range(len(x))]
    )


def test_nll_training_loss_matches_the_formula() -> None:
    """Σ_i [mean (μ−y)² e^{−logvar} + mean logvar] + Σ_l wd_l ½‖W_l‖² + 0.01 (Σ max_logvar − Σ min_logvar)."""
    model = _random_model()
    with torch.no_grad():
        model.max_logvar.add_(torch.tensor([0.1, -0.2, 0.3]))
        model.min_logvar.add_(torch.tensor([0.5, 0.0, -0.5]))
    x, y = _loss_inputs(model)
    decay = sum(wd * 0.5 * (layer.weight**2).sum() for wd, layer in zip([2.5e-5, 5e-5, 1e-4], model.net.layers))
    bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
    expected = _nll_data_terms(model, x, y).sum() + decay + bounds
    torch.testing.assert_close(model.training_loss(x, y), expected)


def test_weighted_mle_is_per_sample() -> None:
    model = _random_model()
    x, y = _loss_inputs(model, batch=16)
    unweighted = model.training_loss(x, y)
    torch.testing.assert_close(model.training_loss(x, y, torch.ones(3, 16)), unweighted)
    # Mean-one weights (WMOPO's normalisation): weight 2 on the first half, 0 on the rest = loss on the first half.
    weights = torch.cat([torch.full((3, 8), 2.0), torch.zeros(3, 8)], 1)
    torch.testing.assert_close(model.training_loss(x, y, weights), model.training_loss(x[:, :8], y[:, :8]))
    # Weights are per member and per sample: zeroing member 1's row removes exactly its data term.
    member_weights = torch.ones(3, 16)
    member_weights[1] = 0
    data_terms = _nll_data_terms(model, x, y)
    torch.testing.assert_close(model.training_loss(x, y, member_weights), unweighted - data_terms[1])


def test_fit_respects_sample_weights() -> None:
    """Half of the data has its reward shifted by +3; with weight 0 on those rows the model must ignore them."""
    torch.manual_seed(0)
    obs, act, next_obs, rew = _toy_data(1200, seed=4)
    corrupt = torch.arange(1200) % 2 == 1
    rew_shifted = torch.where(corrupt, rew + 3.0, rew)
    weights = torch.where(corrupt, 0.0, 2.0)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(max_epochs=25))
    model.fit(obs, act, next_obs, rew_shifted, weights=weights, progress=False)
    with torch.no_grad():
        mean, _ = model(obs, act)
    reward_bias = float((mean[..., OBS_DIM] - rew).mean())
    assert abs(reward_bias) < 0.3, f"weighted fit drifted toward the zero-weight rows (bias {reward_bias:.2f})"


# ---------------------------------------------------------------------------------------------------- fitting
def test_fit_reduces_error_and_learns_the_noise_level(fitted: dict) -> None:
    model, before = fitted["model"], fitted["before"]
    after = _test_mse(model, fitted["test"])
    assert bool((after < 0.1 * before).all()), (before, after)
    assert float(after[model.elites].mean()) < 3 * NOISE**2
    obs, act, _, _ = fitted["test"]
    with torch.no_grad():
        _, logvar = model(obs, act)
    variance = logvar.exp()[model.elites].mean((0, 1))  # per output dim
    assert bool(((variance > NOISE**2 / 3) & (variance < 3 * NOISE**2)).all()), variance
    assert fitted["metrics"]["dynamics/epochs"] == 80 and fitted["epochs_logged"] == list(range(1, 81))


def test_elites_are_the_best_holdout_members(fitted: dict) -> None:
    model = fitted["model"]
    assert torch.equal(model.elites, model.holdout_losses.argsort()[:2])
    torch.testing.assert_close(
        torch.tensor(fitted["metrics"]["dynamics/elite_holdout_loss"]), model.holdout_losses[model.elites].mean()
    )
    # The restored weights are the snapshots the recorded losses belong to: re-evaluating the holdout split gives them.
    obs, act, next_obs, rew = fitted["train"]
    holdout = fitted["permutation"][: int(2000 * 0.2)]
    inputs = torch.cat([obs, act], -1)
    recomputed = model.holdout_mse(model.input_scaler(inputs[holdout]), _targets(obs, next_obs, rew)[holdout])
    torch.testing.assert_close(recomputed, model.holdout_losses, rtol=1e-4, atol=1e-6)
    # Inputs are standardised with the training split's statistics, not the holdout's or the whole set's.
    train_inputs = inputs[fitted["permutation"][400:]]
    torch.testing.assert_close(model.input_scaler.mean, train_inputs.mean(0))
    torch.testing.assert_close(model.input_scaler.std, train_inputs.std(0, unbiased=False))


def test_elite_selection_skips_a_corrupted_member() -> None:
    torch.manual_seed(0)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(max_epochs=2, lr=1e-4))
    with torch.no_grad():  # member 1 starts far off and cannot recover in two slow epochs
        model.net.output.bias[1].fill_(20.0)
    metrics = model.fit(*_toy_data(1000, seed=5), progress=False)
    assert int(model.holdout_losses.argmax()) == 1
    assert 1 not in model.elites.tolist()
    assert metrics["dynamics/elite_holdout_loss"] < float(model.holdout_losses[1]) / 10


def test_early_stopping_and_max_epochs() -> None:
    data = _toy_data(600, seed=6)
    torch.manual_seed(0)
    # Tiny lr: no member improves 1 % after the first epoch, so patience 1 stops at epoch 2.
    stalled = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(max_epochs=None, max_epochs_since_update=1, lr=1e-7))
    assert stalled.fit(*data, progress=False)["dynamics/epochs"] == 2
    torch.manual_seed(0)
    capped = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(max_epochs=3, max_epochs_since_update=1000))
    assert capped.fit(*data, progress=False)["dynamics/epochs"] == 3


def test_fit_refuses_too_little_data() -> None:
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(batch_size=256))
    with pytest.raises(UserError, match="batch"):
        model.fit(*_toy_data(300, seed=0), progress=False)


# ---------------------------------------------------------------------------------------------------- recipes
def test_the_config_selects_the_recipe() -> None:
    """holdout_ratio > 0 fits by MBPO's holdout rule (with holdout_metric nll, the weighted-NLL lineage's), 0 by
    PMDB's fixed epochs; the bootstrap keys pick the rows each member visits."""
    assert recipe_for(_cfg()).name == "mbpo"
    assert recipe_for(_cfg(holdout_metric="nll")).name == "weighted_nll"
    pmdb = recipe_for(_cfg(holdout_ratio=0.0, bootstrap_every_epoch=True))
    assert pmdb.name == "pmdb" and isinstance(pmdb.rows, FreshBootstrap)
    assert isinstance(recipe_for(_cfg(bootstrap=False, shared_batches=True)).rows, SharedShuffle)


def test_an_empty_holdout_fits_without_one() -> None:
    """A holdout fraction that leaves no row out (too little data for it) fits like PMDB's recipe: max_epochs
    epochs, the first members as elites; without max_epochs nothing would stop it, a UserError."""
    data = _toy_data(300, seed=0)  # int(300 · 0.001) = 0 rows held out
    torch.manual_seed(0)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(holdout_ratio=0.001, max_epochs=3, batch_size=64))
    model.elites.copy_(torch.tensor([2, 1]))
    metrics = model.fit(*data, progress=False)
    assert metrics["dynamics/epochs"] == 3 and math.isnan(metrics["dynamics/elite_holdout_loss"])
    assert model.elites.tolist() == [0, 1]
    endless = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(holdout_ratio=0.001, max_epochs=None, batch_size=64))
    with pytest.raises(UserError, match="max_epochs"):
        endless.fit(*data, progress=False)


def test_an_added_loss_term_reaches_every_batch() -> None:
    """`with_loss` wraps the batch loss: the wrapper sees every minibatch, and a constant term adds to the logged
    training loss without changing a gradient."""
    data = _toy_data(300, seed=3)
    cfg = _cfg(holdout_ratio=0.0, max_epochs=2, batch_size=100)
    batches: list[torch.Size] = []

    def plus_ten(base: BatchLoss) -> BatchLoss:
        def loss(
            model: EnsembleDynamics, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            batches.append(x.shape)
            total, per_member = base(model, x, y, weights)
            return total + 10.0, per_member

        return loss

    torch.manual_seed(0)
    plain = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg)
    plain_metrics = plain.fit(*data, progress=False)
    torch.manual_seed(0)
    added = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg)
    added_metrics = added.fit(*data, progress=False, recipe=with_loss(recipe_for(cfg), plus_ten))
    assert batches == [torch.Size([3, 100, OBS_DIM + ACT_DIM])] * 6
    assert added_metrics["dynamics/train_loss"] == pytest.approx(plain_metrics["dynamics/train_loss"] + 10.0)
    for name, value in added.state_dict().items():
        assert torch.equal(value, plain.state_dict()[name]), name


# ---------------------------------------------------------------------------------------------------- variants
def test_mse_variant_is_deterministic() -> None:
    torch.manual_seed(0)
    train, test = _toy_data(2000, seed=7), _toy_data(300, seed=8)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(loss="mse", max_epochs=60))
    before = _test_mse(model, test)
    model.fit(*train, progress=False)
    after = _test_mse(model, test)
    assert bool((after < 0.1 * before).all()), (before, after)

    obs, act = test[0][:64], test[1][:64]
    mean, logvar = model(obs, act)
    assert logvar is None and mean.shape == (3, 64, OBS_DIM + 1)
    model.elites.fill_(int(model.elites[0]))
    first = model.step(obs, act)  # deterministic=False, yet no noise: the model has no variance
    second = model.step(obs, act)
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    torch.testing.assert_close(first[0], obs + mean[int(model.elites[0]), :, :OBS_DIM].detach())

    with pytest.raises(UserError, match="aleatoric"):
        model.step(obs, act, partial(uncertainty, penalty_type="aleatoric"))
    _, _, _, info = model.step(obs, act, partial(uncertainty, penalty_type="pairwise_diff"))
    mu = mean.detach()[..., :OBS_DIM]
    expected = torch.stack([(mu[i] - mu.mean(0)).norm(dim=-1) for i in range(3)]).amax(0)
    torch.testing.assert_close(info["uncertainty"], expected, rtol=1e-5, atol=1e-6)


def test_mse_training_loss_is_plain_mse() -> None:
    torch.manual_seed(0)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(loss="mse", weight_decay=[0.0, 0.0, 0.0]))
    x, y = _loss_inputs(model)
    expected = sum((model.net(x)[i] - y[i]).square().mean() for i in range(3))
    torch.testing.assert_close(model.training_loss(x, y), expected)


def test_bf16_forward_is_float32_and_close_to_fp32() -> None:
    fp32 = _random_model()
    bf16 = EnsembleDynamics(OBS_DIM, ACT_DIM, dataclasses.replace(fp32.cfg, precision="bf16"))
    bf16.load_state_dict(fp32.state_dict())
    obs, act = _batch(128)
    with torch.no_grad():
        mean32, logvar32 = fp32(obs, act)
        mean16, logvar16 = bf16(obs, act)
    assert mean16.dtype == logvar16.dtype == torch.float32
    assert not torch.equal(mean16, mean32)  # bf16 really is in use
    scale = float(mean32.abs().max())
    torch.testing.assert_close(mean16, mean32, rtol=0.05, atol=0.02 * scale)
    torch.testing.assert_close(logvar16, logvar32, rtol=0.05, atol=0.05)


def test_bf16_fit_runs() -> None:
    torch.manual_seed(0)
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, _cfg(precision="bf16", max_epochs=3))
    metrics = model.fit(*_toy_data(600, seed=9), progress=False)
    assert math.isfinite(metrics["dynamics/train_loss"]) and math.isfinite(metrics["dynamics/elite_holdout_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ---------------------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _random_model()
    model.elites.copy_(torch.tensor([2, 0]))
    model.holdout_losses.copy_(torch.tensor([0.3, 0.9, 0.1]))
    path = tmp_path / "models" / "dynamics.pt"
    model.save(path, task="toy")
    loaded = EnsembleDynamics.load(path, obs_dim=OBS_DIM, act_dim=ACT_DIM)
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded.elites, model.elites) and torch.equal(loaded.holdout_losses, model.holdout_losses)
    assert torch.equal(loaded.input_scaler.mean, model.input_scaler.mean)
    assert torch.equal(loaded.input_scaler.std, model.input_scaler.std)
    obs, act = _batch(32)
    with torch.no_grad():
        for a, b in zip(model(obs, act), loaded(obs, act)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert EnsembleDynamics.load(path).obs_dim == OBS_DIM  # dims unchecked when not given


def test_load_for_another_task_names_the_dims(tmp_path: Path) -> None:
    path = tmp_path / "dynamics.pt"
    _random_model().save(path)
    with pytest.raises(UserError, match=r"2/1.*5/1"):
        EnsembleDynamics.load(path, obs_dim=5, act_dim=ACT_DIM)


def test_load_rejects_files_that_are_not_models(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(UserError, match="cannot be read"):
        EnsembleDynamics.load(garbage)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}, "obs_dim": 2}, other)
    with pytest.raises(UserError, match="not a dynamics model"):
        EnsembleDynamics.load(other)
    with pytest.raises(UserError, match="does not exist"):
        EnsembleDynamics.load(tmp_path / "missing.pt")


def test_optimizer_weight_decay_equals_decay_in_the_loss() -> None:
    """fit() moves the L2 term into Adam's weight_decay; one step must match Adam on the full loss."""
    torch.manual_seed(0)
    cfg = _cfg(hidden_dims=[8, 8], weight_decay=[0.3, 0.2, 0.1])
    with_loss, with_optimizer = (EnsembleDynamics(OBS_DIM, ACT_DIM, cfg) for _ in range(2))
    with_optimizer.load_state_dict(with_loss.state_dict())
    x, y = torch.randn(cfg.num_ensemble, 16, OBS_DIM + ACT_DIM), torch.randn(cfg.num_ensemble, 16, OBS_DIM + 1)
    plain_adam = torch.optim.Adam(with_loss.parameters(), lr=cfg.lr)
    with_loss.training_loss(x, y).backward()
    plain_adam.step()
    decaying_adam = with_optimizer.optimizer()
    with_optimizer.training_loss(x, y, include_decay=False).backward()
    decaying_adam.step()
    for (name, a), b in zip(with_loss.named_parameters(), with_optimizer.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_default_models_keep_the_state_dict_keys_of_saved_files() -> None:
    """Models and checkpoints saved before a new option existed must still load (strict load_state_dict): the default
    (MBPO) model's keys are exactly these; options add keys only to the models that use them (PMDB/MAGO's reward
    normalisation carries its shift and scale)."""
    cfg = DynamicsConfig(num_ensemble=2, num_elites=1, hidden_dims=[4], weight_decay=[0.0, 0.0])
    keys = set(EnsembleDynamics(3, 1, cfg).state_dict())
    layers = {f"net.{name}.{p}" for name in ("hidden.0", "output") for p in ("weight", "bias")}
    others = {"input_scaler.mean", "input_scaler.std", "max_logvar", "min_logvar", "elites", "holdout_losses"}
    expected = layers | others
    assert keys == expected
    cfg.reward_normalization = True
    assert set(EnsembleDynamics(3, 1, cfg).state_dict()) == expected | {"reward_shift", "reward_scale"}


class _Killed(Exception):
    """Stands for a kill in the middle of a dynamics fit."""


@pytest.mark.parametrize("setting", ["mbpo", "pmdb"])
def test_an_interrupted_fit_resumes_exactly(setting: str, tmp_path: Path) -> None:
    """Killed during epoch 4 (its progress file from epoch 3), a fresh model (other init, other RNG) fitting with the
    same progress file ends bit-identical to the uninterrupted fit: MBPO's holdout, fixed bootstrap rows and best
    snapshots, and PMDB's fixed epochs with fresh bootstrap rows per epoch, AdamW and gradient clipping."""
    if setting == "mbpo":
        cfg = DynamicsConfig(num_ensemble=3, num_elites=2, hidden_dims=[8], weight_decay=[1e-4, 1e-4], batch_size=64)
        cfg.max_epochs, cfg.max_epochs_since_update = 6, 100
    else:
        from algos.mago import MAGOConfig

        cfg = MAGOConfig().dynamics
        cfg.num_ensemble, cfg.num_elites, cfg.hidden_dims, cfg.weight_decay = 3, 3, [8], [0.0, 0.0]
        cfg.max_epochs, cfg.batch_size = 6, 64
    generator = torch.Generator().manual_seed(0)
    obs, act = torch.randn(400, 3, generator=generator), torch.rand(400, 2, generator=generator)
    next_obs, rewards = obs + 0.1 * torch.randn(400, 3, generator=generator), torch.randn(400, generator=generator)
    torch.manual_seed(1)
    straight = EnsembleDynamics(3, 2, cfg)
    straight.fit(obs, act, next_obs, rewards, progress=False)

    progress_file = tmp_path / "fit.pt"

    def die_in_epoch_4(metrics: dict[str, float], epoch: int) -> None:
        if epoch == 4:
            raise _Killed

    torch.manual_seed(1)
    with pytest.raises(_Killed):
        EnsembleDynamics(3, 2, cfg).fit(
            obs, act, next_obs, rewards, log_fn=die_in_epoch_4, progress=False, progress_file=progress_file,
            save_seconds=0.0, extra_state=lambda: {"num_events": 7},
        )  # fmt: skip
    saved = torch.load(progress_file, weights_only=False)
    assert saved["epoch"] == 3 and saved["num_events"] == 7
    torch.manual_seed(99)
    resumed = EnsembleDynamics(3, 2, cfg)
    metrics = resumed.fit(obs, act, next_obs, rewards, progress=False, progress_file=progress_file)
    assert metrics["dynamics/epochs"] == 6
    expected = straight.state_dict()
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, expected[name]), name
