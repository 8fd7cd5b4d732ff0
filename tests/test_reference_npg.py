"""The NPG family against mjrl's own outputs (tests/fixtures/reference/README.md).

tests/fixtures/reference/npg/npg_reference.npz holds fixed inputs and what mjrl (branch v2, commit 15bf3c0) computes
from them in float64: the Gaussian policy's log-likelihoods and their gradient, the value baseline, returns and GAE,
the vanilla gradient, the Fisher-vector product, conjugate gradient, the NPG step, the baseline fit, the dynamics
ensemble, MOReL's disagreement, threshold and truncation, and the hand-written hopper reward and termination.
Every test loads those inputs into this project's modules (built in float64 with `.double()`; the default dtype is
left alone) and compares each output with numpy.testing.assert_allclose at rtol = atol = 1e-6; flags, lengths and
counts must match exactly. Names: `ref_*` arrays are mjrl's outputs, every other array is an input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from algos.game import MIN_PATH_LENGTH, next_obs_per_member, pairwise_disagreement, valid_steps
from algos.morel import MOReL, MOReLConfig
from algos.npg import NPG, conjugate_gradient, fisher_vector_product, gae, whiten
from algos.npg_trainer import prediction_error
from buffers.paths import PathBatch
from config import NPGConfig, _npg_dynamics
from envs.rewards import hopper_reward_mjrl
from envs.termination import hopper_termination_mjrl
from models.dynamics import EnsembleDynamics
from models.dynamics_recipes import mjrl
from models.npg import GaussianMLPPolicy

RTOL = ATOL = 1e-6
OBS_DIM, ACT_DIM, HIDDEN = 11, 3, [32, 32]


@pytest.fixture(scope="module")
def fx(reference_arrays: Callable[[str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every array of the fixture, read once for the whole module."""
    return reference_arrays("npg")


# ------------------------------------------------------------------------------------------------ helpers
def close(actual: torch.Tensor | np.ndarray | float, expected: np.ndarray | float, name: str, **tol: float) -> None:
    """assert_allclose at the fixture's tolerance (float64), naming the quantity on failure."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=tol.get("rtol", RTOL), atol=tol.get("atol", ATOL), err_msg=name
    )


def t64(array: np.ndarray) -> torch.Tensor:
    """A float64 (or int/bool, unchanged) tensor of a fixture array."""
    return torch.from_numpy(np.array(array))


def offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def pad(steps: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated steps [total, ...] -> padded [paths, max length, ...] (zeros after a path's end) and its mask."""
    padded = np.zeros((len(lengths), int(lengths.max()), *steps.shape[1:]), steps.dtype)
    mask = np.zeros((len(lengths), int(lengths.max())), bool)
    for i, (start, length) in enumerate(zip(offsets(lengths), lengths)):
        padded[i, :length] = steps[start : start + length]
        mask[i, :length] = True
    return t64(padded), t64(mask)


def linear_layers(net: nn.Module) -> list[nn.Linear]:
    return [module for module in net.modules() if isinstance(module, nn.Linear)]


@torch.no_grad()
def load_mlp(net: nn.Module, fx: dict[str, np.ndarray], prefix: str) -> None:
    """Install W [in, out] / b [out] blocks `<prefix>_W0 ...` into the Linear layers of `net` (weights [out, in])."""
    layers = linear_layers(net)
    assert len(layers) == 3, f"{prefix}: expected 3 Linear layers, found {len(layers)}"
    for k, layer in enumerate(layers):
        layer.weight.copy_(t64(fx[f"{prefix}_W{k}"]).T)
        layer.bias.copy_(t64(fx[f"{prefix}_b{k}"]))


def assert_mlp(net: nn.Module, fx: dict[str, np.ndarray], prefix: str) -> None:
    """The Linear layers of `net` equal the fixture blocks `<prefix>_W0 ...`."""
    for k, layer in enumerate(linear_layers(net)):
        close(layer.weight.T, fx[f"{prefix}_W{k}"], f"{prefix}_W{k}")
        close(layer.bias, fx[f"{prefix}_b{k}"], f"{prefix}_b{k}")


