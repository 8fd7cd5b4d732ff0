"""The behaviour SAC: the project's SAC trained online in a gymnasium env, as D4RL's behaviour policies were trained
with rlkit's SAC (2 x 256 tanh-Gaussian actor), resumable across interruptions. `collect.py train` runs it; the
policies, the interaction log and the datasets they make are the world's (envs/behaviour.py, envs/generate.py).

Everything needed to continue training lives in one small file, `<work_dir>/training.pt`: the SAC training state,
the RNG states, the counters, and the interaction log (each episode's reset seed and its float32 actions). The
replay buffer is not saved: on resume it is rebuilt by replaying the log in the deterministic MuJoCo env (checked
against a fingerprint of each episode's observations), which keeps the file a few MB instead of hundreds. Git does
not track it (it changes with every session); dataset generation needs only what `collect.py policies` exports.

Policy snapshots (actor weights plus their evaluation return) go to `<work_dir>/snapshots/step<k>.pt`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from algos.sac import SAC
from buffers.replay import Batch, ReplayBuffer
from config import SACConfig
from envs.behaviour import InteractionLog, fingerprint, replay_log_episodes, save_behaviour_policy
from envs.evaluation import Evaluator, episode_reset_seed
from envs.tasks import TaskSpec, make_env
from utils.checkpoint import load_project_file, seed_everything
from utils.errors import UserError
from utils.runner import Runner

TRAINING_FORMAT = "offline-mbrl-behaviour-training/1"
TRAINING_FILE = "training.pt"  # in the work dir; git does not track it (behaviour/<env>/ keeps what it exported)


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


class BehaviourTrainer(Runner):
    """The online SAC loop as a runner: its checkpoint is `training.pt` (the module's docstring says what it holds)."""

    checkpoint_format: ClassVar[str] = TRAINING_FORMAT

    def __init__(self, spec: TaskSpec, cfg: BehaviourConfig, work_dir: str | Path, progress: bool = True) -> None:
        self.spec, self.cfg, self.work_dir, self.progress = spec, cfg, Path(work_dir), progress
        self.training_path = self.checkpoint_path = self.work_dir / TRAINING_FILE
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
        path = self.training_path
        state = load_project_file(
            path,
            TRAINING_FORMAT,
            missing=f"no behaviour-training checkpoint at {path}",
            unreadable=f"{path} cannot be read; move it away to restart",
            foreign=f"{path} is not a behaviour-training checkpoint; move it away to restart",
            map_location=None,  # where it was saved from, as before
        )
        if state["gym_id"] != self.spec.gym_id:
            raise UserError(f"{path} trains {state['gym_id']}, not {self.spec.gym_id}; use another --work-dir")
        saved_cfg = state["config"]
        if saved_cfg["seed"] != self.cfg.seed or saved_cfg["sac"] != dataclasses.asdict(self.cfg.sac):
            raise UserError(f"{path} was trained with another seed or SAC config; use another --work-dir")
        self.restore_checkpoint(state)
        return True

    def resume_hint(self) -> str:
        """Where the checkpoint is; collect.py's same command continues from it."""
        return f"checkpoint in {self.work_dir}, run the same command to continue"

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.log = InteractionLog.from_state_dict(state["log"])
        self._rebuild_buffer()
        self.sac.load_training_state(state["sac"])
        self.env_steps, self.wall_time = state["env_steps"], state["wall_time"]
        self.evaluations = state["evaluations"]

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

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "gym_id": self.spec.gym_id,
            "config": dataclasses.asdict(self.cfg),
            "sac": self.sac.training_state(),
            "log": self.log.state_dict(),
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
            "evaluations": self.evaluations,
        }

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
                self.save_checkpoint()
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
