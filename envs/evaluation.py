"""The one policy evaluator: returns, episode lengths and D4RL normalized scores in the real environment."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
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
        return evaluate_together([self], lambda obs: act_fn(obs[0]).unsqueeze(0))[0]

    def close(self) -> None:
        """Release the MuJoCo environments."""
        for env in self.envs:
            env.close()
        self.envs = []

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """`with Evaluator(...) as evaluator:` closes the environments however the block ends."""
        self.close()


def evaluate_together(
    evaluators: Sequence[Evaluator], act_fn: Callable[[torch.Tensor], torch.Tensor]
) -> list[dict[str, float]]:
    """Every evaluator's episodes side by side with one batched policy call per step for all of them: `act_fn` maps
    float32 [S, n, obs_dim] (row s: evaluator s's alive episodes, zero-padded to the longest row) to [S, n, act_dim],
    e.g. S stacked seeds' policies (docs/seeds.md). Each evaluator's scores are those its own `evaluate` gives."""
    spec, device = evaluators[0].spec, evaluators[0].device
    observations = [np.stack([env.reset(seed=s)[0] for env, s in zip(ev.envs, ev.reset_seeds)]) for ev in evaluators]
    returns = [np.zeros(len(ev.envs)) for ev in evaluators]
    lengths = [np.zeros(len(ev.envs), dtype=np.int64) for ev in evaluators]
    alive = [np.ones(len(ev.envs), dtype=bool) for ev in evaluators]
    with isolated_global_rngs(device), torch.no_grad():
        while any(a.any() for a in alive):
            alive_idx = [np.flatnonzero(a) for a in alive]
            width = max(len(idx) for idx in alive_idx)
            padded = np.zeros((len(evaluators), width, spec.obs_dim), dtype=np.float32)
            for row, (obs, idx) in enumerate(zip(observations, alive_idx)):
                padded[row, : len(idx)] = obs[idx]
            actions = act_fn(torch.as_tensor(padded, device=device)).detach().to("cpu", torch.float32).numpy()
            if actions.shape != (len(evaluators), width, spec.act_dim):
                expected = (width, spec.act_dim) if len(evaluators) == 1 else (len(evaluators), width, spec.act_dim)
                got = actions.shape[1:] if len(evaluators) == 1 else actions.shape
                raise ValueError(f"act_fn returned actions of shape {got}, expected {expected}")
            for row, (ev, idx) in enumerate(zip(evaluators, alive_idx)):
                if not np.isfinite(actions[row, : len(idx)]).all():
                    raise ValueError("act_fn returned NaN/Inf actions; the policy has diverged")
                for col, i in enumerate(idx):
                    observations[row][i], reward, terminated, truncated, _ = ev.envs[i].step(actions[row, col])
                    returns[row][i] += reward
                    lengths[row][i] += 1
                    alive[row][i] = not (terminated or truncated)
    return [
        {
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "length_mean": float(n.mean()),
            "length_std": float(n.std()),
            "normalized_mean": float(normalized_score(spec, float(r.mean()))),
            "normalized_std": normalized_std(spec, float(r.std())),
        }
        for r, n in zip(returns, lengths)
    ]
