"""MICRO's equations (algos/micro.py, models/dynamics.py) against numbers computed by hand in the test.

tests/test_micro.py checks shapes and directions; these pin the values: which members make the uncertainty set, the
`+ obs` residual and σ = exp(½ log σ²) of its samples, u = mean_m q_m − min_m q_m, and the size of the change to the
target, y = max(r + γ(1 − d)[V(s') − β u], 0) with u = 0 on dataset rows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from algos import build_algorithm
from algos.micro import MICRO, sample_next_obs
from buffers.replay import Batch
from config import load_config
from models.dynamics import EnsembleDynamics

TASK = "hopper-random-gen"
OBS_DIM, ACT_DIM = 2, 1
NUM_MEMBERS, MEMBERS = 4, (3, 1)  # the elites are members 3 and 1 of 4: neither the first two nor all
# Member m predicts Δs = (10 m, −m), reward 0.5 m, and raw log-variances (−1 − 0.5 m, −3 + 0.5 m, 0).
DELTA = [(10.0 * m, -float(m)) for m in range(NUM_MEMBERS)]
RAW_LOGVAR = [(-1.0 - 0.5 * m, -3.0 + 0.5 * m, 0.0) for m in range(NUM_MEMBERS)]


def _config(*overrides: str):
    return load_config(
        "micro",
        TASK,
        overrides=[
            "sac.hidden_dims=[8]",
            f"dynamics.num_ensemble={NUM_MEMBERS}",
            f"dynamics.num_elites={len(MEMBERS)}",
            "dynamics.hidden_dims=[4]",
            "dynamics.weight_decay=[0,0]",
            "dynamics.max_logvar_init=0.5",
            "dynamics.min_logvar_init=-10",
            *overrides,
        ],
    )


def _hand_set_dynamics() -> EnsembleDynamics:
    """All weights zero, so every member outputs its output-layer bias whatever (s, a): known means and variances."""
    cfg = _config()
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics)
    with torch.no_grad():
        for layer in model.net.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        for m in range(NUM_MEMBERS):
            model.net.output.bias[m, 0] = torch.tensor([*DELTA[m], 0.5 * m, *RAW_LOGVAR[m]])
        model.elites.copy_(torch.tensor(MEMBERS))
    return model


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _std(member: int, dim: int) -> float:
    """σ = exp(½ log σ²) after the model's soft clamp of log σ² into [min_logvar, max_logvar] = [−10, 0.5]."""
    logvar = 0.5 - _softplus(0.5 - RAW_LOGVAR[member][dim])
    logvar = -10.0 + _softplus(logvar + 10.0)
    return math.exp(0.5 * logvar)


OBS = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.25, -1.0]])
ACT = torch.tensor([[0.1], [-0.2], [0.3]])


def _hand_uncertainty_set(eps: torch.Tensor) -> torch.Tensor:
    """ŝ'_{e,k,b} = s_b + Δs_{m(e)} + σ_{m(e)} ε_{e,k,b}, written out element by element."""
    elites, samples, rows, dims = eps.shape
    expected = torch.empty(elites, samples, rows, dims)
    for e, m in enumerate(MEMBERS):
        for k in range(samples):
            for b in range(rows):
                for d in range(dims):
                    expected[e, k, b, d] = OBS[b, d] + DELTA[m][d] + _std(m, d) * eps[e, k, b, d]
    return expected


def test_uncertainty_set_is_elite_means_plus_obs_plus_sampled_std() -> None:
    model = _hand_set_dynamics()
    torch.manual_seed(11)
    states = sample_next_obs(model, OBS, ACT, 3)
    torch.manual_seed(11)
    eps = torch.randn(len(MEMBERS), 3, len(OBS), OBS_DIM)
    assert_close(states, _hand_uncertainty_set(eps))


def test_deterministic_model_gives_each_elite_mean_next_state() -> None:
    cfg = _config("dynamics.loss=mse")
    model = EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics)
    with torch.no_grad():
        for layer in model.net.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        for m in range(NUM_MEMBERS):
            model.net.output.bias[m, 0] = torch.tensor([*DELTA[m], 0.5 * m])
        model.elites.copy_(torch.tensor(MEMBERS))
    states = sample_next_obs(model, OBS, ACT, 2)
    assert_close(states, _hand_uncertainty_set(torch.zeros(len(MEMBERS), 2, len(OBS), OBS_DIM)))


class LinearCritics(nn.Module):
    """Two critics Q_0(s, a) = s[0], Q_1(s, a) = s[0] + 1: min_j Q_j(s, a) = s[0] whatever the action."""

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return torch.stack([obs[..., 0], obs[..., 0] + 1.0])


class FixedActor(nn.Module):
    """Action 0 with log π = −1 for every state; draws no random numbers."""

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return obs.new_zeros(*obs.shape[:-1], ACT_DIM), obs.new_full((*obs.shape[:-1], 1), -1.0)


def _micro(*overrides: str, dynamics: object) -> MICRO:
    cfg = _config("sac.gamma=0.9", "deterministic_backup=false", "max_q_backup=false", *overrides)
    algo = build_algorithm(cfg, OBS_DIM, ACT_DIM, "cpu", dynamics)
    assert isinstance(algo, MICRO)
    algo.target_critics = LinearCritics()
    algo.actor = FixedActor()
    algo.alpha.fill_(0.2)
    return algo


