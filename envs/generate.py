"""Generate D4RL-layout datasets from gymnasium MuJoCo envs, so the project runs without D4RL's servers.

    python collect.py dataset --task hopper-medium-gen [--transitions 1000000] [--seed 0] [--out PATH] [--overwrite]

Levels, as D4RL defined them: `random` (uniform actions), `medium` and `expert` (stochastic actions of the committed
behaviour policies behaviour/<env>/{medium,expert}.pt), `medium-replay` (the behaviour SAC's own training
transitions up to the medium snapshot, replayed from behaviour/<env>/medium_replay.npz) and `medium-expert`
(medium then expert). The file has D4RL's keys (observations, actions, rewards, next_observations, terminals,
timeouts, infos/qpos, infos/qvel, infos/action_log_probs), so every loader and tool treats it like a D4RL file.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import torch
from tqdm import tqdm

from envs.behaviour import MEDIUM_REPLAY_FILE, InteractionLog, load_behaviour_policy, replay_log_episodes
from envs.datasets import (
    OfflineDataset,
    content_hash,
    default_dataset_dirs,
    find_dataset,
    read_metadata,
    write_d4rl_hdf5,
)
from envs.tasks import TaskSpec, get_task, list_tasks, make_env, normalized_score, physics_state
from models.actor_critic import TanhGaussianActor, squashed_gaussian_sample
from utils.errors import UserError

# Maps a batch of one observation [1, obs_dim] to (actions [1, act_dim], log-probabilities [1]).
BehaviourPolicy = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

DEFAULT_TRANSITIONS = 1_000_000  # the size of D4RL's random datasets
_COLUMNS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
    "infos/qpos",
    "infos/qvel",
    "infos/action_log_probs",
)


def _uniform_policy(action_space: gym.spaces.Box, seed: int) -> BehaviourPolicy:
    """Uniform actions from a private generator, with the uniform log density D4RL records as action_log_probs."""
    rng = np.random.default_rng(seed)
    log_prob = -float(np.sum(np.log(action_space.high - action_space.low)))

    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        actions = rng.uniform(action_space.low, action_space.high, size=(len(obs), *action_space.shape))
        return actions, np.full(len(obs), log_prob)

    return policy


def generate_dataset(
    spec: TaskSpec,
    num_transitions: int,
    seed: int,
    policy: BehaviourPolicy | None = None,
    max_episode_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """Roll `policy` (uniform random when None) in the task's env for exactly `num_transitions` steps.

    terminals are the env's `terminated`; timeouts mark steps where an episode was cut at `max_episode_steps`
    and the last step of the final, partial episode, so episode boundaries are always terminals | timeouts.
    """
    if num_transitions < 1:
        raise UserError(f"--transitions must be at least 1, got {num_transitions}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise UserError(f"max_episode_steps must be at least 1, got {max_episode_steps}")
    env = make_env(spec, max_episode_steps=max_episode_steps)
    if policy is None:
        policy = _uniform_policy(env.action_space, seed)
    obs, _ = env.reset(seed=seed)
    qpos, qvel = physics_state(env)
    n = num_transitions
    columns = {
        "observations": np.empty((n, spec.obs_dim), np.float32),
        "actions": np.empty((n, spec.act_dim), np.float32),
        "rewards": np.empty(n, np.float32),
        "next_observations": np.empty((n, spec.obs_dim), np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
        "infos/qpos": np.empty((n, qpos.size), np.float32),
        "infos/qvel": np.empty((n, qvel.size), np.float32),
        "infos/action_log_probs": np.empty(n, np.float32),
    }
    try:
        for i in tqdm(range(n), desc=f"generating {spec.name}", unit="step", disable=None, mininterval=1.0):
            actions, log_probs = policy(np.asarray(obs, np.float32)[None])
            action = np.asarray(actions, np.float32).reshape(spec.act_dim)
            columns["observations"][i] = obs
            columns["infos/qpos"][i], columns["infos/qvel"][i] = physics_state(env)
            columns["actions"][i] = action
            columns["infos/action_log_probs"][i] = np.asarray(log_probs).reshape(())
            next_obs, reward, terminated, truncated, _ = env.step(action)
            columns["rewards"][i] = reward
            columns["next_observations"][i] = next_obs
            columns["terminals"][i] = terminated
            columns["timeouts"][i] = truncated and not terminated
            obs = env.reset()[0] if terminated or truncated else next_obs
    finally:
        env.close()
    columns["timeouts"][-1] |= not columns["terminals"][-1]
    return columns


def episode_returns(rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Sum of rewards of each episode, episodes split at terminals | timeouts."""
    ends = np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool))
    boundaries = np.concatenate([[0], ends + 1])
    if boundaries[-1] != len(rewards):
        boundaries = np.append(boundaries, len(rewards))
    return np.add.reduceat(np.asarray(rewards, np.float64), boundaries[:-1])


