"""CQL's equations (docs/cql.md#equations-as-implemented) on inputs small enough to check by hand: the regulariser's
logsumexp with importance weights on injected draws and linear critics, both logsumexp readings, the min-Q weight, the
Lagrange multiplier's step, the behaviour-cloning warm-up, the backups, and one batched critic call."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from algos.cql import CQL, CQLConfig, CQLDraws, CQLTermConfig, cql_logsumexp
from buffers.replay import Batch
from config import SACConfig

LOG2 = math.log(2.0)


def _cql(obs_dim: int = 1, act_dim: int = 1, seed: int = 0, **cql: object) -> CQL:
    torch.manual_seed(seed)
    sac = SACConfig(hidden_dims=[16, 16], alpha_max=None, lr_schedule="none")
    return CQL(obs_dim, act_dim, CQLConfig(sac=sac, cql=CQLTermConfig(**cql)))  # type: ignore[arg-type]


class LinearCritics(nn.Module):
    """Q_j(s, a) = w_j · [s, a] + b_j for known weights; [critics, B] like CriticEnsemble, counting its calls."""

    def __init__(self, weights: list[list[float]], biases: list[float]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weights))
        self.bias = nn.Parameter(torch.tensor(biases))
        self.calls = 0

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (torch.cat([obs, act], -1) @ self.weight.T + self.bias).movedim(-1, -2)


def lse(*values: float) -> float:
    return math.log(sum(math.exp(v) for v in values))


# One pushed-down state s = 0.5 (its next state s' = 3 must not be what the critics see), one action dimension,
# n = 2 draws per source, two pushed-up dataset rows.
PUSH_DOWN, NEXT = torch.tensor([[0.5]]), torch.tensor([[3.0]])
UP_OBS, UP_ACT = torch.tensor([[1.0], [-1.0]]), torch.tensor([[0.25], [-0.5]])
DRAWS = CQLDraws(
    random=torch.tensor([[[0.5], [-1.0]]]),
    policy=torch.tensor([[[0.2], [0.4]]]),
    policy_log_prob=torch.tensor([[-0.1, 0.3]]),
    next_policy=torch.tensor([[[-0.6], [1.0]]]),
    next_policy_log_prob=torch.tensor([[0.0, -0.5]]),
)


def _hand_critics() -> LinearCritics:
    return LinearCritics([[1.0, 2.0], [0.0, -1.0]], [0.0, 0.0])  # Q_1 = s + 2a, Q_2 = -a


def test_regulariser_by_hand_per_draw_as_kit_runs_it() -> None:
    algo = _cql(num_actions=2)
    algo.critics = _hand_critics()
    term = algo.cql_regulariser(PUSH_DOWN, NEXT, UP_OBS, UP_ACT, draws=DRAWS)
    # Critic 1, Q = 0.5 + 2a at s = 0.5; uniform terms gain +log 2, policy terms lose their log-density.
    # Draw 0: uniform 0.5 -> 1.5 + log 2; pi(.|s) 0.2 -> 0.9 + 0.1 = 1.0; pi(.|s') -0.6 -> -0.7 - 0 = -0.7.
    # Draw 1: uniform -1 -> -1.5 + log 2; pi(.|s) 0.4 -> 1.3 - 0.3 = 1.0; pi(.|s') 1.0 -> 2.5 + 0.5 = 3.0.
    down_1 = (lse(1.5 + LOG2, 1.0, -0.7) + lse(-1.5 + LOG2, 1.0, 3.0)) / 2
    up_1 = (1.5 + -2.0) / 2  # Q_1 of the rows (1, 0.25) and (-1, -0.5)
    # Critic 2, Q = -a: draw 0: -0.5 + log 2, -0.2 + 0.1, 0.6 - 0; draw 1: 1 + log 2, -0.4 - 0.3, -1.0 + 0.5.
    down_2 = (lse(-0.5 + LOG2, -0.1, 0.6) + lse(1.0 + LOG2, -0.7, -0.5)) / 2
    up_2 = (-0.25 + 0.5) / 2
    torch.testing.assert_close(term.pushed_down, torch.tensor([down_1, down_2]))
    torch.testing.assert_close(term.pushed_up, torch.tensor([up_1, up_2]))
    torch.testing.assert_close(term.gap, torch.tensor([down_1 - up_1, down_2 - up_2]))
    torch.testing.assert_close(term.q_random, torch.tensor([(1.5 - 1.5) / 2, (-0.5 + 1.0) / 2]))
    torch.testing.assert_close(term.q_next_policy, torch.tensor([(-0.7 + 2.5) / 2, (0.6 - 1.0) / 2]))


def test_regulariser_by_hand_per_state_and_temperature() -> None:
    algo = _cql(num_actions=2, logsumexp="per_state", temperature=2.0)
    algo.critics = _hand_critics()
    term = algo.cql_regulariser(PUSH_DOWN, NEXT, UP_OBS, UP_ACT, draws=DRAWS)
    values_1 = (1.5 + LOG2, 1.0, -0.7, -1.5 + LOG2, 1.0, 3.0)  # all six of the state in one logsumexp
    values_2 = (-0.5 + LOG2, -0.1, 0.6, 1.0 + LOG2, -0.7, -0.5)
    expected = [2.0 * lse(*(v / 2.0 for v in values)) for values in (values_1, values_2)]
    torch.testing.assert_close(term.pushed_down, torch.tensor(expected))
    torch.testing.assert_close(term.gap, torch.tensor([expected[0] + 0.25, expected[1] - 0.125]))


def test_logsumexp_readings_against_loops_on_random_values() -> None:
    """[critics, 3, N, n] values: per_draw = mean over (i, k) of T·LSE over the sources; per_state = mean over i of
    T·LSE over sources and draws, which is at least per_draw + T log n (Jensen)."""
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64) * 3
    temperature = 0.7
    per_draw = torch.tensor(
        [
            sum(temperature * torch.logsumexp(values[j, :, i, k] / temperature, 0) for i in range(4) for k in range(5))
            / 20
            for j in range(2)
        ],
        dtype=torch.float64,
    )
    per_state = torch.tensor(
        [
            sum(temperature * torch.logsumexp(values[j, :, i, :].flatten() / temperature, 0) for i in range(4)) / 4
            for j in range(2)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(cql_logsumexp(values, temperature, "per_draw"), per_draw)
    torch.testing.assert_close(cql_logsumexp(values, temperature, "per_state"), per_state)
    assert bool((per_state >= per_draw + temperature * math.log(5) - 1e-9).all())
    with pytest.raises(ValueError, match="cql.logsumexp"):
        cql_logsumexp(values, temperature, "all")


def test_next_state_actions_are_valued_at_the_state() -> None:
    """A critic that reads only the state: every pushed-down value is Q at s, none at s'."""
    algo = _cql(num_actions=2)
    algo.critics = LinearCritics([[1.0, 0.0]], [0.0])  # Q = s
    zero = torch.zeros(1, 2)
    draws = CQLDraws(DRAWS.random, DRAWS.policy, zero, DRAWS.next_policy, zero)
    term = algo.cql_regulariser(PUSH_DOWN, NEXT, UP_OBS, UP_ACT, draws=draws)
    expected = (lse(0.5 + LOG2, 0.5, 0.5) * 2) / 2
    torch.testing.assert_close(term.pushed_down, torch.tensor([expected]))


