"""Behaviour policies and their interaction logs, the world's side of generated datasets: policy files (actor
weights, the env they act in, how they were made), the log of every training episode (reset seed, actions, action
log-probs, an observation fingerprint) and its exact replay in the deterministic MuJoCo env, and the choice of the
medium and expert policies among training snapshots. The SAC that trains them online is an algorithm and lives in
algos/behaviour.py; nothing here imports algorithms.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.tasks import TaskSpec, physics_state
from models.actor_critic import TanhGaussianActor
from utils.checkpoint import atomic_torch_save, atomic_write, load_project_file
from utils.errors import UserError

POLICY_FORMAT = "offline-mbrl-behaviour-policy/1"
TRAINING_FILE = "training.pt"  # a training run's state (algos/behaviour.py), not tracked by git
MEDIUM_REPLAY_FILE = "medium_replay.npz"  # the training log up to the medium snapshot, numpy arrays, tracked


@dataclass
class InteractionLog:
    """Every episode of training as (reset seed, actions), enough to replay it exactly in the env."""

    reset_seeds: list[int] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    log_probs: list[np.ndarray] = field(default_factory=list)  # of each action under the policy that took it
    fingerprints: list[float] = field(default_factory=list)  # sum of the episode's observations

    def append(self, reset_seed: int, actions: np.ndarray, log_probs: np.ndarray, fingerprint: float) -> None:
        self.reset_seeds.append(reset_seed)
        self.actions.append(actions)
        self.log_probs.append(log_probs)
        self.fingerprints.append(fingerprint)

    @property
    def num_steps(self) -> int:
        return sum(len(a) for a in self.actions)

    def state_dict(self) -> dict[str, Any]:
        return {
            "reset_seeds": np.asarray(self.reset_seeds, np.int64),
            "lengths": np.array([len(a) for a in self.actions], np.int64),
            "actions": np.concatenate(self.actions) if self.actions else np.zeros((0, 0), np.float32),
            "log_probs": np.concatenate(self.log_probs) if self.log_probs else np.zeros(0, np.float32),
            "fingerprints": np.asarray(self.fingerprints, np.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> InteractionLog:
        bounds = np.cumsum(state["lengths"])[:-1]
        split = (lambda a: list(np.split(a, bounds))) if len(state["lengths"]) else (lambda a: [])
        return cls(
            [int(s) for s in state["reset_seeds"]],
            split(state["actions"]),
            split(state["log_probs"]),
            [float(f) for f in state["fingerprints"]],
        )

    def prefix(self, num_steps: int) -> InteractionLog:
        """The first `num_steps` steps (the last episode cut short if it straddles the boundary)."""
        out, remaining = InteractionLog(), num_steps
        for seed, actions, log_probs, print_ in zip(self.reset_seeds, self.actions, self.log_probs, self.fingerprints):
            if remaining <= 0:
                break
            cut = min(remaining, len(actions))
            out.append(seed, actions[:cut], log_probs[:cut], print_ if cut == len(actions) else float("nan"))
            remaining -= cut
        return out


def replay_episode(env: Any, reset_seed: int, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Re-run one logged episode; returns its transitions (D4RL keys) and qpos/qvel."""
    obs, _ = env.reset(seed=reset_seed)
    rows: dict[str, list[Any]] = {
        k: []
        for k in ("observations", "next_observations", "rewards", "terminals", "timeouts", "infos/qpos", "infos/qvel")
    }
    for i, action in enumerate(actions):
        rows["observations"].append(obs)
        qpos, qvel = physics_state(env)
        rows["infos/qpos"].append(qpos)
        rows["infos/qvel"].append(qvel)
        obs, reward, terminated, truncated, _ = env.step(action)
        rows["next_observations"].append(obs)
        rows["rewards"].append(reward)
        rows["terminals"].append(terminated)
        # The log may end mid-episode (the training budget ran out): that last step is a timeout too.
        rows["timeouts"].append((truncated or i == len(actions) - 1) and not terminated)
    out = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    out["terminals"], out["timeouts"] = out["terminals"].astype(bool), out["timeouts"].astype(bool)
    out["actions"] = np.asarray(actions, np.float32)
    return out


def fingerprint(observations: np.ndarray) -> float:
    return float(np.asarray(observations, np.float64).sum())


def replay_log_episodes(env: Any, log: InteractionLog, source: str | Path) -> list[dict[str, np.ndarray]]:
    """Replay every logged episode, refusing if the env no longer reproduces the logged observations."""
    episodes = []
    for i, (seed, actions, expected) in enumerate(zip(log.reset_seeds, log.actions, log.fingerprints)):
        episode = replay_episode(env, seed, actions)
        # A log prefix cut mid-episode carries NaN for that episode: there is nothing to compare.
        if np.isfinite(expected) and not np.isclose(fingerprint(episode["observations"]), expected, rtol=0, atol=1e-3):
            raise UserError(
                f"replaying episode {i} of {source} gives other observations than were logged (a "
                "different MuJoCo build?); this log cannot be reproduced here"
            )
        episodes.append(episode)
    return episodes


def save_behaviour_policy(actor: TanhGaussianActor, spec: TaskSpec, path: str | Path, **metadata: Any) -> None:
    """A policy file: actor weights, the env it acts in, and how it was made (env steps, evaluation)."""
    atomic_torch_save(
        {
            "format": POLICY_FORMAT,
            "gym_id": spec.gym_id,
            "family": spec.family,
            "obs_dim": spec.obs_dim,
            "act_dim": spec.act_dim,
            "hidden_dims": [layer.out_features for layer in actor.net if isinstance(layer, torch.nn.Linear)][:-1],
            "log_std_bounds": (actor.log_std_min, actor.log_std_max),
            "actor": actor.state_dict(),
            "metadata": metadata,
        },
        path,
    )


