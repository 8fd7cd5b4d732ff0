"""WMOPO against its authors' outputs (tests/fixtures/reference/README.md#wmopowmopo_referencenpz).

tests/fixtures/reference/wmopo/wmopo_reference.npz holds fixed inputs and what numahha/wmopo (commit 1557dab) computes
from them in float64: the study's pendulum step and reward, its ratio network (outputs, loss, gradient, weights), the
weighted NLL and its gradient, the pointwise NLL and the score, Algorithm 1's corrected loss and gradient, the LSTD(λ)
statistics and Θ on scripted episodes and the correction vector g; and on the D4RL side the ensemble's pointwise
loss, the ratio network (outputs, loss, gradient), S and b, the model-error network and its regression targets, the
reward bounds, the penalised model and dataset rewards and the refit weights. `expected_*` arrays are the authors'
outputs, everything else an input; `cfg_*` are settings.

The networks are built in float64 from the stored matrices (W [in, out]; torch's Linear takes W.T, the ensemble
layers take it as stored). θ, the Pendulum model's 52 parameters, is in the fixture's order W1, b1, W2, b2, log σ²
there and log σ², W1, b1, W2, b2 in `parameter_vector` (torch lists a module's own parameters first): `canonical_index`
maps one onto the other. The D4RL ensemble's outputs are ordered (r, Δs) in the fixture and
(Δs, r) here, so its last layer and log-variance bounds are permuted on loading. Randomness goes in through the draws
arguments (`EpisodeDraws`, the noise of `model_transition`), so the tests depend on the equations, not on the order of
RNG calls. Where an output feeds another, the fixture's value is the input (the page's "chained quantities").

Tolerance: max |mine − reference| <= 1e-6 · max(1, max |reference|) per array (the MAGO fixture's rule; for every
array whose entries stay within ±1 it is the page's 1e-6). The ensemble casts its network output to float32
(models/dynamics.py), which the page puts at 4.3e-6 = 5e-8 of the largest entry for `expected_lstd_b` and below 1e-6
everywhere else; Θ is returned in float32. The boolean mask and the count must match exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from algos.wmopo import (
    WMOPO,
    ModelErrorFitConfig,
    ModelErrorNet,
    WMOPOConfig,
    _wmopo_dynamics,
    penalised_model_rewards,
    penalised_real_rewards,
    penalty_coefficient,
    pointwise_loss,
    reward_bounds,
    weights_power,
)
from algos.wmopo_study import (
    EpisodeDraws,
    LSTDLambda,
    PendulumStudyConfig,
    correction_loss,
    correction_vector,
    log_likelihood_grads,
    lstd_features,
    lstd_statistics,
    model_transition,
    parameter_vector,
    pointwise_nll,
    study_dynamics,
    study_score,
)
from envs import custom_pendulum as pendulum
from models.density_ratio import DensityRatio, classification_loss
from models.dynamics import EnsembleDynamics

RELATIVE = 1e-6
D4RL_OBS, D4RL_ACT = 11, 3


@pytest.fixture(scope="module")
def fx(reference_arrays: Callable[[str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every array of the fixture, read once for the module."""
    return reference_arrays("wmopo")


# ------------------------------------------------------------------------------------------------ helpers
def t64(array: np.ndarray) -> torch.Tensor:
    """A tensor of a fixture array (float64, int64 or bool as stored)."""
    return torch.from_numpy(np.array(array))


def numpy(value: torch.Tensor | np.ndarray | float) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def close(actual: torch.Tensor | np.ndarray | float, expected: np.ndarray, name: str) -> float:
    """The tolerance above for one array; returns the deviation."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = numpy(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, reference {expected.shape}"
    assert np.isfinite(actual).all(), f"{name}: non-finite entries"
    bound = RELATIVE * max(1.0, float(np.abs(expected).max()))
    deviation = float(np.abs(actual - expected).max())
    assert deviation <= bound, f"{name}: max |mine − reference| = {deviation:.3g} > {bound:.3g}"
    return deviation


def check(actual: torch.Tensor | np.ndarray | float, fx: dict[str, np.ndarray], name: str) -> float:
    return close(actual, fx[name], name)


def linear_layers(net: nn.Module) -> list[nn.Linear]:
    return [module for module in net.modules() if isinstance(module, nn.Linear)]


@torch.no_grad()
def load_mlp(net: nn.Module, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
    """Stored y = x @ W + b layers into torch Linears (weight = Wᵀ)."""
    layers = linear_layers(net)
    assert len(layers) == len(weights) == len(biases)
    for layer, w, b in zip(layers, weights, biases):
        layer.weight.copy_(t64(w).T)
        layer.bias.copy_(t64(b).reshape(-1))


def mlp_grads(net: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dW [in, out], db) of every layer."""
    return [(numpy(layer.weight.grad).T, numpy(layer.bias.grad)) for layer in linear_layers(net)]


