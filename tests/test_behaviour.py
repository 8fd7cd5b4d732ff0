"""Behaviour-policy training: interrupted and resumed training equals an uninterrupted run; policy files."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import collect
from algos.behaviour import BehaviourConfig, BehaviourTrainer
from config import SACConfig
from envs.behaviour import (
    InteractionLog,
    load_behaviour_policy,
    replay_episode,
    save_behaviour_policy,
)
from envs.tasks import get_task, make_env
from utils.errors import UserError, run_cli

SPEC = get_task("hopper-random-gen")
TINY = BehaviourConfig(
    total_steps=400,
    random_steps=100,
    batch_size=32,
    snapshot_every=200,
    checkpoint_every=60,
    eval_episodes=1,
    max_episode_steps=50,
    seed=5,
    sac=dataclasses.replace(SACConfig(), hidden_dims=[16, 16], alpha_max=None, lr_schedule="none"),
)


class Killed(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = BehaviourTrainer(SPEC, TINY, tmp_path / "straight", progress=False)
    straight.train()

    # Same run, "killed" right after its third checkpoint (work done after it is lost, as with kill -9).
    saves = {"count": 0}
    original_save = BehaviourTrainer.save_checkpoint

    def save_then_die(self: BehaviourTrainer) -> None:
        original_save(self)
        saves["count"] += 1
        if saves["count"] == 3:
            raise Killed

    monkeypatch.setattr(BehaviourTrainer, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        BehaviourTrainer(SPEC, TINY, tmp_path / "killed", progress=False).train()
    monkeypatch.setattr(BehaviourTrainer, "save_checkpoint", original_save)

    resumed = BehaviourTrainer(SPEC, TINY, tmp_path / "killed", progress=False)
    assert resumed.resume()
    assert 0 < resumed.env_steps < TINY.total_steps
    assert len(resumed.buffer) == resumed.env_steps  # the replay buffer was rebuilt from the log
    resumed.train()

    for (name, a), b in zip(straight.sac.state_dict().items(), resumed.sac.state_dict().values()):
        assert torch.equal(a, b), name
    assert [e["return_mean"] for e in straight.evaluations] == [e["return_mean"] for e in resumed.evaluations]
    snapshots = sorted(p.name for p in (tmp_path / "killed" / "snapshots").iterdir())
    assert snapshots == ["step200.pt", "step400.pt"]


def test_log_replays_the_training_transitions(tmp_path: Path) -> None:
    trainer = BehaviourTrainer(SPEC, dataclasses.replace(TINY, total_steps=120), tmp_path, progress=False)
    trainer.train()
    log = InteractionLog.from_state_dict(torch.load(trainer.training_path, weights_only=False)["log"])
    assert sum(len(a) for a in log.actions) == 120
    env = make_env(SPEC, max_episode_steps=TINY.max_episode_steps)
    replayed = [replay_episode(env, seed, actions) for seed, actions in zip(log.reset_seeds, log.actions)]
    observations = np.concatenate([episode["observations"] for episode in replayed])
    np.testing.assert_array_equal(observations, trainer.buffer.storage.obs[:120].numpy())
    ends = np.concatenate([episode["terminals"] | episode["timeouts"] for episode in replayed])
    assert ends[-1] and ends.sum() == len(replayed)  # every episode ends exactly once, at its last step


def test_resume_refuses_a_checkpoint_of_another_env(tmp_path: Path) -> None:
    BehaviourTrainer(SPEC, dataclasses.replace(TINY, total_steps=60), tmp_path, progress=False).train()
    walker = BehaviourTrainer(get_task("walker2d-random-gen"), TINY, tmp_path, progress=False)
    with pytest.raises(UserError, match="Hopper-v4"):
        walker.resume()


def test_policy_file_round_trip_and_env_check(tmp_path: Path) -> None:
    trainer = BehaviourTrainer(SPEC, TINY, tmp_path, progress=False)
    save_behaviour_policy(trainer.sac.actor, SPEC, tmp_path / "p.pt", env_steps=7)
    actor, metadata = load_behaviour_policy(tmp_path / "p.pt", SPEC)
    obs = torch.randn(4, SPEC.obs_dim)
    torch.testing.assert_close(actor.act(obs), trainer.sac.actor.act(obs))
    assert metadata == {"env_steps": 7}
    with pytest.raises(UserError, match="acts in Hopper-v4, not Walker2d-v4"):
        load_behaviour_policy(tmp_path / "p.pt", get_task("walker2d-medium-v2"))


def test_collect_rejects_an_unknown_env(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: collect.main(["train", "--env", "ant"]))
    assert exit_info.value.code == 2
    assert "unknown env 'ant'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny behaviour run, its chosen policies and medium-replay log (what behaviour/<env>/ holds for real)."""
    from envs.behaviour import export_policies

    root = tmp_path_factory.mktemp("behaviour")
    cfg = dataclasses.replace(TINY, total_steps=500, snapshot_every=100)
    BehaviourTrainer(SPEC, cfg, root / "work", progress=False).train()
    export_policies(SPEC, root / "work", root / "hopper", medium_fraction=0.005)  # tiny runs score ~1
    return root / "hopper"


