"""The one policy evaluator: returns, episode lengths and D4RL normalized scores in the real environment."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from envs.tasks import TaskSpec, make_env, normalized_score, normalized_std
from utils.errors import UserError


@contextmanager
def isolated_global_rngs(device: torch.device) -> Iterator[None]:
    """Restore torch, numpy and Python global RNG states afterwards.

    A policy that samples would otherwise advance the training RNG streams, and training must be
    bit-identical whether or not (and how often) it evaluates.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    forked_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    try:
        with torch.random.fork_rng(devices=forked_devices):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def episode_reset_seed(seed: int, episode: int) -> int:
    """Reset seed of one evaluation episode: independent streams per (seed, episode), same on every call."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


class Evaluator:
    """Runs `episodes` environments side by side with one batched policy call per step.

    The environments are built once and reset with the same per-episode seeds on every call, so scores from
    different epochs differ only because the policy changed. With `act_repeat` each action is held for that many
    environment steps (policies trained with mjrl's action repeat); returns are over all environment steps.
    """

    def __init__(
        self, spec: TaskSpec, episodes: int, seed: int, device: torch.device | str = "cpu", act_repeat: int = 1
    ) -> None:
        if episodes < 1:
            raise UserError(f"evaluation needs at least 1 episode, got eval_episodes={episodes}")
        if seed < 0:
            raise UserError(f"seed must be non-negative, got {seed}")
        self.spec = spec
        self.device = torch.device(device)
        self.reset_seeds = [episode_reset_seed(seed, i) for i in range(episodes)]
        self.envs = [make_env(spec, act_repeat=act_repeat) for _ in range(episodes)]

    def evaluate(self, act_fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Play one episode per environment; `act_fn` maps float32 [n_alive, obs_dim] to [n_alive, act_dim]."""
        n = len(self.envs)
        observations = np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, self.reset_seeds)])
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        with isolated_global_rngs(self.device), torch.no_grad():
            while alive.any():
                alive_idx = np.flatnonzero(alive)
                obs_batch = torch.as_tensor(observations[alive_idx], dtype=torch.float32, device=self.device)
                actions = act_fn(obs_batch).detach().to("cpu", torch.float32).numpy()
                if actions.shape != (len(alive_idx), self.spec.act_dim):
                    raise ValueError(
                        f"act_fn returned actions of shape {actions.shape}, "
                        f"expected {(len(alive_idx), self.spec.act_dim)}"
                    )
                if not np.isfinite(actions).all():
                    raise ValueError("act_fn returned NaN/Inf actions; the policy has diverged")
                for row, i in enumerate(alive_idx):
                    observations[i], reward, terminated, truncated, _ = self.envs[i].step(actions[row])
                    returns[i] += reward
                    lengths[i] += 1
                    alive[i] = not (terminated or truncated)
        return {
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "length_mean": float(lengths.mean()),
            "length_std": float(lengths.std()),
            "normalized_mean": float(normalized_score(self.spec, float(returns.mean()))),
            "normalized_std": normalized_std(self.spec, float(returns.std())),
        }

    def close(self) -> None:
        """Release the MuJoCo environments."""
        for env in self.envs:
            env.close()
        self.envs = []
