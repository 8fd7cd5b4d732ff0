"""Behaviour policies for D4RL-style datasets: the project's SAC trained online in the gymnasium env, as D4RL's
behaviour policies were trained with rlkit's SAC (2 x 256 tanh-Gaussian actor), resumable across interruptions.

Everything needed to continue training lives in one small file, `<work_dir>/training.pt`: the SAC training state,
the RNG states, the counters, and the interaction log (each episode's reset seed and its float32 actions). The
replay buffer is not saved: on resume it is rebuilt by replaying the log in the deterministic MuJoCo env (checked
against a fingerprint of each episode's observations), which keeps the file a few MB instead of hundreds. The same
log reproduces the medium-replay dataset later without storing it.

Policy snapshots (actor weights plus their evaluation return) go to `<work_dir>/snapshots/step<k>.pt`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from algos.sac import SAC
from buffers.replay import Batch, ReplayBuffer
from config import SACConfig
from envs.evaluation import Evaluator, episode_reset_seed
from envs.tasks import TaskSpec, make_env, physics_state
from models.actor_critic import TanhGaussianActor
from utils.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    load_project_file,
    restore_rng_state,
    seed_everything,
)
from utils.errors import UserError

TRAINING_FORMAT = "offline-mbrl-behaviour-training/1"
POLICY_FORMAT = "offline-mbrl-behaviour-policy/1"


def online_sac_config() -> SACConfig:
    """rlkit/SAC-paper settings used for D4RL's behaviour policies: lr 3e-4 everywhere, no α clamp, no schedule."""
    return SACConfig(actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, alpha_max=None, lr_schedule="none")


@dataclass
class BehaviourConfig:
    total_steps: int = 1_000_000
    random_steps: int = 10_000  # uniform actions before the policy acts (updates start then, as rlkit)
    batch_size: int = 256
    snapshot_every: int = 10_000  # env steps between policy snapshots (each is evaluated)
    checkpoint_every: int = 10_000  # env steps between checkpoints, written at the next episode end
    eval_episodes: int = 5
    max_episode_steps: int | None = None  # None: the env's own limit (1000 for MuJoCo, 200 for Pendulum)
    seed: int = 0
    sac: SACConfig = field(default_factory=online_sac_config)


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


