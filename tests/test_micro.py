"""MICRO's conservative Bellman operator (docs/micro.md#equations-as-implemented) on tiny networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from algos import build_algorithm
from algos.micro import MICRO, MICROConfig, sample_next_obs
from buffers.replay import Batch
from config import DynamicsConfig, SACConfig
from models.dynamics import EnsembleDynamics

OBS_DIM, ACT_DIM = 3, 2


def _cfg(**overrides: object) -> MICROConfig:
    cfg = MICROConfig(
        algo="micro",
        epochs=5,
        sac=SACConfig(hidden_dims=[16, 16]),
        dynamics=DynamicsConfig(num_ensemble=4, num_elites=3, hidden_dims=[8, 8], weight_decay=[0.0, 0.0, 0.0]),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _dynamics(cfg: MICROConfig, seed: int = 0) -> EnsembleDynamics:
    torch.manual_seed(seed)
    return EnsembleDynamics(OBS_DIM, ACT_DIM, cfg.dynamics)


def _micro(seed: int = 0, **overrides: object) -> MICRO:
    cfg = _cfg(**overrides)
    dynamics = _dynamics(cfg, seed)
    torch.manual_seed(seed)
    return MICRO(OBS_DIM, ACT_DIM, cfg, dynamics=dynamics)


def _batch(n: int = 40, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, OBS_DIM, generator=gen),
        act=torch.rand(n, ACT_DIM, generator=gen) * 2 - 1,
        rew=torch.rand(n, generator=gen) + 1.0,
        next_obs=torch.randn(n, OBS_DIM, generator=gen),
        done=(torch.rand(n, generator=gen) < 0.3).float(),
    )


class FirstCoordinateCritics(nn.Module):
    """Q_j(s, a) = (j + 1) * s[0]: makes every value on the uncertainty set known in closed form."""

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return torch.stack([obs[..., 0], 2 * obs[..., 0]])


def test_spread_is_mean_minus_min_over_members_of_the_sample_mean() -> None:
    algo = _micro(num_samples=2)
    algo.target_critics = FirstCoordinateCritics()
    batch_size = 4
    # Uncertainty set with s'[0] = member value + sample offset: members {1, 3, 8}, samples {-1, +1} average out.
    member_values = torch.tensor([1.0, 3.0, 8.0])
    sets = torch.zeros(3, 2, batch_size, OBS_DIM)
    sets[..., 0] = member_values.view(3, 1, 1) + torch.tensor([-1.0, 1.0]).view(1, 2, 1)
    algo.sample_next_obs = lambda obs, act, k: sets
    spread = algo.value_spread(torch.zeros(batch_size, OBS_DIM), torch.zeros(batch_size, ACT_DIM))
    # min over critics of (j+1)*s0 with s0 >= 0 is s0 itself; per member mean over samples = member value.
    assert torch.allclose(spread, torch.full((batch_size,), member_values.mean() - member_values.min()))


def test_dataset_rows_are_not_penalised() -> None:
    """With every row real, the target is SAC's (clamped at 0): the model is never asked."""
    algo = _micro(penalty_coef=10.0)
    batch = _batch()
    calls = []
    algo.sample_next_obs = lambda *args: calls.append(args)
    torch.manual_seed(1)
    target, metrics = algo.critic_target(batch, num_real=len(batch.rew))
    torch.manual_seed(1)
    expected = (batch.rew + algo.cfg.gamma * (1 - batch.done) * algo.next_value(batch.next_obs)).clamp(min=0)
    assert not calls
    assert torch.allclose(target, expected)
    assert float(metrics["penalty"]) == 0.0


def test_penalty_lowers_model_targets_and_grows_with_beta() -> None:
    batch, num_real = _batch(), 10
    targets = []
    for beta in (0.0, 1.0, 5.0):
        algo = _micro(penalty_coef=beta, clamp_target=False)
        torch.manual_seed(3)
        target, metrics = algo.critic_target(batch, num_real)
        targets.append(target)
        assert float(metrics["penalty"]) > 0  # the untrained members disagree
    assert torch.equal(targets[0][:num_real], targets[2][:num_real])  # real rows untouched
    alive = batch.done[num_real:] == 0
    assert bool((targets[1][num_real:][alive] < targets[0][num_real:][alive]).all())
    assert bool((targets[2][num_real:][alive] < targets[1][num_real:][alive]).all())
    done = ~alive
    assert torch.allclose(targets[2][num_real:][done], batch.rew[num_real:][done])  # terminal: y = r


