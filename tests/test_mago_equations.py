"""MAGO's losses, nature's move, the game and the ensemble's optimiser on hand-computed cases
(docs/mago.md#equations-as-implemented).

Each case is small enough to compute by hand: critics with constant or piecewise-linear outputs, an ensemble whose
members predict known means, draws given explicitly (algos/mago.py's `NatureDraws`, `PolicyDraws`). Every test
compares against numbers written out here, not against the code's own intermediate results.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import algos  # noqa: F401  (registers every algorithm's config)
from algos.mago import (
    MAGO,
    GameStep,
    MAGOConfig,
    NatureDraws,
    PolicyDraws,
    continue_probability,
    denormalize_reward,
    done_probability,
)
from buffers.replay import Batch
from config import CONFIG_CLASSES, DynamicsConfig, load_config
from envs.tasks import get_task, normalized_score
from models.dynamics import EnsembleDynamics, Standardizer

GAMMA = 0.99


# ---------------------------------------------------------------------------------------------------- helpers
class Members:
    """An ensemble whose member i predicts next state s + i (every dimension) with std `std`, and normalised reward
    `rewards[i]`; rewards are raw = r_norm · scale + shift, so MAGO's `normalize_reward` recovers r_norm."""

    num_members = 4

    def __init__(
        self,
        rewards: tuple[float, ...] = (0.1, 0.2, 1.5, -0.3),
        std: float = 1e-9,
        shift: float = 0.0,
        scale: float = 1.0,
        terminal: Any = None,
    ) -> None:
        self.rewards, self.std = torch.tensor(rewards, dtype=torch.float64), std
        self.cfg = DynamicsConfig(reward_normalization=True)
        self.reward_shift, self.reward_scale = torch.tensor(shift), torch.tensor(scale)
        self.termination_fn = terminal or (lambda obs, act, next_obs: torch.zeros(next_obs.shape[:-1], dtype=bool))

    def __call__(self, obs: torch.Tensor, act: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = members.to(obs.dtype).view(-1, 1, 1).expand(-1, len(obs), obs.shape[1])
        raw = denormalize_reward(self, self.rewards[members].to(obs.dtype))  # type: ignore[arg-type]
        reward = raw.view(-1, 1, 1).expand(-1, len(obs), 1)
        mean = torch.cat([offset, reward], -1)
        return mean, torch.full_like(mean, 2 * math.log(self.std))


def make_agent(model: Members | None = None, **changes: Any) -> MAGO:
    """A float64 MAGO on 2-dimensional states and 1-dimensional actions, networks of one hidden layer of 8."""
    cfg = MAGOConfig(
        hidden_dims=[8], adv_batch_size=3, batch_size=3, num_models=4, num_state_samples=2, num_action_samples=4
    )
    for key, value in changes.items():
        setattr(cfg, key, value)
    agent = MAGO(2, 1, cfg).double()
    agent.dynamics = [model or Members()]  # type: ignore[list-item]
    agent.next_obs_low, agent.next_obs_high = torch.full((2,), -100.0), torch.full((2,), 100.0)  # bands far away
    return agent


@torch.no_grad()
def constant_critics(critics: torch.nn.Module, *values: float) -> None:
    """Critic c outputs values[c] for every (s, a)."""
    for layer in critics.net.layers:
        layer.weight.zero_()
        layer.bias.zero_()
    for c, value in enumerate(values):
        critics.net.output.bias[c] = value


@torch.no_grad()
def action_critics(critics: torch.nn.Module) -> None:
    """Q_0(s, a) = 2 (a + 1) − 1 and Q_1(s, a) = 3 (a + 1) (one hidden ReLU unit relu(a + 1)): Q_0 is the minimum
    everywhere on (−1, 1), and below 0 for a < −0.5 (where the clip acts)."""
    constant_critics(critics, -1.0, 0.0)
    hidden = critics.net.hidden[0]
    hidden.weight[:, 2, 0] = 1.0  # inputs [s_0, s_1, a]
    hidden.bias[:, 0, 0] = 1.0
    critics.net.output.weight[0, 0, 0] = 2.0
    critics.net.output.weight[1, 0, 0] = 3.0


# ---------------------------------------------------------------------------------------------------- the critic step
def test_critic_loss_halves_dataset_and_game_rows_sums_critics_and_clips_both_targets() -> None:
    """Q_0 = 1, Q_1 = 3 everywhere; 3 dataset rows with targets (−1, 2, 150) → clipped (0, 2, 100) and 2 game rows
    with (0.5, 200) → (0.5, 100): L = ½ Σ_c mean_data (Q_c − y)² + ½ Σ_c mean_game (Q_c − y)². A mean over all five
    rows, a mean over the critics or unclipped targets each give another number."""
    agent = make_agent()
    constant_critics(agent.critics, 1.0, 3.0)
    real_y, game_y = [0.0, 2.0, 100.0], [0.5, 100.0]
    real = sum(sum((q - y) ** 2 for y in real_y) / 3 for q in (1.0, 3.0))
    game = sum(sum((q - y) ** 2 for y in game_y) / 2 for q in (1.0, 3.0))
    loss = agent.critic_loss(
        torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64),
        torch.tensor([-1.0, 2.0, 150.0], dtype=torch.float64),
        torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64),
        torch.tensor([0.5, 200.0], dtype=torch.float64),
    )  # fmt: skip
    assert float(loss.detach()) == pytest.approx(0.5 * real + 0.5 * game, rel=1e-12)
    assert float(loss.detach()) == pytest.approx(8007.791666666667, rel=1e-12)


