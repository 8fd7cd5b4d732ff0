"""Known reward and termination functions against real gymnasium -v4 transitions, so model rollouts are scored and
stopped as the env would score and stop them."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.rewards import (
    RewardFn,
    halfcheetah_reward,
    hopper_reward,
    hopper_reward_mjrl,
    reward_fn_for,
    walker2d_reward,
)
from envs.termination import (
    TERMINATION_KINDS,
    env_termination_fn,
    halfcheetah_termination,
    hopper_termination,
    hopper_termination_mjrl,
    hopper_termination_strict,
    termination_fn_for_kind,
)
from utils.errors import UserError

FAMILIES = {"Hopper-v4": "hopper", "Walker2d-v4": "walker2d", "HalfCheetah-v4": "halfcheetah"}
STEPS = 300
# Velocity estimate vs gymnasium's position difference over dt, per step: (max, mean) absolute error allowed, a little
# above the largest measured over 4000 steps (envs/rewards.py's docstring); these rollouts give at most
# 0.042 / 0.0021, 0.123 / 0.010 and 0.75 / 0.19.
VELOCITY_TOLERANCE = {"Hopper-v4": (0.06, 0.005), "Walker2d-v4": (0.2, 0.015), "HalfCheetah-v4": (1.0, 0.25)}
EXACT = 1e-5


@cache
def _rollout(env_id: str, act_limit: float) -> dict[str, torch.Tensor]:
    """STEPS real transitions of uniform actions in [-act_limit, act_limit], resetting when an episode ends."""
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows: dict[str, list] = {k: [] for k in ("obs", "act", "next_obs", "reward", "x_velocity", "terminated")}
    for _ in range(STEPS):
        act = rng.uniform(-act_limit, act_limit, size=env.action_space.shape)
        next_obs, reward, terminated, truncated, info = env.step(act)
        for key, value in zip(rows, (obs, act, next_obs, reward, info["x_velocity"], terminated)):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return {key: torch.tensor(np.array(values)) for key, values in rows.items()}


def _ctrl_weight(env_id: str) -> float:
    return gym.make(env_id).unwrapped._ctrl_cost_weight


def _x_velocity_index(env_id: str) -> int:
    """qvel[0] follows qpos[1:] in the observation."""
    return gym.make(env_id).unwrapped.model.nq - 1


def _clipped_action_reward(env_id: str, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """The env's reward had the action been clipped to [-1, 1] before step: gymnasium charges the control cost of the
    action as given, and the physics is the same either way (test_simulator_clamps_actions)."""
    act = data["act"]
    excess = act.square().sum(-1) - act.clamp(-1.0, 1.0).square().sum(-1)
    return data["reward"] + _ctrl_weight(env_id) * excess


ROLLOUTS = [(env_id, limit) for env_id in FAMILIES for limit in (1.0, 1.5)]


@pytest.mark.parametrize(("env_id", "act_limit"), ROLLOUTS)
def test_reward_is_exact_given_the_true_velocity(env_id: str, act_limit: float) -> None:
    """With the observed x velocity replaced by gymnasium's, the healthy and control terms leave nothing over."""
    data = _rollout(env_id, act_limit)
    index = _x_velocity_index(env_id)
    obs, next_obs = data["obs"].clone(), data["next_obs"].clone()
    obs[:, index] = data["x_velocity"]
    next_obs[:, index] = data["x_velocity"]
    reward = reward_fn_for(FAMILIES[env_id])(obs, data["act"], next_obs)
    torch.testing.assert_close(reward, _clipped_action_reward(env_id, data), rtol=0.0, atol=EXACT)


@pytest.mark.parametrize(("env_id", "act_limit"), ROLLOUTS)
def test_reward_matches_env_within_velocity_error(env_id: str, act_limit: float) -> None:
    data = _rollout(env_id, act_limit)
    reward = reward_fn_for(FAMILIES[env_id])(data["obs"], data["act"], data["next_obs"])
    error = (reward - _clipped_action_reward(env_id, data)).abs()
    max_error, mean_error = VELOCITY_TOLERANCE[env_id]
    assert error.max() <= max_error and error.mean() <= mean_error, (error.max().item(), error.mean().item())