class MeanActionActor(nn.Module):
    """The actor's deterministic action, so values on the uncertainty set carry no action-sampling noise."""

    def __init__(self, actor: nn.Module) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs, deterministic=True)


def test_identical_members_give_zero_spread() -> None:
    """A deterministic model whose elites agree has a one-point uncertainty set: no penalty."""
    cfg = _cfg()
    cfg.dynamics.loss = "mse"
    dynamics = _dynamics(cfg)
    with torch.no_grad():
        for layer in dynamics.net.layers:
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
            layer.bias.copy_(layer.bias[:1].expand_as(layer.bias))
    algo = MICRO(OBS_DIM, ACT_DIM, cfg, dynamics=dynamics)
    algo.actor = MeanActionActor(algo.actor)
    batch = _batch()
    spread = algo.value_spread(batch.obs, batch.act)
    assert torch.allclose(spread, torch.zeros_like(spread), atol=1e-6)


def test_target_is_clamped_at_zero() -> None:
    algo = _micro(penalty_coef=1e4)
    target, _ = algo.critic_target(_batch(), num_real=0)
    assert float(target.min()) >= 0.0
    algo = _micro(penalty_coef=1e4, clamp_target=False)
    target, _ = algo.critic_target(_batch(), num_real=0)
    assert float(target.min()) < 0.0


def test_deterministic_backup_drops_the_entropy_term() -> None:
    algo = _micro(deterministic_backup=True)
    next_obs = _batch().next_obs
    torch.manual_seed(0)
    value = algo.next_value(next_obs)
    torch.manual_seed(0)
    action, _ = algo.actor(next_obs)
    assert torch.allclose(value, algo.target_critics(next_obs, action).amin(0))


def test_max_q_backup_takes_the_max_over_sampled_actions_per_critic() -> None:
    algo = _micro(max_q_backup=True)
    next_obs = _batch(n=5).next_obs
    torch.manual_seed(0)
    value = algo.next_value(next_obs)
    torch.manual_seed(0)
    repeated = next_obs.repeat_interleave(10, dim=0)
    q = algo.target_critics(repeated, algo.actor(repeated)[0]).view(2, 5, 10)
    assert torch.allclose(value, q.amax(-1).amin(0))


def test_uncertainty_set_has_elites_times_samples_states() -> None:
    cfg = _cfg()
    dynamics = _dynamics(cfg)
    obs, act = torch.randn(6, OBS_DIM), torch.rand(6, ACT_DIM)
    states = sample_next_obs(dynamics, obs, act, 7)
    assert states.shape == (cfg.dynamics.num_elites, 7, 6, OBS_DIM)
    assert float(states.std(1).min()) > 0  # samples differ within a member


def test_update_logs_the_penalty_and_learns() -> None:
    algo = _micro()
    batch = _batch(n=64)
    first = algo.update(batch, num_real=8)
    assert {"penalty", "loss/critic", "loss/actor", "alpha"} <= set(first)
    for _ in range(150):
        last = algo.update(batch, num_real=8)
    assert float(last["loss/critic"]) < float(first["loss/critic"])


def test_registry_hands_micro_its_model() -> None:
    cfg = _cfg()
    dynamics = _dynamics(cfg)
    algo = build_algorithm(cfg, OBS_DIM, ACT_DIM, "cpu", dynamics)
    assert isinstance(algo, MICRO) and algo.sample_next_obs is not None
    assert not any(key.startswith("dynamics") for key in algo.state_dict())  # the model is saved on its own
    with pytest.raises(RuntimeError, match="dynamics"):
        MICRO(OBS_DIM, ACT_DIM, cfg).value_spread(torch.zeros(2, OBS_DIM), torch.zeros(2, ACT_DIM))


def test_bf16_uncertainty_set_is_close_to_fp32() -> None:
    batch = _batch(n=64)
    spreads = []
    for precision in ("fp32", "bf16"):
        algo = _micro(uncertainty_precision=precision)
        torch.manual_seed(5)
        spreads.append(algo.value_spread(batch.obs, batch.act))
    assert spreads[1].dtype == torch.float32
    assert float((spreads[1] - spreads[0]).abs().mean()) < 0.05 * float(spreads[0].abs().mean()) + 1e-3
