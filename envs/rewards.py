"""Known reward functions, used to score model rollouts in model-based NPG (PAL, MAL, MOReL).

Those algorithms learn only the dynamics and compute the reward of a predicted transition from a known function, so
the returns they optimise are the env's returns as far as these functions reproduce the env's reward.

Every function takes `obs [..., obs_dim]`, `act [..., act_dim]`, `next_obs [..., obs_dim]` and returns a float
reward `[...]` on the input's device, with no numpy and no Python loop over rows, so a whole ensemble of rollout
batches (`[E, B, dim]`) is scored in one call.

The gymnasium -v4 rewards are `forward_reward_weight * x_velocity + healthy_reward - ctrl_cost_weight * sum(a**2)`.
Only the velocity term cannot be exact: gymnasium's x_velocity is `(x_after - x_before) / dt` from qpos[0], which the
observation leaves out (obs = qpos[1:] followed by qvel). It is estimated by the mean of the observed x velocity
(qvel[0]) before and after the step, which on real transitions is closer than next_obs's velocity alone. Absolute
error per step against env.step's x_velocity (and so its reward), measured over 4000 steps each of uniform random
actions and of a forward-moving sinusoidal gait (mean x velocity ~0.7 m/s walker2d, ~2.2 m/s halfcheetah):

    env            random: mean / max     moving: mean / max     (next_obs velocity alone, random: mean / max)
    Hopper-v4      0.0017 / 0.040         0.0036 / 0.047         0.038 / 0.17
    Walker2d-v4    0.0078 / 0.105         0.0093 / 0.167         0.111 / 0.61
    HalfCheetah-v4 0.145  / 0.83          0.118  / 0.65          0.223 / 1.49

With actions uniform in [-1.5, 1.5] the errors are 0.0021 / 0.047, 0.011 / 0.14 and 0.19 / 0.93. HalfCheetah's error
is largest because its velocity changes far from linearly within a step (5 Euler substeps of 0.01 s with contacts).
The healthy and control terms are exact (tests/test_rewards.py checks them to 1e-5).

Actions are clipped to [-1, 1] before the control cost. gymnasium charges the action as given, but MuJoCo clamps
ctrl to ctrlrange [-1, 1], so an out-of-range action moves the body exactly as its clipped value does; policies here
may output actions outside [-1, 1], and the reward charged is the one the env pays when they are clipped before step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from utils.errors import UserError

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]

_ACT_BOUND = 1.0  # ctrlrange of every actuator of the three envs
_OBS_BOUND_MJRL = 10.0

# Observation index of qvel[0], the x velocity: after qpos[1:] (hopper 5, walker2d and halfcheetah 8 entries).
_HOPPER_VX = 5
_WALKER2D_VX = 8
_HALFCHEETAH_VX = 8


def _x_velocity(obs: Tensor, next_obs: Tensor, index: int) -> Tensor:
    """Mean of the observed x velocity before and after the step: the closest estimate of gymnasium's position
    difference over dt (see the module docstring for the measured error)."""
    return 0.5 * (obs[..., index] + next_obs[..., index])


def _ctrl_cost(act: Tensor, weight: float) -> Tensor:
    """Control cost of the action the simulator applies: MuJoCo clamps ctrl to ctrlrange [-1, 1], so a policy's
    out-of-range action is charged as its clipped value (what the env pays when actions are clipped before step)."""
    return weight * act.clamp(-_ACT_BOUND, _ACT_BOUND).square().sum(dim=-1)


def hopper_reward(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper-v4's reward `x_velocity + 1 - 1e-3 * sum(a**2)`, with act clipped to [-1, 1] first.

    The healthy reward of 1 is paid on every step, the terminal one included, as gymnasium does with
    terminate_when_unhealthy=True. x_velocity is estimated from obs[5] and next_obs[5] (qvel[0], clipped to +-10 by
    the env): mean / max absolute error per step 0.0017 / 0.040 (random actions), 0.0036 / 0.047 (moving gait).
    """
    return _x_velocity(obs, next_obs, _HOPPER_VX) + 1.0 - _ctrl_cost(act, 1e-3)


