"""Task registry: D4RL names, files and URLs, aliases, helpful errors, score normalization, env construction."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from envs import get_task, list_tasks, make_env, normalized_score, tasks
from utils.errors import UserError


def test_registry_covers_d4rl_mujoco_and_generated_tasks() -> None:
    names = set(list_tasks())
    for family in ("hopper", "walker2d", "halfcheetah"):
        for level in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            assert {f"{family}-{level}-v0", f"{family}-{level}-v1", f"{family}-{level}-v2"} <= names
            assert f"{family}-{level}-gen" in names  # the project's generated counterpart
        assert {f"{family}-full-replay-v1", f"{family}-full-replay-v2"} <= names
        assert f"{family}-full-replay-v0" not in names  # D4RL has no v0 full-replay
    assert {f"pendulum-{level}-gen" for level in ("random", "medium", "expert")} <= names
    assert {"Hopper-v4", "Walker2d-v4", "HalfCheetah-v4"} <= names  # online tasks (PAL/MAL), named by gym id
    assert "CustomPendulum-v0" in names  # the WMOPO Pendulum study's env
    assert len(names) == 3 * (5 + 6 + 6) + 5 * 5 + 4


def test_d4rl_files_and_urls() -> None:
    spec = get_task("hopper-medium-replay-v2")
    assert (spec.family, spec.level, spec.version, spec.gym_id) == ("hopper", "medium-replay", "v2", "Hopper-v4")
    assert (spec.obs_dim, spec.act_dim) == (11, 3)
    assert spec.dataset_file == "hopper_medium_replay-v2.hdf5"
    assert spec.url == "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium_replay-v2.hdf5"
    assert get_task("halfcheetah-full-replay-v1").url.endswith("/gym_mujoco_v1/halfcheetah_full_replay-v1.hdf5")
    assert get_task("walker2d-medium-expert-v0").url.endswith("/gym_mujoco/walker2d_medium_expert.hdf5")
    # D4RL's v0 medium-replay files are the "mixed" ones; walker2d's is named walker_mixed.
    assert get_task("walker2d-medium-replay-v0").dataset_file == "walker_mixed.hdf5"
    assert get_task("halfcheetah-medium-replay-v0").dataset_file == "halfcheetah_mixed.hdf5"
    assert (get_task("walker2d-random-v2").obs_dim, get_task("halfcheetah-expert-v2").act_dim) == (17, 6)


def test_generated_and_minari_entries() -> None:
    generated = get_task("walker2d-random-gen")
    assert (generated.version, generated.url, generated.dataset_file) == ("gen", None, "walker2d-random-gen.hdf5")
    assert generated.ref_min_score == get_task("walker2d-random-v2").ref_min_score
    assert get_task("hopper-medium-v2").minari_id == "mujoco/hopper/medium-v0"
    assert get_task("hopper-medium-replay-v2").minari_id is None


def test_alias_and_case_resolve_to_canonical_name() -> None:
    assert get_task("hopper-mixed-v0").name == "hopper-medium-replay-v0"
    assert get_task("walker2d-mixed-v0").dataset_file == "walker_mixed.hdf5"
    assert get_task(" Hopper-Medium-v2 ").name == "hopper-medium-v2"


def test_unknown_task_suggests_close_names() -> None:
    with pytest.raises(UserError) as err:
        get_task("hoper-medium-v2")
    message = str(err.value)
    assert message.startswith("unknown task 'hoper-medium-v2'; did you mean: hopper-medium-v2, hopper-medium-v1")
    assert message.endswith(
        "(list all with: python train.py --list-tasks; your own task: pass its task file, see docs/custom_tasks.md)"
    )
    assert "\n" not in message
    with pytest.raises(UserError, match=r"^unknown task 'pong' \(list all with"):
        get_task("pong")


def test_register_task_adds_new_levels_and_refuses_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    new = dataclasses.replace(
        get_task("hopper-random-gen"), name="hopper-noisy-gen", level="noisy", dataset_file="hopper-noisy-gen.hdf5"
    )
    tasks.register_task(new)
    assert get_task("hopper-noisy-gen") is new
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task(new)


@pytest.mark.parametrize(
    ("task", "returns", "expected"),
    [
        ("hopper-medium-v2", -20.272305, 0.0),
        ("hopper-medium-v2", 3234.3, 100.0),
        ("hopper-medium-v2", 1607.0138475, 50.0),  # midpoint of [-20.272305, 3234.3]
        ("walker2d-random-v0", 1.629008 + 0.25 * (4592.3 - 1.629008), 25.0),
        ("halfcheetah-expert-v1", -280.178953 - 12415.178953, -100.0),
    ],
)
def test_normalized_score_values(task: str, returns: float, expected: float) -> None:
    score = normalized_score(get_task(task), returns)
    assert isinstance(score, float)
    assert score == pytest.approx(expected, abs=1e-9)


def test_normalized_score_of_array() -> None:
    spec = get_task("halfcheetah-medium-v2")
    scores = normalized_score(spec, np.array([-280.178953, 12135.0]))
    np.testing.assert_allclose(scores, [0.0, 100.0], atol=1e-9)


@pytest.mark.parametrize("task", ["hopper-medium-v2", "walker2d-medium-v2", "halfcheetah-medium-v2"])
def test_make_env_matches_spec_without_deprecation_noise(task: str) -> None:
    spec = get_task(task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_env(spec, seed=3)
    try:
        assert env.observation_space.shape == (spec.obs_dim,)
        assert env.action_space.shape == (spec.act_dim,)
        assert env.spec.max_episode_steps == 1000
        assert not [w for w in caught if "out of date" in str(w.message)]
    finally:
        env.close()


def test_halfcheetah_keeps_d4rl_total_mass(capfd: pytest.CaptureFixture[str]) -> None:
    env = make_env(get_task("halfcheetah-medium-v2"))
    try:
        # D4RL's data came from this model with settotalmass=14, which MuJoCo still applies (quietly, here).
        assert env.unwrapped.model.body_mass.sum() == pytest.approx(14.0)
    finally:
        env.close()
    assert "settotalmass" not in "".join(capfd.readouterr())
