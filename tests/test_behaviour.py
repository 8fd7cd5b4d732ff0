"""Behaviour-policy training: interrupted and resumed training equals an uninterrupted run; policy files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import collect
from config import SACConfig
from envs.behaviour import (
    BehaviourConfig,
    BehaviourTrainer,
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
    original_save = BehaviourTrainer.save

    def save_then_die(self: BehaviourTrainer) -> None:
        original_save(self)
        saves["count"] += 1
        if saves["count"] == 3:
            raise Killed

    monkeypatch.setattr(BehaviourTrainer, "save", save_then_die)
    with pytest.raises(Killed):
        BehaviourTrainer(SPEC, TINY, tmp_path / "killed", progress=False).train()
    monkeypatch.setattr(BehaviourTrainer, "save", original_save)

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
