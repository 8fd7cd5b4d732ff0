"""MAGO against its authors' outputs (tests/fixtures/reference/README.md#magomago_referencenpz).

tests/fixtures/reference/mago/mago_reference.npz holds fixed inputs, every random draw as an explicit array, and what
HYeCao/MAGO (commit e057639) computes from them in float64: the ensemble's statistics fit, forward pass, β-NLL and its
gradient, nature's move (candidates, both branches, the evaluation ensemble std), the termination rule and the soft
bands, V(s) and α(s), the log densities, and one full update (act, nature, game advance, critic step, policy step,
Polyak) in both of nature's branches. Names: `cfg_*` settings, `in_*` inputs, `draw_*` draws, `out_*` outputs.

The networks are built in float64 from the stored matrices (W [in, out]; torch's Linear takes W.T, the ensemble
layers take it as stored); every draw goes in through the draws arguments of algos/mago.py (`NatureDraws`,
`ActionNoise`, `PolicyDraws`, `UpdateDraws`), so the tests depend on the equations, not on the order of RNG calls.
Tolerance (the fixture page's §2): max |mine − reference| <= 1e-6 · max(1, max |reference|) per array; indices, counts
and 0/1 flags exactly. The ensemble casts its network output to float32 (models/dynamics.py), which the page puts at
about 1e-7 absolute, well inside it. The β-NLL here is computed in the target-std space and differs from the
reference's raw-space value by the constant E · mean_j log target_std_j (the page's §4.3), which the test adds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from algos.mago import (
    ALPHA_FLOOR,
    MAGO,
    OOD_SHARPNESS,
    ActionNoise,
    MAGOConfig,
    NatureDraws,
    PolicyDraws,
    UpdateDraws,
    continue_probability,
    done_probability,
    normalize_reward,
    sample_actions,
    soft_bands,
    tanh_normal_around,
)
from buffers.replay import Batch
from envs.termination import hopper_termination
from models.actor_critic import CriticEnsemble, TanhGaussianActor
from models.dynamics import EnsembleDynamics

RELATIVE = 1e-6


@pytest.fixture(scope="module")
def fx(reference_arrays: Callable[[str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every array of the fixture, read once for the module."""
    return reference_arrays("mago")