# ------------------------------------------------------------------------------------------------ the Pendulum study
def pendulum_model(fx: dict[str, np.ndarray]) -> EnsembleDynamics:
    """The study's model (one member, 1 x 8 tanh, free log σ²) holding θ_i, in float64."""
    model = EnsembleDynamics(2, 1, study_dynamics()).double()
    with torch.no_grad():
        model.net.hidden[0].weight.copy_(t64(fx["pendulum_model_W1"]).unsqueeze(0))
        model.net.hidden[0].bias.copy_(t64(fx["pendulum_model_b1"]).view(1, 1, -1))
        model.net.output.weight.copy_(t64(fx["pendulum_model_W2"]).unsqueeze(0))
        model.net.output.bias.copy_(t64(fx["pendulum_model_b2"]).view(1, 1, -1))
        model.logvar.copy_(t64(fx["pendulum_model_logvar"]).view(1, 1, -1))
    return model


CANONICAL = ("net.hidden.0.weight", "net.hidden.0.bias", "net.output.weight", "net.output.bias", "logvar")


def canonical_index(model: nn.Module) -> torch.Tensor:
    """Where each entry of the fixture's θ (W1 [3, 8] row-major, b1, W2 [8, 2] row-major, b2, log σ²) sits in
    `parameter_vector`'s order (torch lists the model's own log σ² first)."""
    spans, start = {}, 0
    for name, parameter in model.named_parameters():
        spans[name] = torch.arange(start, start + parameter.numel())
        start += parameter.numel()
    return torch.cat([spans[name] for name in CANONICAL])


def to_canonical(vector: torch.Tensor | np.ndarray, model: nn.Module) -> np.ndarray:
    """A θ-indexed array (θ on the last axis) from this project's order to the fixture's."""
    return numpy(vector)[..., canonical_index(model).numpy()]


def from_canonical(vector: np.ndarray, model: nn.Module) -> torch.Tensor:
    """A θ-indexed fixture array (θ on the last axis) in this project's order."""
    mine = torch.empty(vector.shape, dtype=torch.float64)
    mine[..., canonical_index(model)] = t64(vector)
    return mine


def canonical_theta(fx: dict[str, np.ndarray]) -> np.ndarray:
    names = ("W1", "b1", "W2", "b2", "logvar")
    return np.concatenate([fx[f"pendulum_model_{name}"].reshape(-1) for name in names])


def pendulum_data(fx: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    obs, act = t64(fx["pendulum_data_obs"]), t64(fx["pendulum_data_act"])
    return obs, act, obs + t64(fx["pendulum_data_delta"])


def gradient(model: nn.Module) -> np.ndarray:
    return numpy(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))


def study_config(fx: dict[str, np.ndarray]) -> PendulumStudyConfig:
    return PendulumStudyConfig(
        gamma=float(fx["cfg_gamma_pendulum"]),
        lstd_lambda=float(fx["cfg_lstd_lambda"]),
        lstd_penalty=float(fx["cfg_lstd_penalty"]),
        weight_exponent=float(fx["cfg_weight_exponent_pendulum"]),
    )


def test_the_settings_are_the_defaults(fx: dict[str, np.ndarray]) -> None:
    """The fixture's settings are this project's defaults (the proximal coefficient, 0 in every run of the original,
    is only an input of the proximal check)."""
    study, d4rl = PendulumStudyConfig(), WMOPOConfig()
    assert (study.gamma, study.lstd_lambda, study.lstd_penalty, study.weight_exponent) == (
        fx["cfg_gamma_pendulum"], fx["cfg_lstd_lambda"], fx["cfg_lstd_penalty"], fx["cfg_weight_exponent_pendulum"],
    )  # fmt: skip
    assert (d4rl.b_scale, d4rl.reward_bound, d4rl.weight_exponent) == (
        fx["cfg_b_scale"], fx["cfg_reward_bound"], fx["cfg_weight_exponent_d4rl"],
    )  # fmt: skip