def walker2d_reward(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d-v4's reward `x_velocity + 1 - 1e-3 * sum(a**2)`, with act clipped to [-1, 1] first.

    The healthy reward of 1 is paid on every step, the terminal one included, as gymnasium does with
    terminate_when_unhealthy=True. x_velocity is estimated from obs[8] and next_obs[8] (qvel[0], clipped to +-10 by
    the env): mean / max absolute error per step 0.0078 / 0.105 (random actions), 0.0093 / 0.167 (moving gait).
    """
    return _x_velocity(obs, next_obs, _WALKER2D_VX) + 1.0 - _ctrl_cost(act, 1e-3)


def halfcheetah_reward(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """HalfCheetah-v4's reward `x_velocity - 0.1 * sum(a**2)`, with act clipped to [-1, 1] first (no healthy term).

    x_velocity is estimated from obs[8] and next_obs[8] (qvel[0], not clipped by this env): mean / max absolute error
    per step 0.145 / 0.83 (random actions), 0.118 / 0.65 (gait at ~2.2 m/s).
    """
    return _x_velocity(obs, next_obs, _HALFCHEETAH_VX) - _ctrl_cost(act, 0.1)


def hopper_reward_mjrl(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """mjrl's hand-written hopper reward (projects/model_based_npg/utils/reward_functions/gym_hopper.py), for
    reproducing the PAL/MAL/MOReL code rather than the env's reward.

    `v_x + [height > 0.7 and |angle| <= 0.2] - 1e-3 * sum(a**2)`, scored on the state the action is taken in (obs,
    not next_obs, as mjrl's function reads the path's observations), act clipped to +-1. mjrl reads the masked state
    (velocities x 0.02) clipped to +-10 and divides v_x back by 0.02: in the raw units taken here, positions are
    clipped at 10 and velocities at 500. Unlike the env, the alive bonus is withheld from unhealthy states.
    """
    mask = MJRL_OBS_MASKS["hopper"].to(obs)
    state = (obs * mask).clamp(-_OBS_BOUND_MJRL, _OBS_BOUND_MJRL)
    height = state[..., 0]
    angle = state[..., 1]
    alive = ((height > 0.7) & (angle.abs() <= 0.2)).to(state.dtype)
    return state[..., _HOPPER_VX] / mask[_HOPPER_VX] + alive - _ctrl_cost(act, 1e-3)


# mjrl's task-file observation masks: the policy, the baseline and the models read s ⊙ mask. Hopper's scales the
# velocities (obs[5:]) by the timestep 0.02; mjrl ships no file for walker2d or halfcheetah.
MJRL_OBS_MASKS: dict[str, Tensor] = {"hopper": torch.tensor([1.0] * 5 + [0.02] * 6, dtype=torch.float64)}
OBS_MASK_KINDS = ("none", "mjrl")


def observation_mask(family: str, kind: str) -> Tensor | None:
    """The observation mask of kind "none" (None: raw observations) or "mjrl" (hopper only)."""
    if kind == "none":
        return None
    if kind != "mjrl":
        raise UserError(f"unknown observation mask {kind!r}; valid: {', '.join(OBS_MASK_KINDS)}")
    if family not in MJRL_OBS_MASKS:
        raise UserError(f"obs_mask 'mjrl' exists only for env family hopper, not {family!r}; --set obs_mask=none")
    return MJRL_OBS_MASKS[family].clone()


_REWARD_FNS: dict[str, dict[str, RewardFn]] = {
    # family: {kind: reward function}; "mjrl" is the hand-written reward of the PAL/MAL code, only for hopper.
    "hopper": {"env": hopper_reward, "mjrl": hopper_reward_mjrl},
    "walker2d": {"env": walker2d_reward},
    "halfcheetah": {"env": halfcheetah_reward},
}


def reward_fn_for(family: str, kind: str = "env") -> RewardFn:
    """Reward function of an env family: kind "env" reproduces gymnasium -v4's reward, "mjrl" (hopper only) the
    PAL/MAL code's."""
    if family not in _REWARD_FNS:
        known = ", ".join(_REWARD_FNS)
        raise UserError(f"no reward function for env family {family!r}; known families: {known}")
    kinds = _REWARD_FNS[family]
    if kind not in kinds:
        valid = ", ".join(kinds)
        raise UserError(f"no reward function of kind {kind!r} for env family {family!r}; kinds for {family}: {valid}")
    return kinds[kind]
