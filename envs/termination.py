"""Termination functions applied to model-predicted next states during rollouts (docs/dynamics.md).

All functions take `obs [..., obs_dim]`, `act [..., act_dim]`, `next_obs [..., obs_dim]` and return a bool tensor
`[...]` (True = done) on the input's device, with no numpy and no Python loop over rows, so a whole rollout batch
(or an ensemble of batches) is checked in one call. Non-finite next states are always done: a model that diverged
must not keep rolling.

obs[0] is the torso height and obs[1] the torso angle for hopper and walker2d.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from envs.rewards import MJRL_OBS_MASKS
from envs.task_files import resolve_termination, termination_problem
from envs.tasks import TaskSpec
from utils.errors import UserError

TerminationFn = Callable[[Tensor, Tensor, Tensor], Tensor]

_STATE_BOUND = 100.0


def _finite(next_obs: Tensor) -> Tensor:
    return torch.isfinite(next_obs).all(dim=-1)


def _hopper(next_obs: Tensor, strict: bool) -> Tensor:
    height = next_obs[..., 0]
    angle = next_obs[..., 1]
    rest = next_obs[..., 1:]
    bounded = (rest.abs() < _STATE_BOUND) if strict else (rest < _STATE_BOUND)
    healthy = _finite(next_obs) & bounded.all(dim=-1) & (height > 0.7) & (angle.abs() < 0.2)
    return ~healthy


def hopper_termination(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper as MOPO and OfflineRL-Kit wrote it, with which the published numbers were made.

    Their magnitude test is `abs(obs[:, 1:] < 100)`, the abs of a boolean, i.e. just `obs[:, 1:] < 100`:
    there is no lower bound, so a state with a component of -1e6 is not done. `hopper_termination_strict`
    applies the intended `abs(obs[:, 1:]) < 100`.
    """
    return _hopper(next_obs, strict=False)


