"""The natural-policy-gradient family piece by piece (docs/npg.md): conjugate gradient, returns and GAE by hand, the
size of one NPG step, the Gaussian policy and value baseline, MOReL's disagreement and truncation, model rollouts
with a stub ensemble, the path buffer, mjrl's deterministic ensemble fit, and action repeat."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from algos.game import MIN_PATH_LENGTH, ModelBasedNPG, PALConfig, next_obs_per_member, pairwise_disagreement
from algos.morel import MOReL, MOReLConfig
from algos.npg import NPG, conjugate_gradient, discounted_cumsum, fisher_vector_product, gae
from algos.npg_trainer import NPGTrainer, prediction_error
from buffers.paths import PathBatch, PathBuffer
from buffers.replay import Batch
from config import NPGConfig, _npg_dynamics
from envs.rewards import reward_fn_for
from envs.tasks import get_task, make_env
from models.dynamics import EnsembleDynamics
from models.dynamics_recipes import mjrl
from models.npg import GaussianMLPPolicy, ValueBaseline
from utils.errors import UserError

SMALL_NPG = NPGConfig(policy_hidden_dims=[4], baseline_hidden_dims=[4])


# ------------------------------------------------------------------------------------------------ conjugate gradient
def _spd_system() -> tuple[torch.Tensor, torch.Tensor]:
    """A = MᵀM + I (5x5, symmetric positive definite) and b, from a fixed seed, in float64."""
    gen = torch.Generator().manual_seed(7)
    m = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    return m.T @ m + torch.eye(5, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)


def test_conjugate_gradient_solves_an_spd_system() -> None:
    """With enough iterations CG from x = 0 reaches A⁻¹b."""
    a, b = _spd_system()
    x = conjugate_gradient(lambda v: a @ v, b, iters=50)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-5, rtol=0)
    assert float((a @ x - b).abs().max()) < 1e-5


def test_conjugate_gradient_first_step_is_the_exact_line_search_along_b() -> None:
    """One iteration from x = 0 moves along p = b by bᵀb / bᵀAb (the exact minimiser of ½xᵀAx − bᵀx on that line)."""
    a, b = _spd_system()
    expected = float(b @ b) / float(b @ a @ b) * b
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, iters=1), expected, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------------ returns and GAE
def test_discounted_cumsum_by_hand() -> None:
    """y_t = Σ_{k≥t} 0.5^(k−t) x_k for x = [1, 2, 3, 4]: [3.25, 4.5, 5, 4]."""
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(
        discounted_cumsum(x, 0.5), torch.tensor([[3.25, 4.5, 5.0, 4.0]], dtype=torch.float64), atol=1e-12, rtol=0
    )


GAMMA, LAM = 0.9, 0.8


def test_gae_terminated_and_cut_off_paths_by_hand() -> None:
    """Two copies of a 3-step path padded to T = 4 (rewards 1, 2, 3; values 0.5, 1, 1.5; junk in the padding):
    row 0 terminated (value after the end 0), row 1 cut off (value after the end = its last value 1.5).

    Terminated: δ = [1 + 0.9·1 − 0.5, 2 + 0.9·1.5 − 1, 3 − 1.5] = [1.4, 2.35, 1.5], γλ = 0.72,
    Â = [1.4 + 0.72·3.43, 2.35 + 0.72·1.5, 1.5] = [3.8696, 3.43, 1.5].
    Cut off: δ_2 = 3 + 0.9·1.5 − 1.5 = 2.85, Â = [4.56944, 4.402, 2.85].
    Returns (no bootstrap in either): [1 + 0.9·4.7, 2 + 0.9·3, 3] = [5.23, 4.7, 3]. Padding stays 0.
    """
    f64 = torch.float64
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0]] * 2, dtype=f64)
    values = torch.tensor([[0.5, 1.0, 1.5, 7.0]] * 2, dtype=f64)
    mask = torch.tensor([[True, True, True, False]] * 2)
    terminated = torch.tensor([True, False])
    advantages, returns = gae(rewards, values, mask, terminated, GAMMA, LAM)
    expected_adv = torch.tensor([[3.8696, 3.43, 1.5, 0.0], [4.56944, 4.402, 2.85, 0.0]], dtype=f64)
    expected_ret = torch.tensor([[5.23, 4.7, 3.0, 0.0]] * 2, dtype=f64)
    torch.testing.assert_close(advantages, expected_adv, atol=1e-12, rtol=0)
    torch.testing.assert_close(returns, expected_ret, atol=1e-12, rtol=0)
    assert bool((advantages[:, 3] == 0).all()) and bool((returns[:, 3] == 0).all())


def test_cut_off_and_terminated_differ_by_the_bootstrap_term() -> None:
    """Â_cut − Â_term = (γ b_last)(γλ)^(L−1−t) on the path's steps t < L (L its length), 0 on the padding."""
    f64 = torch.float64
    gen = torch.Generator().manual_seed(3)
    length, horizon = 5, 7
    rewards = torch.randn(1, horizon, generator=gen, dtype=f64).repeat(2, 1)
    values = torch.randn(1, horizon, generator=gen, dtype=f64).repeat(2, 1)
    mask = (torch.arange(horizon) < length).expand(2, horizon)
    advantages, returns = gae(rewards, values, mask, torch.tensor([True, False]), GAMMA, LAM)
    steps = torch.arange(horizon, dtype=f64)
    bootstrap = GAMMA * values[0, length - 1] * (GAMMA * LAM) ** (length - 1 - steps) * mask[0]
    torch.testing.assert_close(advantages[1] - advantages[0], bootstrap, atol=1e-12, rtol=0)
    torch.testing.assert_close(returns[0], returns[1], atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------ one NPG step
def _toy_paths(seed: int) -> PathBatch:
    """64 full paths of 20 steps (obs_dim 3, act_dim 2) with N(0, 1) actions (the initial policy's σ = 1) and
    rewards that depend on the action, so the policy gradient is not zero."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(64, 20, 3, generator=gen)
    act = torch.randn(64, 20, 2, generator=gen)
    rew = act[..., 0] + 0.5 * obs[..., 1] * act[..., 1]
    return PathBatch(obs, act, rew, torch.ones(64, 20, dtype=torch.bool), torch.zeros(64, dtype=torch.bool))


@pytest.mark.parametrize(
    ("hidden_dims", "damping"),
    [([], 1e-6), ([8, 8], 1e-3)],
    ids=["linear-policy-exact-solve", "mlp-policy-config-damping"],
)
def test_one_npg_step_moves_the_policy_by_half_the_normalised_step(hidden_dims: list[int], damping: float) -> None:
    """α = sqrt(δ / gᵀx) with x ≈ F⁻¹g makes ΔθᵀFΔθ = δ (mjrl's normalised step, Rajeswaran et al. 2017), so to
    second order the mean KL is ½ΔθᵀFΔθ = δ/2 (KL ≈ ½ΔθᵀFΔθ): the returned npg/kl_dist is δ/2 within 20 %, the
    tolerance for the third-order terms the quadratic model leaves out (measured well under 5 % here). CG starts
    from x₀ = g (mjrl's), as the config's default.

    The linear-mean policy with 1e-6 damping makes the CG solve exact and its KL quadratic in the mean parameters;
    the MLP uses the configs' damping 1e-3, because with a tiny damping the exact F⁻¹g of the tanh MLP (whose output
    layer starts 100x small) takes huge steps along nearly flat directions, where the KL is far from quadratic."""
    torch.manual_seed(0)
    step_size = 0.01
    cfg = NPGConfig(
        policy_hidden_dims=hidden_dims, baseline_hidden_dims=[8, 8], step_size=step_size, cg_iters=50,
        cg_damping=damping,
    )  # fmt: skip
    npg = NPG(3, 2, cfg)
    before = parameters_to_vector(npg.actor.parameters()).detach().clone()
    metrics = npg.update_from_paths(_toy_paths(seed=1))
    after = parameters_to_vector(npg.actor.parameters()).detach()
    assert not torch.equal(before, after)
    assert metrics["npg/delta"] == step_size
    assert metrics["npg/kl_dist"] == pytest.approx(step_size / 2, rel=0.2)
    assert metrics["npg/num_samples"] == 64 * 20


# ------------------------------------------------------------------------------------------------ policy and baseline
def test_gaussian_policy_log_prob_and_kl_match_torch_distributions() -> None:
    """log π(a|s) is Normal(μ(s), σ).log_prob summed over action dims; kl_from is KL(π_old ‖ π) per state."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, [8], init_log_std=-0.3)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    mean = policy.mean(obs)
    std = policy.log_std.exp().expand_as(mean)
    expected = torch.distributions.Normal(mean, std).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy(obs)[1].squeeze(-1).shape, expected.shape)

    old_mean, old_log_std = mean.detach() + 0.3, torch.tensor([0.2, -0.4]).expand_as(mean)
    old = torch.distributions.Normal(old_mean, old_log_std.exp())
    new = torch.distributions.Normal(mean, std)
    expected_kl = torch.distributions.kl_divergence(old, new).sum(-1)
    torch.testing.assert_close(policy.kl_from(obs, old_mean, old_log_std), expected_kl)


def test_clamp_log_std_and_act_clipping() -> None:
    """clamp_log_std keeps log σ within [min_log_std, max_log_std]; act clips actions to [-1, 1]."""
    policy = GaussianMLPPolicy(3, 2, [4], min_log_std=-2.5, max_log_std=1.0)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-7.0, 4.0]))
    policy.clamp_log_std()
    assert policy.log_std.tolist() == [-2.5, 1.0]
    with torch.no_grad():
        policy.mean_net[-1].bias.copy_(torch.tensor([5.0, -5.0]))
    obs = torch.zeros(4, 3)
    assert policy.act(obs).tolist() == [[1.0, -1.0]] * 4
    sampled = policy.act(obs, deterministic=False)
    assert float(sampled.abs().max()) <= 1.0


