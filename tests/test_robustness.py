"""Robustness suite pieces: physics perturbations through the MuJoCo model, and observation attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import Evaluator, get_task, make_env
from envs.attacks import ObservationAttack, symmetric_kl
from envs.physics import effective_scales, mujoco_model, scaled_physics
from models.actor_critic import CriticEnsemble, TanhGaussianActor
from utils.errors import UserError

OBS_DIM, ACT_DIM = 11, 3


def _rollout(env, steps: int = 60) -> np.ndarray:
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    states = [obs]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, ACT_DIM))
        states.append(obs)
    return np.stack(states)


# ---------------------------------------------------------------------------------------------------- physics
@pytest.mark.parametrize("scales", [{"friction": 0.3}, {"gravity": 2.0}, {"mass": 1.5}])
def test_scaled_physics_changes_the_trajectory_and_restores_the_model(scales: dict[str, float]) -> None:
    env = make_env(get_task("hopper-medium-v2"))
    model = mujoco_model(env)
    nominal = (model.geom_friction.copy(), model.opt.gravity.copy(), model.body_mass.copy())
    reference = _rollout(env)
    with scaled_physics([env], scales):
        axis, scale = next(iter(scales.items()))
        changed = {"friction": model.geom_friction, "gravity": model.opt.gravity, "mass": model.body_mass}[axis]
        original = {"friction": nominal[0], "gravity": nominal[1], "mass": nominal[2]}[axis]
        np.testing.assert_allclose(changed, original * scale)
        shifted = _rollout(env)  # reset inside the context keeps the scaled model
    assert not np.allclose(shifted, reference)
    np.testing.assert_array_equal(model.geom_friction, nominal[0])
    np.testing.assert_array_equal(model.opt.gravity, nominal[1])
    np.testing.assert_array_equal(model.body_mass, nominal[2])
    np.testing.assert_array_equal(_rollout(env), reference)
    env.close()


def test_physics_is_restored_after_an_error() -> None:
    env = make_env(get_task("halfcheetah-medium-v2"))
    gravity = mujoco_model(env).opt.gravity.copy()
    with pytest.raises(RuntimeError), scaled_physics([env], {"gravity": 3.0}):
        raise RuntimeError("evaluation failed")
    np.testing.assert_array_equal(mujoco_model(env).opt.gravity, gravity)
    env.close()


def test_unknown_axis_and_micro_gravity_quirk() -> None:
    with pytest.raises(UserError, match="unknown physics axis wind; choose from friction, gravity, mass"):
        effective_scales({"wind": 2.0}, "hopper")
    assert effective_scales({"gravity": 2.0}, "hopper", gravity_quirk=True)["gravity"] == 1.0
    assert effective_scales({"gravity": 2.0}, "halfcheetah", gravity_quirk=True)["gravity"] == 2.0
    assert effective_scales({"gravity": 2.0}, "hopper")["gravity"] == 2.0


def test_sim2real_needs_a_mujoco_env() -> None:
    env = make_env(get_task("pendulum-medium-gen"))
    with pytest.raises(UserError, match="not a MuJoCo environment"), scaled_physics([env], {"friction": 2.0}):
        pass
    env.close()


# ---------------------------------------------------------------------------------------------------- attacks
def _policy(seed: int = 0) -> tuple[TanhGaussianActor, CriticEnsemble]:
    torch.manual_seed(seed)
    return TanhGaussianActor(OBS_DIM, ACT_DIM, (32, 32)), CriticEnsemble(OBS_DIM, ACT_DIM, (32, 32))


OBS_STD = torch.linspace(0.1, 2.0, OBS_DIM)


def _recording(attack: ObservationAttack) -> list[torch.Tensor]:
    """Record the candidate perturbations the attack draws."""
    drawn: list[torch.Tensor] = []
    uniform = attack._uniform

    def record(*shape: int) -> torch.Tensor:
        drawn.append(uniform(*shape))
        return drawn[-1]

    attack._uniform = record
    return drawn


@pytest.mark.parametrize("mode", ["random", "action_diff", "min_Q"])
@pytest.mark.parametrize("steps", [0, 5])
def test_attack_stays_inside_its_box(mode: str, steps: int) -> None:
    if mode == "random" and steps:
        pytest.skip("random has no gradient variant")
    actor, critics = _policy()
    attack = ObservationAttack(mode, 0.15, OBS_STD, actor, critics, num_candidates=20, steps=steps)
    obs = torch.randn(64, OBS_DIM)
    delta = attack(obs) - obs
    assert bool((delta.abs() <= 0.15 * OBS_STD + 1e-6).all())
    assert float(delta.abs().max()) > 0


def test_min_q_picks_the_lowest_q_among_the_candidates_tried() -> None:
    actor, critics = _policy()
    attack = ObservationAttack("min_Q", 0.2, OBS_STD, actor, critics, num_candidates=30)
    drawn = _recording(attack)
    obs = torch.randn(16, OBS_DIM)
    chosen = attack(obs) - obs
    candidates = torch.cat([torch.zeros(16, 1, OBS_DIM), drawn[0]], dim=1)  # δ = 0 is always tried
    with torch.no_grad():
        q = torch.stack(
            [critics(obs, actor(obs + candidates[:, c], deterministic=True)[0]).amin(0) for c in range(31)], dim=1
        )
        q_chosen = critics(obs, actor(obs + chosen, deterministic=True)[0]).amin(0)
    torch.testing.assert_close(q_chosen, q.amin(1))
    torch.testing.assert_close(chosen, candidates[torch.arange(16), q.argmin(1)], atol=1e-6, rtol=0)


def test_action_diff_picks_the_largest_symmetric_kl() -> None:
    actor, critics = _policy()
    attack = ObservationAttack("action_diff", 0.2, OBS_STD, actor, None, num_candidates=30)
    drawn = _recording(attack)
    obs = torch.randn(16, OBS_DIM)
    chosen = attack(obs) - obs
    with torch.no_grad():
        mean, log_std = actor.distribution_params(obs)

        def kl(delta: torch.Tensor) -> torch.Tensor:
            return symmetric_kl(mean, log_std, *actor.distribution_params(obs + delta))

        per_candidate = torch.stack([kl(drawn[0][:, c]) for c in range(30)], dim=1)
        torch.testing.assert_close(kl(chosen), per_candidate.amax(1))


def test_symmetric_kl_of_known_gaussians() -> None:
    zero = torch.zeros(1, 1)
    # N(0, 1) vs N(1, 1): each KL is 1/2.
    assert float(symmetric_kl(zero, zero, zero + 1, zero)) == pytest.approx(1.0)
    assert float(symmetric_kl(zero, zero, zero, zero)) == 0.0


@pytest.mark.parametrize("mode", ["action_diff", "min_Q"])
def test_gradient_steps_are_never_weaker_than_sampling(mode: str) -> None:
    actor, critics = _policy()
    obs = torch.randn(32, OBS_DIM)
    sampled = ObservationAttack(mode, 0.2, OBS_STD, actor, critics, num_candidates=10, seed=1)
    refined = ObservationAttack(mode, 0.2, OBS_STD, actor, critics, num_candidates=10, steps=10, seed=1)
    with torch.no_grad():
        strength_sampled = sampled.objective(obs, (sampled(obs) - obs).unsqueeze(1))
        strength_refined = refined.objective(obs, (refined(obs) - obs).unsqueeze(1))
    assert bool((strength_refined >= strength_sampled - 1e-6).all())
    assert float((strength_refined - strength_sampled).mean()) > 0


def test_zero_budget_equals_the_clean_evaluation() -> None:
    spec = get_task("hopper-medium-v2")
    actor, critics = _policy()
    evaluator = Evaluator(spec, episodes=2, seed=0)
    clean = evaluator.evaluate(actor.act)
    for mode in ("random", "action_diff", "min_Q"):
        attack = ObservationAttack(mode, 0.0, OBS_STD, actor, critics)
        assert evaluator.evaluate(lambda obs, attack=attack: actor.act(attack(obs))) == clean
    attacked = ObservationAttack("random", 0.2, OBS_STD, actor, critics)
    assert evaluator.evaluate(lambda obs: actor.act(attacked(obs))) != clean
    evaluator.close()


def test_attack_needs_what_its_mode_uses() -> None:
    actor, _ = _policy()
    with pytest.raises(UserError, match="min_Q needs the policy's critics"):
        ObservationAttack("min_Q", 0.1, OBS_STD, actor, None)
    with pytest.raises(UserError, match="unknown attack mode"):
        ObservationAttack("max_Q", 0.1, OBS_STD, actor, None)
    with pytest.raises(UserError, match="random attack has no objective"):
        ObservationAttack("random", 0.1, OBS_STD, actor, None, steps=3)