BEHAVIOUR_ROOT = Path(__file__).resolve().parents[1] / "behaviour"  # committed policies, one folder per env
POLICY_DTYPE = "float64"  # the behaviour network's precision while generating (actor_policy; metadata/policy_dtype)


def actor_policy(actor: TanhGaussianActor) -> BehaviourPolicy:
    """Stochastic actions of a behaviour actor with their log-probabilities, as D4RL's rlkit policies acted.

    The network runs in float64 and its outputs are rounded once to the dataset's float32: in float32 the last bits
    of an action depend on which matmul kernel the BLAS picks for this CPU (MKL chooses per CPU model), and MuJoCo
    amplifies one bit into another trajectory, so the same command made different data on different machines
    (docs/datasets.md, "Same data on every machine"). The noise is drawn in float32, as the actor itself draws it.
    """
    actor64 = copy.deepcopy(actor).to(torch.float64)

    @torch.no_grad()
    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_std = actor64.distribution_params(torch.as_tensor(obs, dtype=torch.float64))
        noise = torch.randn(mean.shape, dtype=torch.float32).to(torch.float64)
        action, log_prob = squashed_gaussian_sample(mean, log_std, noise, actor64.max_action)
        return action.numpy(), log_prob.squeeze(-1).numpy()

    return policy


def replay_log(
    spec: TaskSpec, log: InteractionLog, max_episode_steps: int | None, source: str | Path = "the log"
) -> dict[str, np.ndarray]:
    """The transitions of a behaviour SAC's training, replayed from its (reset seed, actions) log."""
    env = make_env(spec, max_episode_steps=max_episode_steps)
    try:
        episodes = replay_log_episodes(env, log, source)
    finally:
        env.close()
    data = {key: np.concatenate([episode[key] for episode in episodes]) for key in episodes[0]}
    data["infos/action_log_probs"] = np.concatenate(log.log_probs).astype(np.float32)
    return data