class BehaviourTrainer:
    def __init__(self, spec: TaskSpec, cfg: BehaviourConfig, work_dir: str | Path, progress: bool = True) -> None:
        self.spec, self.cfg, self.work_dir, self.progress = spec, cfg, Path(work_dir), progress
        self.training_path = self.work_dir / "training.pt"
        seed_everything(cfg.seed)
        self.sac = SAC(spec.obs_dim, spec.act_dim, cfg.sac, epochs=1)
        self.buffer = ReplayBuffer(cfg.total_steps, spec.obs_dim, spec.act_dim)
        self.env = make_env(spec, max_episode_steps=cfg.max_episode_steps)
        self.log = InteractionLog()
        self.env_steps = 0
        self.wall_time = 0.0
        self.evaluations: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------------ resume
    def resume(self) -> bool:
        """Continue from training.pt if there is one; returns whether it did."""
        if not self.training_path.exists():
            return False
        state = torch.load(self.training_path, weights_only=False)
        if not isinstance(state, dict) or state.get("format") != TRAINING_FORMAT:
            raise UserError(f"{self.training_path} is not a behaviour-training checkpoint; move it away to restart")
        if state["gym_id"] != self.spec.gym_id:
            raise UserError(
                f"{self.training_path} trains {state['gym_id']}, not {self.spec.gym_id}; use another --work-dir"
            )
        saved_cfg = state["config"]
        if saved_cfg["seed"] != self.cfg.seed or saved_cfg["sac"] != dataclasses.asdict(self.cfg.sac):
            raise UserError(f"{self.training_path} was trained with another seed or SAC config; use another --work-dir")
        self.log = InteractionLog.from_state_dict(state["log"])
        self._rebuild_buffer()
        self.sac.load_training_state(state["sac"])
        self.env_steps, self.wall_time = state["env_steps"], state["wall_time"]
        self.evaluations = state["evaluations"]
        restore_rng_state(state["rng"])
        return True

    def _rebuild_buffer(self) -> None:
        for episode in replay_log_episodes(self.env, self.log, self.training_path):
            self._store(episode)

    def _store(self, episode: dict[str, np.ndarray]) -> None:
        self.buffer.add(
            Batch(
                *(
                    torch.as_tensor(episode[k]).float()
                    for k in ("observations", "actions", "rewards", "next_observations", "terminals")
                )
            )
        )

    def save(self) -> None:
        atomic_torch_save(
            {
                "format": TRAINING_FORMAT,
                "gym_id": self.spec.gym_id,
                "config": dataclasses.asdict(self.cfg),
                "sac": self.sac.training_state(),
                "log": self.log.state_dict(),
                "env_steps": self.env_steps,
                "wall_time": self.wall_time,
                "evaluations": self.evaluations,
                "rng": capture_rng_state(),
            },
            self.training_path,
        )

    # ------------------------------------------------------------------------------------------------ training
    def train(self) -> list[dict[str, float]]:
        cfg = self.cfg
        evaluator = Evaluator(self.spec, cfg.eval_episodes, cfg.seed + 1)
        bar = tqdm(
            total=cfg.total_steps,
            initial=self.env_steps,
            desc=f"behaviour SAC {self.spec.gym_id}",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        last_checkpoint = self.env_steps
        started = time.perf_counter()
        while self.env_steps < cfg.total_steps:
            reset_seed = episode_reset_seed(cfg.seed, len(self.log.reset_seeds))
            obs, _ = self.env.reset(seed=reset_seed)
            actions, log_probs, observations, done = [], [], [], False
            while not done and self.env_steps < cfg.total_steps:
                obs_t = torch.as_tensor(obs, dtype=torch.float32)[None]
                if self.env_steps < cfg.random_steps:
                    action = torch.rand(1, self.spec.act_dim) * 2 - 1
                    log_prob = -self.spec.act_dim * np.log(2.0)  # uniform density on [-1, 1]^|A|
                else:
                    with torch.no_grad():
                        action, log_prob_t = self.sac.actor(obs_t)
                    log_prob = float(log_prob_t)
                action_np = action[0].numpy()
                next_obs, reward, terminated, truncated, _ = self.env.step(action_np)
                self.buffer.add(
                    Batch(
                        obs_t,
                        action,
                        torch.tensor([reward], dtype=torch.float32),
                        torch.as_tensor(next_obs, dtype=torch.float32)[None],
                        torch.tensor([float(terminated)]),
                    )
                )
                actions.append(action_np)
                log_probs.append(log_prob)
                observations.append(obs)
                self.env_steps += 1
                if self.env_steps >= cfg.random_steps:
                    self.sac.update(self.buffer.sample(cfg.batch_size))
                if self.env_steps % cfg.snapshot_every == 0:
                    self.wall_time += time.perf_counter() - started
                    started = time.perf_counter()
                    self._snapshot(evaluator, bar)
                obs, done = next_obs, terminated or truncated
                bar.update()
            self.log.append(
                reset_seed,
                np.asarray(actions, np.float32),
                np.asarray(log_probs, np.float32),
                fingerprint(np.asarray(observations)),
            )
            if self.env_steps - last_checkpoint >= cfg.checkpoint_every or self.env_steps >= cfg.total_steps:
                self.wall_time += time.perf_counter() - started
                started = time.perf_counter()
                self.save()
                last_checkpoint = self.env_steps
        bar.close()
        evaluator.close()
        return self.evaluations

    def _snapshot(self, evaluator: Evaluator, bar: tqdm) -> None:
        result = evaluator.evaluate(self.sac.act)
        record = {"env_steps": self.env_steps, "wall_time": self.wall_time, **result}
        self.evaluations.append(record)
        save_behaviour_policy(
            self.sac.actor,
            self.spec,
            self.work_dir / "snapshots" / f"step{self.env_steps}.pt",
            env_steps=self.env_steps,
            evaluation=result,
        )
        bar.write(
            f"step {self.env_steps:>8}  return {result['return_mean']:8.1f} ± {result['return_std']:6.1f}  "
            f"normalized {result['normalized_mean']:6.1f}"
        )


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
    Writes out_dir/{medium,expert}.pt and out_dir/medium_replay.npz, the training log up to the medium snapshot.
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
    chosen = {}
    for level, (_, _, actor, metadata) in (("medium", medium), ("expert", expert)):
        save_behaviour_policy(
            actor, spec, out_dir / f"{level}.pt", **metadata, level=level, rule=f"medium_fraction={medium_fraction:.4f}"
        )
        chosen[level] = metadata
    state = torch.load(work_dir / "training.pt", weights_only=False)
    log = InteractionLog.from_state_dict(state["log"])
    if log.num_steps < medium[0]:
        raise UserError(
            f"{work_dir / 'training.pt'} logs {log.num_steps} steps, fewer than the medium snapshot's "
            f"{medium[0]}; let training write its next checkpoint first"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "medium_replay.npz", "wb") as handle:
        np.savez_compressed(handle, **log.prefix(medium[0]).state_dict())
    return chosen