def test_spread_over_the_model_uncertainty_set_by_hand() -> None:
    """u(s, a) = mean_m q_m − min_m q_m, q_m = mean_k min_j Q̄_j(ŝ'_{m,k}, π(ŝ')), through the real sample_next_obs."""
    algo = _micro("num_samples=3", dynamics=_hand_set_dynamics())
    torch.manual_seed(5)
    spread = algo.value_spread(OBS, ACT)
    torch.manual_seed(5)
    eps = torch.randn(len(MEMBERS), 3, len(OBS), OBS_DIM)
    expected = []
    for b in range(len(OBS)):
        # q_{e,k} = ŝ'_{e,k}[0] = s_b[0] + 10 m(e) + σ_{m(e),0} ε_{e,k,b,0}; no entropy term on the set.
        q = [
            sum(float(OBS[b, 0]) + DELTA[m][0] + _std(m, 0) * float(eps[e, k, b, 0]) for k in range(3)) / 3
            for e, m in enumerate(MEMBERS)
        ]
        expected.append(sum(q) / len(q) - min(q))
    assert_close(spread, torch.tensor(expected))


# Six transitions, the first two from the dataset: (reward, done, s'[0]); obs[:, 0] is the row id.
REWARD = [1.0, -3.0, 0.5, 0.7, -1.0, 2.0]
DONE = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
NEXT_OBS_0 = [2.0, 0.5, 3.0, 1.0, 1.0, 0.3]
NUM_REAL = 2
# Per row: the value q_m of each of three members on its uncertainty set. Dataset rows get a wide spread (u = 50)
# that must not reach their targets.
MEMBER_VALUES = [
    (0.0, 50.0, 100.0),
    (0.0, 50.0, 100.0),
    (1.0, 2.0, 6.0),
    (0.0, 3.0, 9.0),
    (0.0, 3.0, 9.0),
    (1.0, 2.0, 6.0),
]
SPREAD = [2.0, 4.0, 4.0, 2.0]  # mean − min of MEMBER_VALUES on the model rows: 3 − 1, 4 − 0, 4 − 0, 3 − 1


def _micro_batch() -> Batch:
    rows = len(REWARD)
    obs = torch.stack([torch.arange(rows, dtype=torch.float32), torch.zeros(rows)], 1)
    next_obs = torch.stack([torch.tensor(NEXT_OBS_0), torch.zeros(rows)], 1)
    act = torch.linspace(-0.5, 0.5, rows).unsqueeze(1)
    return Batch(obs, act, torch.tensor(REWARD), next_obs, torch.tensor(DONE))


class ScriptedUncertaintySet:
    """sample_next_obs for rows identified by obs[:, 0]: member m's K = 2 samples sit at q_m ∓ (m + 1), so their
    mean is q_m (the min over samples, or a single sample, would give another spread). Records its inputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def __call__(self, obs: torch.Tensor, act: torch.Tensor, num_samples: int) -> torch.Tensor:
        self.calls.append((obs.clone(), act.clone(), num_samples))
        states = torch.zeros(3, num_samples, len(obs), OBS_DIM)
        for b, row in enumerate(obs[:, 0].long().tolist()):
            for m, value in enumerate(MEMBER_VALUES[row]):
                states[m, 0, b, 0] = value - (m + 1)
                states[m, 1, b, 0] = value + (m + 1)
        return states


@pytest.mark.parametrize("clamp", [True, False])
def test_critic_target_subtracts_gamma_beta_spread_on_model_rows_only(clamp: bool) -> None:
    uncertainty_set = ScriptedUncertaintySet()
    algo = _micro("penalty_coef=0.5", "num_samples=2", f"clamp_target={str(clamp).lower()}", dynamics=None)
    algo.sample_next_obs = uncertainty_set
    batch = _micro_batch()

    target, metrics = algo.critic_target(batch, NUM_REAL)

    # V(s') = min_j Q̄_j(s', a') − α log π(a'|s') = s'[0] + 0.2;  y = r + γ (1 − d) [V(s') − β u],  γ = 0.9, β = 0.5.
    expected = [
        1.0 + 0.9 * 2.2,  # dataset row: u = 0 despite its wide set          2.98
        -3.0 + 0.9 * 0.7,  # dataset row, negative                           -2.37
        0.5 + 0.9 * (3.2 - 0.5 * 2.0),  # model row, u = 2                    2.48
        0.7,  # model row that terminated: y = r whatever u                   0.70
        -1.0 + 0.9 * (1.2 - 0.5 * 4.0),  # model row, u = 4                  -1.72
        2.0 + 0.9 * (0.5 - 0.5 * 2.0),  # model row, V − βu < 0 is kept       1.55
    ]
    if clamp:
        expected = [max(y, 0.0) for y in expected]
    assert_close(target, torch.tensor(expected))
    assert float(metrics["penalty"]) == pytest.approx(sum(SPREAD) / len(SPREAD))
    (call,) = uncertainty_set.calls  # the model is asked about the model rows only, with K samples each
    assert_close(call[0], batch.obs[NUM_REAL:])
    assert_close(call[1], batch.act[NUM_REAL:])
    assert call[2] == 2