def test_theta_order_maps_onto_the_fixtures(fx: dict[str, np.ndarray]) -> None:
    """`parameter_vector` permuted by `canonical_index` is the fixture's θ, and back."""
    model = pendulum_model(fx)
    np.testing.assert_array_equal(to_canonical(parameter_vector(model), model), canonical_theta(fx))
    np.testing.assert_array_equal(numpy(from_canonical(canonical_theta(fx), model)), numpy(parameter_vector(model)))


def test_pendulum_step_and_reward(fx: dict[str, np.ndarray]) -> None:
    """custom_pendulum_env.py:17-36: one step (torque clipped, walls at ±4π) and the reward of the state it leaves."""
    states, torques = t64(fx["pendulum_step_states"]), t64(fx["pendulum_step_torques"])
    check(pendulum.step(states, torques), fx, "expected_pendulum_step_next_states")
    check(pendulum.reward(states), fx, "expected_pendulum_step_rewards")


def test_pendulum_ratio_outputs_loss_gradient_and_weights(fx: dict[str, np.ndarray]) -> None:
    """model.py:36-50, ratio_estimation.py:18-20, 116, 143-146: r = softplus(2 x 16 tanh) on the data and the
    simulated rows, the logistic loss on all rows as one batch each, its gradient, and relu(r) / mean on the data."""
    ratio = DensityRatio(3, [16, 16]).double()
    load_mlp(
        ratio.net,
        [fx[f"pendulum_ratio_W{k}"] for k in (1, 2, 3)],
        [fx[f"pendulum_ratio_b{k}"] for k in (1, 2, 3)],
    )
    obs, act, _ = pendulum_data(fx)
    data_x, sim_x = torch.cat([obs, act], dim=-1), t64(fx["pendulum_sim_x"])
    on_data, on_sim = ratio(data_x), ratio(sim_x)
    check(on_data, fx, "expected_pendulum_ratio_data")
    check(on_sim, fx, "expected_pendulum_ratio_sim")
    loss = classification_loss(on_data, on_sim)
    check(loss, fx, "expected_pendulum_ratio_loss")
    loss.backward()
    for k, (grad_w, grad_b) in enumerate(mlp_grads(ratio.net), 1):
        check(grad_w, fx, f"expected_pendulum_ratio_grad_W{k}")
        check(grad_b, fx, f"expected_pendulum_ratio_grad_b{k}")
    check(ratio.weights(data_x), fx, "expected_pendulum_ratio_weights")


def weighted_nll(model: EnsembleDynamics, fx: dict[str, np.ndarray]) -> torch.Tensor:
    """The refit's loss as `EnsembleDynamics.fit` forms it (the coupled L2 lives in Adam), on all rows at once."""
    obs, act, next_obs = pendulum_data(fx)
    x = model.input_scaler(torch.cat([obs, act], dim=-1))
    return model.training_loss(x, next_obs - obs, t64(fx["pendulum_data_weights"]), include_decay=False)


def test_pendulum_weighted_nll_and_its_gradient(fx: dict[str, np.ndarray]) -> None:
    """regression.py:109: (1/N) Σ_j w_j · ½ Σ_d [(μ_d − y_d)² e^{−log σ²_d} + log σ²_d] at θ_i and its gradient."""
    model = pendulum_model(fx)
    loss = weighted_nll(model, fx)
    check(loss, fx, "expected_pendulum_nll_loss")
    loss.backward()
    check(to_canonical(gradient(model), model), fx, "expected_pendulum_nll_grad")


def test_pendulum_pointwise_nll_and_score(fx: dict[str, np.ndarray]) -> None:
    """grad_lsd.py:111 and regression.py:174-183: ℓ_j with its log 2π, and the score −mean(w · ℓ)."""
    model = pendulum_model(fx)
    obs, act, next_obs = pendulum_data(fx)
    with torch.no_grad():
        check(pointwise_nll(model, obs, act, next_obs), fx, "expected_pendulum_pointwise_nll")
    check(study_score(model, obs, act, next_obs, t64(fx["pendulum_data_weights"])), fx, "expected_pendulum_score")