def policy_layout(policy: GaussianMLPPolicy) -> list[tuple[str, torch.Size, bool]]:
    """(fixture block, parameter shape, stored transposed) in the order of `policy.parameters()`, the order of every
    flat vector the project's NPG code takes and returns."""
    blocks: dict[int, tuple[str, bool]] = {id(policy.log_std): ("log_std", False)}
    for k, layer in enumerate(linear_layers(policy.mean_net)):
        blocks[id(layer.weight)] = (f"W{k}", True)
        blocks[id(layer.bias)] = (f"b{k}", False)
    return [(blocks[id(p)][0], p.shape, blocks[id(p)][1]) for p in policy.parameters()]


def to_flat(policy: GaussianMLPPolicy, fx: dict[str, np.ndarray], prefix: str) -> torch.Tensor:
    """The fixture's blocks `<prefix>_*` as one flat vector in `policy.parameters()` order."""
    pieces = [t64(fx[f"{prefix}_{block}"]) for block, _, _ in policy_layout(policy)]
    transposed = [transpose for _, _, transpose in policy_layout(policy)]
    return torch.cat([(p.T if tr else p).reshape(-1) for p, tr in zip(pieces, transposed)])


def assert_flat(
    policy: GaussianMLPPolicy, actual: torch.Tensor, fx: dict[str, np.ndarray], prefix: str, **tol: float
) -> None:
    """A flat vector over the policy parameters equals the fixture's blocks `<prefix>_*`, block by block."""
    layout = policy_layout(policy)
    assert actual.shape == (sum(shape.numel() for _, shape, _ in layout),), f"{prefix}: flat vector {actual.shape}"
    for (block, shape, transpose), piece in zip(layout, actual.split([shape.numel() for _, shape, _ in layout])):
        piece = piece.view(shape)
        close(piece.T if transpose else piece, fx[f"{prefix}_{block}"], f"{prefix}_{block}", **tol)


def npg_config(fx: dict[str, np.ndarray], **overrides: object) -> NPGConfig:
    """The fixture's settings: hidden layers [32, 32] in policy and baseline, CG for 5 iterations from x₀ = g."""
    cfg = NPGConfig(
        policy_hidden_dims=list(HIDDEN),
        init_log_std=0.0,
        min_log_std=float(fx["cfg_min_log_std"]),
        max_log_std=float(fx["cfg_max_log_std"]),
        step_size=float(fx["cfg_step_size"]),
        cg_iters=int(fx["cfg_cg_iters_stable"]),
        cg_damping=float(fx["cfg_cg_damping"]),
        cg_init="gradient",
        gamma=float(fx["cfg_gamma"]),
        gae_lambda=float(fx["cfg_gae_lambda"]),
        baseline_hidden_dims=list(HIDDEN),
        baseline_lr=float(fx["cfg_baseline_lr"]),
        baseline_weight_decay=float(fx["cfg_baseline_weight_decay"]),
        baseline_batch_size=int(fx["cfg_baseline_batch_sizes"][-1]),
        baseline_epochs=int(fx["cfg_baseline_epochs"]),
    )
    return dataclasses.replace(cfg, **overrides)


@torch.no_grad()
def load_policy(policy: GaussianMLPPolicy, fx: dict[str, np.ndarray]) -> None:
    """The fixture's policy: mean network, log σ and input normalisation (no observation mask)."""
    load_mlp(policy.mean_net, fx, "policy")
    policy.log_std.copy_(t64(fx["policy_log_std"]))
    policy.obs_shift.copy_(t64(fx["policy_in_shift"]))
    policy.obs_scale.copy_(t64(fx["policy_in_scale"]))
    policy.obs_mask.fill_(1.0)