def test_dataset_row_target_uses_normalised_rewards_and_the_target_critics() -> None:
    """Rewards normalised with shift −1, scale 2: r = (1, 3, −1) → (1, 2, 0); V_target = 2 (the target critics are
    2 everywhere, so V = 2 whatever α and the sampled actions; the online critics say 5 and must not enter); the
    terminal row has no bootstrap: y = (1 + 0.99·2, 2, 0 + 0.99·2)."""
    agent = make_agent(Members(shift=-1.0, scale=2.0))
    constant_critics(agent.target_critics, 2.0, 4.0)
    constant_critics(agent.critics, 5.0, 5.0)
    obs = torch.zeros(3, 2, dtype=torch.float64)
    batch = Batch(
        obs, torch.zeros(3, 1, dtype=torch.float64), torch.tensor([1.0, 3.0, -1.0], dtype=torch.float64), obs,
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
    )  # fmt: skip
    target = agent.dataset_target(batch)
    assert target.tolist() == pytest.approx([1 + GAMMA * 2, 2.0, GAMMA * 2], rel=1e-9)


# ---------------------------------------------------------------------------------------------------- the policy step
def tanh_normal_log_density(mean: torch.Tensor, std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log of the density of a = tanh(u), u ~ N(mean, std), by the change of variables written plainly."""
    pre_tanh = torch.atanh(action)
    return (torch.distributions.Normal(mean, std).log_prob(pre_tanh) - torch.log(1 - action.square())).sum(-1)


def test_policy_loss_weights_the_proposal_mix_by_importance_and_the_online_clipped_q() -> None:
    """3 dataset rows and 2 game rows, M = 4: per row 2 proposals (around the dataset action with pre-tanh std 0.1 on
    dataset rows, π's samples on game rows) and 2 samples of π_ref; ℓ = log π_ref − log q for proposals and 0 for
    π_ref's; Q = min of the ONLINE critics clipped at 0 (Q_0 = 2(a + 1) − 1 < 0 for a < −0.5); fixed α = 0.5;
    w = softmax(Q/α + ℓ); L = −(½ mean_data + ½ mean_game) Σ_i w_i log π_β(a_i|s), β = ½ with σ-weights
    normalised over all 5 rows. The loss and its gradient (w and the σ-weights constant) equal this written out."""
    torch.manual_seed(0)
    agent = make_agent(auto_alpha=False, alpha=0.5)
    action_critics(agent.critics)
    constant_critics(agent.target_critics, 50.0, 50.0)  # the target critics must not enter
    real_obs = torch.tensor([[0.1, -0.2], [0.5, 0.3], [-0.4, 0.9]], dtype=torch.float64)
    real_act = torch.tensor([[-0.9], [0.2], [0.7]], dtype=torch.float64)
    game_obs = torch.tensor([[0.0, 0.4], [1.0, -1.0]], dtype=torch.float64)
    draws = PolicyDraws(
        near_data=torch.tensor([[[0.5], [-1.0], [2.0]], [[-1.5], [0.3], [0.0]]], dtype=torch.float64),
        policy=torch.tensor([[[0.8], [-0.4]], [[-1.2], [1.6]]], dtype=torch.float64),
        reference=torch.tensor([[[0.1], [-2.0], [0.9], [0.4], [-0.7]], [[1.1], [0.6], [-0.3], [-1.8], [0.2]]]).double(),
    )
    loss, _ = agent.policy_loss(real_obs, real_act, game_obs, draws)
    loss.backward()
    ours = [p.grad.clone() for p in agent.policy.parameters()]

    obs = torch.cat([real_obs, game_obs])
    with torch.no_grad():
        pi_mean, pi_log_std = agent.policy.distribution_params(obs)
        ref_mean, ref_log_std = agent.reference_policy.distribution_params(obs)
        centre = torch.atanh(real_act)
        near = torch.tanh(centre + 0.1 * draws.near_data)
        near_log_q = tanh_normal_log_density(centre, torch.full_like(centre, 0.1), near)
        from_pi = torch.tanh(pi_mean[3:] + pi_log_std[3:].exp() * draws.policy)
        from_pi_log_q = tanh_normal_log_density(pi_mean[3:], pi_log_std[3:].exp(), from_pi)
        proposals = torch.cat([near, from_pi], dim=1)  # [2, 5, 1]
        log_ratio = tanh_normal_log_density(ref_mean, ref_log_std.exp(), proposals) - torch.cat(
            [near_log_q, from_pi_log_q], dim=1
        )
        from_ref = torch.tanh(ref_mean + ref_log_std.exp() * draws.reference)
        actions = torch.cat([proposals, from_ref])  # [4, 5, 1]
        log_ratio = torch.cat([log_ratio, torch.zeros(2, 5, dtype=torch.float64)])
        q = (2 * (actions[..., 0] + 1) - 1).clamp(min=0.0)
        assert bool((q == 0).any()), "the case must exercise the clip"
        weights = torch.softmax(q / 0.5 + log_ratio, dim=0)
    expected_targets = agent.policy_targets(real_obs, real_act, game_obs, draws)
    assert torch.allclose(expected_targets.weights, weights, rtol=1e-10, atol=1e-12)

    agent.policy.zero_grad()
    mean, log_std = agent.policy.distribution_params(obs)
    sigma_weight = (log_std.detach().exp() / log_std.detach().exp().mean(0)).unsqueeze(0)  # σ^{2β}, β = ½
    per_dim = torch.distributions.Normal(mean, log_std.exp()).log_prob(torch.atanh(actions)) - torch.log(
        1 - actions.square()
    )
    per_state = -(weights * (per_dim * sigma_weight).sum(-1)).sum(0)
    expected = 0.5 * per_state[:3].mean() + 0.5 * per_state[3:].mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-9)
    expected.backward()
    for grad, parameter in zip(ours, agent.policy.parameters()):
        assert torch.allclose(grad, parameter.grad, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------------- nature
def k_sample_case(factor: float = 0.5) -> tuple[MAGO, NatureDraws]:
    """One state s = 0, members drawn (0, 2, 2, 3) → candidates (0, 2, 3) with counts (1, 2, 1), K = 2 samples each
    at s + i + 0.5 ε, done when the first dimension exceeds 1 (bands far away: continue probability 1). Normalised
    rewards (0.1, 1.5, −0.3) clip to (0.1, 1, 0); the target critics are 2 everywhere (V_target = 2), the online
    ones 5 (V_online = 5)."""
    model = Members(std=0.5, terminal=lambda obs, act, next_obs: next_obs[..., 0] > 1.0)
    agent = make_agent(model, adv_batch_size=1, factor=factor)
    constant_critics(agent.target_critics, 2.0, 2.0)
    constant_critics(agent.critics, 5.0, 6.0)
    noise = torch.zeros(2, 3, 1, 2, dtype=torch.float64)  # [K, U, B, S]
    noise[:, 0, 0, 0] = torch.tensor([3.0, 0.0])  # member 0: 1.5 (done), 0 (continues)
    noise[:, 1, 0, 0] = torch.tensor([-3.0, 0.0])  # member 2: 0.5 (continues), 2 (done)
    noise[:, 2, 0, 0] = torch.tensor([-6.0, -5.0])  # member 3: 0, 0.5 (both continue)
    return agent, NatureDraws(members=torch.tensor([0, 2, 2, 3]), state_noise=noise)


STATE, ACTION = torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)


def test_nature_averages_k_samples_with_values_from_the_target_and_the_online_critics() -> None:
    """Candidate values mean_k [r + γ(1 − p_done) V]: under the target critics (V = 2) 0.1 + 0.99·2·½ = 1.09,
    1 + 0.99·2·½ = 1.99, 0 + 0.99·2 = 1.98; under the online critics (V = 5) 2.575, 3.475, 4.95. The k = 2nd
    (counting member 2 twice) is member 3's 1.98 under the target critics but member 2's 3.475 under the online ones:
    nature's target and the move it plays come from different candidates."""
    agent, draws = k_sample_case()
    candidates = agent.nature_candidates(STATE, ACTION, penalize=False, draws=draws)
    assert candidates.members.tolist() == [0, 2, 3] and candidates.counts.tolist() == [1, 2, 1]
    assert candidates.terminal[:, :, 0].tolist() == [[True, False, False], [False, True, False]]
    assert candidates.reward[:, 0].tolist() == pytest.approx([0.1, 1.0, 0.0])
    assert candidates.q_target[:, 0].tolist() == pytest.approx([1.09, 1.99, 1.98], rel=1e-9)
    assert candidates.q_online[:, 0].tolist() == pytest.approx([2.575, 3.475, 4.95], rel=1e-9)
    step = agent.play_nature(STATE, ACTION, explore=False, penalize=False, draws=draws)
    assert float(step.target_value) == pytest.approx(1.98, rel=1e-9)
    assert step.played.tolist() == [1] and float(step.online_value) == pytest.approx(3.475, rel=1e-9)
    assert step.next_obs[0].tolist() == pytest.approx([0.5, 2.0])  # member 2's first sample
    assert float(step.reward) == 1.0 and float(step.done_prob) == 0.0


def test_the_ensemble_std_spans_next_states_and_rewards_and_the_factor_shifts_every_candidate() -> None:
    """Draws (0, 2, 2, 3): each state dimension's means vary like (0, 2, 2, 3) (unbiased variance 19/12), the
    normalised reward means like (0.1, 1.5, 1.5, −0.3) (0.88): std = sqrt(2·19/12 + 0.88), MAGO's evaluator's
    ensemble std over ALL predicted means. penalize=True subtracts φ = factor · std from every candidate value."""
    agent, draws = k_sample_case(factor=0.5)
    plain = agent.nature_candidates(STATE, ACTION, penalize=False, draws=draws)
    variance = statistics.variance([0, 2, 2, 3])
    assert variance == pytest.approx(19 / 12)
    std = math.sqrt(2 * variance + statistics.variance([0.1, 1.5, 1.5, -0.3]))
    assert float(plain.ensemble_std) == pytest.approx(std, rel=1e-9)
    penalised = agent.nature_candidates(STATE, ACTION, penalize=True, draws=draws)
    assert torch.allclose(penalised.q_target, plain.q_target - 0.5 * std, rtol=0, atol=1e-12)
    assert torch.allclose(penalised.q_online, plain.q_online - 0.5 * std, rtol=0, atol=1e-12)


def test_explore_draws_members_in_proportion_to_their_counts_while_the_target_stays_the_kth() -> None:
    """4000 identical states, candidates (0, 2, 3) drawn (1, 2, 1) times: exploring, nature plays each ∝ its count
    (frequencies ≈ ¼, ½, ¼; 4 binomial standard deviations ≈ 0.03), each row's online value is the played
    candidate's, and the critic target is still the k-th value for every row."""
    torch.manual_seed(0)
    agent = make_agent(adv_batch_size=4000, num_state_samples=1)
    constant_critics(agent.target_critics, 2.0, 2.0)
    constant_critics(agent.critics, 5.0, 5.0)
    obs, act = torch.zeros(4000, 2, dtype=torch.float64), torch.zeros(4000, 1, dtype=torch.float64)
    draws = NatureDraws(members=torch.tensor([0, 2, 2, 3]))
    step = agent.play_nature(obs, act, explore=True, penalize=False, draws=draws)
    frequencies = torch.bincount(step.played, minlength=3).double() / 4000
    assert frequencies.tolist() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    # Normalised rewards (0.1, 1.5 → 1, −0.3 → 0), nothing ends: values r + 0.99·V.
    online = torch.tensor([0.1, 1.0, 0.0], dtype=torch.float64) + GAMMA * 5.0
    assert torch.allclose(step.online_value, online[step.played])
    kth_target = 0.1 + GAMMA * 2.0  # ascending rewards 0 (×1), 0.1 (×1), 1 (×2), each + 1.98: the 2nd is 0.1's
    assert torch.allclose(step.target_value, torch.full((4000,), kth_target, dtype=torch.float64))
    chosen = torch.tensor([2, 0, 1]).repeat(1334)[:4000]
    given = agent.play_nature(obs, act, explore=True, penalize=False, draws=draws._replace(explore_choice=chosen))
    assert torch.equal(given.played, chosen)


def test_termination_and_the_soft_bands_combine_through_the_max() -> None:
    """p_done = max(terminal, 1 − continue): (T, 0.9) → 1, (F, 0.9) → 0.1, (F, 0.25) → 0.75, (T, 0) → 1. In nature's
    move, with the data's next states in [0, 0.2] in dimension 1 (inner band up to 0.1 + 5.5·0.2 = 1.2, outer up to
    2.2): member 0's samples (1.5, 0) are terminal (first dimension above 1) inside the bands, member 2's (0.5, 2)
    continue with σ((2 − 1.7)·12/(1.2 − 2.2))/σ(6) = σ(−3.6)/σ(6), member 3's (0, 3) lie beyond the outer band."""
    terminal = torch.tensor([True, False, False, True])
    alive = torch.tensor([0.9, 0.9, 0.25, 0.0], dtype=torch.float64)
    assert done_probability(terminal, alive).tolist() == pytest.approx([1.0, 0.1, 0.75, 1.0])
    agent, draws = k_sample_case()
    agent.next_obs_low = torch.tensor([-100.0, 0.0], dtype=torch.float64)
    agent.next_obs_high = torch.tensor([100.0, 0.2], dtype=torch.float64)
    noise = torch.zeros(2, 3, 1, 2, dtype=torch.float64)
    noise[:, 0, 0, 0], noise[:, 1, 0, 0], noise[:, 2, 0, 0] = 3.0, -3.0, -6.0  # both samples alike
    candidates = agent.nature_candidates(STATE, ACTION, False, draws._replace(state_noise=noise))
    sigmoid_6 = 1 / (1 + math.exp(-6))
    between = 1 / (1 + math.exp(3.6)) / sigmoid_6
    samples = torch.tensor([[1.5, 0.0], [0.5, 2.0], [0.0, 3.0]], dtype=torch.float64)
    beyond = float(continue_probability(samples, agent.next_obs_low, agent.next_obs_high, 5.5, 10.5)[2])
    assert beyond < 1e-6
    assert candidates.terminal[:, :, 0].tolist() == [[True, False, False]] * 2
    assert candidates.alive[0, :, 0].tolist() == pytest.approx([1.0, between, beyond], rel=1e-9)
    expected = [1.0, 1.0 - between, 1.0 - beyond]
    assert candidates.done_prob[0, :, 0].tolist() == pytest.approx(expected, rel=1e-9)
    rewards, v_target = [0.1, 1.0, 0.0], 2.0
    q_target = [r + GAMMA * (1 - p) * v_target for r, p in zip(rewards, expected)]
    assert candidates.q_target[:, 0].tolist() == pytest.approx(q_target, rel=1e-9)


# ---------------------------------------------------------------------------------------------------- the game
def test_game_rows_restart_after_adv_horizon_steps_even_when_not_done() -> None:
    """adv_horizon 5, p_done 0: a row at 5 steps goes to 6 > 5 and restarts from the pool with counter 0; a row at 4
    moves to its next state with counter 5; a row drawn done (u < p_done) restarts at any age."""
    agent = make_agent(adv_horizon=5)
    agent.state_pool = torch.full((4, 2), 7.0, dtype=torch.float64)
    agent.game_steps.copy_(torch.tensor([5, 4, 0]))
    next_obs = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    done_prob = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    zeros = torch.zeros(3, dtype=torch.float64)
    step = GameStep(zeros, zeros, next_obs, zeros, done_prob, zeros, torch.zeros(3, dtype=torch.long))
    ended = agent.advance_game(step, done_uniform=torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64))
    assert ended.tolist() == [True, False, True]
    assert agent.game_steps.tolist() == [0, 5, 0]
    assert agent.game_obs.tolist() == [[7.0, 7.0], [2.0, 2.0], [7.0, 7.0]]
    torch.manual_seed(0)
    agent.game_steps.copy_(torch.tensor([5, 4, 0]))
    ended = agent.advance_game(step)  # drawn: p_done 0 never ends, so only the horizon does for rows 0 and 1
    assert ended[:2].tolist() == [True, False] and agent.game_steps[:2].tolist() == [0, 5]


def spy_on_nature(agent: MAGO) -> list[bool]:
    """The `penalize` argument of every later call of agent.play_nature."""
    calls: list[bool] = []
    original = agent.play_nature

    def spy(*args: Any, **named: Any) -> Any:
        calls.append(named["penalize"])
        return original(*args, **named)

    agent.play_nature = spy  # type: ignore[method-assign]
    return calls


def test_the_factor_switch_reaches_nature_in_training_and_in_the_monitor() -> None:
    """update() plays nature with penalize = factor_in_training (default false, MAGO's and MORAL's code); the
    evaluation monitor with penalize = factor > 0 (MORAL's test mode)."""
    assert MAGOConfig().factor_in_training is False and MAGOConfig().factor == 0.5
    for factor_in_training in (False, True):
        agent = make_agent(factor_in_training=factor_in_training, monitor_rollouts=2, monitor_horizon=1)
        agent.state_pool = torch.zeros(4, 2, dtype=torch.float64)
        agent.start_states = torch.zeros(3, 2, dtype=torch.float64)
        calls = spy_on_nature(agent)
        obs = torch.zeros(3, 2, dtype=torch.float64)
        batch = Batch(obs, torch.zeros(3, 1).double(), torch.zeros(3).double(), obs, torch.zeros(3).double())
        agent.update(batch)
        assert calls == [factor_in_training]
        for factor in (0.5, 0.0):
            agent.cfg.factor = factor
            agent.monitor_rollouts()
            assert calls[-1] is (factor > 0)


def test_penalized_evaluation_return_subtracts_the_ensemble_std_of_all_predicted_means() -> None:
    """test/reward_penalized = real return − eval_penalty_coef · mean over the monitor's steps of the ensemble std.
    With every draw (0, 1, 1, 3): std = sqrt(2 · Var(0, 1, 1, 3) + Var(r_norm of those draws)) at every step; the
    next-state columns alone would give sqrt(2 · Var) and a higher return. report_penalized_return puts it (and its
    normalised score) in the evaluation."""
    model = Members(rewards=(0.3, 0.1, 0.0, 0.9))
    agent = make_agent(model, monitor_rollouts=2, monitor_horizon=3, eval_penalty_coef=2.0)
    agent.start_states = torch.zeros(3, 2, dtype=torch.float64)
    original = agent.play_nature
    members = torch.tensor([0, 1, 1, 3])
    agent.play_nature = lambda obs, act, explore, penalize: original(  # type: ignore[method-assign]
        obs, act, explore, penalize, NatureDraws(members=members)
    )
    variance = statistics.variance([0, 1, 1, 3])
    std = math.sqrt(2 * variance + statistics.variance([0.3, 0.1, 0.1, 0.9]))
    spec = get_task("hopper-medium-v2")
    result, scalars = agent.evaluation_extras({"return_mean": 1000.0, "normalized_mean": 31.0}, spec)
    assert scalars["test/reward"] == 1000.0 and result["return_mean"] == 1000.0
    assert scalars["test/reward_penalized"] == pytest.approx(1000.0 - 2.0 * std, rel=1e-10)
    assert scalars["test/reward_penalized"] != pytest.approx(1000.0 - 2.0 * math.sqrt(2 * variance), rel=1e-9)
    agent.cfg.report_penalized_return = True
    result, _ = agent.evaluation_extras({"return_mean": 1000.0, "normalized_mean": 31.0}, spec)
    assert result["return_mean"] == pytest.approx(1000.0 - 2.0 * std, rel=1e-10)
    assert result["normalized_mean"] == pytest.approx(float(normalized_score(spec, 1000.0 - 2.0 * std)))


# ---------------------------------------------------------------------------------------------------- the ensemble
def small_mago_dynamics(**changes: Any) -> DynamicsConfig:
    cfg = MAGOConfig().dynamics
    cfg.num_ensemble, cfg.num_elites, cfg.hidden_dims, cfg.weight_decay = 3, 3, [8], [0.0, 0.0]
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_adamw_decays_every_parameter_decoupled_from_the_gradient() -> None:
    """MAGO's ensemble optimiser is AdamW (decay 7.5e-5 at lr 1e-4). One step from fresh moments with gradient g:
    θ ← θ (1 − lr·wd) − lr · g / (|g| + 1e-8). Here lr = 0.1, wd = 0.5 so the decay is visible: g = 0 shrinks θ by
    5 % exactly; coupled L2 (Adam on g + wd·θ) would move every parameter by ±lr instead."""
    assert MAGOConfig().dynamics.optimizer == "adamw" and MAGOConfig().dynamics.adamw_weight_decay == 7.5e-5
    model = EnsembleDynamics(2, 1, small_mago_dynamics(lr=0.1, adamw_weight_decay=0.5)).double()
    optimizer = model.optimizer()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 0.5
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for old, new in zip(before, model.parameters()):
        assert torch.allclose(new, old * 0.95, rtol=0, atol=1e-15)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.3)
    optimizer = model.optimizer()
    optimizer.step()
    for old, new in zip(before, model.parameters()):
        assert torch.allclose(new, old * 0.95 - 0.1 * 0.3 / (0.3 + 1e-8), rtol=0, atol=1e-12)