def test_correction_vector(fx: dict[str, np.ndarray]) -> None:
    """grad_lsd.py:99-119: g = Σ_j w_j^α ℓ_j φ(s_j)ᵀΘ / Σ_j w_j^α with the fixture's Θ, as the refit forms it."""
    model = pendulum_model(fx)
    obs, act, next_obs = pendulum_data(fx)
    with torch.no_grad():
        nll = pointwise_nll(model, obs, act, next_obs)
    tempered = t64(fx["pendulum_data_weights"]).pow(float(fx["cfg_weight_exponent_pendulum"]))
    theta = from_canonical(fx["expected_lstd_theta"], model)  # [5, 52] in this project's order
    g = correction_vector(theta, obs, nll, tempered)
    check(to_canonical(g, model), fx, "expected_pendulum_correction_vector")


def corrected(fx: dict[str, np.ndarray], live: bool, proximal_coef: float = 0.0) -> tuple[torch.Tensor, np.ndarray]:
    """The refit's loss at θ = θ_i + step with the correction ⟨θ − θ_i, g⟩ (and κ‖θ − θ_i‖²), and its gradient."""
    model = pendulum_model(fx)
    anchor = parameter_vector(model).detach().clone()
    with torch.no_grad():
        step = from_canonical(fx["pendulum_theta_step"], model)
        torch.nn.utils.vector_to_parameters(anchor + step, model.parameters())
    term = correction_loss(model, anchor, from_canonical(fx["pendulum_correction_g"], model), live, proximal_coef)
    loss = weighted_nll(model, fx) + term()
    loss.backward()
    return loss, to_canonical(gradient(model), model)


def test_detached_correction_is_the_authors_and_the_live_one_adds_g(fx: dict[str, np.ndarray]) -> None:
    """regression.py:111-119: the authors' term is built from p.data, so `wmopo-alg1-detached` gives their loss and
    their gradient (the NLL's alone); `wmopo-alg1`'s live term gives the same loss and that gradient + g."""
    loss, grad = corrected(fx, live=False)
    check(loss, fx, "expected_pendulum_corrected_loss")
    check(grad, fx, "expected_pendulum_corrected_grad")
    loss, grad = corrected(fx, live=True)
    check(loss, fx, "expected_pendulum_corrected_loss")
    close(grad, fx["expected_pendulum_corrected_grad"] + fx["pendulum_correction_g"], "corrected grad + g (live)")


def test_proximal_term_value_and_its_live_gradient(fx: dict[str, np.ndarray]) -> None:
    """κ‖θ − θ_i‖² (κ = cfg_proximal_coef) adds its value to the authors' corrected loss; here it is always live, so
    the gradient gains 2κ·step (the authors' `param_update_penalty`, 0 in all their runs, is detached)."""
    kappa, step = float(fx["cfg_proximal_coef"]), fx["pendulum_theta_step"]
    loss, grad = corrected(fx, live=False, proximal_coef=kappa)
    close(loss, fx["expected_pendulum_corrected_loss"] + kappa * np.square(step).sum(), "corrected loss + κ‖step‖²")
    close(grad, fx["expected_pendulum_corrected_grad"] + 2 * kappa * step, "corrected grad + 2κ·step")


# ------------------------------------------------------------------------------------------------ LSTD(λ)
def episode_draws(fx: dict[str, np.ndarray]) -> EpisodeDraws:
    return EpisodeDraws(
        starts=t64(fx["lstd_starts"]),
        lengths=t64(fx["lstd_lengths"]),
        noise=t64(fx["lstd_noise"]),
        torques=t64(fx["lstd_torques"]),
    )


def test_model_step_reproduces_the_visited_states(fx: dict[str, np.ndarray]) -> None:
    """grad_lsd.py:38-42: s' = s + μ(s, a) + exp(log σ² / 2) ε along each scripted episode; after its last
    transition the stored states repeat s_length (padding)."""
    transition = model_transition(pendulum_model(fx))
    draws = episode_draws(fx)
    states = torch.empty(*fx["expected_lstd_states"].shape, dtype=torch.float64)
    for episode, length in enumerate(fx["lstd_lengths"].tolist()):
        state = draws.starts[episode : episode + 1]
        states[episode, 0] = state[0]
        for t in range(length):
            assert draws.torques is not None
            state = transition(state, draws.torques[episode, t : t + 1], draws.noise[episode, t : t + 1])
            states[episode, t + 1] = state[0]
        states[episode, length + 1 :] = state[0]
    check(states, fx, "expected_lstd_states")


