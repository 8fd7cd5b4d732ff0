"""Natural policy gradient, the policy player of PAL, MAL and MOReL (docs/npg.md; mjrl's `npg_cg.py`).

Given paths from the current Gaussian policy π_θ:

1. Baseline values b_t = V(s_t, t); TD residuals δ_t = r_t + γ b_{t+1} − b_t, where after a path's last step
   b_T = 0 if the path terminated and b_T = b_{T−1} if it was cut off; GAE Â_t = Σ_k (γλ)^k δ_{t+k};
   advantages whitened: Â ← (Â − mean Â) / (std Â + 1e-6).
2. Vanilla gradient g = ∇_θ mean_t[log π_θ(a_t|s_t) · Â_t] at θ = θ_old (mjrl v2's `pg_surrogate`; at θ_old it
   equals the gradient of the likelihood-ratio (CPI) surrogate, which mjrl logs as `surr_improvement`).
3. Natural direction x ≈ (F + damping·I)⁻¹ g by `cg_iters` conjugate-gradient iterations started from x₀ = g
   (mjrl's `npg_cg.py`; `cg_init: zero` starts from 0), F the Hessian of the mean KL(π_old ‖ π_θ) over the
   visited states at θ_old. For a Gaussian with state-independent σ that Hessian is the Fisher matrix in
   Gauss-Newton form: F v = (1/N) Σ_s J_sᵀ diag(σ⁻²) J_s v_μ on the mean network's parameters (J_s = ∂μ(s)/∂θ, one
   linearised forward and one backward pass per product) and 2 v on log σ.
4. Step θ ← θ + α x with α = sqrt(δ / gᵀx), δ the normalised step size (mjrl's); in the quadratic model
   KL ≈ ½ Δθᵀ F Δθ = ½ α² gᵀx the step moves the policy by mean KL ≈ δ/2. log σ is then clamped to its bounds.
5. The baseline is refitted to the discounted returns Σ_k γ^k r_{t+k} (no bootstrap) by minibatch Adam, at least
   one step per epoch (mjrl's `fit_data`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, linearize, vjp
from torch.nn.utils import parameters_to_vector

from algos.base import TrainableModule
from buffers.paths import PathBatch
from config import NPGConfig
from models.npg import GaussianMLPPolicy, ValueBaseline


def discounted_cumsum(x: torch.Tensor, factor: float) -> torch.Tensor:
    """y_t = Σ_{k ≥ t} factor^(k−t) x_k along the last dim of x [N, T], as one matmul with the upper-triangular
    matrix of discounts (in float64, so long horizons keep their small terms)."""
    steps = torch.arange(x.shape[-1], device=x.device, dtype=torch.float64)
    offsets = steps.unsqueeze(0) - steps.unsqueeze(1)  # [t, k] = k - t
    discounts = torch.where(offsets >= 0, factor ** offsets.clamp(min=0), torch.zeros((), dtype=torch.float64))
    return (x.to(torch.float64) @ discounts.T).to(x.dtype)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (GAE) and discounted returns [N, T] of padded paths (mjrl's `compute_advantages`/`_returns`).

    The value after a path's last step is 0 when the path terminated and its last value when it was cut off.
    Entries outside `mask` are 0.
    """
    rewards, values = rewards * mask, values * mask
    rows = torch.arange(len(rewards), device=rewards.device)
    last = mask.sum(1) - 1
    next_values = torch.zeros_like(values)
    next_values[:, :-1] = values[:, 1:]
    next_values[rows, last] = torch.where(terminated, torch.zeros_like(last, dtype=values.dtype), values[rows, last])
    deltas = (rewards + gamma * next_values - values) * mask
    return discounted_cumsum(deltas, gamma * lam) * mask, discounted_cumsum(rewards, gamma) * mask


def whiten(adv: torch.Tensor) -> torch.Tensor:
    """(Â − mean Â) / (std Â + 1e-6) with the population std, over all steps of all paths (mjrl's whitening)."""
    return (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-6)