@pytest.mark.parametrize("env_id", FAMILIES)
def test_simulator_clamps_actions(env_id: str) -> None:
    """Why the reward functions clip: an action beyond [-1, 1] moves the body exactly as its clipped value does."""
    raw_env, clipped_env = gym.make(env_id), gym.make(env_id)
    raw_env.reset(seed=1)
    clipped_env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(30):
        act = rng.uniform(-2.0, 2.0, size=raw_env.action_space.shape)
        raw_obs, raw_reward, *_ = raw_env.step(act)
        clipped_obs, clipped_reward, *_ = clipped_env.step(np.clip(act, -1.0, 1.0))
        np.testing.assert_array_equal(raw_obs, clipped_obs)
        excess = np.square(act).sum() - np.square(np.clip(act, -1.0, 1.0)).sum()
        assert clipped_reward == pytest.approx(raw_reward + _ctrl_weight(env_id) * excess, abs=EXACT)


@pytest.mark.parametrize(("env_id", "act_limit"), ROLLOUTS)
def test_env_termination_matches_env(env_id: str, act_limit: float) -> None:
    data = _rollout(env_id, act_limit)
    done = env_termination_fn(FAMILIES[env_id])(data["obs"], data["act"], data["next_obs"])
    assert torch.equal(done, data["terminated"])
    if env_id != "HalfCheetah-v4":  # random actions make hopper and walker2d fall within tens of steps
        assert 5 < int(done.sum()) < STEPS // 2


def _state(obs_dim: int, height: float, *overrides: tuple[int, float]) -> torch.Tensor:
    state = torch.zeros(obs_dim, dtype=torch.float64)
    state[0] = height
    for index, value in overrides:
        state[index] = value
    return state


# (family, case, next_obs, done): gymnasium's inequalities are all strict.
ENV_TERMINATION_CASES = [
    ("hopper", "healthy", _state(11, 1.25, (1, 0.19), (3, -99.0)), False),
    ("hopper", "height at bound", _state(11, 0.7), True),
    ("hopper", "angle at bound", _state(11, 1.25, (1, 0.2)), True),
    ("hopper", "angle at lower bound", _state(11, 1.25, (1, -0.2)), True),
    ("hopper", "state at -100", _state(11, 1.25, (3, -100.0)), True),
    ("hopper", "state at 100", _state(11, 1.25, (8, 100.0)), True),
    ("hopper", "nan", _state(11, 1.25, (7, float("nan"))), True),
    ("walker2d", "healthy, huge velocity", _state(17, 1.25, (1, -0.99), (12, 500.0)), False),
    ("walker2d", "height at lower bound", _state(17, 0.8), True),
    ("walker2d", "height at upper bound", _state(17, 2.0), True),
    ("walker2d", "angle at bound", _state(17, 1.25, (1, 1.0)), True),
    ("walker2d", "angle at lower bound", _state(17, 1.25, (1, -1.0)), True),
    ("walker2d", "inf", _state(17, 1.25, (12, float("inf"))), True),
    ("halfcheetah", "upside down and huge", _state(17, -5.0, (1, 3.0), (9, 1e6)), False),
    ("halfcheetah", "nan", _state(17, 0.0, (9, float("nan"))), True),
]


@pytest.mark.parametrize(
    ("family", "case", "next_obs", "done"), ENV_TERMINATION_CASES, ids=[f"{c[0]}-{c[1]}" for c in ENV_TERMINATION_CASES]
)
def test_env_termination_boundaries(family: str, case: str, next_obs: torch.Tensor, done: bool) -> None:
    fn = env_termination_fn(family)
    assert fn(torch.zeros_like(next_obs), torch.zeros(3), next_obs).item() is done


