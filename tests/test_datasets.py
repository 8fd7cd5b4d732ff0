"""Dataset reading, transition building, validation errors, lookup order, writing and generation."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import collect
from envs import get_task, load_dataset
from envs.datasets import find_dataset, read_d4rl_hdf5, to_transitions, write_d4rl_hdf5
from envs.generate import episode_returns, generate_dataset
from envs.termination import get_termination_fn
from utils.errors import UserError

HOPPER = get_task("hopper-random-gen")
EPISODES = ([3, 4, 2], ["terminal", "timeout", "none"])  # rows 0-2, 3-6, 7-8


def _assert_no_cross_episode_pairs(data) -> None:
    """Observation = (episode id, step): a valid s' continues the same episode one step later."""
    np.testing.assert_array_equal(data.next_observations[:, 0], data.observations[:, 0])
    np.testing.assert_array_equal(data.next_observations[:, 1], data.observations[:, 1] + 1)


def test_with_next_observations_every_row_is_kept(tmp_path: Path, episodes_factory) -> None:
    path = tmp_path / "data.hdf5"
    write_d4rl_hdf5(path, episodes_factory(*EPISODES))
    data = load_dataset(HOPPER, dataset_path=str(path))
    assert data.num_transitions == 9  # the timeout row 6 and the final row 8 have real next states
    assert data.source == str(path)
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 3, 7]
    assert np.flatnonzero(data.terminals).tolist() == [2]
    assert data.terminals.dtype == np.float32 and data.observations.dtype == np.float32
    _assert_no_cross_episode_pairs(data)


def test_without_next_observations_no_transition_pairs_two_episodes(episodes_factory) -> None:
    data = to_transitions(episodes_factory(*EPISODES, with_next=False), HOPPER)
    # Each episode's last row (terminal, timeout, end of data) has no successor in the file and is dropped.
    assert data.observations[:, :2].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [2, 0]]
    assert data.rewards.tolist() == [0, 1, 3, 4, 5, 7]
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 2, 5]
    _assert_no_cross_episode_pairs(data)


