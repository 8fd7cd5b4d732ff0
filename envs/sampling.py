"""Real-environment paths for online model-based RL (PAL/MAL): whole episodes with the acting policy."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from buffers.replay import Batch
from envs.evaluation import episode_reset_seed


def collection_seed(run_seed: int, iteration: int, scheme: str = "mjrl") -> int:
    """The reset seed of one iteration's collection. "mjrl": run seed + iteration, as mjrl (so seed s's iteration
    i + 1 starts from the states of seed s + 1's iteration i, and iteration 0 from the evaluation episodes');
    "independent": its own stream for every (run seed, iteration), apart from the evaluator's."""
    if scheme == "mjrl":
        return run_seed + iteration
    return int(np.random.SeedSequence([run_seed, iteration], spawn_key=(1,)).generate_state(1)[0])


@torch.no_grad()
def sample_paths(
    env: gym.Env,
    act_fn: Callable[[torch.Tensor], torch.Tensor],
    min_steps: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[list[Batch], list[float], int]:
    """Complete episodes until at least `min_steps` decisions are collected (mjrl's `sample_data_batch`).

    Episode i starts from `env.reset(seed=episode_reset_seed(seed, i))`, so a batch depends only on `seed`, the
    policy and the torch random stream `act_fn` samples from (see `collection_seed` for a run's seeds). `act_fn`
    maps [1, obs_dim] to the action [1, act_dim] the environment receives. Returns the paths (transitions in
    order; `done` is 1 on a terminal last step, 0 on a time-limit cut), their returns and the environment steps
    taken (more than the decisions with an action repeat).
    """
    paths: list[Batch] = []
    returns: list[float] = []
    collected = env_steps = 0
    while collected < min_steps:
        obs, _ = env.reset(seed=episode_reset_seed(seed, len(paths)))
        observations, actions, rewards, dones = [obs], [], [], []
        terminated = truncated = False
        while not (terminated or truncated):
            action = act_fn(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0))[0]
            obs, reward, terminated, truncated, info = env.step(action.cpu().numpy())
            env_steps += int(info.get("env_steps", 1))
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            dones.append(float(terminated))
        states = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)
        paths.append(
            Batch(
                obs=states[:-1],
                act=torch.stack(actions).to(device, torch.float32),
                rew=torch.tensor(rewards, dtype=torch.float32, device=device),
                next_obs=states[1:],
                done=torch.tensor(dones, dtype=torch.float32, device=device),
            )
        )
        returns.append(sum(rewards))
        collected += len(rewards)
    return paths, returns, env_steps
