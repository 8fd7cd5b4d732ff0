"""The evaluator: comparable across calls, batched policy calls, and no effect on training's RNG streams."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from envs import Evaluator, get_task, normalized_score
from envs.evaluation import episode_reset_seed, evaluate_together

SPEC = get_task("hopper-random-gen")


@pytest.fixture(scope="module")
def evaluator():
    evaluator = Evaluator(SPEC, episodes=2, seed=0)
    yield evaluator
    evaluator.close()


def _zero_policy(obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(obs.shape[0], SPEC.act_dim)


def _global_rng_states() -> tuple:
    np_state = np.random.get_state()
    return torch.get_rng_state(), np_state[1].copy(), np_state[2], random.getstate()


def _assert_same_states(before: tuple, after: tuple) -> None:
    assert torch.equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_same_result_on_every_call_and_consistent_scores(evaluator: Evaluator) -> None:
    first = evaluator.evaluate(_zero_policy)
    second = evaluator.evaluate(_zero_policy)
    assert first == second
    assert set(first) == {"return_mean", "return_std", "length_mean", "length_std", "normalized_mean", "normalized_std"}
    assert first["length_mean"] > 1
    assert first["normalized_mean"] == pytest.approx(normalized_score(SPEC, first["return_mean"]))
    # std is scaled without the -ref_min offset (OfflineRL-Kit adds it by normalizing the std like a return)
    assert first["normalized_std"] == pytest.approx(
        100 * first["return_std"] / (SPEC.ref_max_score - SPEC.ref_min_score)
    )


def test_global_rngs_untouched_even_by_a_sampling_policy(evaluator: Evaluator) -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = _global_rng_states()
    evaluator.evaluate(lambda obs: torch.rand(obs.shape[0], SPEC.act_dim) * 2 - 1)
    _assert_same_states(before, _global_rng_states())


def test_result_does_not_depend_on_global_seeds(evaluator: Evaluator) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = evaluator.evaluate(_zero_policy)
    torch.manual_seed(2)
    np.random.seed(2)
    assert evaluator.evaluate(_zero_policy) == first


def test_policy_gets_one_batched_float32_call_per_step(evaluator: Evaluator) -> None:
    shapes = []

    def policy(obs: torch.Tensor) -> torch.Tensor:
        assert obs.dtype == torch.float32 and obs.device.type == "cpu"
        shapes.append(tuple(obs.shape))
        return torch.zeros(obs.shape[0], SPEC.act_dim)

    result = evaluator.evaluate(policy)
    assert shapes[0] == (2, SPEC.obs_dim)
    assert len(shapes) == result["length_mean"] + result["length_std"]  # two episodes: mean + std = the longer
    assert sum(s[0] for s in shapes) == 2 * result["length_mean"]


def test_episodes_get_distinct_reset_seeds() -> None:
    seeds = [episode_reset_seed(0, i) for i in range(3)] + [episode_reset_seed(1, 0)]
    assert len(set(seeds)) == 4
    assert episode_reset_seed(0, 1) == episode_reset_seed(0, 1)


def test_wrong_action_shape_is_reported(evaluator: Evaluator) -> None:
    with pytest.raises(ValueError, match=r"act_fn returned actions of shape \(2, 2\), expected \(2, 3\)"):
        evaluator.evaluate(lambda obs: torch.zeros(obs.shape[0], 2))


def test_evaluating_together_gives_each_evaluators_own_scores() -> None:
    """Seeds evaluated side by side (one policy call for all) score as each evaluated alone, episodes ending at
    different steps in different rows included. The policies are elementwise (a = tanh(c·s[:act_dim]), one c per
    seed), so batching cannot change their rounding: a batched matrix product may round differently from an unbatched
    one on some CPUs, which is not what this test is about."""
    scales = [1.5, -0.8]
    evaluators = [Evaluator(SPEC, episodes=2, seed=0), Evaluator(SPEC, episodes=3, seed=1)]
    try:
        alone = [
            ev.evaluate(lambda obs, c=c: torch.tanh(obs[..., : SPEC.act_dim] * c)) for ev, c in zip(evaluators, scales)
        ]
        per_row = torch.tensor(scales).view(-1, 1, 1)
        together = evaluate_together(evaluators, lambda obs: torch.tanh(obs[..., : SPEC.act_dim] * per_row))
    finally:
        for ev in evaluators:
            ev.close()
    assert together == alone
    assert alone[0]["length_mean"] != alone[1]["length_mean"]