def fisher_vector_product(policy: GaussianMLPPolicy, obs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ F v for the policy's parameter vector (the order of `policy.parameters()`) at its current parameters:
    the Hessian of the mean KL(π_current ‖ π_θ) over `obs`, in closed form (module docstring, step 3). Equal to
    differentiating the KL twice (tests/test_npg.py checks it) at about 2.5x less compute: the mean network is
    linearised once and each product is one Jacobian-vector and one vector-Jacobian product."""
    mean_params = {name: p.detach() for name, p in policy.mean_net.named_parameters()}
    inputs = policy.normalized_input(obs).detach()

    def mean_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(policy.mean_net, params, (inputs,))

    with warnings.catch_warnings():  # torch.func's tracer warns about folding constants it handles itself
        warnings.filterwarnings("ignore", message=".*get_attr Node with no underlying reference.*")
        _, jacobian_vector = linearize(mean_of, mean_params)
    _, vector_jacobian = vjp(mean_of, mean_params)
    precision = torch.exp(-2 * policy.log_std.detach()) / len(inputs)  # σ⁻² / N
    layout = [(name, p.numel(), p.shape) for name, p in policy.named_parameters()]

    def product(v: torch.Tensor) -> torch.Tensor:
        pieces = dict(zip([name for name, _, _ in layout], v.split([size for _, size, _ in layout])))
        tangent = {name: pieces[f"mean_net.{name}"].view(p.shape) for name, p in mean_params.items()}
        (mean_part,) = vector_jacobian(jacobian_vector(tangent) * precision)
        out = {f"mean_net.{name}": g.reshape(-1) for name, g in mean_part.items()}
        out["log_std"] = 2 * pieces["log_std"]
        return torch.cat([out[name] for name, _, _ in layout])

    return product


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int,
    residual_tol: float = 1e-10,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Approximate A⁻¹ b for symmetric positive-definite A given as `matvec`, from x0 (0 when None) (mjrl's
    `cg_solve`: r = b − A x0, p = r, stop once rᵀr < residual_tol)."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b.clone() if x0 is None else b - matvec(x)
    p = r.clone()
    rdotr = r @ r
    for _ in range(iters):
        z = matvec(p)
        step = rdotr / (p @ z)
        x += step * p
        r -= step * z
        new_rdotr = r @ r
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
        if rdotr < residual_tol:
            break
    return x


class NPG(TrainableModule):
    """Gaussian MLP policy + MLP baseline trained by natural policy gradient on batches of paths."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: NPGConfig,
        device: torch.device | str = "cpu",
        obs_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.npg_cfg = cfg
        self.actor = GaussianMLPPolicy(
            obs_dim, act_dim, cfg.policy_hidden_dims, cfg.init_log_std, cfg.min_log_std, cfg.max_log_std, obs_mask
        ).to(device)
        self.baseline = ValueBaseline(obs_dim, cfg.baseline_hidden_dims, obs_mask).to(device)
        self.baseline_optim = torch.optim.Adam(
            self.baseline.parameters(), lr=cfg.baseline_lr, weight_decay=cfg.baseline_weight_decay
        )
        self.register_buffer("running_score", torch.tensor(float("nan")))

    def optimizers(self) -> dict[str, Any]:
        return {"baseline_optim": self.baseline_optim}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor.act(obs, deterministic)

    # ------------------------------------------------------------------------------------------------ NPG step
    def policy_gradient(self, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """g = ∇_θ mean_t[log π_θ(a_t|s_t) · Â_t] as one flat vector (the order of `actor.parameters()`)."""
        surrogate = (self.actor.log_prob(obs, act) * adv).mean()
        return parameters_to_vector(torch.autograd.grad(surrogate, list(self.actor.parameters())))

    def policy_step(self, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor) -> dict[str, torch.Tensor]:
        """One natural gradient step on the steps (obs, act) with whitened advantages `adv`, applied in place:
        g, the CG direction x, α = sqrt(δ / gᵀx), θ ← θ + αx, log σ clamped. Returns g, x and α."""
        cfg, policy = self.npg_cfg, self.actor
        vpg = self.policy_gradient(obs, act, adv)
        fisher = fisher_vector_product(policy, obs)
        direction = conjugate_gradient(
            lambda v: fisher(v) + cfg.cg_damping * v,
            vpg,
            cfg.cg_iters,
            x0=vpg if cfg.cg_init == "gradient" else None,
        )
        alpha = torch.sqrt((cfg.step_size / (vpg @ direction + 1e-20)).abs())
        with torch.no_grad():
            # In place, so every parameter keeps its own (aligned) storage: vector_to_parameters would rebind them
            # to views of one flat vector, whose offsets change float results and break resume equality.
            step = alpha * direction
            offset = 0
            for param in policy.parameters():
                param.add_(step[offset : offset + param.numel()].view_as(param))
                offset += param.numel()
            policy.clamp_log_std()
        return {"vpg": vpg, "direction": direction, "alpha": alpha}

    def update_from_paths(self, paths: PathBatch) -> dict[str, float]:
        """One NPG step on `paths`, then one baseline fit; returns mjrl's diagnostics."""
        cfg, policy = self.npg_cfg, self.actor
        started = time.perf_counter()
        with torch.no_grad():
            values = self.baseline(paths.obs, paths.timesteps)
        advantages, returns = gae(paths.rew, values, paths.mask, paths.terminated, cfg.gamma, cfg.gae_lambda)
        mask = paths.mask
        obs, act, adv = paths.obs[mask], paths.act[mask], whiten(advantages[mask])

        with torch.no_grad():
            old_mean, old_log_std = policy.distribution_params(obs)
            old_log_prob = policy.log_prob(obs, act, old_mean)

            def surrogate() -> torch.Tensor:
                """mjrl's CPI surrogate (logged only): mean likelihood ratio times advantage."""
                return ((policy.log_prob(obs, act) - old_log_prob).exp() * adv).mean()

            surr_before = surrogate()
        alpha = self.policy_step(obs, act, adv)["alpha"]
        with torch.no_grad():
            surr_after = surrogate()
            kl = policy.kl_from(obs, old_mean, old_log_std).mean()
        policy_seconds = time.perf_counter() - started

        mean_return = float(paths.returns().mean())
        previous = float(self.running_score)
        self.running_score.fill_(mean_return if previous != previous else 0.9 * previous + 0.1 * mean_return)
        started = time.perf_counter()
        vf_before, vf_after = self.fit_baseline(paths.obs[mask], paths.timesteps[mask], returns[mask])
        return {
            "npg/alpha": float(alpha),
            "npg/delta": cfg.step_size,
            "npg/kl_dist": float(kl),
            "npg/surr_improvement": float(surr_after - surr_before),
            "npg/running_score": float(self.running_score),
            "npg/path_return_mean": mean_return,
            "npg/num_samples": int(mask.sum()),
            "npg/log_std_mean": float(policy.log_std.detach().mean()),
            "npg/VF_error_before": vf_before,
            "npg/VF_error_after": vf_after,
            "time/npg_step": policy_seconds,
            "time/baseline_fit": time.perf_counter() - started,
        }

    def fit_baseline(
        self,
        obs: torch.Tensor,
        timesteps: torch.Tensor,
        returns: torch.Tensor,
        orders: list[torch.Tensor] | None = None,
    ) -> tuple[float, float]:
        """`baseline_epochs` passes of minibatch Adam on the squared error to the returns; the relative errors
        Σ(R − V)² / ΣR² before and after (mjrl's VF_error_before/after). Like mjrl's `fit_data`, an epoch runs
        max(⌊n / B⌋ − 1, 1) minibatches of B rows from a fresh permutation, so a batch of fewer than 2B steps
        still takes one step (on all rows when n < B). `orders`: the permutations to use, one per epoch (tests)."""
        cfg = self.npg_cfg
        features = self.baseline.features(obs, timesteps)
        net = self.baseline.net

        def relative_error() -> float:
            with torch.no_grad():
                return float((returns - net(features).squeeze(-1)).square().sum() / (returns.square().sum() + 1e-8))

        before = relative_error()
        n, batch = len(returns), cfg.baseline_batch_size
        for epoch in range(cfg.baseline_epochs):
            order = torch.randperm(n, device=returns.device) if orders is None else orders[epoch]
            for rows in order[: max(n // batch - 1, 1) * batch].split(batch):
                loss = (net(features[rows]).squeeze(-1) - returns[rows]).square().mean()
                self.baseline_optim.zero_grad(set_to_none=True)
                loss.backward()
                self.baseline_optim.step()
        return before, relative_error()