def test_export_chooses_expert_as_best_and_medium_as_first_above_the_threshold(exported: Path) -> None:
    _, expert = load_behaviour_policy(exported / "expert.pt", SPEC)
    _, medium = load_behaviour_policy(exported / "medium.pt", SPEC)
    snapshot_scores = {
        meta["env_steps"]: meta["evaluation"]["normalized_mean"]
        for meta in (load_behaviour_policy(p, SPEC)[1] for p in (exported.parent / "work" / "snapshots").iterdir())
    }
    assert expert["evaluation"]["normalized_mean"] == max(snapshot_scores.values())
    assert medium["env_steps"] == min(step for step, score in snapshot_scores.items() if score >= 0.5)
    assert medium["level"] == "medium" and expert["level"] == "expert"
    with np.load(exported / "medium_replay.npz") as archive:
        assert int(archive["lengths"].sum()) == medium["env_steps"]


@pytest.mark.parametrize("level", ["random", "medium", "expert", "medium-replay", "medium-expert"])
def test_every_generated_level_has_the_d4rl_layout(level: str, exported: Path, tmp_path: Path) -> None:
    from envs.datasets import load_dataset, write_d4rl_hdf5
    from envs.generate import build_dataset

    spec = get_task(f"hopper-{level}-gen")
    data, metadata = build_dataset(spec, 300, seed=1, max_episode_steps=50, policies_dir=exported)
    keys = {
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminals",
        "timeouts",
        "infos/qpos",
        "infos/qvel",
        "infos/action_log_probs",
    }
    assert keys <= set(data)
    n = len(data["rewards"])
    assert all(len(data[k]) == n for k in keys)
    expected = {"random": 300, "medium": 300, "expert": 300, "medium-expert": 600}
    if level in expected:
        assert n == expected[level]
    else:  # medium-replay: exactly the training transitions up to the medium snapshot
        assert n == load_behaviour_policy(exported / "medium.pt", SPEC)[1]["env_steps"]
    ends = data["terminals"] | data["timeouts"]
    assert ends[-1] and not (data["terminals"] & data["timeouts"]).any()
    episode_lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))
    assert episode_lengths.max() <= 50  # 50-step episodes end in a timeout, never later
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    np.testing.assert_array_equal(data["next_observations"][:-1][~ends[:-1]], data["observations"][1:][~ends[:-1]])
    assert np.isfinite(data["infos/action_log_probs"]).all()
    if level in ("medium", "expert"):
        assert metadata["policy_env_steps"] > 0 and "policy/net.0.weight" in metadata
    path = tmp_path / spec.dataset_file
    write_d4rl_hdf5(path, data, metadata)
    loaded = load_dataset(spec, str(path))
    assert loaded.num_transitions == n
    np.testing.assert_array_equal(loaded.episode_starts, np.isin(np.arange(n), starts))


def test_export_refuses_when_no_snapshot_is_good_enough(exported: Path, tmp_path: Path) -> None:
    from envs.behaviour import export_policies

    with pytest.raises(UserError, match="reaches normalized score 90.0"):
        export_policies(SPEC, exported.parent / "work", tmp_path, medium_fraction=0.9)


def test_generated_level_needs_its_policy(tmp_path: Path) -> None:
    from envs.generate import build_dataset

    with pytest.raises(UserError, match="medium.pt does not exist"):
        build_dataset(get_task("hopper-medium-gen"), 10, 0, policies_dir=tmp_path)
    with pytest.raises(UserError, match="medium_replay.npz is missing"):
        build_dataset(get_task("hopper-medium-replay-gen"), 10, 0, policies_dir=tmp_path)