# ------------------------------------------------------------------------------------------------ helpers
def numpy(value: torch.Tensor | np.ndarray | float) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def close(actual: torch.Tensor | np.ndarray | float, fx: dict[str, np.ndarray], name: str, scale: float = 1.0) -> None:
    """The page's tolerance for the float output `name` (times `scale`, for gradients after the clip)."""
    expected = fx[name] * scale
    actual = numpy(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, reference {expected.shape}"
    bound = RELATIVE * max(1.0, float(np.abs(expected).max()))
    deviation = float(np.abs(actual - expected).max())
    assert deviation <= bound, f"{name}: max |mine − reference| = {deviation:.3g} > {bound:.3g}"


def exact(actual: torch.Tensor | np.ndarray, fx: dict[str, np.ndarray], name: str) -> None:
    """Indices, counts and flags match exactly."""
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_array_equal(actual.astype(np.int64), fx[name].astype(np.int64), err_msg=name)


def t64(array: np.ndarray) -> torch.Tensor:
    """A tensor of a fixture array: float64, or int64 for indices."""
    return torch.from_numpy(np.array(array))


def size(fx: dict[str, np.ndarray], name: str) -> int:
    return int(fx[f"cfg_{name}"])


def mago_config(fx: dict[str, np.ndarray]) -> MAGOConfig:
    """MAGO's configuration at the fixture's sizes and rates: 3 hidden layers of 16, E = 5 members of 2 x 16, no
    factor in training."""
    cfg = MAGOConfig(
        hidden_dims=[16, 16, 16],
        batch_size=size(fx, "batch_size"),
        adv_batch_size=size(fx, "adv_batch_size"),
        gamma=float(fx["cfg_gamma"]),
        tau_value=float(fx["cfg_tau_value"]),
        tau_policy=float(fx["cfg_tau_policy"]),
        actor_lr=float(fx["cfg_actor_lr"]),
        critic_lr=float(fx["cfg_critic_lr"]),
        log_std_min=float(fx["cfg_log_std_min"]),
        log_std_max=float(fx["cfg_log_std_max"]),
        auto_alpha=bool(fx["cfg_auto_alpha"]),
        target_kld=float(fx["cfg_target_kld"]),
        num_action_samples=size(fx, "action_samples"),
        proposal_std=float(fx["cfg_proposal_std"]),
        policy_beta=float(fx["cfg_policy_beta"]),
        explore_ratio=float(fx["cfg_explore_ratio"]),
        num_models=size(fx, "num_draws"),
        order_statistic=size(fx, "order_k"),
        num_state_samples=size(fx, "state_samples"),
        adv_explore_ratio=float(fx["cfg_adv_explore_ratio"]),
        adv_horizon=size(fx, "adv_horizon"),
        ood_inner=float(fx["cfg_ood_inner"]),
        ood_outer=float(fx["cfg_ood_outer"]),
        factor=float(fx["cfg_factor"]),
        factor_in_training=bool(fx["cfg_factor_in_training"]),
    )
    dynamics = cfg.dynamics
    dynamics.num_ensemble = dynamics.num_elites = size(fx, "num_members")
    dynamics.hidden_dims, dynamics.weight_decay = [16, 16], [0.0, 0.0, 0.0]
    dynamics.nll_beta, dynamics.logvar_bound_coef = float(fx["cfg_nll_beta"]), float(fx["cfg_logstd_bound_coef"])
    dynamics.grad_clip = float(fx["cfg_grad_clip"])
    return cfg


@torch.no_grad()
def load_ensemble(model: EnsembleDynamics, fx: dict[str, np.ndarray]) -> None:
    """The fixture's ensemble: layers [E, in, out] as stored, one fused head (mean first), the log-σ bounds, and the
    given statistics."""
    hidden = model.net.hidden
    for k in range(2):
        hidden[k].weight.copy_(t64(fx[f"in_ens_W{k}"]))
        hidden[k].bias.copy_(t64(fx[f"in_ens_b{k}"]).unsqueeze(1))
    model.net.output.weight.copy_(torch.cat([t64(fx["in_ens_Wmean"]), t64(fx["in_ens_Wlogstd"])], -1))
    model.net.output.bias.copy_(torch.cat([t64(fx["in_ens_bmean"]), t64(fx["in_ens_blogstd"])], -1).unsqueeze(1))
    model.max_logvar.copy_(t64(fx["in_ens_max_logstd"]))  # variance_bounds=logstd: the bounds are on log σ
    model.min_logvar.copy_(t64(fx["in_ens_min_logstd"]))
    model.input_scaler.mean.copy_(t64(fx["in_ens_input_mean"]))
    model.input_scaler.std.copy_(t64(fx["in_ens_input_std"]))
    assert model.target_scaler is not None and not model.target_scaler.mean.any()
    model.target_scaler.std.copy_(t64(fx["in_ens_target_std"]))
    model.reward_shift.fill_(float(fx["in_ens_reward_shift"]))
    model.reward_scale.fill_(float(fx["in_ens_reward_scale"]))


def make_dynamics(fx: dict[str, np.ndarray]) -> EnsembleDynamics:
    model = EnsembleDynamics(size(fx, "obs_dim"), size(fx, "act_dim"), mago_config(fx).dynamics, hopper_termination)
    model = model.double()
    load_ensemble(model, fx)
    return model


def linear_layers(net: nn.Module) -> list[nn.Linear]:
    return [module for module in net.modules() if isinstance(module, nn.Linear)]


@torch.no_grad()
def load_policy(actor: TanhGaussianActor, fx: dict[str, np.ndarray], prefix: str) -> None:
    """A policy's trunk (W.T into torch's [out, in]) and its fused head [mean; log σ]."""
    layers = linear_layers(actor.net)
    for k, layer in enumerate(layers[:3]):
        layer.weight.copy_(t64(fx[f"{prefix}_W{k}"]).T)
        layer.bias.copy_(t64(fx[f"{prefix}_b{k}"]))
    layers[3].weight.copy_(torch.cat([t64(fx[f"{prefix}_Wmean"]), t64(fx[f"{prefix}_Wlogstd"])], 1).T)
    layers[3].bias.copy_(torch.cat([t64(fx[f"{prefix}_bmean"]), t64(fx[f"{prefix}_blogstd"])]))


@torch.no_grad()
def load_critics(critics: CriticEnsemble, fx: dict[str, np.ndarray], prefix: str) -> None:
    """Two critics, layers [2, in, out] as stored."""
    for k, layer in enumerate(critics.net.layers):
        layer.weight.copy_(t64(fx[f"{prefix}_W{k}"]))
        layer.bias.copy_(t64(fx[f"{prefix}_b{k}"]).unsqueeze(1))


def policy_parameters(actor: TanhGaussianActor) -> dict[str, torch.Tensor]:
    """A policy's parameters in the fixture's layout (head split into mean and log σ, W as [in, out])."""
    layers = linear_layers(actor.net)
    act_dim = actor.act_dim
    blocks = {}
    for k, layer in enumerate(layers[:3]):
        blocks[f"W{k}"], blocks[f"b{k}"] = layer.weight.T, layer.bias
    head_weight, head_bias = layers[3].weight.T, layers[3].bias
    blocks["Wmean"], blocks["Wlogstd"] = head_weight[:, :act_dim], head_weight[:, act_dim:]
    blocks["bmean"], blocks["blogstd"] = head_bias[:act_dim], head_bias[act_dim:]
    return blocks


def policy_gradients(actor: TanhGaussianActor) -> dict[str, torch.Tensor]:
    layers = linear_layers(actor.net)
    act_dim = actor.act_dim
    blocks = {}
    for k, layer in enumerate(layers[:3]):
        assert layer.weight.grad is not None and layer.bias.grad is not None
        blocks[f"W{k}"], blocks[f"b{k}"] = layer.weight.grad.T, layer.bias.grad
    head_weight, head_bias = layers[3].weight.grad, layers[3].bias.grad
    assert head_weight is not None and head_bias is not None
    blocks["Wmean"], blocks["Wlogstd"] = head_weight.T[:, :act_dim], head_weight.T[:, act_dim:]
    blocks["bmean"], blocks["blogstd"] = head_bias[:act_dim], head_bias[act_dim:]
    return blocks


def critic_blocks(critics: CriticEnsemble, gradient: bool = False) -> dict[str, torch.Tensor]:
    blocks = {}
    for k, layer in enumerate(critics.net.layers):
        weight, bias = (layer.weight.grad, layer.bias.grad) if gradient else (layer.weight, layer.bias)
        assert weight is not None and bias is not None
        blocks[f"W{k}"], blocks[f"b{k}"] = weight, bias.squeeze(1)
    return blocks


def make_agent(fx: dict[str, np.ndarray], critics: str = "in_q") -> MAGO:
    """A float64 MAGO holding the fixture's ensemble, π, π_ref, critics (`critics`: the online critics' prefix) and
    target critics, with fresh optimisers (the parameters are copied into, not replaced)."""
    agent = MAGO(size(fx, "obs_dim"), size(fx, "act_dim"), mago_config(fx), dynamics=make_dynamics(fx)).double()
    load_policy(agent.policy, fx, "in_pi")
    load_policy(agent.reference_policy, fx, "in_piref")
    load_critics(agent.critics, fx, critics)
    load_critics(agent.target_critics, fx, "in_qtarg")
    agent.next_obs_low, agent.next_obs_high = t64(fx["in_next_obs_low"]), t64(fx["in_next_obs_high"])
    assert not agent.actor_optim.state and not agent.critic_optim.state
    return agent


def noise(fx: dict[str, np.ndarray], prefix: str) -> ActionNoise:
    """π's and π_ref's action noise `<prefix>_pi` / `<prefix>_ref`, candidates flattened in (k, u, b) order."""
    policy, reference = t64(fx[f"{prefix}_pi"]), t64(fx[f"{prefix}_ref"])
    return ActionNoise(
        policy.reshape(len(policy), -1, policy.shape[-1]), reference.reshape(len(reference), -1, policy.shape[-1])
    )


def nature_draws(fx: dict[str, np.ndarray], prefix: str, explore_choice: str | None = None) -> NatureDraws:
    """Nature's draws of the nature section (`draw_nat`) or of the update (`draw_upd`)."""
    state_noise = "draw_nat_state_noise" if prefix == "draw_nat" else "draw_upd_nat_state_noise"
    action_noise = "draw_nat_vnoise" if prefix == "draw_nat" else "draw_upd_nat_vnoise"
    return NatureDraws(
        members=t64(fx[f"{prefix}_members_drawn"]),
        state_noise=t64(fx[state_noise]),
        action_noise=noise(fx, action_noise),
        explore_choice=None if explore_choice is None else t64(fx[explore_choice]),
    )


def update_draws(fx: dict[str, np.ndarray], explore: bool) -> UpdateDraws:
    """Every draw of the update; `explore`: nature's coin and members of the explore variant (draw_updx_*)."""
    return UpdateDraws(
        act_noise=noise(fx, "draw_upd_act_noise"),
        act_choice=t64(fx["draw_upd_act_choice"]),
        coin=float(fx["draw_updx_nat_coin" if explore else "draw_upd_nat_coin"]),
        nature=nature_draws(fx, "draw_upd", "draw_updx_explore_choice" if explore else None),
        target_noise=noise(fx, "draw_upd_tv_noise"),
        policy=PolicyDraws(
            near_data=t64(fx["draw_upd_pol_noise_near"]),
            policy=t64(fx["draw_upd_pol_noise_pi_game"]),
            reference=t64(fx["draw_upd_pol_noise_ref"]),
        ),
        done_uniform=t64(fx["draw_upd_done_uniform"]),
        restart_states=t64(fx["in_upd_restart_states"]),
    )


def batch(fx: dict[str, np.ndarray]) -> Batch:
    names = ("in_batch_obs", "in_batch_act", "in_batch_rew", "in_batch_next_obs", "in_batch_done")
    return Batch(*(t64(fx[name]) for name in names))


# ------------------------------------------------------------------------------------------------ configuration
def test_the_fixture_settings_are_ours(fx: dict[str, np.ndarray]) -> None:
    """The constants the code fixes agree with the fixture's settings: α floor, band sharpness, value clip, reward
    clip, the action clip before atanh, and MAGO's dynamics (β-NLL β, bound coefficient, clip, unbiased std)."""
    agent = make_agent(fx)
    assert float(fx["cfg_alpha_floor"]) == ALPHA_FLOOR and float(fx["cfg_ood_sharpness"]) == OOD_SHARPNESS
    assert agent.value_max == float(fx["cfg_value_max"]) and float(fx["cfg_value_min"]) == 0.0
    assert (float(fx["cfg_reward_clip_low"]), float(fx["cfg_reward_clip_high"])) == (0.0, 1.0)
    assert float(fx["cfg_action_clip_eps"]) == 1e-6
    assert float(fx["cfg_real_ratio"]) == 0.5  # the ½ · dataset + ½ · game of both losses
    defaults = MAGOConfig()
    assert defaults.dynamics.nll_beta == float(fx["cfg_nll_beta"]) and defaults.dynamics.grad_clip == 10.0
    assert defaults.dynamics.logvar_bound_coef == float(fx["cfg_logstd_bound_coef"])
    assert defaults.dynamics.unbiased_std and not defaults.factor_in_training
    assert agent.model.num_members == size(fx, "num_members")
    assert size(fx, "pool_size") > int(fx["draw_upd_restart_index"].max())


# Outputs whose names the tests build (per branch or per parameter block): prefixes, or whole names.
BUILT_NAMES = (
    "out_nat_exploit_", "out_nat_explore_",  # test_nature_plays
    "out_upd_nat_", "out_updx_nat_",  # test_update_act_and_nature
    "out_nll_grad_",  # test_beta_nll_loss_and_gradient
    "out_upd_grad_pi_",  # test_update_policy_step_targets, test_full_update
    "out_upd_grad_q_", "out_upd_after_",  # test_full_update
    *(f"out_{variant}_{name}" for variant in ("upd", "updx")
      for name in ("critic_loss", "policy_loss", "game_obs_after", "game_steps_after", "done")),
)  # fmt: skip


def test_every_output_is_checked(fx: dict[str, np.ndarray]) -> None:
    """Each `out_*` array is named literally in this file or among BUILT_NAMES."""
    source = Path(__file__).read_text(encoding="utf-8")
    literal = {name for name in re.findall(r"out_[a-z0-9_]+", source) if not name.endswith("_")}
    outputs = [name for name in fx if name.startswith("out_")]
    missing = [name for name in outputs if name not in literal and not name.startswith(BUILT_NAMES)]
    assert not missing, missing


# ------------------------------------------------------------------------------------------------ the ensemble
def test_statistics_fit(fx: dict[str, np.ndarray]) -> None:
    """module/ensemble_trainer.py:108-130 through EnsembleDynamics.fit (one epoch on the 32 rows; the statistics are
    set before it): input mean and unbiased std, the targets' unbiased std with this fit's reward normalisation, the
    reward shift and scale; the soft bands from the next states' range."""
    cfg = mago_config(fx).dynamics
    cfg.max_epochs, cfg.batch_size = 1, 32
    model = EnsembleDynamics(size(fx, "obs_dim"), size(fx, "act_dim"), cfg).double()
    obs, act, next_obs, rew = (t64(fx[f"in_fit_{name}"]) for name in ("obs", "act", "next_obs", "rew"))
    model.fit(obs, act, next_obs, rew, progress=False)
    assert model.target_scaler is not None
    close(model.input_scaler.mean, fx, "out_fit_input_mean")
    close(model.input_scaler.std, fx, "out_fit_input_std")
    close(model.target_scaler.std, fx, "out_fit_target_std")
    close(model.reward_shift, fx, "out_fit_reward_shift")
    close(model.reward_scale, fx, "out_fit_reward_scale")
    bands = soft_bands(next_obs.amin(0), next_obs.amax(0), float(fx["cfg_ood_inner"]), float(fx["cfg_ood_outer"]))
    close(bands.inner_low, fx, "out_fit_band_inner_low")
    close(bands.inner_high, fx, "out_fit_band_inner_high")
    close(bands.outer_low, fx, "out_fit_band_outer_low")
    close(bands.outer_high, fx, "out_fit_band_outer_high")


def test_ensemble_forward(fx: dict[str, np.ndarray]) -> None:
    """model/dynamics.py:66-81: every member's μ̃ and soft-clamped log σ̃ in target-std units, the predictive mean
    [s + μ̃·std (next state), μ̃·std (r_norm)] and std, and the mean reward in raw units (ours are the model's raw
    outputs: the reward column mapped back by MAGO's `normalize_reward`)."""
    model = make_dynamics(fx)
    obs, act = t64(fx["in_ens_fwd_obs"]), t64(fx["in_ens_fwd_act"])
    obs_dim = size(fx, "obs_dim")
    with torch.no_grad():
        scaled_mean, scaled_logvar = model._forward_normalized(model.input_scaler(torch.cat([obs, act], -1)))
        mean, logvar = model(obs, act)
    assert scaled_logvar is not None and logvar is not None
    close(scaled_mean, fx, "out_ens_fwd_mean_scaled")
    close(scaled_logvar / 2, fx, "out_ens_fwd_logstd_scaled")
    predictive = torch.cat([obs + mean[..., :obs_dim], normalize_reward(model, mean[..., obs_dim:])], -1)
    close(predictive, fx, "out_ens_fwd_mean")
    std = torch.exp(0.5 * logvar)
    close(torch.cat([std[..., :obs_dim], std[..., obs_dim:] / model.reward_scale], -1), fx, "out_ens_fwd_std")
    close(mean[..., obs_dim], fx, "out_ens_fwd_reward_raw")


def test_beta_nll_loss_and_gradient(fx: dict[str, np.ndarray]) -> None:
    """module/ensemble_trainer.py:158-173: member e on its own rows, the β-NLL (β = ½, σ-weights normalised over the
    rows, no gradient) plus the bound penalty, its gradient with respect to every weight and both bounds, the global
    norm and torch's clip to 10 that `fit` applies. Our loss is in the target-std space: + E · mean_j log std_j."""
    model = make_dynamics(fx)
    members, rows = fx["in_nll_obs"].shape[:2]
    obs, act, next_obs = (t64(fx[f"in_nll_{name}"]).reshape(members * rows, -1) for name in ("obs", "act", "next_obs"))
    rew = t64(fx["in_nll_rew"]).reshape(-1)
    close(normalize_reward(model, rew).view(members, rows), fx, "out_nll_rew_norm")
    assert model.target_scaler is not None
    x = model.input_scaler(torch.cat([obs, act], -1)).view(members, rows, -1)
    y = model.target_scaler(model._targets(obs, next_obs, rew)).view(members, rows, -1)
    loss = model.training_loss(x, y, include_decay=False)
    constant = members * float(torch.log(model.target_scaler.std).mean())
    close(loss + constant, fx, "out_nll_loss")
    loss.backward()
    output = model.net.output
    target_dim = model.target_dim
    gradients = {
        "W0": model.net.hidden[0].weight.grad, "b0": model.net.hidden[0].bias.grad,
        "W1": model.net.hidden[1].weight.grad, "b1": model.net.hidden[1].bias.grad,
        "Wmean": output.weight.grad[..., :target_dim], "bmean": output.bias.grad[..., :target_dim],
        "Wlogstd": output.weight.grad[..., target_dim:], "blogstd": output.bias.grad[..., target_dim:],
        "max_logstd": model.max_logvar.grad, "min_logstd": model.min_logvar.grad,
    }  # fmt: skip
    before = {
        name: grad.clone().squeeze(-2) if name.startswith("b") else grad.clone() for name, grad in gradients.items()
    }
    for name, grad in before.items():
        close(grad, fx, f"out_nll_grad_{name}")
    norm = nn.utils.clip_grad_norm_(model.parameters(), float(fx["cfg_grad_clip"]))
    close(norm, fx, "out_nll_grad_norm")
    close(min(1.0, float(fx["cfg_grad_clip"]) / (float(norm) + 1e-6)), fx, "out_nll_clip_coef")
    clipped = model.net.hidden[0].weight.grad
    close(clipped, fx, "out_nll_grad_W0", scale=float(fx["out_nll_clip_coef"]))


# ------------------------------------------------------------------------------------------------ nature
def test_nature_candidates(fx: dict[str, np.ndarray]) -> None:
    """module/adversarial_dynamics.py:71-200 up to the choice: the distinct members and counts, their predictive
    next-state means, stds and normalised rewards, the K samples, rewards clipped to [0, 1], the hopper rule, the
    continue probability, p_done, V_target and V_online (and α) at every candidate, the candidate values, and the
    evaluation ensemble std over all S + 1 columns."""
    agent = make_agent(fx)
    candidates = agent.nature_candidates(
        t64(fx["in_game_obs"]), t64(fx["in_game_act"]), penalize=False, draws=nature_draws(fx, "draw_nat")
    )
    exact(candidates.members, fx, "draw_nat_members")
    exact(candidates.counts, fx, "draw_nat_counts")
    close(candidates.next_mean, fx, "out_nat_next_mean")
    close(candidates.next_std, fx, "out_nat_next_std")
    close(candidates.reward_mean, fx, "out_nat_reward_norm_mean")
    close(candidates.next_obs, fx, "out_nat_cand_next_obs")
    close(candidates.reward.expand_as(candidates.done_prob), fx, "out_nat_cand_reward")
    exact(candidates.terminal, fx, "out_nat_cand_terminal")
    close(candidates.alive, fx, "out_nat_cand_continue")
    close(candidates.done_prob, fx, "out_nat_cand_done_prob")
    values = candidates.values
    assert values.online is not None
    shape = candidates.done_prob.shape
    close(values.target.value.view(shape), fx, "out_nat_cand_v_target")
    close(values.online.value.view(shape), fx, "out_nat_cand_v_online")
    close(torch.as_tensor(values.target.alpha).view(shape), fx, "out_nat_cand_alpha_target")
    close(torch.as_tensor(values.online.alpha).view(shape), fx, "out_nat_cand_alpha_online")
    close(candidates.q_target, fx, "out_nat_q_target")
    close(candidates.q_online, fx, "out_nat_q_online")
    close(candidates.ensemble_std, fx, "out_nat_eval_ensemble_std")


@pytest.mark.parametrize("branch", ["exploit", "explore"])
def test_nature_plays(fx: dict[str, np.ndarray], branch: str) -> None:
    """module/adversarial_dynamics.py:157-168: the critics' target is the k-th value of the target critics' candidate
    values in both branches; nature plays the k-th candidate of the online values (coin 0.5) or, exploring (coin
    0.05), the given choice; the played member's first sample, its clipped reward and p_done."""
    agent = make_agent(fx)
    explore = float(fx[f"draw_nat_coin_{branch}"]) < agent.cfg.adv_explore_ratio
    assert explore == (branch == "explore")
    draws = nature_draws(fx, "draw_nat", "draw_nat_explore_choice" if explore else None)
    step = agent.play_nature(t64(fx["in_game_obs"]), t64(fx["in_game_act"]), explore, penalize=False, draws=draws)
    close(step.target_value, fx, "out_nat_kth_target")
    exact(step.played, fx, f"out_nat_{branch}_played")
    exact(t64(fx["draw_nat_members"])[step.played], fx, f"out_nat_{branch}_played_member")
    close(step.online_value, fx, f"out_nat_{branch}_online_value")
    close(step.next_obs, fx, f"out_nat_{branch}_next_obs")
    close(step.reward, fx, f"out_nat_{branch}_reward")
    close(step.done_prob, fx, f"out_nat_{branch}_done_prob")
    close(step.ensemble_std, fx, "out_nat_eval_ensemble_std")


def test_termination_and_bands(fx: dict[str, np.ndarray]) -> None:
    """utils/static/hopper.py:6-18 (one-sided magnitude bound: the −1e6 row is not done) and the soft bands
    (module/adversarial_dynamics.py:29-33, 196-199) on 131 states swept across both bands of every dimension."""
    next_obs = t64(fx["in_term_next_obs"])
    terminal = hopper_termination(torch.zeros_like(next_obs), torch.zeros(len(next_obs), 3), next_obs)
    exact(terminal, fx, "out_term_terminal")
    low, high = t64(fx["in_next_obs_low"]), t64(fx["in_next_obs_high"])
    alive = continue_probability(next_obs, low, high, float(fx["cfg_ood_inner"]), float(fx["cfg_ood_outer"]))
    close(alive, fx, "out_term_continue")
    close(done_probability(terminal, alive), fx, "out_term_done_prob")


# ------------------------------------------------------------------------------------------------ V(s), densities
def test_state_values(fx: dict[str, np.ndarray]) -> None:
    """module/offline_agent.py:72-124: M/2 actions of π and M/2 of π_ref, ℓ = log π_ref − log π (π_ref's density via
    atanh of the clipped action), Q = min of two critics clipped, α(s) per critic pair, V_target and V_online."""
    agent = make_agent(fx)
    obs = t64(fx["in_val_obs"])
    action_noise = noise(fx, "draw_val_noise")
    values = agent.value_estimates(obs, online=True, noise=action_noise)
    assert values.online is not None
    close(values.actions, fx, "out_val_actions")
    half = size(fx, "action_samples") // 2
    policy_actions, policy_log_prob = sample_actions(agent.policy, obs, half, action_noise.policy)
    close(policy_log_prob, fx, "out_val_logp_pi")
    with torch.no_grad():
        close(agent.reference_policy.log_prob(obs, policy_actions), fx, "out_val_logp_ref_of_pi")
    close(values.log_ratio, fx, "out_val_log_ratio")
    close(values.target.q, fx, "out_val_q_target")
    close(values.online.q, fx, "out_val_q_online")
    close(values.target.alpha, fx, "out_val_alpha_target")
    close(values.online.alpha, fx, "out_val_alpha_online")
    close(values.target.value, fx, "out_val_v_target")
    close(values.online.value, fx, "out_val_v_online")


def test_log_density(fx: dict[str, np.ndarray]) -> None:
    """model/policy.py:140-152: π's log density of given actions (clipped to ±(1 − 1e-6) before atanh), plain and
    β-weighted (β = ½, σ-weights normalised over the 16 rows)."""
    agent = make_agent(fx)
    obs, actions = t64(fx["in_lp_obs"]), t64(fx["in_lp_actions"])
    with torch.no_grad():
        close(agent.policy.log_prob(obs, actions), fx, "out_lp_beta0")
        close(agent.policy.log_prob(obs, actions, beta=float(fx["cfg_policy_beta"])), fx, "out_lp_beta05")


# ------------------------------------------------------------------------------------------------ one update
def test_update_act_and_nature(fx: dict[str, np.ndarray]) -> None:
    """module/offline_agent.py:209-229 and the update's nature move: the M candidates at the game states, ℓ, the
    online critics' unclipped Q, α, the Boltzmann probabilities, the chosen actions; nature on them in both branches
    (k-th: coin 0.5; explore: coin 0.05 with the explicit choice)."""
    agent = make_agent(fx)
    obs = t64(fx["in_upd_game_obs"])
    act_noise = noise(fx, "draw_upd_act_noise")
    candidates = agent.game_actions(obs, act_noise)
    close(candidates.actions, fx, "out_upd_act_candidates")
    close(candidates.log_ratio, fx, "out_upd_act_log_ratio")
    close(candidates.q, fx, "out_upd_act_q")
    close(candidates.alpha, fx, "out_upd_act_alpha")
    close(candidates.probs, fx, "out_upd_act_probs")
    game_act = agent.act(obs, deterministic=False, noise=act_noise, choice=t64(fx["draw_upd_act_choice"]))
    close(game_act, fx, "out_upd_game_act")
    for prefix, explore_choice in (("out_upd", None), ("out_updx", "draw_updx_explore_choice")):
        draws = nature_draws(fx, "draw_upd", explore_choice)
        candidates_of_nature = agent.nature_candidates(obs, game_act, penalize=False, draws=draws)
        exact(candidates_of_nature.members, fx, "draw_upd_members")
        exact(candidates_of_nature.counts, fx, "draw_upd_counts")
        close(candidates_of_nature.q_target, fx, "out_upd_nat_q_target")
        close(candidates_of_nature.q_online, fx, "out_upd_nat_q_online")
        step = agent.play_nature(obs, game_act, explore_choice is not None, penalize=False, draws=draws)
        close(step.target_value, fx, "out_upd_nat_kth_target")
        exact(step.played, fx, f"{prefix}_nat_played")
        exact(t64(fx["draw_upd_members"])[step.played], fx, f"{prefix}_nat_played_member")
        close(step.online_value, fx, f"{prefix}_nat_online_value")
        close(step.next_obs, fx, f"{prefix}_nat_next_obs")
        close(step.reward, fx, f"{prefix}_nat_reward")
        close(step.done_prob, fx, f"{prefix}_nat_done_prob")


def test_update_dataset_targets(fx: dict[str, np.ndarray]) -> None:
    """module/offline_agent.py:139-148: r_norm of the dataset rewards, V_target (target critics only) at the dataset
    next states with its α, the target r_norm + (1 − d) γ V_target(s'), and all 2B targets after the clip (rows 0
    and 1 reach both clip edges)."""
    agent = make_agent(fx)
    data = batch(fx)
    close(normalize_reward(agent.model, data.rew), fx, "out_upd_batch_rew_norm")
    target_noise = noise(fx, "draw_upd_tv_noise")
    values = agent.value_estimates(data.next_obs, online=False, noise=target_noise)
    assert values.online is None
    close(values.target.alpha, fx, "out_upd_tv_alpha")
    close(values.target.value, fx, "out_upd_tv_v_target")
    target = agent.dataset_target(data, target_noise)
    close(target, fx, "out_upd_target_data")
    targets = torch.cat([target, t64(fx["out_upd_nat_kth_target"])]).clamp(0.0, agent.value_max)
    close(targets, fx, "out_upd_target_clipped")


def test_update_policy_step_targets(fx: dict[str, np.ndarray]) -> None:
    """module/offline_agent.py:163-195 with the online critics after their step (out_upd_after_q_*) and π, π_ref
    before theirs: proposals around the dataset actions (log q with the exact Jacobian), π's proposals on the game
    rows, π_ref's samples on all 2B rows, ℓ, clipped Q, α, the weights, the loss and its gradient."""
    agent = make_agent(fx, critics="out_upd_after_q")
    data, game_obs = batch(fx), t64(fx["in_upd_game_obs"])
    half = size(fx, "action_samples") // 2
    draws = PolicyDraws(
        t64(fx["draw_upd_pol_noise_near"]), t64(fx["draw_upd_pol_noise_pi_game"]), t64(fx["draw_upd_pol_noise_ref"])
    )
    near, near_log_prob = tanh_normal_around(data.act, agent.cfg.proposal_std, half, draws.near_data)
    close(near, fx, "out_upd_pol_near")
    close(near_log_prob, fx, "out_upd_pol_near_logp")
    with torch.no_grad():
        from_policy, from_policy_log_prob = sample_actions(agent.policy, game_obs, half, draws.policy)
    close(from_policy, fx, "out_upd_pol_pi_game")
    close(from_policy_log_prob, fx, "out_upd_pol_pi_game_logp")
    targets = agent.policy_targets(data.obs, data.act, game_obs, draws)
    close(targets.actions[half:], fx, "out_upd_pol_ref_actions")
    close(targets.actions, fx, "out_upd_pol_actions")
    close(targets.log_ratio[:half] + targets.proposal_log_prob, fx, "out_upd_pol_logp_ref_of_proposals")
    close(targets.log_ratio, fx, "out_upd_pol_log_ratio")
    close(targets.q, fx, "out_upd_pol_q")
    close(targets.alpha, fx, "out_upd_pol_alpha")
    close(targets.weights, fx, "out_upd_pol_weights")
    loss, _ = agent.policy_loss(data.obs, data.act, game_obs, draws)
    close(loss, fx, "out_upd_policy_loss")
    loss.backward()
    for name, grad in policy_gradients(agent.policy).items():
        close(grad, fx, f"out_upd_grad_pi_{name}")


@pytest.mark.parametrize("explore", [False, True], ids=["kth", "explore"])
def test_full_update(fx: dict[str, np.ndarray], explore: bool) -> None:
    """MAGO.update with every draw given (module/offline_agent.py:128-230, adversarial_dynamics.py:46-69): the two
    losses, the critics' and π's gradients, the parameters after the Adam steps and the Polyak updates, and the game
    rows after the step (done rows restart; no row reaches adv_horizon, so ended = done). The explore variant plays
    other members but has the same losses and parameters (the critic target is the k-th value in both branches)."""
    agent = make_agent(fx)
    agent.game_obs.copy_(t64(fx["in_upd_game_obs"]))
    agent.game_steps.copy_(t64(fx["in_upd_game_steps"]).long())
    metrics = agent.update(batch(fx), draws=update_draws(fx, explore))
    prefix = "out_updx" if explore else "out_upd"
    close(metrics["loss/critic"], fx, f"{prefix}_critic_loss")
    close(metrics["loss/policy"], fx, f"{prefix}_policy_loss")
    close(agent.game_obs, fx, f"{prefix}_game_obs_after")
    close(agent.game_steps, fx, f"{prefix}_game_steps_after")
    exact(agent.game_steps == 0, fx, f"{prefix}_done")
    for name, grad in critic_blocks(agent.critics, gradient=True).items():
        close(grad, fx, f"out_upd_grad_q_{name}")
    for name, grad in policy_gradients(agent.policy).items():
        close(grad, fx, f"out_upd_grad_pi_{name}")
    for name, value in critic_blocks(agent.critics).items():
        close(value, fx, f"out_upd_after_q_{name}")
    for name, value in critic_blocks(agent.target_critics).items():
        close(value, fx, f"out_upd_after_qtarg_{name}")
    for name, value in policy_parameters(agent.policy).items():
        close(value, fx, f"out_upd_after_pi_{name}")
    for name, value in policy_parameters(agent.reference_policy).items():
        close(value, fx, f"out_upd_after_piref_{name}")