def test_the_ensemble_fit_clips_the_global_gradient_norm_at_10() -> None:
    """Targets 100 away from the data: every step's raw gradient norm exceeds 10 (shown without the clip); with
    MAGO's grad_clip the optimiser only ever sees a global norm ≤ 10, and exactly 10 on such steps."""
    assert MAGOConfig().dynamics.grad_clip == 10.0
    generator = torch.Generator().manual_seed(0)
    obs, act = torch.randn(128, 2, generator=generator), torch.rand(128, 1, generator=generator)
    next_obs = obs + 100.0 + 3.0 * torch.randn(128, 2, generator=generator)
    rewards = torch.randn(128, generator=generator)
    norms: list[float] = []

    def record(optimizer: torch.optim.Optimizer, args: Any, named: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        for grad_clip in (None, 10.0):
            norms.clear()
            torch.manual_seed(0)
            model = EnsembleDynamics(2, 1, small_mago_dynamics(grad_clip=grad_clip, batch_size=32, max_epochs=2))
            model.fit(obs, act, next_obs, rewards, progress=False)
            assert len(norms) == 8
            if grad_clip is None:
                assert min(norms) > 10.0
            else:
                assert norms == pytest.approx([10.0] * 8, rel=1e-5)
    finally:
        handle.remove()


def record_rows(model: EnsembleDynamics) -> list[list[list[float]]]:
    """Per training batch of `model`, each member's rows: the first raw input, sorted."""
    rows: list[list[list[float]]] = []
    original = model.batch_loss

    def recording(x: torch.Tensor, *args: Any, **named: Any) -> tuple[torch.Tensor, torch.Tensor]:
        identity = model.input_scaler.inverse(x.detach())[..., 0].round()  # [E, batch]
        rows.append([sorted(member.tolist()) for member in identity])
        return original(x, *args, **named)

    model.batch_loss = recording  # type: ignore[method-assign]
    return rows


def test_the_ensemble_fit_draws_fresh_bootstrap_rows_every_epoch() -> None:
    """MAGO's fit (bootstrap_every_epoch): each epoch every member sees a new draw with replacement of the rows; with
    the option off, the same draw every epoch (reshuffled). Rows are identified by a unique first input."""
    assert MAGOConfig().dynamics.bootstrap and MAGOConfig().dynamics.bootstrap_every_epoch
    n = 64
    obs = torch.stack([torch.arange(n, dtype=torch.float32), torch.zeros(n)], -1)
    act, rewards = torch.zeros(n, 1), torch.linspace(0, 1, n)
    seen: dict[bool, list[list[list[float]]]] = {}
    for every_epoch in (True, False):
        torch.manual_seed(0)
        model = EnsembleDynamics(
            2, 1, small_mago_dynamics(batch_size=n, max_epochs=2, bootstrap_every_epoch=every_epoch)
        )
        rows = record_rows(model)
        model.fit(obs, act, obs + 0.1, rewards, progress=False)
        seen[every_epoch] = rows
    first, second = seen[True]
    assert all(a != b for a, b in zip(first, second))  # every member: another multiset of rows
    assert any(len(set(member)) < n for member in first)  # drawn with replacement
    assert seen[False][0] == seen[False][1]


def test_scalers_use_the_unbiased_std_only_where_configured() -> None:
    """dynamics.unbiased_std (new) is off by default and in every algorithm's configuration but MAGO's, and off it
    leaves the scaler's std bit-identical to the population std (as before the option); MAGO's std divides by n − 1.
    The config files agree with the dataclass."""
    x = torch.randn(50, 3, dtype=torch.float64)
    for kind in ("std", "scale"):
        default = Standardizer(3, kind).double()
        default.fit(x)
        assert torch.equal(default.std, x.std(0, unbiased=False))
        unbiased = Standardizer(3, kind, unbiased=True).double()
        unbiased.fit(x)
        assert torch.equal(unbiased.std, x.std(0, unbiased=True))
    assert DynamicsConfig().unbiased_std is False
    for algo, cls in CONFIG_CLASSES.items():
        dynamics = getattr(cls(), "dynamics", None)
        if dynamics is not None:
            assert dynamics.unbiased_std is (algo == "mago"), algo
    model = EnsembleDynamics(2, 1, DynamicsConfig(num_ensemble=2, num_elites=2, hidden_dims=[4], weight_decay=[0, 0]))
    assert model.input_scaler.unbiased is False
    mago = EnsembleDynamics(2, 1, MAGOConfig().dynamics)
    assert mago.input_scaler.unbiased and mago.target_scaler is not None and mago.target_scaler.unbiased
    loaded = load_config("mago", "hopper-medium-v2")
    assert loaded.dynamics.unbiased_std is True and loaded.factor_in_training is False  # type: ignore[attr-defined]