def test_interrupted_collection_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envs import generate

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "hopper-random-gen.hdf5"
    monkeypatch.setattr(generate, "generate_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect.main(["dataset", "--task", "hopper-random-gen", "--transitions", "50", "--out", str(out)])
    monkeypatch.undo()
    import h5py

    real_create = h5py.Group.create_dataset
    calls = {"n": 0}

    def dies_while_writing(self: h5py.Group, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        collect.main(["dataset", "--task", "hopper-random-gen", "--transitions", "50", "--out", str(out)])
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temp file


def test_collect_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.hdf5"
    collect.main(["dataset", "--task", "hopper-random-gen", "--transitions", "20", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            lambda: collect.main(["dataset", "--task", "hopper-random-gen", "--transitions", "20", "--out", str(out)])
        )
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_pendulum_generation_acts_in_unit_bounds_with_200_step_episodes() -> None:
    from envs.generate import build_dataset
    from envs.termination import get_termination_fn

    spec = get_task("pendulum-random-gen")
    data, metadata = build_dataset(spec, 450, seed=0)
    assert data["observations"].shape == (450, 3) and data["actions"].shape == (450, 1)
    assert np.abs(data["actions"]).max() <= 1.0 and np.abs(data["actions"]).max() > 0.9  # rescaled from ±2
    assert np.flatnonzero(data["timeouts"]).tolist() == [199, 399, 449] and not data["terminals"].any()
    assert metadata["max_episode_steps"] == 200
    env = make_env(spec)
    assert env.unwrapped.action_space.high[0] == 2.0  # the physics still gets the full torque range
    obs = torch.as_tensor(data["observations"])
    assert not get_termination_fn("pendulum")(obs, obs[:, :1], obs).any()


def test_exported_policies_stay_candidates_when_snapshots_are_gone(exported: Path, tmp_path: Path) -> None:
    """Snapshots are not committed: a later export must keep the medium and expert chosen before."""
    import shutil

    from envs.behaviour import export_policies

    work = tmp_path / "work"
    shutil.copytree(exported.parent / "work", work)
    out = tmp_path / "hopper"
    shutil.copytree(exported, out)
    before = {lvl: load_behaviour_policy(out / f"{lvl}.pt", SPEC)[1]["env_steps"] for lvl in ("medium", "expert")}
    for snapshot in (work / "snapshots").iterdir():
        snapshot.unlink()
    export_policies(SPEC, work, out, medium_fraction=0.005)
    after = {lvl: load_behaviour_policy(out / f"{lvl}.pt", SPEC)[1]["env_steps"] for lvl in ("medium", "expert")}
    assert after == before


def test_medium_replay_refuses_a_log_the_env_does_not_reproduce(exported: Path, tmp_path: Path) -> None:
    import shutil

    from envs.generate import build_dataset

    shutil.copytree(exported, tmp_path / "hopper")
    with np.load(exported / "medium_replay.npz") as archive:
        state = dict(archive)
    state["fingerprints"] = state["fingerprints"] + 1.0  # as if logged on a machine whose MuJoCo differs
    np.savez_compressed(tmp_path / "hopper" / "medium_replay.npz", **state)
    with pytest.raises(UserError, match="gives other observations than were logged"):
        build_dataset(get_task("hopper-medium-replay-gen"), 0, 0, policies_dir=tmp_path / "hopper")


def test_medium_expert_is_medium_then_expert_and_reuses_their_files(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envs.datasets import write_d4rl_hdf5
    from envs.generate import build_dataset

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    medium, medium_meta = build_dataset(get_task("hopper-medium-gen"), 120, 4, policies_dir=exported)
    expert, _ = build_dataset(get_task("hopper-expert-gen"), 120, 4, policies_dir=exported)
    both, _ = build_dataset(get_task("hopper-medium-expert-gen"), 120, 4, policies_dir=exported)
    for key in ("observations", "actions", "infos/action_log_probs", "timeouts"):
        np.testing.assert_array_equal(both[key], np.concatenate([medium[key], expert[key]]))
    # A medium file made with the same seed, size and policy is read instead of regenerated.
    marked = {**medium, "rewards": medium["rewards"] + 1000.0}
    write_d4rl_hdf5(tmp_path / "hopper-medium-gen.hdf5", marked, medium_meta)
    reused, _ = build_dataset(get_task("hopper-medium-expert-gen"), 120, 4, policies_dir=exported)
    np.testing.assert_array_equal(reused["rewards"][:120], marked["rewards"])
    other_seed, _ = build_dataset(get_task("hopper-medium-expert-gen"), 120, 5, policies_dir=exported)
    assert other_seed["rewards"][:120].max() < 1000.0


def test_collect_stats_reports_d4rl_style_statistics(
    tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """collect.py stats: transitions, episodes and the mean ± std of episode returns and normalized scores of each
    local dataset, and the command that makes a missing one."""
    import collect
    from envs import get_task, load_dataset, normalized_score

    monkeypatch.setenv("D4RL_DATASET_DIR", str(tiny_dataset_dir))
    (row,) = collect.stats(argparse.Namespace(command="stats", env=None, task=["hopper-random-gen"]))
    data = load_dataset(get_task("hopper-random-gen"), download=False)
    returns = data.episode_returns()
    assert (row["transitions"], row["episodes"]) == (2000.0, float(len(returns))) and len(returns) > 10
    assert row["return_mean"] == pytest.approx(returns.mean())
    expected = float(normalized_score(get_task("hopper-random-gen"), returns.mean()))
    assert row["normalized_mean"] == pytest.approx(expected)
    collect.main(["stats", "--task", "hopper-expert-gen"])
    assert "python collect.py dataset --task hopper-expert-gen" in capsys.readouterr().out