def test_drawn_actions_come_from_the_uniform_box_then_the_policy_at_s_then_at_next_s() -> None:
    algo = _cql(obs_dim=3, act_dim=2, num_actions=4)
    obs, next_obs = torch.randn(5, 3), torch.randn(5, 3)
    torch.manual_seed(7)
    draws = algo.draw_actions(obs, next_obs)
    torch.manual_seed(7)
    uniform = torch.empty(5, 4, 2).uniform_(-1.0, 1.0)
    with torch.no_grad():
        policy, log_prob = algo.actor(obs.repeat_interleave(4, 0))
        next_policy, next_log_prob = algo.actor(next_obs.repeat_interleave(4, 0))
    torch.testing.assert_close(draws.random, uniform, rtol=0, atol=0)
    torch.testing.assert_close(draws.policy, policy.view(5, 4, 2), rtol=0, atol=0)
    torch.testing.assert_close(draws.policy_log_prob, log_prob.view(5, 4), rtol=0, atol=0)
    torch.testing.assert_close(draws.next_policy, next_policy.view(5, 4, 2), rtol=0, atol=0)
    torch.testing.assert_close(draws.next_policy_log_prob, next_log_prob.view(5, 4), rtol=0, atol=0)
    assert float(draws.random.abs().max()) <= 1.0 and not draws.policy.requires_grad


