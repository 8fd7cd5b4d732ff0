"""Observation attacks for robustness evaluation (MICRO's `robust/attacker.py`, docs/micro.md, plus PGD).

The policy sees s + δ with δ inside the box |δ_i| ≤ ε σ_i (σ: per-dimension std of the run's dataset observations);
the environment state is untouched. Each step, every attacked observation gets its own δ:

- `random`: δ ~ Uniform(box).
- `action_diff`: of `num_candidates` uniform δ, the one maximising the symmetric KL between the pre-tanh Gaussians
  π(·|s) and π(·|s + δ) (summed over action dims).
- `min_Q`: of `num_candidates` uniform δ and δ = 0, the one minimising min_j Q_j(s, π_det(s + δ)).

With `steps` > 0 the chosen δ is refined by projected signed-gradient steps on the same objective (step 2.5 ε σ /
steps, as Madry et al.), keeping the best iterate, so the gradient attack is never weaker than the sampled one.
"""

from __future__ import annotations

import torch
from torch import nn

from utils.errors import UserError

ATTACK_MODES = ("random", "action_diff", "min_Q")
MODES_NEEDING_CRITICS = frozenset({"min_Q"})
_NEEDS = {
    "action_diff": "a stochastic (Gaussian) policy, and this one is deterministic",
    "min_Q": "the policy's critics, and this algorithm has none",
}


def applicable_modes(actor: nn.Module, critics: nn.Module | None) -> list[str]:
    """The attack modes this policy can be attacked with: random always, action_diff for a Gaussian policy, min_Q
    with critics."""
    modes = ["random"]
    if hasattr(actor, "distribution_params"):
        modes.append("action_diff")
    if critics is not None:
        modes.append("min_Q")
    return modes


def mode_problem(mode: str, steps: int, actor: nn.Module, critics: nn.Module | None) -> str | None:
    """Why `mode` (with `steps` gradient steps) cannot attack this policy, naming the modes that can; None if it can."""
    modes = applicable_modes(actor, critics)
    if mode not in ATTACK_MODES:
        return f"unknown attack mode {mode!r}; choose one of {', '.join(ATTACK_MODES)}"
    if mode not in modes:
        return f"attack mode {mode} needs {_NEEDS[mode]}; this policy takes {' or '.join(modes)}"
    if mode == "random" and steps:
        gradient = [name for name in modes if name != "random"]
        if not gradient:
            return "the random attack has no objective to follow and this policy takes no other; drop --attack-steps"
        return f"the random attack has no objective to follow; --attack-steps needs {' or '.join(gradient)}"
    return None


def symmetric_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) of diagonal Gaussians, summed over the last dim."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    squared_gap = (mean_p - mean_q).square()
    kl_pq = log_std_q - log_std_p + (var_p + squared_gap) / (2 * var_q) - 0.5
    kl_qp = log_std_p - log_std_q + (var_q + squared_gap) / (2 * var_p) - 0.5
    return (kl_pq + kl_qp).sum(-1)


class ObservationAttack:
    """Maps a batch of clean observations to attacked ones; use as `policy(attack(obs))`."""

    def __init__(
        self,
        mode: str,
        epsilon: float,
        obs_std: torch.Tensor,
        actor: nn.Module,
        critics: nn.Module | None = None,
        num_candidates: int = 50,
        steps: int = 0,
        seed: int = 0,
    ) -> None:
        problem = mode_problem(mode, steps, actor, critics)
        if problem is not None:
            raise UserError(problem)
        if epsilon < 0 or num_candidates < 1 or steps < 0:
            raise UserError("attack needs epsilon >= 0, num_candidates >= 1 and attack steps >= 0")
        self.mode, self.actor, self.critics = mode, actor, critics
        self.num_candidates, self.steps = num_candidates, steps
        self.radius = epsilon * obs_std.float()
        self.generator = torch.Generator(device=self.radius.device).manual_seed(seed)

    def _uniform(self, *shape: int) -> torch.Tensor:
        noise = torch.rand(*shape, device=self.radius.device, generator=self.generator)
        return (2 * noise - 1) * self.radius

    def objective(self, obs: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Attack strength (higher is stronger) of candidate perturbations deltas [n, C, obs] for obs [n, obs]."""
        perturbed = obs.unsqueeze(1) + deltas
        if self.mode == "action_diff":
            clean_mean, clean_log_std = self.actor.distribution_params(obs)
            mean, log_std = self.actor.distribution_params(perturbed)
            return symmetric_kl(clean_mean.unsqueeze(1), clean_log_std.unsqueeze(1), mean, log_std)
        actions = self.actor(perturbed, deterministic=True)[0]
        clean = obs.unsqueeze(1).expand_as(perturbed)
        q = self.critics(clean.reshape(-1, obs.shape[-1]), actions.reshape(-1, actions.shape[-1]))
        return -q.amin(0).view(deltas.shape[:2])

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        if not bool((self.radius > 0).any()):
            return obs
        n, obs_dim = obs.shape
        if self.mode == "random":
            return obs + self._uniform(n, obs_dim)
        candidates = self._uniform(n, self.num_candidates, obs_dim)
        if self.mode == "min_Q":  # the unperturbed observation is always a candidate
            candidates = torch.cat([torch.zeros_like(candidates[:, :1]), candidates], dim=1)
        scores = self.objective(obs, candidates)
        rows = torch.arange(n, device=obs.device)
        best_index = scores.argmax(1)
        delta, score = candidates[rows, best_index], scores[rows, best_index]
        if self.steps:
            delta = self._refine(obs, delta, score)
        return obs + delta

    def _refine(self, obs: torch.Tensor, delta: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Projected signed-gradient ascent from `delta`, keeping each row's best iterate."""
        step_size = 2.5 * self.radius / self.steps
        current = delta
        for _ in range(self.steps):
            with torch.enable_grad():
                current = current.detach().requires_grad_(True)
                value = self.objective(obs, current.unsqueeze(1)).sum()
                (grad,) = torch.autograd.grad(value, current)
            current = torch.clamp(current.detach() + step_size * grad.sign(), -self.radius, self.radius)
            current_score = self.objective(obs, current.unsqueeze(1)).squeeze(1)
            better = current_score > score
            delta = torch.where(better.unsqueeze(1), current, delta)
            score = torch.where(better, current_score, score)
        return delta