def build_dataset(
    spec: TaskSpec,
    num_transitions: int,
    seed: int,
    max_episode_steps: int | None = None,
    policies_dir: Path | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Arrays and metadata of one generated level (see the module docstring)."""
    policies_dir = Path(policies_dir or BEHAVIOUR_ROOT / spec.family)
    metadata: dict[str, object] = {
        "task": spec.name,
        "level": spec.level,
        "gym_id": spec.gym_id,
        "gymnasium_version": gym.__version__,
        "seed": seed,
        "max_episode_steps": max_episode_steps or gym.spec(spec.gym_id).max_episode_steps,
    }
    if spec.level == "random":
        return generate_dataset(spec, num_transitions, seed, None, max_episode_steps), {
            **metadata,
            "behaviour_policy": "uniform",
        }
    if spec.level in ("medium", "expert"):
        actor, info = load_behaviour_policy(policies_dir / f"{spec.level}.pt", spec)
        torch.manual_seed(seed)
        data = generate_dataset(spec, num_transitions, seed, actor_policy(actor), max_episode_steps)
        weights = {f"policy/{name}": value.numpy() for name, value in actor.state_dict().items()}
        return data, {
            **metadata,
            "behaviour_policy": f"{spec.level}.pt",
            "policy_dtype": POLICY_DTYPE,
            "policy_env_steps": info["env_steps"],
            "policy_normalized_score": info["evaluation"]["normalized_mean"],
            **weights,
        }
    if spec.level == "medium-replay":
        log_file = policies_dir / MEDIUM_REPLAY_FILE
        if not log_file.is_file():
            raise UserError(f"{log_file} is missing; export it with python collect.py policies --env {spec.family}")
        with np.load(log_file) as archive:
            log = InteractionLog.from_state_dict(dict(archive))
        data = replay_log(spec, log, max_episode_steps, log_file)
        return data, {**metadata, "behaviour_policy": "behaviour SAC training log"}
    if spec.level == "medium-expert":  # D4RL: the medium dataset followed by the expert dataset
        parts = [
            _existing_or_built(
                get_task(f"{spec.family}-{level}-gen"), num_transitions, seed, max_episode_steps, policies_dir
            )
            for level in ("medium", "expert")
        ]
        data = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        return data, {**metadata, "behaviour_policy": "medium.pt then expert.pt"}
    raise UserError(f"{spec.name}: no generator for level {spec.level!r}")


def _existing_or_built(
    spec: TaskSpec, num_transitions: int, seed: int, max_episode_steps: int | None, policies_dir: Path
) -> dict[str, np.ndarray]:
    """A level's arrays: read from its dataset file when that was made with the same seed, size, policy and
    precision."""
    path = find_dataset(spec, None)
    if path is not None:
        with h5py.File(path, "r") as file:
            made = file.get("metadata")
            policy_steps = load_behaviour_policy(policies_dir / f"{spec.level}.pt", spec)[1]["env_steps"]
            if (
                made is not None
                and int(made["seed"][()]) == seed
                and len(file["rewards"]) == num_transitions
                and "policy_env_steps" in made
                and int(made["policy_env_steps"][()]) == policy_steps
                and read_metadata(path).get("policy_dtype") == POLICY_DTYPE  # older files: the CPU-dependent path
            ):
                return {key: file[key][()] for key in _COLUMNS}
    return build_dataset(spec, num_transitions, seed, max_episode_steps, policies_dir)[0]


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `collect.py dataset` that shape the data (defined here, next to what they control)."""
    parser.add_argument(
        "--transitions",
        type=int,
        default=DEFAULT_TRANSITIONS,
        help=f"environment steps per level (default: {DEFAULT_TRANSITIONS:_}, as D4RL's sets; medium-expert is "
        "medium then expert, twice as many; medium-replay is the behaviour SAC's replay log, whatever its size)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of resets and action noise (default 0)")
    parser.add_argument(
        "--max-episode-steps", type=int, help="episode limit (default: the env's own, 1000 MuJoCo, 200 Pendulum)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file, with one --task only (default: $D4RL_DATASET_DIR or ~/.d4rl/datasets, under the task's "
        "file name, where train.py looks)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")


def write_dataset(
    task: str,
    transitions: int = DEFAULT_TRANSITIONS,
    seed: int = 0,
    max_episode_steps: int | None = None,
    out: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate one task's dataset and write it where train.py looks (or to `out`); returns the path written."""
    spec = get_task(task)
    if spec.url is not None:
        generated = [name for name in list_tasks() if get_task(name).version == "gen"]
        twin = f"{spec.family}-{spec.level}-gen"
        suggestion = twin if twin in generated else f"{spec.family}-medium-gen"
        raise UserError(
            f"{spec.name} is a D4RL task, its data must come from D4RL; generate its stand-in instead: "
            f"python collect.py dataset --task {suggestion} (generated tasks: python train.py --list-tasks)"
        )
    if spec.version != "gen":
        raise UserError(f"{spec.name} brings its own dataset (a task file); only -gen tasks are generated here")
    out = out.expanduser() if out else default_dataset_dirs()[0] / spec.dataset_file
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or --out to write elsewhere")

    data, metadata = build_dataset(spec, transitions, seed, max_episode_steps)
    write_d4rl_hdf5(out, data, metadata)
    returns = episode_returns(data["rewards"], data["terminals"], data["timeouts"])
    print(
        f"wrote {out}: {len(data['rewards'])} transitions, {len(returns)} episodes, mean episode return "
        f"{returns.mean():.1f}, normalized score {normalized_score(spec, float(returns.mean())):.1f}, content sha256 "
        f"{content_hash(data)[:12]}"
    )
    return out


def behaviour_policy_score(spec: TaskSpec, metadata: dict[str, object]) -> float | None:
    """Normalized score of the policy that generated a medium or expert dataset (its deterministic evaluation when
    it was chosen), from the file's metadata, or from the committed policy file when that is the same snapshot."""
    if "policy_normalized_score" in metadata:
        return float(metadata["policy_normalized_score"])  # type: ignore[arg-type]
    if spec.version != "gen" or spec.level not in ("medium", "expert") or "policy_env_steps" not in metadata:
        return None
    path = BEHAVIOUR_ROOT / spec.family / f"{spec.level}.pt"
    if not path.is_file():
        return None
    _, info = load_behaviour_policy(path, spec)
    return float(info["evaluation"]["normalized_mean"]) if info["env_steps"] == metadata["policy_env_steps"] else None


def dataset_reference(spec: TaskSpec, dataset: OfflineDataset) -> dict[str, float | int | None]:
    """What a policy trained on these data is compared with: the data's episodes (count, mean return and its
    normalized score) and the behaviour policy's normalized score (None where no single recorded policy made them, or
    the task has no reference returns). train.py's final line, provenance.json and the results tables read it."""
    returns = dataset.episode_returns()
    mean_return = float(returns.mean())
    return {
        "episodes": len(returns),
        "episode_return_mean": mean_return,
        "episode_normalized_mean": float(normalized_score(spec, mean_return)) if spec.normalizable else None,
        "behaviour_normalized": behaviour_policy_score(spec, dataset.metadata) if spec.normalizable else None,
    }