def hopper_termination_strict(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper with the corrected two-sided bound `abs(obs[:, 1:]) < 100` (as in WMOPO's copy)."""
    return _hopper(next_obs, strict=True)


def walker2d_termination(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d as OfflineRL-Kit and MICRO: 0.8 < height < 2, -1 < angle < 1 and every component in (-100, 100)."""
    height = next_obs[..., 0]
    angle = next_obs[..., 1]
    bounded = (next_obs.abs() < _STATE_BOUND).all(dim=-1)
    healthy = _finite(next_obs) & bounded & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def halfcheetah_termination(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """HalfCheetah never falls; OfflineRL-Kit and MICRO still stop rollouts whose state leaves (-100, 100)."""
    healthy = _finite(next_obs) & (next_obs.abs() < _STATE_BOUND).all(dim=-1)
    return ~healthy


def pendulum_termination(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Pendulum episodes only end by time limit; a non-finite prediction still ends a model rollout."""
    return ~_finite(next_obs)


_TERMINATION_FNS: dict[str, tuple[TerminationFn, TerminationFn]] = {
    # family: (default, strict); only hopper's published check has a bug to correct.
    "hopper": (hopper_termination, hopper_termination_strict),
    "walker2d": (walker2d_termination, walker2d_termination),
    "halfcheetah": (halfcheetah_termination, halfcheetah_termination),
    "pendulum": (pendulum_termination, pendulum_termination),
    "custom_pendulum": (pendulum_termination, pendulum_termination),
}


def get_termination_fn(family: str, strict: bool = False) -> TerminationFn:
    """Termination function of an env family; `strict` fixes hopper's missing lower bound (see hopper_termination)."""
    if family not in _TERMINATION_FNS:
        known = ", ".join(_TERMINATION_FNS)
        raise UserError(f"no termination function for env family {family!r}; known families: {known}")
    default, corrected = _TERMINATION_FNS[family]
    return corrected if strict else default


def never_terminates(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Task files without a termination function: episodes end only by time limit (and a diverged model
    prediction still ends its rollout)."""
    return ~_finite(next_obs)


def termination_for(spec: TaskSpec, strict: bool = False) -> TerminationFn:
    """The termination function of any task: its family's, or for a task file the function it names by import path
    (checked to return one bool per row) or `never_terminates`."""
    if spec.source_file is None:
        return get_termination_fn(spec.family, strict)
    if spec.termination is None:
        return never_terminates
    user_fn = resolve_termination(spec.termination, Path(spec.source_file).parent, spec.source_file)

    def checked(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        done = user_fn(obs, act, next_obs)
        problem = termination_problem(done, next_obs)
        if problem is not None:
            raise UserError(f"task file {spec.source_file}: termination {spec.termination} {problem}")
        return done | ~_finite(next_obs)

    return checked


# gymnasium -v4's own `terminated` flag (kind "env"), and mjrl's hopper check (kind "mjrl", the PAL/MAL paper code).


def hopper_termination_env(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper-v4's `terminated`: not (every entry of state_vector()[2:] in (-100, 100), height > 0.7, -0.2 < angle
    < 0.2), all strict.

    state_vector()[2:] is obs[1:] except that the observation clips qvel to +-10, so a real velocity beyond 100 that
    ends an env episode is invisible here; a model's prediction beyond 100 is still done. This is the same check as
    `hopper_termination_strict`.
    """
    return _hopper(next_obs, strict=True)


def walker2d_termination_env(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d-v4's `terminated`: not (0.8 < height < 2.0 and -1 < angle < 1). Unlike `walker2d_termination`
    (OfflineRL-Kit, MICRO) there is no bound on the other components."""
    height = next_obs[..., 0]
    angle = next_obs[..., 1]
    healthy = _finite(next_obs) & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def halfcheetah_termination_env(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """HalfCheetah-v4 never terminates; only a non-finite prediction ends a model rollout."""
    return ~_finite(next_obs)


def hopper_termination_mjrl(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """mjrl's hopper check (gym_hopper.py of the PAL/MAL/MOReL code): done unless every entry of the masked state
    (velocities x 0.02) is below 10 in magnitude (raw: positions 10, velocities 500), height > 0.7 and
    |angle| < 0.15 (the alive bonus of its reward uses 0.2).

    Unlike every other termination function it reads the state a step starts from (obs), as mjrl's path-level
    check does: the first step whose own state is done is kept and ends the path. A non-finite predicted next
    state also ends it there, so a diverged model never feeds NaN states into the next step (mjrl has no such
    check; it only matters for a model that has diverged).
    """
    masked = obs * MJRL_OBS_MASKS["hopper"].to(obs)
    healthy = _finite(obs) & (masked.abs() < 10.0).all(dim=-1) & (obs[..., 0] > 0.7) & (obs[..., 1].abs() < 0.15)
    return ~healthy | ~_finite(next_obs)


_ENV_TERMINATION_FNS: dict[str, TerminationFn] = {
    "hopper": hopper_termination_env,
    "walker2d": walker2d_termination_env,
    "halfcheetah": halfcheetah_termination_env,
}

TERMINATION_KINDS = ("env", "mopo", "mopo_strict", "mjrl")


def env_termination_fn(family: str) -> TerminationFn:
    """Termination exactly as gymnasium -v4's `terminated` flag, as far as the observation allows (non-finite next
    states are always done), so model rollouts end where real episodes would."""
    if family not in _ENV_TERMINATION_FNS:
        known = ", ".join(_ENV_TERMINATION_FNS)
        raise UserError(f"no env termination function for env family {family!r}; known families: {known}")
    return _ENV_TERMINATION_FNS[family]


def termination_fn_for_kind(family: str, kind: str) -> TerminationFn:
    """Termination function by kind: "env" (gymnasium's flag), "mopo" (MOPO/OfflineRL-Kit as published),
    "mopo_strict" (with hopper's lower bound fixed) or "mjrl" (hopper only, the PAL/MAL code's)."""
    if kind == "env":
        return env_termination_fn(family)
    if kind == "mopo":
        return get_termination_fn(family, strict=False)
    if kind == "mopo_strict":
        return get_termination_fn(family, strict=True)
    if kind == "mjrl":
        if family != "hopper":
            raise UserError(f"termination kind 'mjrl' exists only for env family hopper, not {family!r}")
        return hopper_termination_mjrl
    valid = ", ".join(TERMINATION_KINDS)
    raise UserError(f"unknown termination kind {kind!r}; valid kinds: {valid}")
