"""CQL's equations (docs/cql.md#equations-as-implemented) on inputs small enough to check by hand: the regulariser's
logsumexp with importance weights on injected draws and linear critics, both logsumexp readings, the min-Q weight, the
Lagrange multiplier's step, the behaviour-cloning warm-up, the backups, one batched critic call, and both update orders:
the authors' (against a transcription of their train_from_torch) and OfflineRL-Kit's."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import random_batch
from torch import nn

from algos.cql import CQL, UPDATE_ORDERS, CQLConfig, CQLDraws, CQLTermConfig, cql_logsumexp
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
    algo = _cql(num_actions=2, logsumexp="per_draw")
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
    algo = _cql(num_actions=2, logsumexp="per_draw")
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
    return random_batch(n, seed, act_bound=0.9)  # actions inside (-1, 1): finite tanh log-densities


@pytest.mark.parametrize("order", UPDATE_ORDERS)
def test_update_adds_the_weighted_term_to_each_critics_td_loss(order: str) -> None:
    algo = _cql(obs_dim=3, act_dim=2, num_actions=3, update_order=order)
    metrics = algo.update(_batch())
    torch.testing.assert_close(metrics["loss/critic"], metrics["loss/td"] + metrics["cql/term"])
    torch.testing.assert_close(metrics["cql/term"], 5.0 * metrics["cql/q_gap"])
    torch.testing.assert_close(metrics["cql/q_gap"], metrics["cql/q_pushed_down"] - metrics["q_mean"])
    assert "cql_alpha" not in metrics and int(algo.num_updates) == 1
    assert all(value.grad_fn is None and value.dim() == 0 for value in metrics.values())


@pytest.mark.parametrize("order", UPDATE_ORDERS)
def test_bc_warmup_switches_the_actor_loss_after_bc_steps(order: str) -> None:
    """During the first `bc_steps` updates the actor regresses log π(a|s) and ignores the critics: two copies with
    different critics take the same actor step. Afterwards the critics steer it."""
    algo = _cql(obs_dim=3, act_dim=2, num_actions=2, bc_steps=2, update_order=order)
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
    assert _cql().in_warmup() and CQLTermConfig().bc_steps == 39_999  # the authors' policy_eval_start=40000
    assert not _cql(bc_steps=0).in_warmup()  # KIT: no warm-up


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


@pytest.mark.parametrize("order", UPDATE_ORDERS)
def test_lagrange_update_logs_the_multiplier_and_round_trips(order: str) -> None:
    algo = _cql(obs_dim=3, act_dim=2, num_actions=2, lagrange=True, bc_steps=1, update_order=order)
    metrics = algo.update(_batch())
    assert {"loss/cql_alpha", "cql_alpha"} <= set(metrics)
    assert float(algo.cql_log_alpha.detach()) != 0.0
    state = copy.deepcopy(algo.training_state())
    assert set(state) == {"modules", "actor_optim", "critic_optim", "alpha_optim", "cql_alpha_optim"}
    restored = _cql(obs_dim=3, act_dim=2, num_actions=2, lagrange=True, bc_steps=1, update_order=order, seed=9)
    restored.load_training_state(state)
    for algorithm in (algo, restored):
        torch.manual_seed(4)
        algorithm.update(_batch(seed=1))
    for (name, a), b in zip(algo.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------------------------------- update orders
def _params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("order", UPDATE_ORDERS)
def test_which_actor_and_alpha_each_step_sees(order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The authors' order: the critic target's a' and the regulariser's policy draws come from the actor before its
    step, and the actor's loss takes α after its step. KIT's (actor_first): both draws from the updated actor, and
    the actor's loss the α from before. Spies record the actor's weights and α at each call."""
    algo = _cql(obs_dim=3, act_dim=2, num_actions=2, bc_steps=0, update_order=order)
    with torch.no_grad():
        algo.log_alpha.fill_(-1.0)  # α = e^-1, far from where one Adam step of lr 1e-4 takes it
        algo.alpha.copy_(algo.log_alpha.exp())
    before_actor, before_alpha = _params(algo.actor), float(algo.alpha)
    seen: dict[str, object] = {}
    draw_actions, next_value, actor_loss = algo.draw_actions, algo.next_value, algo.actor_loss

    def spy_draws(obs: torch.Tensor, next_obs: torch.Tensor) -> CQLDraws:
        seen["draws"] = _params(algo.actor)
        return draw_actions(obs, next_obs)

    def spy_next_value(next_obs: torch.Tensor) -> torch.Tensor:
        seen["target"] = _params(algo.actor)
        return next_value(next_obs)

    def spy_actor_loss(batch: Batch, action: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        seen["alpha"] = float(algo.alpha)
        return actor_loss(batch, action, log_prob)

    monkeypatch.setattr(algo, "draw_actions", spy_draws)
    monkeypatch.setattr(algo, "next_value", spy_next_value)
    monkeypatch.setattr(algo, "actor_loss", spy_actor_loss)
    algo.update(_batch())
    after_actor, after_alpha = _params(algo.actor), float(algo.alpha)
    assert not _same(before_actor, after_actor) and before_alpha != after_alpha
    if order == "authors":
        assert _same(seen["draws"], before_actor) and _same(seen["target"], before_actor)  # type: ignore[arg-type]
        assert seen["alpha"] == after_alpha
    else:
        assert _same(seen["draws"], after_actor) and _same(seen["target"], after_actor)  # type: ignore[arg-type]
        assert seen["alpha"] == before_alpha


def _authors_train_from_torch(
    m: CQL, optims: dict[str, torch.optim.Optimizer], batch: Batch, counter: int, policy_eval_start: int
) -> int:
    """cql.py train_from_torch (aviralkumar2907/CQL d4rl/rlkit/torch/sac/cql.py l. 149-310 at 0787a29) transcribed
    onto this project's modules, min_q_version 3, deterministic backup, no Lagrange. qf1 and qf2 are the two rows of
    the batched critics; their two Adams are one here (Adam is elementwise, and qf_j's loss reaches only qf_j). Not
    transcribed: the unused draw of l. 203 (it only advances the random stream). Returns the counter."""
    counter += 1  # l. 150
    obs, actions, next_obs, n, cfg = batch.obs, batch.act, batch.next_obs, m.cql.num_actions, m.cfg
    new_obs_actions, log_pi = m.actor(obs)  # l. 160-162
    log_pi = log_pi.squeeze(-1)
    alpha_loss = -(m.log_alpha * (log_pi + m.target_entropy).detach()).mean()  # l. 165-169
    optims["alpha"].zero_grad()
    alpha_loss.backward()
    optims["alpha"].step()
    alpha = m.log_alpha.exp()
    q_new_actions = m.critics(obs, new_obs_actions).amin(0)  # l. 177-180
    policy_loss = (alpha * log_pi - q_new_actions).mean()  # l. 182
    if counter < policy_eval_start:  # l. 184-191
        policy_loss = (alpha * log_pi - m.actor.log_prob(obs, actions)).mean()
    q_pred = m.critics(obs, actions)  # l. 196-198, [qf1; qf2]
    with torch.no_grad():  # l. 200-227
        new_next_actions, _ = m.actor(next_obs)
        q_target = batch.rew + (1.0 - batch.done) * cfg.gamma * m.target_critics(next_obs, new_next_actions).amin(0)
    qf_loss = (q_pred - q_target).square().mean(-1)  # l. 229-231
    rows = obs.shape[0]
    random_actions = torch.empty(rows * n, actions.shape[-1]).uniform_(-1, 1)  # l. 234
    with torch.no_grad():  # _get_policy_actions: detached (l. 139-147)
        curr_actions, curr_log_pis = m.actor(obs.repeat_interleave(n, 0))  # l. 235
        next_actions, next_log_pis = m.actor(next_obs.repeat_interleave(n, 0))  # l. 236
    obs_rep = obs.repeat_interleave(n, 0)  # _get_tensor_values (l. 130-137)
    q_rand = m.critics(obs_rep, random_actions).view(2, rows, n)  # l. 237-242
    q_curr = m.critics(obs_rep, curr_actions).view(2, rows, n)
    q_next = m.critics(obs_rep, next_actions).view(2, rows, n)
    random_density = math.log(0.5 ** actions.shape[-1])  # l. 255
    cat_q = torch.cat(  # l. 256-261: [rand, next, curr], 3n per state
        [q_rand - random_density, q_next - next_log_pis.view(rows, n), q_curr - curr_log_pis.view(rows, n)], -1
    )
    temp, weight = m.cql.temperature, m.cql.weight
    min_qf_loss = torch.logsumexp(cat_q / temp, -1).mean(-1) * weight * temp  # l. 263-264
    min_qf_loss = min_qf_loss - q_pred.mean(-1) * weight  # l. 267-268
    qf_loss = qf_loss + min_qf_loss  # l. 280-281
    optims["policy"].zero_grad()  # l. 286-289
    policy_loss.backward()
    optims["policy"].step()
    optims["qf"].zero_grad()  # l. 292-300
    qf_loss.sum().backward()
    optims["qf"].step()
    with torch.no_grad():  # l. 305-310
        for target, source in zip(m.target_critics.parameters(), m.critics.parameters()):
            target.mul_(1 - cfg.tau).add_(source, alpha=cfg.tau)
    return counter


def test_authors_order_matches_a_transcription_of_their_train_from_torch() -> None:
    """Four updates with the warm-up ending after the second (bc_steps=2 is their policy_eval_start=3: the counter is
    incremented before `counter < policy_eval_start`), on the same random stream: every weight, the target critics
    and log α as the transcription's."""
    algo = _cql(obs_dim=3, act_dim=2, num_actions=3, bc_steps=2)
    assert algo.cql.update_order == "authors" and algo.cql.logsumexp == "per_state"
    oracle = copy.deepcopy(algo)
    optims = {
        "alpha": torch.optim.Adam([oracle.log_alpha], lr=oracle.cfg.alpha_lr),
        "policy": torch.optim.Adam(oracle.actor.parameters(), lr=oracle.cfg.actor_lr),
        "qf": torch.optim.Adam(oracle.critics.parameters(), lr=oracle.cfg.critic_lr),
    }
    counter = 0
    for step in range(4):
        batch = _batch(seed=step)
        torch.manual_seed(100 + step)
        algo.update(batch)
        torch.manual_seed(100 + step)
        counter = _authors_train_from_torch(oracle, optims, batch, counter, policy_eval_start=3)
    for (name, ours), theirs in zip(algo.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
    for ours, theirs in zip(algo.target_critics.parameters(), oracle.target_critics.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(algo.alpha, oracle.log_alpha.detach().exp())
