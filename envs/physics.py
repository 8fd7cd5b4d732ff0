"""Physics perturbations for sim2real evaluation, applied to the MuJoCo model of live environments.

MICRO rewrote gym's installed XML files to change friction and gravity; scaling `model.geom_friction`,
`model.opt.gravity` and `model.body_mass` at run time does the same without touching site-packages, and the nominal
values are restored when the context exits, even after an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import gymnasium as gym
import mujoco
import numpy as np

from utils.errors import UserError

PHYSICS_AXES = ("friction", "gravity", "mass")
# MICRO's shipped hopper.xml and walker2d.xml have no gravity attribute, so its gravity axis changed nothing there
# (docs/micro.md#robustness-decisions); `gravity_quirk=True` reproduces that.
FAMILIES_WITHOUT_XML_GRAVITY = frozenset({"hopper", "walker2d"})


def mujoco_model(env: gym.Env) -> mujoco.MjModel:
    model = getattr(env.unwrapped, "model", None)
    if not isinstance(model, mujoco.MjModel):
        raise UserError(f"{env.spec.id if env.spec else env} is not a MuJoCo environment; sim2real needs one")
    return model


def check_axes(scales: Mapping[str, float]) -> None:
    unknown = sorted(set(scales) - set(PHYSICS_AXES))
    if unknown:
        raise UserError(f"unknown physics axis {', '.join(unknown)}; choose from {', '.join(PHYSICS_AXES)}")


def effective_scales(scales: Mapping[str, float], family: str, gravity_quirk: bool = False) -> dict[str, float]:
    """Scales actually applied: every axis defaults to 1; with the quirk, gravity stays 1 where MICRO's XML had none."""
    check_axes(scales)
    applied = {axis: float(scales.get(axis, 1.0)) for axis in PHYSICS_AXES}
    if gravity_quirk and family in FAMILIES_WITHOUT_XML_GRAVITY:
        applied["gravity"] = 1.0
    return applied


@contextmanager
def scaled_physics(envs: Sequence[gym.Env], scales: Mapping[str, float]) -> Iterator[None]:
    """Multiply every geom's friction coefficients, the gravity vector and every body's mass (with its inertia, as
    for a uniformly denser body) by the given scales; restore the nominal model afterwards.

    The model persists across `reset()`, so the scales hold for every episode played inside the context.
    """
    check_axes(scales)
    friction, gravity, mass = (float(scales.get(axis, 1.0)) for axis in PHYSICS_AXES)
    if min(friction, gravity, mass) < 0 or not np.isfinite([friction, gravity, mass]).all():
        raise UserError(f"physics scales must be finite and non-negative, got {dict(scales)}")
    models = [mujoco_model(env) for env in envs]
    nominal = [
        (m.geom_friction.copy(), m.opt.gravity.copy(), m.body_mass.copy(), m.body_inertia.copy()) for m in models
    ]
    try:
        for model in models:
            model.geom_friction[:] *= friction
            model.opt.gravity[:] *= gravity
            model.body_mass[:] *= mass
            model.body_inertia[:] *= mass
        yield
    finally:
        for model, (geom_friction, gravity_vector, body_mass, body_inertia) in zip(models, nominal):
            model.geom_friction[:] = geom_friction
            model.opt.gravity[:] = gravity_vector
            model.body_mass[:] = body_mass
            model.body_inertia[:] = body_inertia