def test_hopper_reward_mjrl_hand_computed() -> None:
    """mjrl scores the state the action is taken in, velocities bounded at 500 (10 after its 0.02 scaling)."""
    obs = torch.stack(
        [
            _state(11, 1.2, (1, 0.2), (5, 15.0)),  # alive (|angle| <= 0.2); v_x 15 is within mjrl's bound
            _state(11, 0.7, (5, -3.0)),  # not alive: height must exceed 0.7
            _state(11, 1.2, (1, -0.21), (5, 600.0)),  # not alive: tilted; v_x clipped to 500
        ]
    )
    act = torch.tensor([[0.5, -2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    reward = hopper_reward_mjrl(obs, act, torch.zeros_like(obs))
    expected = torch.tensor([15.0 + 1.0 - 1e-3 * 1.25, -3.0 - 3e-3, 500.0], dtype=torch.float64)
    torch.testing.assert_close(reward, expected, rtol=0.0, atol=1e-12)


def test_hopper_termination_mjrl() -> None:
    """mjrl's gym_hopper.py termination reads the state a step starts from, with the angle bound 0.15 (not the
    reward's 0.2) and velocities bounded at 500 raw (10 after its 0.02 mask); a non-finite next state also ends."""
    obs = torch.stack(
        [
            _state(11, 1.2, (1, 0.149), (7, 499.0)),  # healthy: velocities bounded at 500, angle below 0.15
            _state(11, 1.2, (1, 0.15)),  # tilted to mjrl's termination bound
            _state(11, 1.2, (1, -0.19)),  # done under 0.15 although the reward's alive bonus (0.2) still pays
            _state(11, 1.2, (7, 500.0)),  # a velocity at mjrl's bound
            _state(11, 1.2, (3, 10.0)),  # a position at mjrl's bound
            _state(11, 0.7),
            _state(11, 1.2),  # healthy itself, but its predicted next state is not finite
        ]
    )
    next_obs = torch.zeros_like(obs)
    next_obs[-1, 3] = float("nan")
    done = hopper_termination_mjrl(obs, torch.zeros(len(obs), 3), next_obs)
    assert done.tolist() == [False, True, True, True, True, True, True]
    # the next state is not what it checks: a fallen next state does not end the step
    fallen = torch.stack([_state(11, 0.2)] * len(obs))
    assert hopper_termination_mjrl(obs[:1], torch.zeros(1, 3), fallen[:1]).tolist() == [False]


REWARD_FNS = [hopper_reward, walker2d_reward, halfcheetah_reward, hopper_reward_mjrl]
OBS_DIMS: dict[RewardFn, int] = {hopper_reward: 11, hopper_reward_mjrl: 11, walker2d_reward: 17, halfcheetah_reward: 17}


@pytest.mark.parametrize("fn", REWARD_FNS, ids=lambda fn: fn.__name__)
def test_reward_batch_shapes(fn: RewardFn) -> None:
    """[E, B, dim] inputs (an ensemble of rollout batches) give [E, B], the same as scoring the rows one by one."""
    obs_dim = OBS_DIMS[fn]
    act_dim = 3 if obs_dim == 11 else 6
    generator = torch.Generator().manual_seed(0)
    obs = torch.randn(4, 5, obs_dim, generator=generator)
    next_obs = torch.randn(4, 5, obs_dim, generator=generator)
    act = 1.5 * torch.randn(4, 5, act_dim, generator=generator)
    reward = fn(obs, act, next_obs)
    assert reward.shape == (4, 5) and reward.dtype == torch.float32
    flat = fn(obs.reshape(20, obs_dim), act.reshape(20, act_dim), next_obs.reshape(20, obs_dim))
    torch.testing.assert_close(reward, flat.reshape(4, 5))
    assert fn(obs[0, 0], act[0, 0], next_obs[0, 0]).shape == ()


@pytest.mark.parametrize(("family", "kind"), [(f, k) for f in FAMILIES.values() for k in TERMINATION_KINDS[:3]])
def test_termination_batch_shapes(family: str, kind: str) -> None:
    obs_dim, act_dim = (11, 3) if family == "hopper" else (17, 6)
    next_obs = torch.randn(4, 5, obs_dim, generator=torch.Generator().manual_seed(0))
    done = termination_fn_for_kind(family, kind)(next_obs, torch.zeros(4, 5, act_dim), next_obs)
    assert done.shape == (4, 5) and done.dtype == torch.bool


def test_termination_kinds() -> None:
    assert termination_fn_for_kind("hopper", "mopo") is hopper_termination
    assert termination_fn_for_kind("hopper", "mopo_strict") is hopper_termination_strict
    assert termination_fn_for_kind("halfcheetah", "mopo") is halfcheetah_termination
    assert termination_fn_for_kind("hopper", "mjrl") is hopper_termination_mjrl
    assert termination_fn_for_kind("walker2d", "env") is env_termination_fn("walker2d")
    assert reward_fn_for("hopper", "mjrl") is hopper_reward_mjrl
    assert reward_fn_for("walker2d") is walker2d_reward


BAD_CHOICES = [
    (lambda: reward_fn_for("ant"), "hopper, walker2d, halfcheetah"),
    (lambda: reward_fn_for("walker2d", "mjrl"), "env"),
    (lambda: reward_fn_for("hopper", "mopo"), "env, mjrl"),
    (lambda: env_termination_fn("pendulum"), "hopper, walker2d, halfcheetah"),
    (lambda: termination_fn_for_kind("ant", "env"), "hopper, walker2d, halfcheetah"),
    (lambda: termination_fn_for_kind("walker2d", "mjrl"), "hopper"),
    (lambda: termination_fn_for_kind("hopper", "gym"), "env, mopo, mopo_strict, mjrl"),
]


@pytest.mark.parametrize(("call", "choices"), BAD_CHOICES)
def test_bad_family_or_kind(call: Callable[[], object], choices: str) -> None:
    with pytest.raises(UserError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and choices in message