def load_behaviour_policy(path: str | Path, spec: TaskSpec) -> tuple[TanhGaussianActor, dict[str, Any]]:
    """Load a policy file for `spec`'s env; a policy for another env is refused with one line."""
    path = Path(path)
    payload = load_project_file(
        path,
        POLICY_FORMAT,
        missing=f"behaviour policy {path} does not exist; train one with python collect.py train",
        unreadable=f"behaviour policy {path} cannot be read",
        foreign=f"{path} is not a behaviour policy file of this project",
    )
    if payload["gym_id"] != spec.gym_id:
        raise UserError(
            f"behaviour policy {path} acts in {payload['gym_id']}, not {spec.gym_id} ({spec.name}); "
            "use a policy trained for this env"
        )
    actor = TanhGaussianActor(
        payload["obs_dim"], payload["act_dim"], payload["hidden_dims"], 1.0, *payload["log_std_bounds"]
    )
    actor.load_state_dict(payload["actor"])
    return actor, payload["metadata"]


def export_policies(
    spec: TaskSpec, work_dir: str | Path, out_dir: str | Path, medium_fraction: float = 1 / 3
) -> dict[str, dict[str, Any]]:
    """Choose the dataset policies among a training run's snapshots and write what regenerating data needs.

    expert = the snapshot with the best evaluation return; medium = the earliest snapshot whose normalized score
    reaches 100 * `medium_fraction` (D4RL: "about 1/3 of the expert", measured against D4RL's expert reference
    rather than our own best snapshot, so the choice does not move as training continues).
    Writes out_dir/{medium,expert}.pt and out_dir/medium_replay.npz, the training log up to the medium snapshot,
    taken from work_dir/training.pt, or from the medium_replay.npz already there when that holds it (a clone).
    """
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    # Snapshots are not committed; policies exported earlier stay candidates, so a later session can only keep
    # the earliest medium and improve the expert.
    candidates = [*(work_dir / "snapshots").glob("step*.pt"), *(out_dir / f"{lvl}.pt" for lvl in ("medium", "expert"))]
    by_step = {}
    for path in candidates:
        if path.is_file():
            actor, metadata = load_behaviour_policy(path, spec)
            metadata = {k: v for k, v in metadata.items() if k not in ("level", "rule")}
            by_step[metadata["env_steps"]] = (
                metadata["env_steps"],
                metadata["evaluation"]["normalized_mean"],
                actor,
                metadata,
            )
    snapshots = list(by_step.values())
    if not snapshots:
        raise UserError(
            f"no snapshots in {work_dir / 'snapshots'}; train first: python collect.py train --env {spec.family}"
        )
    snapshots.sort(key=lambda snapshot: snapshot[0])
    expert = max(snapshots, key=lambda snapshot: snapshot[1])
    medium = next((s for s in snapshots if s[1] >= 100 * medium_fraction), None)
    if medium is None:
        raise UserError(
            f"no snapshot in {work_dir} reaches normalized score {100 * medium_fraction:.1f} yet (best: "
            f"{expert[1]:.1f}); train longer or pass a smaller --medium-fraction"
        )
    log = _medium_replay_log(spec, work_dir, out_dir, medium[0])  # checked before anything is written
    chosen = {}
    for level, (_, _, actor, metadata) in (("medium", medium), ("expert", expert)):
        save_behaviour_policy(
            actor, spec, out_dir / f"{level}.pt", **metadata, level=level, rule=f"medium_fraction={medium_fraction:.4f}"
        )
        chosen[level] = metadata
    if log is not None:
        arrays = log.state_dict()
        atomic_write(out_dir / MEDIUM_REPLAY_FILE, lambda handle: np.savez_compressed(handle, **arrays))
    return chosen


def _medium_replay_log(spec: TaskSpec, work_dir: Path, out_dir: Path, medium_steps: int) -> InteractionLog | None:
    """The training log up to the medium snapshot, from work_dir's training.pt or, without one (a clone: git does
    not track it), from the medium-replay log exported before; None when out_dir already holds exactly that log."""
    state_path, replay_path = work_dir / TRAINING_FILE, out_dir / MEDIUM_REPLAY_FILE
    exported = None
    if replay_path.is_file():
        with np.load(replay_path) as archive:
            exported = InteractionLog.from_state_dict(dict(archive))
    if state_path.is_file():
        log = InteractionLog.from_state_dict(torch.load(state_path, weights_only=False)["log"])
        if log.num_steps < medium_steps:
            raise UserError(
                f"{state_path} logs {log.num_steps} steps, fewer than the medium snapshot's "
                f"{medium_steps}; let training write its next checkpoint first"
            )
    elif exported is not None and exported.num_steps >= medium_steps:
        log = exported
    else:
        # collect.py trains in out_dir unless told --work-dir
        work_flag = [] if work_dir.resolve() == out_dir.resolve() else ["--work-dir", str(work_dir)]
        command = ["python", "collect.py", "train", "--env", spec.family, "--steps", str(medium_steps), *work_flag]
        raise UserError(
            f"{state_path} is missing and {replay_path} does not log the training up to the medium snapshot (step "
            f"{medium_steps}); recreate the training state: {shlex.join([*command, '--from-scratch'])}"
        )
    log = log.prefix(medium_steps)
    if exported is not None and _same_log(log, exported):
        return None  # rewriting would only change the archive's timestamps
    return log


def _same_log(a: InteractionLog, b: InteractionLog) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(
        np.array_equal(first[key], second[key], equal_nan=True) for key in first
    )
