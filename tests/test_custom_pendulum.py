"""The WMOPO study's pendulum (envs/custom_pendulum.py) on hand-computed steps."""

from __future__ import annotations

import math

import pytest
import torch

from envs import custom_pendulum as pendulum


def test_one_step_by_hand() -> None:
    """θ = π/2, θ̇ = 1, u = 1: θ̈ = −15 sin(3π/2) − 0.03 · 1 + 3 · 1 = 17.97, θ̇' = 1 + 1.797, θ' = π/2 + 0.2797."""
    next_state = pendulum.step(torch.tensor([math.pi / 2, 1.0]), torch.tensor([1.0]))
    assert next_state.tolist() == pytest.approx([math.pi / 2 + 0.2797, 2.797], abs=1e-5)


def test_torque_is_clipped_and_the_wall_stops_the_pendulum() -> None:
    """u = 10 acts as 2.5; a state driven past θ = 4π stops at the wall with zero velocity; hanging at rest (θ = π)
    stays put; the batch dimension is free."""
    state = torch.tensor([[0.0, 0.0], [0.0, 0.0], [4 * math.pi - 0.01, 5.0], [math.pi, 0.0]])
    torque = torch.tensor([[10.0], [2.5], [0.0], [0.0]])
    next_state = pendulum.step(state, torque)
    assert torch.allclose(next_state[0], next_state[1])
    assert next_state[2].tolist() == pytest.approx([4 * math.pi, 0.0])
    assert next_state[3].tolist() == pytest.approx([math.pi, 0.0], abs=1e-6)


def test_reward_pays_only_upright_without_wrapping() -> None:
    rewards = pendulum.reward(torch.tensor([[0.0, 3.0], [1.0, 0.0], [2 * math.pi, 0.0]]))
    assert rewards.tolist() == pytest.approx([0.0, -(1 - math.exp(-1)), -(1 - math.exp(-4 * math.pi**2))])


def test_random_data_and_discounted_returns() -> None:
    """1000 transitions = 5 episodes: consecutive within an episode, restarting every 200 steps; torques within ±2.5.
    A policy that never pushes, from rest hanging down, collects −(1 − e^{−π²}) per step."""
    states, actions, next_states = pendulum.random_data(1000, torch.Generator().manual_seed(0))
    assert states.shape == (1000, 2) and actions.shape == (1000, 1)
    assert bool((actions.abs() <= 2.5).all())
    continues = torch.ones(999, dtype=torch.bool)
    continues[torch.arange(199, 999, 200)] = False
    assert torch.equal(states[1:][continues], next_states[:-1][continues])
    assert not torch.equal(states[200], next_states[199])
    start = torch.tensor([[math.pi, 0.0]])
    total = pendulum.discounted_returns(lambda s: torch.zeros(len(s), 1), start, gamma=0.5, steps=3)
    assert float(total) == pytest.approx(-(1 - math.exp(-(math.pi**2))) * (1 + 0.5 + 0.25), rel=1e-5)
