"""The pendulum of Hishinuma and Senda's WMOPO study (docs/wmopo.md#the-pendulum-of-the-study), batched in torch.

State (θ, θ̇) with θ = 0 upright; one step of dt = 0.1 with g = 10, m = l = 1, torque u ∈ [−2.5, 2.5] and a viscous
term:

    θ̇' = θ̇ + (−3g/(2l) sin(θ + π) − 0.01 · 3/(ml²) · θ̇ + 3/(ml²) · u) · dt,    θ' = θ + θ̇' · dt,

with walls at θ = ±4π that stop the pendulum (θ' clamped, θ̇' = 0). The reward of a step is −(1 − exp(−θ²)) of the
state it starts from (no angle wrapping: only the upright position at θ = 0 pays). Episodes last 200 steps and
never terminate. The offline data come from uniformly random torques with episodes started uniformly in
[−3π, 3π] × [−15, 15] shifted by (π, 0); the target policy is evaluated from N((π, 0), 1²·I) (real) and
N((π, 0), 0.5²·I) (model), as the original scripts do.

`CustomPendulumEnv` is the same pendulum as a gymnasium env (registered as CustomPendulum-v0, 200-step episodes,
starts from N((π, 0), 1²·I)), so the project's behaviour SAC trains the study's target policy on it
(`python collect.py train --env custom_pendulum`).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

DT, GRAVITY, MASS, LENGTH = 0.1, 10.0, 1.0, 1.0
MAX_TORQUE = 2.5
WALL = 4 * math.pi
VISCOSITY = 0.01
EPISODE_STEPS = 200
GAMMA = 0.99
HANGING = (math.pi, 0.0)  # the state episodes start around
DATA_RESET_HALF_WIDTH = (3 * math.pi, 15.0)
REAL_EVAL_RESET_STD = 1.0
MODEL_EVAL_RESET_STD = 0.5


def step(state: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
    """Next states [..., 2] for states [..., 2] and torques [..., 1] (clipped to ±2.5)."""
    theta, theta_dot = state[..., 0], state[..., 1]
    u = torque[..., 0].clamp(-MAX_TORQUE, MAX_TORQUE)
    inertia = 3.0 / (MASS * LENGTH**2)
    acceleration = -3 * GRAVITY / (2 * LENGTH) * torch.sin(theta + math.pi) - VISCOSITY * inertia * theta_dot
    new_theta_dot = theta_dot + (acceleration + inertia * u) * DT
    new_theta = theta + new_theta_dot * DT
    at_wall = new_theta.abs() > WALL
    new_theta = new_theta.clamp(-WALL, WALL)
    new_theta_dot = torch.where(at_wall, torch.zeros_like(new_theta_dot), new_theta_dot)
    return torch.stack([new_theta, new_theta_dot], dim=-1)


def reward(state: torch.Tensor) -> torch.Tensor:
    """−(1 − exp(−θ²)) of the state a step starts from: [...]."""
    return -(1.0 - torch.exp(-state[..., 0].square()))


def data_reset(num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Start states of the offline data's episodes: uniform in [−3π, 3π] × [−15, 15] around (π, 0)."""
    half_width = torch.tensor(DATA_RESET_HALF_WIDTH)
    return (torch.rand(num, 2, generator=generator) * 2 - 1) * half_width + torch.tensor(HANGING)


def evaluation_reset(num: int, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Start states for evaluating the target policy: N((π, 0), std²·I)."""
    return torch.randn(num, 2, generator=generator) * std + torch.tensor(HANGING)


def random_data(
    num_transitions: int = 1000, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The study's offline data: uniformly random torques, episodes of 200 steps from `data_reset`
    (1000 transitions = 5 episodes). Returns states [N, 2], actions [N, 1], next states [N, 2]."""
    states, actions, next_states = [], [], []
    state = data_reset(1, generator)[0]
    for index in range(num_transitions):
        if index > 0 and index % EPISODE_STEPS == 0:
            state = data_reset(1, generator)[0]
        action = (torch.rand(1, generator=generator) * 2 - 1) * MAX_TORQUE
        next_state = step(state, action)
        states.append(state)
        actions.append(action)
        next_states.append(next_state)
        state = next_state
    return torch.stack(states), torch.stack(actions), torch.stack(next_states)


def rollout(policy, start_states: torch.Tensor, transition=step, steps: int = EPISODE_STEPS) -> torch.Tensor:
    """The states [steps, B, 2] each step of `policy` (states [B, 2] -> torques [B, 1]) starts from, all episodes
    side by side; `transition` is the real `step` or a model's (states, actions -> next states)."""
    states, state = [], start_states
    for _ in range(steps):
        states.append(state)
        state = transition(state, policy(state))
    return torch.stack(states)


def discounted_returns(
    policy, start_states: torch.Tensor, transition=step, gamma: float = GAMMA, steps: int = EPISODE_STEPS
) -> torch.Tensor:
    """Σ_t γ^t r(s_t) of `policy` from each start state over `steps` steps (see `rollout`): [B]."""
    return discounted_return_of(rollout(policy, start_states, transition, steps), gamma)


def discounted_return_of(states: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Σ_t γ^t r(s_t) of rolled-out states [T, B, 2]: [B]."""
    discounts = gamma ** torch.arange(len(states), dtype=states.dtype)
    return (reward(states) * discounts.unsqueeze(-1)).sum(0)


GYM_ID = "CustomPendulum-v0"


class CustomPendulumEnv(gym.Env):
    """The study's pendulum for online training and evaluation: observation (θ, θ̇), torque in [−2.5, 2.5], reward
    of the state a step starts from; episodes start from N((π, 0), 1²·I) (the real evaluation's start states)."""

    metadata = {"render_modes": []}

    def __init__(self, reset_std: float = REAL_EVAL_RESET_STD) -> None:
        high = np.array([WALL, np.inf], dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_TORQUE, MAX_TORQUE, shape=(1,), dtype=np.float32)
        self.reset_std = reset_std
        self.state = torch.tensor(HANGING, dtype=torch.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        start = self.np_random.normal(HANGING, self.reset_std)
        self.state = torch.as_tensor(start, dtype=torch.float64)
        return self.state.numpy().astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward_now = float(reward(self.state))
        self.state = step(self.state, torch.as_tensor(action, dtype=torch.float64).reshape(1))
        return self.state.numpy().astype(np.float32), reward_now, False, False, {}


if GYM_ID not in gym.registry:
    gym.register(GYM_ID, entry_point=CustomPendulumEnv, max_episode_steps=EPISODE_STEPS)