def test_regulariser_is_one_critic_call_and_trains_the_critics_only() -> None:
    algo = _cql(obs_dim=3, act_dim=2)
    obs, act, next_obs = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1, torch.randn(8, 3)
    counted = LinearCritics([[0.1, -0.2, 0.3, 0.5, -0.4], [0.0, 0.2, 0.1, -0.3, 0.6]], [0.1, -0.1])
    algo.critics = counted
    q = counted(obs, act)
    counted.calls = 0
    term = algo.cql_regulariser(obs, next_obs, obs, act, push_up_q=q)
    assert counted.calls == 1  # every critic, source, state and draw in one batched call
    torch.testing.assert_close(term.pushed_up, q.mean(-1))
    term.gap.sum().backward()
    assert counted.weight.grad is not None and all(p.grad is None for p in algo.actor.parameters())
    rows = algo.cql_regulariser(obs, next_obs, obs, act, draws=algo.draw_actions(obs, next_obs))
    assert counted.calls == 3  # without push_up_q the pushed-up rows take a second call
    assert rows.gap.shape == (2,)


# ---------------------------------------------------------------------------------------------------- weights
def _term(gap: list[float]) -> object:
    from algos.cql import CQLTerm

    gaps = torch.tensor(gap, requires_grad=True)
    return CQLTerm(gaps, gaps, gaps, gaps, gaps, gaps)


def test_min_q_weight_scales_the_gap_without_lagrange() -> None:
    assert CQLTermConfig().weight == 5.0 and not CQLTermConfig().lagrange
    for weight in (5.0, 0.0, 10.0):
        algo = _cql(weight=weight)
        penalty, metrics = algo.conservative_penalty(_term([0.4, -1.2]))  # type: ignore[arg-type]
        torch.testing.assert_close(penalty, torch.tensor([0.4, -1.2]) * weight)
        assert metrics == {}


@pytest.mark.parametrize(("gap_target", "direction"), [(-1000.0, 1.0), (1000.0, -1.0)])
def test_lagrange_multiplier_steps_against_the_gap_violation(gap_target: float, direction: float) -> None:
    """α' = exp(log α') starts at 1; log α' ascends ½ Σ_j α' (w R_j − τ): Adam's first step moves it by lr in the sign
    of the violation. The critics see α' before the step."""
    algo = _cql(weight=2.0, lagrange=True, target_action_gap=gap_target, lagrange_lr=0.01)
    penalty, metrics = algo.conservative_penalty(_term([0.5, 1.5]))  # type: ignore[arg-type]
    violation = torch.tensor([1.0, 3.0]) - gap_target
    torch.testing.assert_close(penalty, violation)  # α' = 1 (before the step) times w R_j − τ
    torch.testing.assert_close(metrics["loss/cql_alpha"], -0.5 * violation.sum())
    torch.testing.assert_close(metrics["cql_alpha"], torch.tensor(1.0))
    torch.testing.assert_close(algo.cql_log_alpha.detach(), torch.tensor(0.01 * direction))
    assert penalty.requires_grad  # through R_j into the critics; α' itself is held fixed there


def test_lagrange_multiplier_is_clamped_at_a_million() -> None:
    algo = _cql(lagrange=True, target_action_gap=0.0)
    with torch.no_grad():
        algo.cql_log_alpha.fill_(20.0)  # exp(20) ≈ 4.9e8
    penalty, metrics = algo.conservative_penalty(_term([1.0]))  # type: ignore[arg-type]
    torch.testing.assert_close(metrics["cql_alpha"], torch.tensor(1e6))
    torch.testing.assert_close(penalty, torch.tensor([5e6]))
    assert float(algo.cql_log_alpha.detach()) == 20.0  # the clamp passes no gradient: Adam's step is zero


# ---------------------------------------------------------------------------------------------------- the update
def _batch(n: int = 16, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, 3, generator=gen),
        act=torch.rand(n, 2, generator=gen) * 1.8 - 0.9,
        rew=torch.randn(n, generator=gen),
        next_obs=torch.randn(n, 3, generator=gen),
        done=(torch.rand(n, generator=gen) < 0.3).float(),
    )


