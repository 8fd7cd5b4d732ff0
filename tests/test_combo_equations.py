"""COMBO's update (docs/combo.md#equations-as-implemented) on inputs small enough to check by hand: which rows of a
mixed batch the regulariser pushes Q down at and up on under every `push_down` / `push_up` choice, with injected
draws and linear critics; Q of the dataset and model rows as logged; and three updates against a transcription of
OfflineRL-Kit's COMBOPolicy.learn for both of its --rho-s choices."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from conftest import random_batch
from torch import nn

from algos.combo import COMBO, COMBOConfig
from algos.cql import CQLDraws, CQLTermConfig
from buffers.replay import Batch
from config import SACConfig

LOG2 = math.log(2.0)


def _combo(obs_dim: int = 1, act_dim: int = 1, seed: int = 0, push_down: str = "mix", push_up: str = "batch",
           **cql: Any) -> COMBO:  # fmt: skip
    torch.manual_seed(seed)
    sac = SACConfig(hidden_dims=[16, 16], alpha_max=None, lr_schedule="none")
    term = dict(vars(COMBOConfig().cql)) | cql
    return COMBO(
        obs_dim, act_dim, COMBOConfig(sac=sac, cql=CQLTermConfig(**term), push_down=push_down, push_up=push_up)
    )


class LinearCritics(nn.Module):
    """Q_j(s, a) = w_j · [s, a] for known weights, [critics, B] like CriticEnsemble."""

    def __init__(self, weights: list[list[float]]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weights))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return (torch.cat([obs, act], -1) @ self.weight.T).movedim(-1, -2)


def lse(*values: float) -> float:
    return math.log(sum(math.exp(v) for v in values))


# A mixed batch of 4 rows (s, a, s'): the first two from the dataset, the last two from model rollouts.
ROWS = [(1.0, 0.5, 2.0), (-1.0, -0.5, 0.0), (3.0, 0.25, 4.0), (-2.0, 1.0, -3.0)]
NUM_REAL = 2
BATCH = Batch(
    obs=torch.tensor([[s] for s, _, _ in ROWS]),
    act=torch.tensor([[a] for _, a, _ in ROWS]),
    rew=torch.zeros(4),
    next_obs=torch.tensor([[n] for _, _, n in ROWS]),
    done=torch.zeros(4),
)
# Q_1 = s + 2a, Q_2 = -a. One draw per source at every pushed-down state (n = 1): uniform u = 0.5, π(·|s) gives 0.2
# with log-density -0.1, π(·|s') gives -0.6 with log-density 0.
CRITICS = ([1.0, 2.0], [0.0, -1.0])
U, A, LP, A_NEXT, LP_NEXT = 0.5, 0.2, -0.1, -0.6, 0.0


def q(j: int, s: float, a: float) -> float:
    return CRITICS[j][0] * s + CRITICS[j][1] * a


def pushed_down(j: int, states: list[float]) -> float:
    """T · mean_s logsumexp of the three importance-weighted values (T = 1, n = 1: both logsumexp readings agree)."""
    return sum(lse(q(j, s, U) + LOG2, q(j, s, A) - LP, q(j, s, A_NEXT) - LP_NEXT) for s in states) / len(states)


def pushed_up(j: int, rows: list[tuple[float, float, float]]) -> float:
    return sum(q(j, s, a) for s, a, _ in rows) / len(rows)


@pytest.mark.parametrize(
    ("push_down", "push_up", "down_rows", "up_rows"),
    [
        ("mix", "batch", [0, 1, 2, 3], [0, 1, 2, 3]),  # KIT as run: every state down, every row up
        ("model", "batch", [2, 3], [0, 1, 2, 3]),  # KIT --rho-s model: up is still the mixed batch's q1
        ("model", "data", [2, 3], [0, 1]),  # the paper: model states down, dataset rows up
        ("mix", "data", [0, 1, 2, 3], [0, 1]),
    ],
)
def test_regulariser_rows_by_hand(
    push_down: str, push_up: str, down_rows: list[int], up_rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    algo = _combo(push_down=push_down, push_up=push_up, num_actions=1)
    algo.critics = LinearCritics([list(w) for w in CRITICS])
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def injected(obs: torch.Tensor, next_obs: torch.Tensor) -> CQLDraws:
        seen.append((obs.clone(), next_obs.clone()))
        n = obs.shape[0]
        return CQLDraws(
            random=torch.full((n, 1, 1), U),
            policy=torch.full((n, 1, 1), A),
            policy_log_prob=torch.full((n, 1), LP),
            next_policy=torch.full((n, 1, 1), A_NEXT),
            next_policy_log_prob=torch.full((n, 1), LP_NEXT),
        )

    monkeypatch.setattr(algo, "draw_actions", injected)
    _, metrics = algo.critic_loss(BATCH, NUM_REAL)

    (obs, next_obs), = seen  # fmt: skip
    assert obs[:, 0].tolist() == [ROWS[i][0] for i in down_rows]  # the states pushed down at
    assert next_obs[:, 0].tolist() == [ROWS[i][2] for i in down_rows]  # their next states, for the π(·|s') draws
    states = [ROWS[i][0] for i in down_rows]
    ups = [ROWS[i] for i in up_rows]
    down = [pushed_down(j, states) for j in (0, 1)]
    gap = [down[j] - pushed_up(j, ups) for j in (0, 1)]
    torch.testing.assert_close(metrics["cql/q_pushed_down"], torch.tensor(sum(down) / 2))
    torch.testing.assert_close(metrics["cql/q_gap"], torch.tensor(sum(gap) / 2))
    torch.testing.assert_close(metrics["cql/term"], torch.tensor(5.0 * sum(gap) / 2))  # β = cql.weight = 5
    # Q of the dataset rows and of the model rows, as logged, whatever the choice.
    data_q = sum(q(j, s, a) for j in (0, 1) for s, a, _ in ROWS[:2]) / 4
    model_q = sum(q(j, s, a) for j in (0, 1) for s, a, _ in ROWS[2:]) / 4
    torch.testing.assert_close(metrics["combo/q_data"], torch.tensor(data_q))
    torch.testing.assert_close(metrics["combo/q_model"], torch.tensor(model_q))


def test_a_choice_without_its_rows_is_refused() -> None:
    """The trainer rolls out before the first update, so every batch has model rows; called without, it says so."""
    algo = _combo(push_down="model", num_actions=1)
    with pytest.raises(ValueError, match="no rows to push down at: 4 dataset rows of 4"):
        algo.critic_loss(BATCH, 4)
    with pytest.raises(ValueError, match="no rows to push up on: 0 dataset rows of 4"):
        _combo(push_up="data", num_actions=1).critic_loss(BATCH, 0)


def test_no_reward_penalty() -> None:
    """COMBO asks the model for no uncertainty and stores its reward as it is (tests/test_rollout.py runs a rollout)."""
    algo = _combo()
    assert algo.rollout_uncertainty is None
    reward = torch.tensor([1.0, -2.0])
    assert algo.model_reward(reward, {"uncertainty": torch.tensor([5.0, 5.0])}) is reward
    assert not hasattr(COMBOConfig(), "penalty_coef")


# ---------------------------------------------------------------------------------------------------- against KIT
def _kit_combo_learn(m: COMBO, optims: dict[str, torch.optim.Optimizer], real: Batch, fake: Batch, rho_s: str) -> None:
    """COMBOPolicy.learn (yihaosun1124/OfflineRL-Kit offlinerlkit/policy/model_based/combo.py l. 110-219 at e3afa21)
    transcribed onto this project's modules, deterministic backup, no Lagrange, no max backup. critic1 and critic2
    are the rows of the batched critics; their two Adams are one here (Adam is elementwise and critic j's loss
    reaches only critic j)."""
    mix = Batch.cat(real, fake)  # l. 111-116
    obss, actions, next_obss = mix.obs, mix.act, mix.next_obs
    a, log_probs = m.actor(obss)  # l. 119-124: the actor first, with α before its step
    log_probs = log_probs.squeeze(-1)
    m.critics.requires_grad_(False)
    actor_loss = (m.alpha * log_probs - m.critics(obss, a).amin(0)).mean()
    optims["actor"].zero_grad()
    actor_loss.backward()
    optims["actor"].step()
    m.critics.requires_grad_(True)
    alpha_loss = -(m.log_alpha * (log_probs.detach() + m.target_entropy)).mean()  # l. 126-132
    optims["alpha"].zero_grad()
    alpha_loss.backward()
    optims["alpha"].step()
    with torch.no_grad():
        m.alpha.copy_(m.log_alpha.exp())
        next_actions, _ = m.actor(next_obss)  # l. 148-154, with the actor after its step
        next_q = m.target_critics(next_obss, next_actions).amin(0)
    target_q = mix.rew + m.cfg.gamma * (1 - mix.done) * next_q  # l. 158
    q = m.critics(obss, actions)  # l. 159: [q1; q2] of the MIXED batch
    critic_loss = (q - target_q).square().mean(-1)  # l. 160-161
    if rho_s == "model":  # l. 164-166
        obss, actions, next_obss = fake.obs, fake.act, fake.next_obs
    n, rows = m.cql.num_actions, obss.shape[0]
    random_actions = torch.empty(rows * n, actions.shape[-1]).uniform_(-1.0, 1.0)  # l. 169-171
    tmp_obss, tmp_next_obss = obss.repeat_interleave(n, 0), next_obss.repeat_interleave(n, 0)  # l. 173-178
    with torch.no_grad():  # calc_pi_values (cql.py): actions with log-densities detached; no effect on the critics
        pi, pi_lp = m.actor(tmp_obss)  # l. 180
        next_pi, next_pi_lp = m.actor(tmp_next_obss)  # l. 181
    obs_pi_value = m.critics(tmp_obss, pi) - pi_lp.squeeze(-1)  # [2, rows·n]
    next_obs_pi_value = m.critics(tmp_obss, next_pi) - next_pi_lp.squeeze(-1)  # valued at obs (l. 181)
    random_value = m.critics(tmp_obss, random_actions) - math.log(0.5 ** actions.shape[-1])  # l. 182
    # l. 184-192: the reshape's result is discarded, so cat(..., 1) of three [rows·n, 1] tensors is [rows·n, 3]
    cat_q = torch.stack([obs_pi_value, next_obs_pi_value, random_value], -1)  # [2, rows·n, 3]
    temperature, weight = m.cql.temperature, m.cql.weight
    conservative = torch.logsumexp(cat_q / temperature, -1).mean(-1) * weight * temperature - q.mean(-1) * weight
    critic_loss = critic_loss + conservative  # l. 194-212; q.mean() over the mixed batch whatever rho_s
    optims["critic"].zero_grad()  # l. 215-221
    critic_loss.sum().backward()
    optims["critic"].step()
    with torch.no_grad():  # _sync_weight
        for target, source in zip(m.target_critics.parameters(), m.critics.parameters()):
            target.mul_(1 - m.cfg.tau).add_(source, alpha=m.cfg.tau)


def _mixed(seed: int, num_real: int = 6, num_fake: int = 6) -> tuple[Batch, Batch]:
    gen = torch.Generator().manual_seed(seed)

    return random_batch(num_real, act_bound=0.9, generator=gen), random_batch(num_fake, act_bound=0.9, generator=gen)


@pytest.mark.parametrize("rho_s", ["mix", "model"])
def test_update_matches_a_transcription_of_kits_combo_learn(rho_s: str) -> None:
    """Three updates on mixed batches (dataset rows first), on the same random stream: every weight, the target
    critics and α as the transcription's. `push_down=mix|model` is KIT's --rho-s; push_up=batch is KIT's only."""
    algo = _combo(obs_dim=3, act_dim=2, push_down=rho_s, num_actions=3)
    assert algo.cql.update_order == "actor_first" and algo.cql.logsumexp == "per_draw" and algo.push_up == "batch"
    oracle = copy.deepcopy(algo)
    optims = {
        "actor": torch.optim.Adam(oracle.actor.parameters(), lr=oracle.cfg.actor_lr),
        "alpha": torch.optim.Adam([oracle.log_alpha], lr=oracle.cfg.alpha_lr),
        "critic": torch.optim.Adam(oracle.critics.parameters(), lr=oracle.cfg.critic_lr),
    }
    for step in range(3):
        real, fake = _mixed(step)
        torch.manual_seed(200 + step)
        algo.update(Batch.cat(real, fake), num_real=len(real.obs))
        torch.manual_seed(200 + step)
        _kit_combo_learn(oracle, optims, real, fake, rho_s)
    for (name, ours), theirs in zip(algo.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
    for ours, theirs in zip(algo.target_critics.parameters(), oracle.target_critics.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(algo.alpha, oracle.alpha)