def stored_transitions(fx: dict[str, np.ndarray], step: int) -> tuple[torch.Tensor, ...]:
    """Step `step` of the episodes still running: the mask over all episodes, s, a and s' from the stored states."""
    alive = t64(fx["lstd_lengths"]) > step
    states = t64(fx["expected_lstd_states"])
    return alive, states[alive, step], t64(fx["lstd_torques"])[alive, step], states[alive, step + 1]


def test_lstd_costs_of_the_first_transitions(fx: dict[str, np.ndarray]) -> None:
    """grad_lsd.py:45-51: c = ∇_θ log p_θ(s_{t+1} | s_t, a_t) of the first 10 transitions in episode order."""
    model = pendulum_model(fx)
    states, torques = t64(fx["expected_lstd_states"]), t64(fx["lstd_torques"])
    rows = []
    for episode, length in enumerate(fx["lstd_lengths"].tolist()):
        rows += [(episode, t) for t in range(length)]
    episodes, steps = (torch.tensor(part) for part in zip(*rows[:10]))
    costs = log_likelihood_grads(model, states[episodes, steps], torques[episodes, steps], states[episodes, steps + 1])
    check(to_canonical(costs, model), fx, "expected_lstd_cost_first")


def check_statistics(lstd: LSTDLambda, fx: dict[str, np.ndarray], model: nn.Module, penalty: float) -> None:
    a, b, c, phi_mean = lstd.statistics()
    assert lstd.count == int(fx["expected_lstd_count"])
    check(a, fx, "expected_lstd_A")
    check(to_canonical(b, model), fx, "expected_lstd_b")
    check(c, fx, "expected_lstd_C")
    check(phi_mean, fx, "expected_lstd_phi_mean")
    check(to_canonical(lstd.solve(penalty), model), fx, "expected_lstd_theta")


def test_lstd_statistics_and_theta_from_the_stored_states(fx: dict[str, np.ndarray]) -> None:
    """grad_lsd.py:55-60, 83-89: A, b, C, φ̄ and n over every transition (the trace reset at each episode start) and
    Θ = (AᵀC⁻¹A + κ φ̄φ̄ᵀ)⁻¹ AᵀC⁻¹ b, fed step by step with the episodes still running."""
    model, cfg = pendulum_model(fx), study_config(fx)
    lstd = LSTDLambda(5, 52, cfg.gamma, cfg.lstd_lambda)
    for step in range(int(fx["lstd_lengths"].max())):
        alive, now, torques, then = stored_transitions(fx, step)
        lstd.add(lstd_features(now), lstd_features(then), log_likelihood_grads(model, now, torques, then), alive)
    check_statistics(lstd, fx, model, cfg.lstd_penalty)