def make_npg(fx: dict[str, np.ndarray], **overrides: object) -> NPG:
    """An NPG agent in float64 holding the fixture's policy and baseline. Its baseline Adam has taken no step yet, so
    its state is fresh for the copied weights (the parameters are copied into, not replaced)."""
    npg = NPG(OBS_DIM, ACT_DIM, npg_config(fx, **overrides), "cpu").double()
    load_policy(npg.actor, fx)
    load_mlp(npg.baseline.net, fx, "baseline")
    with torch.no_grad():
        npg.baseline.obs_mask.fill_(1.0)
    assert not npg.baseline_optim.state, "the baseline optimiser must start without moments"
    return npg


def steps_data(fx: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return t64(fx["paths_observations"]), t64(fx["paths_actions"])


# ------------------------------------------------------------------------------------------------ policy
def test_log_likelihood(fx: dict[str, np.ndarray]) -> None:
    """mjrl `MLP.log_likelihood` / `mean_LL` (mjrl/policies/gaussian_mlp.py:155): log π(a_t|s_t) per step, with the
    input normalisation (s − in_shift) / (in_scale + 1e-6)."""
    npg = make_npg(fx)
    obs, act = steps_data(fx)
    with torch.no_grad():
        close(npg.actor.log_prob(obs, act), fx["ref_log_prob"], "ref_log_prob")


def test_log_likelihood_gradient(fx: dict[str, np.ndarray]) -> None:
    """mjrl `mean_LL` backpropagated (mjrl/policies/gaussian_mlp.py:148): ∇_θ of the mean over all steps of
    log π(a_t|s_t), every parameter block."""
    npg = make_npg(fx)
    obs, act = steps_data(fx)
    grads = torch.autograd.grad(npg.actor.log_prob(obs, act).mean(), list(npg.actor.parameters()))
    assert_flat(npg.actor, torch.cat([g.reshape(-1) for g in grads]), fx, "ref_log_prob_grad")


# ------------------------------------------------------------------------------------------------ baseline, GAE
def test_baseline_features(fx: dict[str, np.ndarray]) -> None:
    """mjrl `MLPBaseline._features` (mjrl/baselines/mlp_baseline.py:36): [clip(s, −10, 10)/10, t/1000 … (t/1000)⁴]."""
    npg = make_npg(fx)
    features = npg.baseline.features(t64(fx["paths_observations"]), t64(fx["paths_timesteps"]))
    close(features, fx["ref_baseline_features"], "ref_baseline_features")


def test_baseline_values(fx: dict[str, np.ndarray]) -> None:
    """mjrl `MLPBaseline.predict` (mjrl/baselines/mlp_baseline.py:87), in float64: V(φ_t) per step."""
    npg = make_npg(fx)
    with torch.no_grad():
        values = npg.baseline(t64(fx["paths_observations"]), t64(fx["paths_timesteps"]))
    close(values, fx["ref_baseline_values"], "ref_baseline_values")


def test_returns_and_gae(fx: dict[str, np.ndarray]) -> None:
    """mjrl `compute_returns` and `compute_advantages` (mjrl/utils/process_samples.py:5, :25): discounted returns
    without bootstrap, GAE with b_T = 0 after a terminated path and b_T = b_{T−1} after a cut-off one (from mjrl's
    baseline values), then whitened as mjrl's `train_from_paths` does (mjrl/algos/batch_reinforce.py:189)."""
    lengths = fx["paths_lengths"]
    rewards, mask = pad(fx["paths_rewards"], lengths)
    values, _ = pad(fx["ref_baseline_values"], lengths)
    terminated = t64(fx["paths_terminated"])
    advantages, returns = gae(rewards, values, mask, terminated, float(fx["cfg_gamma"]), float(fx["cfg_gae_lambda"]))
    close(returns[mask], fx["ref_returns"], "ref_returns")
    close(advantages[mask], fx["ref_advantages"], "ref_advantages")
    adv = advantages[mask]
    whitened = whiten(adv)
    close(whitened, fx["ref_advantages_whitened"], "ref_advantages_whitened")


# ------------------------------------------------------------------------------------------------ NPG step
def test_vanilla_policy_gradient(fx: dict[str, np.ndarray]) -> None:
    """mjrl `flat_vpg` of `pg_surrogate` (mjrl/algos/batch_reinforce.py:41, :54) with the whitened advantages kept in
    float64: g = ∇ mean_t[log π(a_t|s_t) · Â_t]."""
    npg = make_npg(fx)
    obs, act = steps_data(fx)
    vpg = npg.policy_gradient(obs, act, t64(fx["ref_advantages_whitened"]))
    assert_flat(npg.actor, vpg, fx, "ref_vpg")


def test_fisher_vector_product(fx: dict[str, np.ndarray]) -> None:
    """mjrl `NPG.HVP` (mjrl/algos/npg_cg.py:70, :76): F v, the Hessian of `mean_kl` over the 60 states times the
    fixture's vector v, and the damped operator (F + c·I) v that CG uses."""
    npg = make_npg(fx)
    obs, _ = steps_data(fx)
    v = to_flat(npg.actor, fx, "fvp_vector")
    product = fisher_vector_product(npg.actor, obs)(v)
    assert_flat(npg.actor, product, fx, "ref_fvp")
    assert_flat(npg.actor, product + float(fx["cfg_cg_damping"]) * v, fx, "ref_fvp_damped")


@pytest.mark.parametrize("start", ["x0g", "x0zero"])
def test_conjugate_gradient(fx: dict[str, np.ndarray], start: str) -> None:
    """mjrl `cg_solve` (mjrl/utils/cg_solve.py:5) on (F + c·I) x = g, from x₀ = g as mjrl's NPG calls it
    (mjrl/algos/npg_cg.py:112) and from x₀ = 0.

    The 5-iteration solutions are asserted at 1e-6. The 25-iteration ones (`ref_cg_*_25_*`) are informational: the
    damped Fisher matrix is ill-conditioned here and past about 10 iterations CG amplifies last-digit differences
    (the fixture's "CG sensitivity": g scaled by 1 + 1e-12 moves them by 2e-4). This project's closed-form
    Gauss-Newton product leaves out the 1e-8 of mjrl's KL denominator (F v differs by 7e-8 of 7.8), which 25
    iterations turn into about 10 % of ‖x‖ (max |Δx| 0.31 of 3.2; double backpropagation of mjrl's own KL formula
    lands within 1e-4), so they are only checked to point the same way: cosine ≥ 0.99 and ‖x − x_ref‖ ≤ 0.25 ‖x_ref‖.
    """
    npg = make_npg(fx)
    obs, _ = steps_data(fx)
    fisher = fisher_vector_product(npg.actor, obs)
    damping = float(fx["cfg_cg_damping"])

    def damped(v: torch.Tensor) -> torch.Tensor:
        return fisher(v) + damping * v

    g = to_flat(npg.actor, fx, "ref_vpg")
    x0 = g.clone() if start == "x0g" else None
    tol = float(fx["cfg_cg_residual_tol"])
    stable = conjugate_gradient(damped, g, int(fx["cfg_cg_iters_stable"]), residual_tol=tol, x0=x0)
    assert_flat(npg.actor, stable, fx, f"ref_cg_{start}_5")
    long = conjugate_gradient(damped, g, int(fx["cfg_cg_iters"]), residual_tol=tol, x0=x0)
    reference = to_flat(npg.actor, fx, f"ref_cg_{start}_25")
    cosine = float(long @ reference / (long.norm() * reference.norm()))
    distance = float((long - reference).norm() / reference.norm())
    assert cosine >= 0.99 and distance <= 0.25, f"ref_cg_{start}_25: cosine {cosine:.4f}, distance {distance:.3f}"


@pytest.mark.parametrize(("cg_init", "start"), [("gradient", "x0g"), ("zero", "x0zero")])
def test_npg_step(fx: dict[str, np.ndarray], cg_init: str, start: str) -> None:
    """mjrl `NPG.train_from_paths`'s step (mjrl/algos/npg_cg.py:112-130, mjrl/policies/gaussian_mlp.py:114) with 5 CG
    iterations: g, the CG direction, α = sqrt(δ / gᵀx) and the parameters θ + αx with log σ clamped (the upper bound
    acts on log σ₁ here)."""
    npg = make_npg(fx, cg_init=cg_init)
    obs, act = steps_data(fx)
    result = npg.policy_step(obs, act, t64(fx["ref_advantages_whitened"]))
    assert_flat(npg.actor, result["vpg"], fx, "ref_vpg")
    assert_flat(npg.actor, result["direction"], fx, f"ref_cg_{start}_5")
    close(float(result["alpha"]), fx[f"ref_step_alpha_{start}_5"], f"ref_step_alpha_{start}_5")
    params = torch.cat([p.detach().reshape(-1) for p in npg.actor.parameters()])
    assert_flat(npg.actor, params, fx, f"ref_step_params_{start}_5")


def test_update_from_paths_takes_mjrls_step(fx: dict[str, np.ndarray]) -> None:
    """mjrl `NPG.train_from_paths` end to end (mjrl/algos/npg_cg.py): baseline values, GAE, whitening, g, CG from
    x₀ = g, step and clamp on the fixture's paths give mjrl's α and parameters (`ref_step_*_x0g_5`), and the
    baseline's VF_error_before (mjrl/baselines/mlp_baseline.py:76)."""
    npg = make_npg(fx)
    lengths = fx["paths_lengths"]
    obs, mask = pad(fx["paths_observations"], lengths)
    act, _ = pad(fx["paths_actions"], lengths)
    rew, _ = pad(fx["paths_rewards"], lengths)
    paths = PathBatch(obs, act, rew, mask, t64(fx["paths_terminated"]))
    assert torch.equal(paths.timesteps[mask], t64(fx["paths_timesteps"]))
    info = npg.update_from_paths(paths)
    close(info["npg/alpha"], fx["ref_step_alpha_x0g_5"], "ref_step_alpha_x0g_5")
    params = torch.cat([p.detach().reshape(-1) for p in npg.actor.parameters()])
    assert_flat(npg.actor, params, fx, "ref_step_params_x0g_5")
    rel_error = "ref_baseline_fit_B128_rel_error_before"
    close(info["npg/VF_error_before"], fx[rel_error], rel_error)


# ------------------------------------------------------------------------------------------------ baseline fit
@pytest.mark.parametrize("batch_size", [16, 32, 128])
def test_baseline_fit(fx: dict[str, np.ndarray], batch_size: int) -> None:
    """mjrl `MLPBaseline.fit` through `fit_data` (mjrl/baselines/mlp_baseline.py:61, :76; mjrl/utils/optimize_model.py
    :7-35) with the fixture's row order: max(⌊n/B⌋ − 1, 1) Adam steps (coupled weight decay) of the mean squared
    error to the returns; VF_error before and after, the parameters and values after, the epoch's mean minibatch
    loss, the number of steps and the rows of each."""
    assert batch_size in fx["cfg_baseline_batch_sizes"]
    key = f"ref_baseline_fit_B{batch_size}"
    npg = make_npg(fx, baseline_batch_size=batch_size)
    obs, timesteps, returns = t64(fx["paths_observations"]), t64(fx["paths_timesteps"]), t64(fx["ref_returns"])
    orders = [t64(order) for order in fx["baseline_fit_order"]]

    steps: list[int] = []
    minibatches: list[torch.Tensor] = []  # the network's output on each training minibatch
    npg.baseline_optim.register_step_post_hook(lambda *_: steps.append(1))

    def record(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # the relative errors are evaluated without grad
            minibatches.append(output.detach().reshape(-1))

    npg.baseline.net.register_forward_hook(record)
    before, after = npg.fit_baseline(obs, timesteps, returns, orders=orders)

    close(before, fx[f"{key}_rel_error_before"], f"{key}_rel_error_before")
    close(after, fx[f"{key}_rel_error_after"], f"{key}_rel_error_after")
    assert len(steps) == int(fx[f"{key}_num_steps"]), f"{key}_num_steps"
    assert [len(rows) for rows in minibatches] == fx[f"{key}_rows_per_step"].tolist(), f"{key}_rows_per_step"
    losses, start = [], 0
    order = orders[0]  # one epoch
    for output in minibatches:
        rows = order[start : start + len(output)]
        losses.append(float((output - returns[rows]).square().mean()))
        start += len(output)
    close(np.mean(losses), fx[f"{key}_epoch_loss"][0], f"{key}_epoch_loss")
    assert_mlp(npg.baseline.net, fx, key)
    with torch.no_grad():
        close(npg.baseline(obs, timesteps), fx[f"{key}_values_after"], f"{key}_values_after")


# ------------------------------------------------------------------------------------------------ dynamics
def make_dynamics(fx: dict[str, np.ndarray], install: bool = True) -> EnsembleDynamics:
    """mjrl's deterministic ensemble (2 members, 32x32 ReLU, mean/MAD scaling) in float64; with `install`, holding
    the fixture's weights and input/output statistics."""
    # the NPG family's own ensemble configuration, shrunk to the fixture's 2 members of 32x32
    cfg = dataclasses.replace(_npg_dynamics(), num_ensemble=2, num_elites=2, hidden_dims=list(HIDDEN))
    dynamics = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg).double()
    if not install:
        return dynamics
    with torch.no_grad():
        for k, layer in enumerate(dynamics.net.layers):  # weight [E, in, out], bias [E, 1, out]
            layer.weight.copy_(t64(fx[f"dyn_W{k}"]))
            layer.bias.copy_(t64(fx[f"dyn_b{k}"]).unsqueeze(1))
        dynamics.input_scaler.mean.copy_(t64(fx["dyn_in_shift"]))
        dynamics.input_scaler.std.copy_(t64(fx["dyn_in_scale"]))
        assert dynamics.target_scaler is not None
        dynamics.target_scaler.mean.copy_(t64(fx["dyn_out_shift"]))
        dynamics.target_scaler.std.copy_(t64(fx["dyn_out_scale"]))
    return dynamics


def dynamics_data(fx: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return t64(fx["dyn_data_obs"]), t64(fx["dyn_data_act"]), t64(fx["dyn_data_next_obs"])


def test_dynamics_normalisation_statistics(fx: dict[str, np.ndarray]) -> None:
    """mjrl `WorldModel.fit_dynamics`'s statistics (mjrl/algos/mbrl/nn_dynamics.py:101, :102, :225): input shift and
    scale (mean and mean absolute deviation of [s, a]), output shift and scale of Δ = s′ − s and the output mask
    scale ≥ 1e-8, as the mjrl recipe's fit computes them (zero epochs: statistics only, weights unchanged)."""
    dynamics = make_dynamics(fx, install=False)
    obs, act, next_obs = dynamics_data(fx)
    result = dynamics.fit(obs, act, next_obs, None, progress=False, recipe=mjrl(dynamics.cfg, epochs=0))
    assert result["dynamics/steps"] == 0
    close(dynamics.input_scaler.mean, fx["dyn_in_shift"], "dyn_in_shift")
    close(dynamics.input_scaler.std, fx["dyn_in_scale"], "dyn_in_scale")
    assert dynamics.target_scaler is not None
    close(dynamics.target_scaler.mean, fx["dyn_out_shift"], "dyn_out_shift")
    close(dynamics.target_scaler.std, fx["dyn_out_scale"], "dyn_out_scale")
    assert np.array_equal((dynamics.target_scaler.std >= 1e-8).numpy(), fx["dyn_out_mask"]), "dyn_out_mask"


def test_dynamics_predictions(fx: dict[str, np.ndarray]) -> None:
    """mjrl `WorldModel.predict` (mjrl/algos/mbrl/nn_dynamics.py:243, :244) per member: s + mask ⊙ (o · (out_scale +
    1e-8) + out_shift) on the test rows (dataset rows and rows off the data); and `compute_loss` (raw MSE per
    member on the dataset, mjrl/algos/mbrl/nn_dynamics.py:79)."""
    dynamics = make_dynamics(fx)
    with torch.no_grad():
        predictions = next_obs_per_member(dynamics, t64(fx["dyn_test_obs"]), t64(fx["dyn_test_act"]))
        close(predictions, fx["ref_dyn_next_obs"], "ref_dyn_next_obs")
        close(prediction_error(dynamics, *dynamics_data(fx)), fx["ref_dyn_raw_mse"], "ref_dyn_raw_mse")


def test_dynamics_training_loss_and_gradient(fx: dict[str, np.ndarray]) -> None:
    """mjrl `WorldModel.fit_dynamics`'s loss (mjrl/algos/mbrl/nn_dynamics.py:108, :377, :378) on the whole dataset as
    one batch: per member the mean squared error between the network output and (s′ − s − out_shift) /
    (out_scale + 1e-8), and its gradient w.r.t. that member's parameters."""
    dynamics = make_dynamics(fx)
    obs, act, next_obs = dynamics_data(fx)
    x = dynamics.input_scaler(torch.cat([obs, act], dim=-1))
    y = dynamics.target_scaler(next_obs - obs)  # type: ignore[misc]
    close(dynamics.holdout_mse(x, y), fx["ref_dyn_loss"], "ref_dyn_loss")
    # The members share no weight, so the gradient of the sum of their losses is each member's own gradient.
    loss = dynamics.training_loss(x, y, include_decay=False)
    close(float(loss.detach()), fx["ref_dyn_loss"].sum(), "sum of ref_dyn_loss")
    loss.backward()
    for k, layer in enumerate(dynamics.net.layers):
        close(layer.weight.grad, fx[f"ref_dyn_grad_W{k}"], f"ref_dyn_grad_W{k}")  # type: ignore[arg-type]
        close(layer.bias.grad.squeeze(1), fx[f"ref_dyn_grad_b{k}"], f"ref_dyn_grad_b{k}")  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ MOReL
def make_morel(fx: dict[str, np.ndarray]) -> MOReL:
    """MOReL with the fixture's pessimism coefficient and HALT penalty, mjrl's non-terminating truncation, float64."""
    cfg = MOReLConfig(
        pessimism_coef=float(fx["cfg_pessimism_coef"]),
        truncate_reward=float(fx["cfg_halt_penalty"]),
        halt_terminates=False,
        npg=npg_config(fx),
        bc_epochs=1,
    )
    return MOReL(OBS_DIM, ACT_DIM, cfg).double()


def test_morel_disagreement_and_threshold(fx: dict[str, np.ndarray]) -> None:
    """projects/morel/run_morel.py:205, :213: δ(s, a) = max_{i<j} ‖f_i(s, a) − f_j(s, a)‖ on every dataset row, its
    maximum, and τ = max δ / pessimism_coef (`MOReL.set_threshold`)."""
    dynamics, morel = make_dynamics(fx), make_morel(fx)
    obs, act, _ = dynamics_data(fx)
    with torch.no_grad():
        disagreement = pairwise_disagreement(next_obs_per_member(dynamics, obs, act))
    close(disagreement, fx["ref_morel_disagreement"], "ref_morel_disagreement")
    close(float(disagreement.max()), fx["ref_morel_max_disagreement"], "ref_morel_max_disagreement")
    morel.set_threshold(dynamics, obs, act)
    close(float(morel.threshold), fx["ref_morel_threshold"], "ref_morel_threshold")


def test_morel_truncation(fx: dict[str, np.ndarray]) -> None:
    """mjrl `ModelBasedNPG`'s path processing (mjrl/algos/mbrl/model_based_npg.py:140-165): paths shorter than
    MIN_PATH_LENGTH dropped, δ checked at steps 0 … L−2, a path past τ cut to max(4, t₁ + 1) steps with the HALT
    penalty on its new last reward, and every path left non-terminal."""
    assert int(fx["cfg_min_path_length"]) == MIN_PATH_LENGTH
    dynamics, morel = make_dynamics(fx), make_morel(fx)
    morel.set_threshold(dynamics, *dynamics_data(fx)[:2])
    lengths = fx["morel_paths_lengths"]
    obs, mask = pad(fx["morel_paths_observations"], lengths)
    act, _ = pad(fx["morel_paths_actions"], lengths)
    rew, _ = pad(fx["morel_paths_rewards"], lengths)
    paths = PathBatch(obs, act, rew, mask, t64(fx["morel_paths_terminated"]))

    kept = paths.lengths >= MIN_PATH_LENGTH
    assert np.array_equal(kept.numpy(), fx["ref_morel_kept"]), "ref_morel_kept"
    paths = paths.select(kept)
    num_paths, horizon = paths.mask.shape
    with torch.no_grad():
        every = next_obs_per_member(dynamics, paths.obs.reshape(-1, OBS_DIM), paths.act.reshape(-1, ACT_DIM))
    disagreement = pairwise_disagreement(every).view(num_paths, horizon)
    checked = paths.mask & (torch.arange(horizon) < (paths.lengths - 1).unsqueeze(1))
    close(disagreement[checked], fx["ref_morel_path_disagreement"], "ref_morel_path_disagreement")
    assert checked.sum(1).tolist() == fx["ref_morel_path_disagreement_lengths"].tolist()

    shaped = morel.shape_paths(paths, disagreement)
    assert shaped.lengths.tolist() == fx["ref_morel_lengths"].tolist(), "ref_morel_lengths"
    assert (shaped.lengths < paths.lengths).tolist() == fx["ref_morel_halted"].tolist(), "ref_morel_halted"
    assert shaped.terminated.tolist() == fx["ref_morel_terminated"].tolist(), "ref_morel_terminated"
    close(shaped.rew[shaped.mask], fx["ref_morel_rewards"], "ref_morel_rewards")


def test_morel_behaviour_cloning_keeps_the_input_scaling(fx: dict[str, np.ndarray]) -> None:
    """projects/morel/run_morel.py:233 with mjrl/algos/behavior_cloning.py:25 (set_transforms=False): behaviour
    cloning on the dataset leaves the policy's in_shift / in_scale as they were."""
    morel = make_morel(fx)
    load_policy(morel.actor, fx)
    obs, act, _ = dynamics_data(fx)
    morel.behaviour_cloning(obs, act)
    close(morel.actor.obs_shift, fx["ref_bc_in_shift"], "ref_bc_in_shift")
    close(morel.actor.obs_scale, fx["ref_bc_in_scale"], "ref_bc_in_scale")


# ------------------------------------------------------------------------------------------------ hopper
def test_hopper_reward_and_done(fx: dict[str, np.ndarray]) -> None:
    """mjrl's gym_hopper reward and termination (projects/model_based_npg/utils/reward_functions/gym_hopper.py:12-33)
    on raw observations: both read s (not s′); the reward clips the masked state at ±10 and the action at ±1, the
    termination uses the angle bound 0.15 on the unclipped masked state."""
    obs, act, next_obs = (t64(fx[name]) for name in ("hopper_obs", "hopper_act", "hopper_next_obs"))
    close(hopper_reward_mjrl(obs, act, next_obs), fx["ref_hopper_reward"], "ref_hopper_reward")
    done = hopper_termination_mjrl(obs, act, next_obs)
    assert done.dtype == torch.bool
    assert np.array_equal(done.numpy(), fx["ref_hopper_done"]), "ref_hopper_done"


def test_hopper_path_termination(fx: dict[str, np.ndarray]) -> None:
    """mjrl's path-level termination (gym_hopper.py:35): the first state s_t that is done ends the path and is kept
    (length t + 1, terminated); `valid_steps` of the per-state done flags."""
    states, mask = pad(fx["hopper_path_observations"], fx["hopper_path_lengths"])
    assert bool(mask.all())
    following = torch.roll(states, -1, dims=1)  # s′ is ignored by mjrl's check; pass the next state all the same
    done = hopper_termination_mjrl(states, torch.zeros(*states.shape[:2], ACT_DIM, dtype=states.dtype), following)
    valid, terminated = valid_steps(done)
    assert valid.sum(1).tolist() == fx["ref_hopper_path_lengths"].tolist(), "ref_hopper_path_lengths"
    assert terminated.tolist() == fx["ref_hopper_path_terminated"].tolist(), "ref_hopper_path_terminated"
