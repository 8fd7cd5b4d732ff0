"""Game-theoretic model-based RL: PAL and MAL (Rajeswaran, Mordatch and Kumar, ICML 2020; docs/pal_mal.md).

Model-based RL as a two-player game. The policy player maximises its return in the learned model M̂,

    max_π  J(π, M̂),

the model player minimises its prediction error on the data the policy visits,

    min_M̂  E_{(s, a, s') ~ d_π} ‖M̂(s, a) − s'‖².

Played simultaneously with gradient steps both players chase a moving target; the game is stable when one of
them leads (moves slowly) and the other follows (best-responds):

- PAL, policy as leader: a few conservative NPG steps per iteration, while the model best-responds to the current
  policy by fitting hard on a small buffer of its most recent data.
- MAL, model as leader: the model learns conservatively on a buffer holding nearly all data with few epochs, while
  the policy best-responds to it with many NPG steps.

Both are one loop (algos/npg_trainer.py) with different settings: collect real samples with the stochastic policy,
fit the deterministic ensemble (models/dynamics.py, mjrl's configuration), then `inner_steps` NPG steps
(algos/npg.py) on paths rolled out in every ensemble member from start states of real paths. What is particular to
the model-based policy player, the rollouts in the learned models, lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from algos.npg import NPG
from buffers.paths import PathBatch
from config import ModelBasedNPGConfig, Rule, one_of, positive, register_config
from envs.rewards import observation_mask
from envs.tasks import get_task
from envs.termination import TerminationFn
from models.dynamics import EnsembleDynamics
from utils.algorithm_spec import AlgorithmSpec, Loop, ModelUse, Unit, no_planned_length

RewardFn = TerminationFn  # (obs, act, next_obs) -> [...], float rewards instead of done flags
MIN_PATH_LENGTH = 5  # mjrl drops model paths with fewer steps before the NPG step


@dataclass
class OnlineNPGConfig(ModelBasedNPGConfig):
    """The online loop's keys: real samples per iteration and the buffer the models are fitted to."""

    online: ClassVar[bool] = True
    rules: ClassVar[dict[str, Rule]] = {
        "init_samples": positive,
        "iter_samples": positive,
        "buffer_size": positive,
        "collection_seeds": one_of("mjrl", "independent"),
    }

    # Reset seeds of the real episodes: "mjrl" = run seed + iteration, as mjrl (neighbouring seeds share start
    # states one iteration apart); "independent" = a separate stream per (seed, iteration) (envs/sampling.py).
    collection_seeds: str = "mjrl"
    init_samples: int = 4000  # real decisions collected before the first fit
    iter_samples: int = 1000  # real decisions collected in every later iteration
    buffer_size: int = 10_000  # transitions kept for fitting; whole oldest paths are dropped


@register_config("pal")
@dataclass
class PALConfig(OnlineNPGConfig):
    """Policy as leader: mjrl's hopper_v3_pal (configs/pal/defaults.yaml states every value with its source)."""


@register_config("mal")
@dataclass
class MALConfig(OnlineNPGConfig):
    """Model as leader: mjrl's hopper_v3_mal (configs/mal/defaults.yaml)."""

    num_iter: int = 25
    inner_steps: int = 20
    update_paths: int = 25
    fit_epochs: int = 10
    fit_max_steps: int | None = 100_000
    init_samples: int = 10_000
    iter_samples: int = 2000
    buffer_size: int = 100_000