def test_update_adds_the_weighted_term_to_each_critics_td_loss() -> None:
    algo = _cql(obs_dim=3, act_dim=2, num_actions=3)
    metrics = algo.update(_batch())
    torch.testing.assert_close(metrics["loss/critic"], metrics["loss/td"] + metrics["cql/term"])
    torch.testing.assert_close(metrics["cql/term"], 5.0 * metrics["cql/q_gap"])
    torch.testing.assert_close(metrics["cql/q_gap"], metrics["cql/q_pushed_down"] - metrics["q_mean"])
    assert "cql_alpha" not in metrics and int(algo.num_updates) == 1
    assert all(value.grad_fn is None and value.dim() == 0 for value in metrics.values())


def test_bc_warmup_switches_the_actor_loss_after_bc_steps() -> None:
    """During the first `bc_steps` updates the actor regresses log π(a|s) and ignores the critics: two copies with
    different critics take the same actor step. Afterwards the critics steer it."""
    algo = _cql(obs_dim=3, act_dim=2, num_actions=2, bc_steps=2)
    other = copy.deepcopy(algo)
    with torch.no_grad():
        for p in other.critics.parameters():
            p.mul_(3.0)
    batch = _batch()
    action, log_prob = algo.actor(batch.obs)
    expected = (algo.alpha * log_prob.squeeze(-1) - algo.actor.log_prob(batch.obs, batch.act)).mean()
    torch.testing.assert_close(algo.actor_loss(batch, action, log_prob.squeeze(-1)), expected)
    for step in range(3):
        assert algo.in_warmup() == (step < 2)
        torch.manual_seed(step)
        algo.update(_batch(seed=step))
        torch.manual_seed(step)
        other.update(_batch(seed=step))
        same = all(torch.equal(a, b) for a, b in zip(algo.actor.parameters(), other.actor.parameters()))
        assert same == (step < 2), step
    q_pi = algo.critics(batch.obs, action).amin(0)
    torch.testing.assert_close(
        algo.actor_loss(batch, action, log_prob.squeeze(-1)), (algo.alpha * log_prob.squeeze(-1) - q_pi).mean()
    )
    assert not _cql().in_warmup()  # KIT's default: no warm-up


def test_deterministic_soft_and_max_backups() -> None:
    next_obs = torch.randn(6, 3)
    algo = _cql(obs_dim=3, act_dim=2)
    torch.manual_seed(1)
    value = algo.next_value(next_obs)
    torch.manual_seed(1)
    with torch.no_grad():
        action, log_prob = algo.actor(next_obs)
        q = algo.target_critics(next_obs, action).amin(0)
    torch.testing.assert_close(value, q)  # deterministic backup: no entropy term
    soft = _cql(obs_dim=3, act_dim=2, deterministic_backup=False)
    torch.manual_seed(1)
    torch.testing.assert_close(soft.next_value(next_obs), q - soft.alpha * log_prob.squeeze(-1))
    greedy = _cql(obs_dim=3, act_dim=2, max_q_backup=True, num_actions=4)
    torch.manual_seed(2)
    value = greedy.next_value(next_obs)
    torch.manual_seed(2)
    with torch.no_grad():
        repeated = next_obs.repeat_interleave(4, 0)
        q_all = greedy.target_critics(repeated, greedy.actor(repeated)[0]).view(2, 6, 4)
    torch.testing.assert_close(value, q_all.amax(-1).amin(0))  # max over draws per critic, then min over critics


def test_lagrange_update_logs_the_multiplier_and_round_trips() -> None:
    algo = _cql(obs_dim=3, act_dim=2, num_actions=2, lagrange=True, bc_steps=1)
    metrics = algo.update(_batch())
    assert {"loss/cql_alpha", "cql_alpha"} <= set(metrics)
    assert float(algo.cql_log_alpha.detach()) != 0.0
    state = copy.deepcopy(algo.training_state())
    assert set(state) == {"modules", "actor_optim", "critic_optim", "alpha_optim", "cql_alpha_optim"}
    restored = _cql(obs_dim=3, act_dim=2, num_actions=2, lagrange=True, bc_steps=1, seed=9)
    restored.load_training_state(state)
    for algorithm in (algo, restored):
        torch.manual_seed(4)
        algorithm.update(_batch(seed=1))
    for (name, a), b in zip(algo.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name