def test_value_baseline_features_by_hand() -> None:
    """Observation clipped to ±10 and divided by 10, then (t/1000)^k for k = 1..4."""
    obs = torch.tensor([[-20.0, 5.0, 0.3], [12.0, -10.0, 0.0]])
    features = ValueBaseline(3, [8]).features(obs, torch.tensor([250, 0]))
    expected = torch.tensor(
        [[-1.0, 0.5, 0.03, 0.25, 0.0625, 0.015625, 0.00390625], [1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(features, expected)
    assert ValueBaseline(3, [4])(obs, torch.tensor([250, 0])).shape == (2,)


# ------------------------------------------------------------------------------------------------ MOReL
def test_pairwise_disagreement_by_hand() -> None:
    """max_{i<j} ‖p_i − p_j‖ per row: row 0 has members (0,0), (3,4), (0,1) → 5; row 1 (1,1), (1,1), (1,3) → 2."""
    predictions = torch.tensor(
        [[[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 3.0]]]
    )  # [E=3, B=2, obs=2]
    torch.testing.assert_close(pairwise_disagreement(predictions), torch.tensor([5.0, 2.0]))


TAU, PENALTY = 1.0, -50.0


def _morel(halt_terminates: bool = True, pessimism_coef: float | None = 3.0) -> MOReL:
    cfg = MOReLConfig(
        npg=SMALL_NPG, truncate_reward=PENALTY, halt_terminates=halt_terminates, pessimism_coef=pessimism_coef
    )
    return MOReL(2, 1, cfg)


def _violating_paths() -> tuple[PathBatch, torch.Tensor]:
    """Five paths padded to T = 10 with reward 10·row + step + 1 on valid steps (0 on the padding) and disagreement
    0.5 (< τ = 1) except where noted:
    0: length 10, δ > τ first at step 6 (and again at 8);  1: length 10, δ > τ at step 1;
    2: length 8, δ > τ only at its last valid step 7 and in its padding;  3: length 10, no violation, terminated by
    the termination function;  4: length 6, no violation."""
    horizon = 10
    lengths = torch.tensor([10, 10, 8, 10, 6])
    steps = torch.arange(horizon)
    mask = steps < lengths.unsqueeze(1)
    rew = (10 * torch.arange(5).unsqueeze(1) + steps + 1).float() * mask
    disagreement = torch.full((5, horizon), 0.5)
    disagreement[0, 6] = disagreement[0, 8] = 2.0
    disagreement[1, 1] = 3.0
    disagreement[2, 7] = disagreement[2, 9] = 5.0
    terminated = torch.tensor([False, False, False, True, False])
    paths = PathBatch(torch.randn(5, horizon, 2), torch.randn(5, horizon, 1), rew, mask, terminated)
    return paths, disagreement


def test_morel_truncates_at_the_first_violation_with_the_halt_penalty() -> None:
    """Path 0 is cut to 7 steps (0..6) with the penalty on step 6 only; path 1 to the minimum 4 with the penalty on
    step 3; a violation at the last valid step (path 2) is ignored (mjrl checks every step but the last); paths
    without a violation are unchanged, a terminated one staying terminated; truncated paths end terminated."""
    morel = _morel()
    morel.threshold.fill_(TAU)
    paths, disagreement = _violating_paths()
    shaped = morel.shape_paths(paths, disagreement)
    assert shaped.lengths.tolist() == [7, 4, 8, 10, 6]
    assert shaped.terminated.tolist() == [True, True, False, True, False]
    expected_rew = paths.rew * shaped.mask
    expected_rew[0, 6] += PENALTY
    expected_rew[1, 3] += PENALTY
    torch.testing.assert_close(shaped.rew, expected_rew, atol=0, rtol=0)
    assert shaped.rew[0, 6] == 7.0 + PENALTY and shaped.rew[1, 3] == 14.0 + PENALTY
    for row in (2, 3, 4):
        assert torch.equal(shaped.mask[row], paths.mask[row]) and torch.equal(shaped.rew[row], paths.rew[row])
    assert torch.equal(shaped.obs, paths.obs) and torch.equal(shaped.act, paths.act)


def test_morel_without_halt_termination_leaves_every_path_unterminated() -> None:
    """halt_terminates=False (mjrl's code): same truncation, but no path (not even one the termination function
    ended) comes back terminated."""
    morel = _morel(halt_terminates=False)
    morel.threshold.fill_(TAU)
    paths, disagreement = _violating_paths()
    shaped = morel.shape_paths(paths, disagreement)
    assert shaped.lengths.tolist() == [7, 4, 8, 10, 6]
    assert not bool(shaped.terminated.any())


class StubEnsemble:
    """A fake deterministic ensemble: member e maps s to s + (1, e, 1), for [B, ·] inputs (every member sees every
    row) and [E, B, ·] inputs (member e sees rows [e]); always [E, B, ·] out."""

    num_members, obs_dim = 2, 3

    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, None]:
        offset = torch.stack([torch.tensor([1.0, float(e), 1.0]) for e in range(self.num_members)])
        return offset.unsqueeze(1), None


@pytest.mark.parametrize("coef", [0.0, None])
def test_morel_without_pessimism_never_truncates(coef: float | None) -> None:
    """pessimism_coef 0 or null: τ = ∞ and shape_paths returns the paths as they are."""
    cfg = MOReLConfig(npg=SMALL_NPG, pessimism_coef=coef)
    morel = MOReL(3, 1, cfg)
    metrics = morel.set_threshold(StubEnsemble(), torch.zeros(5, 3), torch.zeros(5, 1))  # type: ignore[arg-type]
    assert metrics["morel/max_dataset_disagreement"] == 1.0 and math.isinf(float(morel.threshold))
    paths, disagreement = _violating_paths()
    assert morel.shape_paths(paths, disagreement * 100) is paths


def test_morel_threshold_is_the_dataset_maximum_over_the_coefficient() -> None:
    """τ = max_D δ / pessimism_coef: the stub members differ by 1 in one coordinate, so τ = 1 / 4."""
    morel = MOReL(3, 1, MOReLConfig(npg=SMALL_NPG, pessimism_coef=4.0))
    morel.set_threshold(StubEnsemble(), torch.randn(7, 3), torch.zeros(7, 1))  # type: ignore[arg-type]
    assert float(morel.threshold) == pytest.approx(0.25, rel=1e-6)


# ------------------------------------------------------------------------------------------------ model rollouts
def _done_at_three(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return next_obs[..., 0] >= 3


def _reward(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Depends on the next state and on the action the model received."""
    return next_obs[..., 0] + 10 * act[..., 0]


@pytest.mark.parametrize("algo_class", [ModelBasedNPG, MOReL])
def test_model_paths_with_a_stub_ensemble(algo_class: type[ModelBasedNPG]) -> None:
    """From start states with s[0] = 0 every path has 3 steps (0, 1, 2; the step leading into s[0] = 3 kept) and is
    terminated; a start with s[0] = 1.5 ends after 2 steps and is padded; the rollout stops once every path has
    ended (T = 3 < horizon). Paths are member-major (row e·N + i is start i in member e: its s[1] grows by e per
    step); rewards are the given reward function's on the clipped action (0 on the padding; the act_repeat factor
    is the trainer's, see the next test); states are clamped to ±state_bound. MOReL also gets the members'
    disagreement per path and step [E·N, T] (the stub's members differ by 1)."""
    torch.manual_seed(0)
    horizon, bound = 6, 4.5
    common = {"npg": SMALL_NPG, "horizon": horizon, "act_repeat": 2, "state_bound": bound}
    cfg = PALConfig(**common) if algo_class is ModelBasedNPG else MOReLConfig(**common)  # type: ignore[arg-type]
    algo = algo_class(3, 1, cfg)  # type: ignore[arg-type]
    with torch.no_grad():
        algo.actor.log_std.fill_(1.0)  # σ = e, so many sampled actions fall outside [-1, 1]
    starts = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.5, -1.0], [0.0, -0.5, 3.0], [1.5, 0.0, 0.0]])
    num, length = len(starts), 3
    paths, disagreement = algo.model_paths(StubEnsemble(), starts, _reward, _done_at_three)  # type: ignore[arg-type]

    assert paths.obs.shape == (2 * num, length, 3) and paths.act.shape == (2 * num, length, 1)
    assert paths.lengths.tolist() == [3, 3, 3, 2] * 2
    assert paths.terminated.all()
    assert paths.mask[:, :2].all() and paths.mask[:, 2].tolist() == [True, True, True, False] * 2
    for member in range(2):
        rows = slice(member * num, (member + 1) * num)
        torch.testing.assert_close(paths.obs[rows, 0], starts)
        for step in range(length):
            torch.testing.assert_close(paths.obs[rows, step, 0], starts[:, 0] + step)
            expected_second = (starts[:, 1] + member * step).clamp(-bound, bound)
            torch.testing.assert_close(paths.obs[rows, step, 1], expected_second)
            expected_third = (starts[:, 2] + step).clamp(-bound, bound)
            torch.testing.assert_close(paths.obs[rows, step, 2], expected_third)
    assert paths.obs[0, 2, 2] == 4.0 and paths.obs[2, 2, 2] == bound  # 3 + 2 = 5 clamped to 4.5
    clipped = paths.act[..., 0].clamp(-1, 1)
    assert float(paths.act.abs().max()) > 1  # some actions were clipped before the model and the reward saw them
    next_first = paths.obs[..., 0] + 1
    expected_rew = (next_first + 10 * clipped) * paths.mask
    torch.testing.assert_close(paths.rew, expected_rew)
    assert float(paths.rew[3, 2]) == 0.0 and float(paths.rew[7, 2]) == 0.0  # padding
    if algo_class is MOReL:
        assert disagreement is not None
        torch.testing.assert_close(disagreement, torch.ones(2 * num, length))
    else:
        assert disagreement is None


def test_trainer_scales_known_rewards_by_act_repeat(tmp_path: Path) -> None:
    """A model step stands for act_repeat environment steps: the trainer hands model_paths the known reward times
    act_repeat (here Hopper-v4's env reward, times 2)."""
    spec = get_task("Hopper-v4")
    cfg = PALConfig(npg=SMALL_NPG, act_repeat=2, reward_fn="env", task=spec.name, algo="pal")
    trainer = NPGTrainer(cfg, ModelBasedNPG(spec.obs_dim, spec.act_dim, cfg), spec, None, None, tmp_path)  # type: ignore[arg-type]
    try:
        gen = torch.Generator().manual_seed(0)
        obs, next_obs = torch.randn(5, spec.obs_dim, generator=gen), torch.randn(5, spec.obs_dim, generator=gen)
        act = torch.rand(5, spec.act_dim, generator=gen) * 2 - 1
        known = reward_fn_for(spec.family, "env")(obs, act, next_obs)
        torch.testing.assert_close(trainer.reward_fn(obs, act, next_obs), 2 * known)
    finally:
        trainer.close()


def test_train_step_drops_paths_shorter_than_five_steps() -> None:
    """Every stub path ends after 3 < 5 steps, so the NPG step is skipped: no npg/* metrics, policy unchanged."""
    cfg = PALConfig(npg=SMALL_NPG, horizon=6)
    algo = ModelBasedNPG(3, 1, cfg)
    before = parameters_to_vector(algo.actor.parameters()).detach().clone()
    metrics = algo.train_step(StubEnsemble(), torch.zeros(2, 3), _reward, _done_at_three)  # type: ignore[arg-type]
    assert MIN_PATH_LENGTH == 5
    assert metrics["rollout/paths_kept"] == 0.0 and not any(key.startswith("npg/") for key in metrics)
    assert torch.equal(parameters_to_vector(algo.actor.parameters()), before)


# ------------------------------------------------------------------------------------------------ path buffer
def _path(first_id: int, length: int) -> Batch:
    """A path whose transitions carry ids first_id, first_id + 1, ... in every field."""
    ids = torch.arange(first_id, first_id + length, dtype=torch.float32)
    return Batch(ids.unsqueeze(1), -ids.unsqueeze(1), ids.clone(), ids.unsqueeze(1) + 0.5, torch.zeros(length))


def _ids(buffer: PathBuffer) -> list[int]:
    return [int(v) for v in buffer.data.obs[:, 0]]


def test_path_buffer_drops_whole_oldest_paths() -> None:
    """Capacity 10: whole oldest paths go once over capacity, never part of one; every first state stays in
    init_states; a lone path longer than the capacity is kept whole; newest(n) is the last n transitions."""
    buffer = PathBuffer(10, 1, 1)
    buffer.add_paths([_path(0, 4), _path(100, 3)])
    assert len(buffer) == 7 and buffer.path_lengths == [4, 3]
    buffer.add_paths([_path(200, 5)])  # 12 > 10: the 4-step path goes
    assert _ids(buffer) == [100, 101, 102, 200, 201, 202, 203, 204] and buffer.path_lengths == [3, 5]
    buffer.add_paths([_path(300, 6)])  # 14 > 10, then 11 > 10: two paths go
    assert _ids(buffer) == list(range(300, 306)) and buffer.path_lengths == [6]
    assert buffer.init_states[:, 0].tolist() == [0.0, 100.0, 200.0, 300.0]
    assert [int(v) for v in buffer.newest(2).act[:, 0]] == [-304, -305]
    buffer.add_paths([])
    assert len(buffer) == 6
    buffer.add_paths([_path(400, 15)])
    assert _ids(buffer) == list(range(400, 415)) and buffer.path_lengths == [15]
    assert torch.equal(buffer.data.next_obs[:, 0], buffer.data.obs[:, 0] + 0.5)


def test_path_buffer_state_dict_round_trip() -> None:
    """A buffer restored from state_dict holds the same data and continues exactly like the original."""
    original = PathBuffer(10, 1, 1)
    original.add_paths([_path(0, 4), _path(100, 3), _path(200, 5)])
    restored = PathBuffer(10, 1, 1)
    restored.load_state_dict(original.state_dict())
    for buffer in (original, restored):
        buffer.add_paths([_path(300, 2)])
    for mine, theirs in zip(original.data, restored.data):
        assert torch.equal(mine, theirs)
    assert restored.path_lengths == original.path_lengths == [3, 5, 2]
    assert torch.equal(restored.init_states, original.init_states)


# ------------------------------------------------------------------------------------------------ mjrl's ensemble
def _npg_ensemble(seed: int, obs_dim: int = 3, act_dim: int = 2) -> tuple[EnsembleDynamics, torch.optim.Optimizer]:
    """mjrl's deterministic configuration (config._npg_dynamics) with 16x16 members and minibatches of 20."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(_npg_dynamics(), hidden_dims=[16, 16], weight_decay=[0.0, 0.0, 0.0], batch_size=20)
    dynamics = EnsembleDynamics(obs_dim, act_dim, cfg)
    return dynamics, dynamics.optimizer()


def _fit(
    dynamics: EnsembleDynamics,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    max_steps: int | None = None,
) -> dict[str, float]:
    """The NPG trainer's fit: mjrl's recipe, warm with `optimizer`."""
    recipe = mjrl(dynamics.cfg, epochs, max_steps)
    return dynamics.fit(*data, None, progress=False, recipe=recipe, optimizer=optimizer)


def _member_losses(result: dict[str, float], members: int = 4) -> torch.Tensor:
    return torch.tensor([result[f"dynamics/loss_{i}"] for i in range(members)])


def _transitions(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth toy dynamics whose state dimension 1 never changes (always 2.5)."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=gen)
    obs[:, 1] = 2.5
    act = torch.rand(n, 2, generator=gen) * 2 - 1
    next_obs = obs.clone()
    next_obs[:, 0] += 0.5 * torch.sin(obs[:, 2]) + 0.3 * act[:, 0]
    next_obs[:, 2] += 0.2 * obs[:, 0] * act[:, 1]
    return obs, act, next_obs


def test_mjrl_fit_stops_after_the_epoch_that_reaches_max_steps() -> None:
    """100 transitions in minibatches of 20: 5 steps an epoch. max_steps 12 stops after epoch 3 (15 steps), 10 after
    epoch 2; no cap runs every epoch. The returned loss is one per member; elites stay as they were."""
    data = _transitions(100, seed=0)
    for max_steps, epochs, steps in ((12, 3, 15), (10, 2, 10), (None, 4, 20)):
        dynamics, optimizer = _npg_ensemble(0)
        result = _fit(dynamics, data, optimizer, 4, max_steps)
        assert (result["dynamics/epochs"], result["dynamics/steps"]) == (epochs, steps), max_steps
        assert sorted(result) == sorted(
            [*(f"dynamics/loss_{i}" for i in range(4)), "dynamics/epochs", "dynamics/steps"]
        )
        assert dynamics.elites.tolist() == [0, 1, 2, 3]


def test_mjrl_fit_warm_starts() -> None:
    """A second call continues from the fitted weights (and the optimiser's moments): after 40 + 3 epochs the loss is
    lower than after 3 epochs from scratch."""
    data = _transitions(200, seed=1)
    warm, warm_optim = _npg_ensemble(1)
    _fit(warm, data, warm_optim, 40)
    fitted = {k: v.clone() for k, v in warm.state_dict().items()}
    warm_loss = _member_losses(_fit(warm, data, warm_optim, 3))
    assert any(not torch.equal(v, warm.state_dict()[k]) for k, v in fitted.items())
    cold, cold_optim = _npg_ensemble(1)
    cold_loss = _member_losses(_fit(cold, data, cold_optim, 3))
    assert bool((warm_loss < cold_loss).all()), (warm_loss, cold_loss)


def test_mad_scaling_predicts_a_never_changing_dimension_as_unchanged() -> None:
    """With mean-absolute-deviation scaling a state dimension that never changed in the data is predicted exactly
    unchanged by every member, on the data and on new states."""
    obs, act, next_obs = _transitions(100, seed=2)
    dynamics, optimizer = _npg_ensemble(2)
    _fit(dynamics, (obs, act, next_obs), optimizer, 3)
    new_obs, new_act, _ = _transitions(30, seed=9)
    with torch.no_grad():
        for o, a in ((obs, act), (new_obs, new_act)):
            predicted = next_obs_per_member(dynamics, o, a)
            assert predicted.shape == (4, len(o), 3)
            assert bool((predicted[..., 1] == 2.5).all())
            assert bool((predicted[..., 0] != o[:, 0]).any())  # the dimensions that do change are predicted to


def test_prediction_error_is_the_per_member_mse_of_next_state_predictions() -> None:
    """prediction_error [E] = mean over rows and state dims of (f_e(s, a) − s')², member by member."""
    obs, act, next_obs = _transitions(100, seed=3)
    dynamics, optimizer = _npg_ensemble(3)
    _fit(dynamics, (obs, act, next_obs), optimizer, 2)
    with torch.no_grad():
        predicted = next_obs_per_member(dynamics, obs, act)
    by_hand = torch.tensor(
        [float(((predicted[e] - next_obs) ** 2).sum()) / (100 * 3) for e in range(dynamics.num_members)]
    )
    torch.testing.assert_close(prediction_error(dynamics, obs, act, next_obs), by_hand)


def test_mjrl_fit_refuses_fewer_transitions_than_one_batch() -> None:
    """19 transitions cannot fill one minibatch of 20: a UserError naming both numbers."""
    data = _transitions(19, seed=4)
    dynamics, optimizer = _npg_ensemble(4)
    with pytest.raises(UserError, match=r"19 transitions.*\(20\)"):
        _fit(dynamics, data, optimizer, 1)


# ------------------------------------------------------------------------------------------------ action repeat
def test_action_repeat_is_two_plain_env_steps() -> None:
    """With act_repeat 2 on Hopper-v4, each decision equals two steps of the plain env from the same reset seed (same
    observation, summed reward), stopping at the step that ends the episode; info["env_steps"] counts the steps."""
    spec = get_task("Hopper-v4")
    repeated, plain = make_env(spec, act_repeat=2), make_env(spec)
    try:
        obs_r, _ = repeated.reset(seed=11)
        obs_p, _ = plain.reset(seed=11)
        assert np.array_equal(obs_r, obs_p)
        rng = np.random.default_rng(0)
        for decision in range(200):
            action = rng.uniform(-1, 1, 3).astype(np.float32)
            obs_r, reward_r, terminated_r, truncated_r, info = repeated.step(action)
            total, terminated_p, truncated_p, taken = 0.0, False, False, 0
            for _ in range(2):
                obs_p, reward_p, terminated_p, truncated_p, _ = plain.step(action)
                total += float(reward_p)
                taken += 1
                if terminated_p or truncated_p:
                    break
            assert info["env_steps"] == taken, decision
            assert np.array_equal(obs_r, obs_p), decision
            assert reward_r == total, decision
            assert (terminated_r, truncated_r) == (terminated_p, truncated_p), decision
            if terminated_r or truncated_r:
                break
        assert terminated_r, "random actions should make the hopper fall within 400 env steps"
    finally:
        repeated.close()
        plain.close()


def test_fisher_vector_product_equals_the_kl_hessian() -> None:
    """The closed-form product equals differentiating the mean KL(π_old ‖ π_θ) twice at θ_old, on every parameter
    (the mean network first in the parameter order, then log σ), with an observation mask and scaling in place."""
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(4, 2, (8, 8), init_log_std=-0.3, obs_mask=torch.tensor([1.0, 1.0, 0.02, 0.02]))
    policy.obs_shift.copy_(torch.randn(4))
    policy.obs_scale.copy_(torch.rand(4) + 0.5)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.7, 0.2]))
    obs = torch.randn(50, 4)
    with torch.no_grad():
        old_mean, old_log_std = policy.distribution_params(obs)
    params = list(policy.parameters())
    kl = policy.kl_from(obs, old_mean, old_log_std).mean()
    grad = parameters_to_vector(torch.autograd.grad(kl, params, create_graph=True))
    product = fisher_vector_product(policy, obs)
    for _ in range(3):
        v = torch.randn(grad.numel())
        expected = parameters_to_vector(torch.autograd.grad(grad @ v, params, retain_graph=True))
        torch.testing.assert_close(product(v), expected, rtol=1e-5, atol=1e-6)


def test_online_seeds_align_on_the_iteration() -> None:
    """Online runs log at the samples taken, which differ between seeds: their curves align on the evaluation index,
    drawn at the seeds' mean sample count (offline seeds with disjoint steps share nothing and are refused)."""
    from utils.runs import Series, group_curve

    a = Series(np.array([1000, 2010, 3005]), np.array([1.0, 2.0, 3.0]))
    b = Series(np.array([1002, 2000]), np.array([3.0, 4.0]))
    curve = group_curve("Hopper-v4", "pal", [a, b], window=1)
    np.testing.assert_allclose(curve.steps, [1001.0, 2005.0])
    np.testing.assert_allclose(curve.mean, [2.0, 3.0])
    with pytest.raises(UserError, match="share no logged step"):
        group_curve("hopper-medium-gen", "morel", [a, Series(np.array([7]), np.array([1.0]))], window=1)


def test_plot_labels_online_axes_with_samples() -> None:
    from plot import x_unit

    assert x_unit("Hopper-v4", "pal", "normalized_score_mean") == "Environment samples"
    assert x_unit("Hopper-v4", "mal", "normalized_score_mean") == "Environment samples"
    assert x_unit("hopper-medium-gen", "morel", "normalized_score_mean") == "Iterations"
    assert x_unit("hopper-medium-gen", "mopo", "dynamics/holdout_loss") == "Dynamics model epochs"