class ModelBasedNPG(NPG):
    """NPG whose paths come from rollouts of the stochastic policy in every member of a learned ensemble."""

    needs_dynamics: ClassVar[bool] = False  # the trainer hands the models to each `train_step`
    needs_disagreement: ClassVar[bool] = False  # MOReL also asks the rollout for the members' disagreement

    def __init__(
        self, obs_dim: int, act_dim: int, cfg: ModelBasedNPGConfig, device: torch.device | str = "cpu"
    ) -> None:
        mask = None
        if cfg.obs_mask != "none":  # mjrl's task-file mask: fixed by the task, kept in the networks' state
            mask = observation_mask(get_task(cfg.task_file or cfg.task).family, cfg.obs_mask)
        super().__init__(obs_dim, act_dim, cfg.npg, device, obs_mask=mask)
        self.cfg = cfg
        # Model states are clamped to ±state_bound in the masked space, i.e. to ±state_bound / mask in raw units.
        self.register_buffer("state_bounds", cfg.state_bound / self.actor.obs_mask.clone(), persistent=False)

    @torch.no_grad()
    def model_paths(
        self,
        dynamics: EnsembleDynamics,
        start_states: torch.Tensor,
        reward_fn: RewardFn,
        termination_fn: TerminationFn,
    ) -> tuple[PathBatch, torch.Tensor | None]:
        """Roll the stochastic policy for `horizon` steps from every start state [N, obs] in every member: paths
        [E·N] (member-major), padded to the longest path. A path ends at the first step the termination function
        calls done (that step kept, the path terminated; see `valid_steps`). Rewards are `reward_fn`'s on the
        clipped action (the trainer's: a known reward times `act_repeat`, or the learned one); predicted states are
        clamped to ±state_bound in the masked space (mjrl's clamp). With `needs_disagreement`, also the members'
        pairwise disagreement max_{i<j} ‖mask ⊙ (f_i(s, a) − f_j(s, a))‖ at every step [E·N, T]."""
        cfg, policy = self.cfg, self.actor
        members, num_starts = dynamics.num_members, len(start_states)
        obs = start_states.unsqueeze(0).expand(members, -1, -1)
        steps: dict[str, list[torch.Tensor]] = {"obs": [], "act": [], "rew": [], "done": [], "disagreement": []}
        ended = torch.zeros(members, num_starts, dtype=torch.bool, device=obs.device)
        for _ in range(cfg.horizon):
            action = policy(obs)[0]
            clipped = action.clamp(-1.0, 1.0)
            if self.needs_disagreement:
                flat_obs, flat_act = obs.reshape(members * num_starts, -1), clipped.reshape(members * num_starts, -1)
                every = next_obs_per_member(dynamics, flat_obs, flat_act)  # [E, E·N, obs]: every member, every path
                masked = every * self.actor.obs_mask
                steps["disagreement"].append(pairwise_disagreement(masked).view(members, num_starts))
                own = every.view(members, members, num_starts, -1).diagonal(dim1=0, dim2=1)  # [N, obs, E]
                next_obs = own.permute(2, 0, 1)
            else:
                next_obs = next_obs_per_member(dynamics, obs, clipped)
            next_obs = torch.maximum(torch.minimum(next_obs, self.state_bounds), -self.state_bounds)
            steps["obs"].append(obs)
            steps["act"].append(action)
            steps["rew"].append(reward_fn(obs, clipped, next_obs))
            steps["done"].append(termination_fn(obs, clipped, next_obs))
            ended |= steps["done"][-1]
            if bool(ended.all()):  # every path has ended: the remaining steps would all be masked out
                break
            obs = next_obs
        stacked = {key: torch.stack(value, dim=2).flatten(0, 1) for key, value in steps.items() if value}
        mask, terminated = valid_steps(stacked["done"])
        paths = PathBatch(stacked["obs"], stacked["act"], stacked["rew"] * mask, mask, terminated)
        return paths, stacked.get("disagreement")

    def prepare_on_dataset(self, dynamics: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor) -> dict[str, Any]:
        """What an offline algorithm does once its models are fitted on the dataset, before its first NPG step (MOReL:
        its threshold and BC start); returns scalars to log. Nothing here."""
        return {}

    def shape_paths(self, paths: PathBatch, disagreement: torch.Tensor | None) -> PathBatch:
        """What an algorithm does to model paths before the NPG step (MOReL truncates); PAL/MAL use them as is."""
        return paths

    def train_step(
        self,
        dynamics: EnsembleDynamics,
        start_states: torch.Tensor,
        reward_fn: RewardFn,
        termination_fn: TerminationFn,
    ) -> dict[str, Any]:
        """One NPG step of the policy player on fresh model paths from `start_states`."""
        paths, disagreement = self.model_paths(dynamics, start_states, reward_fn, termination_fn)
        long_enough = paths.lengths >= MIN_PATH_LENGTH
        if not bool(long_enough.any()):  # every path fell before 5 steps: nothing to learn from this time
            return {"rollout/paths_kept": 0.0}
        paths = paths.select(long_enough)
        shaped = self.shape_paths(paths, None if disagreement is None else disagreement[long_enough])
        return {
            "rollout/paths_kept": float(long_enough.float().mean()),
            "rollout/cut_by_shaping": float((shaped.lengths < paths.lengths).float().mean()),
            "rollout/path_length": float(shaped.lengths.float().mean()),
            "rollout/terminated": float(shaped.terminated.float().mean()),
            **self.update_from_paths(shaped),
        }


def valid_steps(done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Path masks [N, T] and terminated flags [N] from per-step done flags [N, T]: a step is valid when no step
    before it is done (the done step itself is kept), and a path terminated when one of its valid steps is done."""
    mask = (done.cumsum(1) - done.long()) == 0
    return mask, (done & mask).any(1)


def next_obs_per_member(dynamics: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Every member's mean next state [E, B, obs]: inputs [B, ·] go to every member, inputs [E, B, ·] give member i
    the rows [i] (one batched call either way). The family rolls paths out in every member, not in sampled elites."""
    mean, _ = dynamics(obs, act)
    return obs + mean[..., : dynamics.obs_dim]


def pairwise_disagreement(predictions: torch.Tensor) -> torch.Tensor:
    """max_{i<j} ‖p_i − p_j‖₂ over members of predictions [E, B, obs] -> [B] (MOReL's δ(s, a))."""
    distances = (predictions.unsqueeze(0) - predictions.unsqueeze(1)).norm(dim=-1)  # [E, E, B]
    return distances.flatten(0, 1).amax(0)


# PAL and MAL: one algorithm in two game settings, online, logging at the environment samples taken so far.
SPECS = tuple(
    AlgorithmSpec(
        name, name.upper(), config, ModelBasedNPG, Loop.NPG, Unit.ENV_SAMPLES, no_planned_length, ModelUse.REFITTED
    )
    for name, config in (("pal", PALConfig), ("mal", MALConfig))
)