def test_missing_timeouts_follow_d4rl_episode_length_rule(episodes_factory) -> None:
    raw = episodes_factory([10], ["none"], with_next=False)
    del raw["timeouts"]
    data = to_transitions(raw, HOPPER, max_episode_steps=4)  # implied episodes: rows 0-3, 4-7, 8-9
    assert data.rewards.tolist() == [0, 1, 2, 4, 5, 6, 8]
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 3, 6]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.pop("rewards"), r"has no 'rewards' array; a D4RL dataset needs observations, actions"),
        (lambda raw: raw.update(actions=raw["actions"][:-1]), r"'actions' has 8 rows but 'observations' has 9"),
        (lambda raw: raw["rewards"].__setitem__(5, np.nan), r"'rewards' has NaN/Inf at row 5"),
        (lambda raw: raw["next_observations"].__setitem__((7, 3), np.inf), r"'next_observations' has NaN/Inf at row 7"),
        (
            lambda raw: raw.update(observations=np.zeros((9, 17), np.float32)),
            r"observations has shape \(9, 17\), task hopper-random-gen needs \(9, 11\)",
        ),
        (lambda raw: raw.update(actions=np.zeros((9, 6), np.float32)), r"actions has shape \(9, 6\).*act_dim=3"),
    ],
    ids=["missing key", "mismatched lengths", "nan reward", "inf next obs", "wrong obs dim", "wrong act dim"],
)
def test_bad_files_raise_one_line_user_errors(tmp_path: Path, episodes_factory, change, message: str) -> None:
    raw = episodes_factory(*EPISODES)
    change(raw)
    path = tmp_path / "bad.hdf5"
    write_d4rl_hdf5(path, raw)
    with pytest.raises(UserError, match=message) as err:
        load_dataset(HOPPER, dataset_path=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_not_an_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "hopper-random-gen.hdf5"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(UserError, match=r"is not a readable HDF5 file .*download it again, or generate"):
        read_d4rl_hdf5(path)


def test_lookup_order_dataset_path_then_env_dir_then_home(
    tmp_path: Path, dataset_dirs, episodes_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit_dir = tmp_path / "explicit"
    for directory in (explicit_dir, dataset_dirs.env_dir, dataset_dirs.home_datasets):
        write_d4rl_hdf5(directory / HOPPER.dataset_file, episodes_factory(*EPISODES))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(dataset_dirs.env_dir))

    assert find_dataset(HOPPER, str(explicit_dir)) == explicit_dir / HOPPER.dataset_file
    assert find_dataset(HOPPER, str(explicit_dir / HOPPER.dataset_file)) == explicit_dir / HOPPER.dataset_file
    assert find_dataset(HOPPER, None) == dataset_dirs.env_dir / HOPPER.dataset_file
    assert find_dataset(HOPPER, str(tmp_path)) == dataset_dirs.env_dir / HOPPER.dataset_file  # dir without file
    monkeypatch.delenv("D4RL_DATASET_DIR")
    assert find_dataset(HOPPER, None) == dataset_dirs.home_datasets / HOPPER.dataset_file
    assert load_dataset(HOPPER).source == str(dataset_dirs.home_datasets / HOPPER.dataset_file)
    with pytest.raises(UserError, match=r"dataset_path .*nowhere does not exist"):
        find_dataset(HOPPER, str(tmp_path / "nowhere"))


def test_missing_generated_dataset_says_how_to_generate(dataset_dirs) -> None:
    with pytest.raises(
        UserError,
        match=r"no dataset for hopper-random-gen \(looked in: .*home.*\); generate it with "
        r"python collect.py dataset --task hopper-random-gen$",
    ):
        load_dataset(HOPPER)


def test_missing_d4rl_dataset_without_download(dataset_dirs) -> None:
    spec = get_task("hopper-medium-v2")
    with pytest.raises(UserError) as err:
        load_dataset(spec, download=False)
    message = str(err.value)
    assert "downloading is off" in message and spec.url in message
    assert str(dataset_dirs.home_datasets / spec.dataset_file) in message


@pytest.mark.parametrize(
    ("task", "backend", "message"),
    [
        ("hopper-medium-v2", "tfds", r"unknown dataset backend 'tfds'; choose one of: auto, hdf5, d4rl, minari"),
        ("hopper-random-v2", "minari", r"task hopper-random-v2 has no Minari dataset"),
        ("hopper-random-gen", "d4rl", r"generated by this project, not part of d4rl"),
    ],
)
def test_backend_errors(task: str, backend: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_dataset(get_task(task), backend=backend)


def test_write_is_atomic_and_keeps_d4rl_layout(tmp_path: Path, episodes_factory) -> None:
    raw = episodes_factory(*EPISODES)
    raw["infos/qpos"] = np.ones((9, 6), np.float32)
    path = tmp_path / "out" / "data.hdf5"
    write_d4rl_hdf5(path, raw, metadata={"policy": "uniform_random", "seed": 3})
    assert [p.name for p in path.parent.iterdir()] == ["data.hdf5"]  # no temp file left behind
    with h5py.File(path, "r") as file:
        assert isinstance(file["infos"], h5py.Group)
        assert file["metadata/policy"][()] == b"uniform_random" and file["metadata/seed"][()] == 3
    loaded = read_d4rl_hdf5(path, extra_keys=["infos/qpos"])
    np.testing.assert_array_equal(loaded["infos/qpos"], raw["infos/qpos"])


def test_generated_halfcheetah_times_out_at_max_episode_steps(tmp_path: Path) -> None:
    spec = get_task("halfcheetah-random-gen")
    raw = generate_dataset(spec, num_transitions=1500, seed=0, max_episode_steps=500)
    assert not raw["terminals"].any()  # halfcheetah never terminates
    assert np.flatnonzero(raw["timeouts"]).tolist() == [499, 999, 1499]
    assert not np.array_equal(raw["next_observations"][499], raw["observations"][500])  # a reset in between
    np.testing.assert_array_equal(raw["next_observations"][:499], raw["observations"][1:500])
    np.testing.assert_allclose(raw["infos/action_log_probs"], -6 * np.log(2.0), rtol=1e-6)
    assert np.abs(raw["actions"]).max() <= 1.0

    path = tmp_path / spec.dataset_file
    write_d4rl_hdf5(path, raw)
    data = load_dataset(spec, dataset_path=str(path))
    assert data.num_transitions == 1500
    assert np.flatnonzero(data.episode_starts).tolist() == [0, 500, 1000]
    np.testing.assert_array_equal(data.next_observations, raw["next_observations"])


def test_generated_hopper_terminals_come_from_the_env() -> None:
    raw = generate_dataset(HOPPER, num_transitions=400, seed=1, max_episode_steps=500)
    assert raw["terminals"].sum() > 5  # random hopper falls within a few dozen steps
    assert not raw["timeouts"][:-1].any()
    done = get_termination_fn("hopper", strict=True)(None, None, torch.as_tensor(raw["next_observations"]))
    np.testing.assert_array_equal(done.numpy(), raw["terminals"])  # our rollout check agrees with the env
    assert raw["infos/qpos"].shape == (400, 6) and raw["infos/qvel"].shape == (400, 6)
    again = generate_dataset(HOPPER, num_transitions=400, seed=1, max_episode_steps=500)
    np.testing.assert_array_equal(again["observations"], raw["observations"])  # seeded, reproducible


def test_generate_with_a_behaviour_policy() -> None:
    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full((len(obs), 3), 0.1), np.full(len(obs), -1.5)

    raw = generate_dataset(HOPPER, num_transitions=20, seed=0, policy=policy)
    np.testing.assert_allclose(raw["actions"], 0.1)
    np.testing.assert_allclose(raw["infos/action_log_probs"], -1.5)


def generate_main(argv: list[str]) -> Path:
    """`python collect.py dataset ...` for one task: the path it wrote."""
    (out,) = collect.main(["dataset", *argv])
    return out


def test_generate_cli(dataset_dirs, capsys: pytest.CaptureFixture[str]) -> None:
    out = generate_main(["--task", "hopper-random-gen", "--transitions", "60", "--seed", "2"])
    assert out == dataset_dirs.home_datasets / "hopper-random-gen.hdf5"
    printed = capsys.readouterr().out
    assert f"wrote {out}: 60 transitions" in printed and "normalized score" in printed
    assert load_dataset(HOPPER).num_transitions == 60
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        generate_main(["--task", "hopper-random-gen", "--transitions", "60"])
    generate_main(["--task", "hopper-random-gen", "--transitions", "30", "--overwrite"])
    assert load_dataset(HOPPER).num_transitions == 30
    with pytest.raises(
        UserError, match="hopper-medium-v2 is a D4RL task.*python collect.py dataset --task hopper-medium-gen"
    ):
        generate_main(["--task", "hopper-medium-v2"])
    with pytest.raises(UserError, match="--out names one file"):
        collect.main(["dataset", "--env", "hopper", "--out", "x.hdf5"])


def test_collect_dataset_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        collect.main(["dataset", "--help"])
    text = capsys.readouterr().out
    for flag in ("--task", "--env", "--transitions", "--seed", "--max-episode-steps", "--out", "--overwrite"):
        assert flag in text, flag


def test_episode_returns_split_at_terminals_and_timeouts() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    returns = episode_returns(rewards, np.array([0, 1, 0, 0, 0]), np.array([0, 0, 0, 1, 0]))
    assert returns.tolist() == [3.0, 7.0, 5.0]


@pytest.mark.parametrize("command", ["dataset", "stats"])
def test_collect_refuses_task_and_env_together(dataset_dirs, cli_error, command: str) -> None:
    """--env used to win silently: `--task hopper-random-gen --env walker2d` wrote all five walker2d levels. Now one
    line, exit 2, nothing written, and the command it suggests writes the one dataset asked for by --task."""
    argv = [command, "--task", "hopper-random-gen", "--env", "walker2d"]
    err = cli_error(lambda: collect.main([*argv, *(["--transitions", "1000"] if command == "dataset" else [])]))
    assert "--task and --env both name datasets" in err and "every walker2d level" in err
    assert not dataset_dirs.home_datasets.exists() and not dataset_dirs.env_dir.exists()
    suggestion = err.rsplit("python collect.py ", 1)[1].split()
    assert suggestion == [command, "--task", "hopper-random-gen"]
    if command == "dataset":
        (out,) = collect.main([*suggestion, "--transitions", "20"])
        assert out == dataset_dirs.home_datasets / "hopper-random-gen.hdf5"
        assert sorted(p.name for p in dataset_dirs.home_datasets.iterdir()) == ["hopper-random-gen.hdf5"]
    err = cli_error(lambda: collect.main([command, "--task", "hopper-medium-v2", "--env", "walker2d"]))
    assert err.endswith(f"e.g. python collect.py {command} --env walker2d")  # a D4RL task is not generated here