def no_policy(states: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the draws give every torque")


def test_lstd_simulation_stops_each_episode_at_its_end(fx: dict[str, np.ndarray]) -> None:
    """The whole estimator on the scripted draws gives the authors' statistics, also when an episode that has stopped
    would overflow had it gone on (its unused noise set to 1e200): the original stops simulating an episode at its
    end, and so does `lstd_statistics`; continuing it and multiplying by 0 turned A, b and Θ into NaN (inf · 0)."""
    model, cfg = pendulum_model(fx), study_config(fx)
    draws = episode_draws(fx)
    shortest = int(draws.lengths.argmin())
    draws.noise[shortest, int(draws.lengths[shortest]) :] = 1e200
    check_statistics(lstd_statistics(model, no_policy, cfg, draws), fx, model, cfg.lstd_penalty)


# ------------------------------------------------------------------------------------------------ D4RL (Algorithm 3)
# The fixture orders the ensemble's outputs (r, Δs_1..11), this project's model (Δs_1..11, r).
OUTPUT_ORDER = [*range(1, D4RL_OBS + 1), 0]


def d4rl_model(fx: dict[str, np.ndarray]) -> EnsembleDynamics:
    """WMOPO's ensemble at the fixture's size (7 members of 6 x 8 SiLU, 5 elites) holding its weights, in float64."""
    cfg = _wmopo_dynamics()
    cfg.hidden_dims, cfg.weight_decay = [8] * 6, [1e-5] * 7
    model = EnsembleDynamics(D4RL_OBS, D4RL_ACT, cfg).double()
    head = OUTPUT_ORDER + [D4RL_OBS + 1 + k for k in OUTPUT_ORDER]
    with torch.no_grad():
        for k, layer in enumerate(model.net.layers, 1):
            weight, bias = t64(fx[f"d4rl_ens_W{k}"]), t64(fx[f"d4rl_ens_b{k}"])
            if layer is model.net.output:
                weight, bias = weight[..., head], bias[..., head]
            layer.weight.copy_(weight)
            layer.bias.copy_(bias.unsqueeze(1))
        model.max_logvar.copy_(t64(fx["d4rl_ens_max_logvar"])[OUTPUT_ORDER])
        model.min_logvar.copy_(t64(fx["d4rl_ens_min_logvar"])[OUTPUT_ORDER])
        model.input_scaler.mean.copy_(t64(fx["d4rl_ens_input_mean"]))
        model.input_scaler.std.copy_(t64(fx["d4rl_ens_input_std"]))
        model.elites.copy_(t64(fx["d4rl_elites"]))
    return model


def d4rl_net(fx: dict[str, np.ndarray], head: str, net: nn.Module) -> None:
    """The shared 4 x 256 tanh body and the ratio's or the penalty's head."""
    load_mlp(
        net,
        [*(fx[f"d4rl_net_W{k}"] for k in range(1, 5)), fx[f"d4rl_{head}_W5"]],
        [*(fx[f"d4rl_net_b{k}"] for k in range(1, 5)), fx[f"d4rl_{head}_b5"]],
    )


def d4rl_ratio(fx: dict[str, np.ndarray]) -> DensityRatio:
    ratio = DensityRatio(D4RL_OBS + D4RL_ACT).double()
    d4rl_net(fx, "ratio", ratio.net)
    return ratio


def d4rl_penalty(fx: dict[str, np.ndarray]) -> ModelErrorNet:
    net = ModelErrorNet(D4RL_OBS + D4RL_ACT, ModelErrorFitConfig()).double()
    d4rl_net(fx, "penalty", net.net)
    return net


def d4rl_x(fx: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.cat([t64(fx["d4rl_obs"]), t64(fx["d4rl_act"])], dim=-1)


def test_d4rl_pointwise_loss_and_its_shift(fx: dict[str, np.ndarray]) -> None:
    """model_dyna_nn_torch.py:216-222, e_step.py:206-207: ℓ = ½ mean over the elites of Σ_d [(μ_d − y_d)² e^{−log σ²_d}
    + log σ²_d] (soft-clamped log σ², standardised inputs), its minimum over the data and ℓ − min ℓ."""
    obs, act, next_obs, rew = (t64(fx[f"d4rl_{name}"]) for name in ("obs", "act", "next_obs", "rew"))
    losses = pointwise_loss(d4rl_model(fx), obs, act, next_obs, rew)
    check(losses, fx, "expected_d4rl_pointwise_loss")
    check(losses.min(), fx, "expected_d4rl_loss_min")
    check(losses - losses.min(), fx, "expected_d4rl_shifted_loss")


def test_d4rl_ratio_outputs_loss_and_gradient(fx: dict[str, np.ndarray]) -> None:
    """model_ratio.py:11-29, 68-74, 100-105: r = softplus(4 x 256 tanh) on the data and simulated rows, the loss on all
    rows as one batch each, and its gradient (the 256 x 256 layers by their row and column sums, norm and top-left
    8 x 8 block)."""
    ratio = d4rl_ratio(fx)
    on_data, on_sim = ratio(d4rl_x(fx)), ratio(t64(fx["d4rl_sim_x"]))
    check(on_data, fx, "expected_d4rl_ratio_data")
    check(on_sim, fx, "expected_d4rl_ratio_sim")
    loss = classification_loss(on_data, on_sim)
    check(loss, fx, "expected_d4rl_ratio_loss")
    loss.backward()
    for k, (grad_w, grad_b) in enumerate(mlp_grads(ratio.net), 1):
        check(grad_b, fx, f"expected_d4rl_ratio_grad_b{k}")
        if k in (2, 3, 4):
            check(grad_w.sum(1), fx, f"expected_d4rl_ratio_grad_W{k}_rowsum")
            check(grad_w.sum(0), fx, f"expected_d4rl_ratio_grad_W{k}_colsum")
            check(np.linalg.norm(grad_w), fx, f"expected_d4rl_ratio_grad_W{k}_norm")
            check(grad_w[:8, :8], fx, f"expected_d4rl_ratio_grad_W{k}_block8")
        else:
            check(grad_w, fx, f"expected_d4rl_ratio_grad_W{k}")


def test_d4rl_refit_weights_and_b(fx: dict[str, np.ndarray]) -> None:
    """e_step.py:145-146, 175-176: the refit weights r^α / mean r^α, S = Σ_i r(x_i)(ℓ_i − min ℓ) with raw ratios, and
    b = ½ B′ S^{−1/4}."""
    ratio, x = d4rl_ratio(fx), d4rl_x(fx)
    check(weights_power(ratio, x, float(fx["cfg_weight_exponent_d4rl"])), fx, "expected_d4rl_refit_weights")
    with torch.no_grad():
        ratios = ratio(x)
    b, total = penalty_coefficient(ratios, t64(fx["expected_d4rl_shifted_loss"]), float(fx["cfg_b_scale"]))
    check(total, fx, "expected_d4rl_ratio_loss_sum")
    check(b, fx, "expected_d4rl_b")


def test_d4rl_model_error_network_and_its_regression_targets(fx: dict[str, np.ndarray]) -> None:
    """model_penalty.py:41, 49, 103-106: c(x) = clamp(exp(f(x)), 0, 1e16) on the data rows; the fit keeps the rows
    with shifted loss > 1e-12 and regresses log(ℓ − min ℓ) on them."""
    net = d4rl_penalty(fx)
    with torch.no_grad():
        check(net(d4rl_x(fx)), fx, "expected_d4rl_penalty_data")
    keep, target = net.regression_targets(t64(fx["expected_d4rl_shifted_loss"]))
    np.testing.assert_array_equal(keep.numpy(), fx["expected_d4rl_penalty_fit_keep"])
    check(target, fx, "expected_d4rl_penalty_fit_target")


def test_d4rl_reward_bounds_and_penalised_rewards(fx: dict[str, np.ndarray]) -> None:
    """e_step.py:45, 282-294 and replay_memory.py:37-39, 53-54: R = max(|r_min|, |r_max|), R′ = min(|r_min|, |r_max|);
    model rewards clip(r̂ − b·c, ±10R) (NaN → −10R, ±∞ → ±10R) and dataset rewards clip(r − b(ℓ − min ℓ), ±10R′)."""
    factor = float(fx["cfg_reward_bound"])
    model_bound, real_bound = reward_bounds(t64(fx["d4rl_rew"]), factor, "min")
    close(model_bound / factor, fx["expected_d4rl_model_bound_base"], "expected_d4rl_model_bound_base")
    close(real_bound / factor, fx["expected_d4rl_real_bound_base"], "expected_d4rl_real_bound_base")
    b = float(fx["expected_d4rl_b"])
    shifted = t64(fx["expected_d4rl_shifted_loss"])
    check(penalised_real_rewards(t64(fx["d4rl_rew"]), shifted, b, real_bound), fx, "expected_d4rl_real_rewards")
    rew_hat, penalty = t64(fx["d4rl_model_rew_hat"]), t64(fx["expected_d4rl_penalty_data"])
    check(penalised_model_rewards(rew_hat, penalty, b, model_bound), fx, "expected_d4rl_model_rewards")
    # The agent's own path: c from its model-error network, b and 10R from its buffers.
    agent = WMOPO(D4RL_OBS, D4RL_ACT, WMOPOConfig()).double()
    agent.model_error = d4rl_penalty(fx)
    agent.b.fill_(b)
    agent.model_reward_bound.fill_(model_bound)
    info = {"obs": t64(fx["d4rl_obs"]), "act": t64(fx["d4rl_act"])}
    check(agent.model_reward(rew_hat, info), fx, "expected_d4rl_model_rewards")
