"""Probabilistic ensemble dynamics (docs/dynamics.md): the core every model-based algorithm shares.

Targets are [Δs, r] (reward last, as OfflineRL-Kit/MICRO). Inputs [s, a] are standardised with the training split's
statistics; targets are not unless the config scales them. One batched network holds all members, so a forward pass
is one matmul per layer. The core is the ensemble (forward, a step that samples one elite per row, save/load) and one
fit loop; how each lineage fits it is a recipe (models/dynamics_recipes.py), and what only one algorithm asks of the
model lives in that algorithm's file.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from models.dynamics_config import DynamicsConfig
from models.dynamics_recipes import OPTIMIZERS, SAMPLE_LOSSES, FitRecipe, FitState, HeldOut, recipe_for, sample_loss
from models.ensemble import EnsembleMLP, soft_clamp
from utils.checkpoint import atomic_torch_save, load_project_file
from utils.errors import UserError
from utils.runner import restore_checkpoint, write_checkpoint

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
FORMAT = "offline-mbrl-dynamics/1"
# Rows per inference chunk, so the [E, rows, hidden] activations stay in cache: measured best on a 2-core CPU
# (fp32 0.9 s vs 2.3 s unchunked for a 50k-row forward pass of the 7 x 4 x 200 ensemble).
INFERENCE_CHUNK = {"fp32": 512, "bf16": 2048}
# A per-row statistic of every member's prediction for a model step: from the means [E, B, obs + 1] (next states
# absolute, reward last) and standard deviations (None for a deterministic model) to [B]. The algorithm that penalises
# model rewards by an uncertainty supplies it (`step(..., uncertainty=...)`).
UncertaintyFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


FIT_FORMAT = "offline-mbrl-dynamics-fit/1"
FIT_SAVE_SECONDS = 120.0  # default interval between writes of a fit's progress file


def read_fit_progress(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state of an interrupted dynamics fit (`EnsembleDynamics.fit(progress_file=...)`), with a one-line error
    if it is unreadable or not ours."""
    return load_project_file(
        path,
        FIT_FORMAT,
        missing=f"no dynamics fit in progress at {path}",
        unreadable=f"the dynamics fit state {path} cannot be read; delete it to start the fit afresh",
        foreign=f"{path} is not a dynamics fit state written by this project; delete it to start the fit afresh",
        map_location=device,
    )


class Standardizer(nn.Module):
    """Per-dimension scaling (x - shift) / scale; its statistics are buffers so they travel with the state_dict.

    kind "std": shift = mean, scale = std (1 where a dimension is constant), as MBPO/OfflineRL-Kit.
    kind "mad": shift = mean, scale = mean absolute deviation (divided by scale + 1e-8), as mjrl's dynamics models.
    kind "scale": shift = 0, scale = std (1 where constant), PMDB/MAGO's target scaling.
    kind "none": the identity (raw inputs, as the WMOPO Pendulum study's model).
    `unbiased` divides the std's sum of squares by n − 1 instead of n (PMDB/MAGO).
    """

    def __init__(self, dim: int, kind: str = "std", unbiased: bool = False) -> None:
        super().__init__()
        self.kind, self.unbiased = kind, unbiased
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        if self.kind == "none":
            return
        mean = x.mean(0)
        self.mean.copy_(torch.zeros_like(mean) if self.kind == "scale" else mean)
        if self.kind == "mad":
            self.std.copy_((x - mean).abs().mean(0))
        else:
            std = x.std(0, unbiased=self.unbiased)
            self.std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    @property
    def scale(self) -> torch.Tensor:
        return self.std + 1e-8 if self.kind == "mad" else self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Back to raw units; with kind "mad", dimensions that never varied (scale < 1e-8) come back as 0, so a
        residual model predicts them unchanged (mjrl's output mask)."""
        raw = y * self.scale + self.mean
        return raw * (self.std >= 1e-8) if self.kind == "mad" else raw


ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


class EnsembleDynamics(nn.Module):
    """An ensemble of Gaussian (or, with loss="mse", deterministic) models of p(s', r | s, a)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DynamicsConfig, termination_fn: TerminationFn | None = None):
        super().__init__()
        if cfg.loss not in SAMPLE_LOSSES:
            raise ValueError(f"unknown dynamics loss {cfg.loss!r}")
        self.obs_dim, self.act_dim, self.cfg = obs_dim, act_dim, cfg
        self.target_dim = obs_dim + 1 if cfg.predict_reward else obs_dim
        self.probabilistic = cfg.loss != "mse"
        self.termination_fn = termination_fn
        # Only a network variance makes the net output log σ² beside the mean.
        self.variance_head = self.probabilistic and cfg.variance_model == "network"
        out_dim = 2 * self.target_dim if self.variance_head else self.target_dim
        self.net = EnsembleMLP(
            cfg.num_ensemble, obs_dim + act_dim, out_dim, cfg.hidden_dims, ACTIVATIONS[cfg.activation], cfg.init
        )
        input_kind = {"mad": "mad", "none": "none"}.get(cfg.normalization, "std")
        self.input_scaler = Standardizer(obs_dim + act_dim, input_kind, cfg.unbiased_std)
        # mjrl scales the Δs targets (mean/MAD), PMDB/MAGO divides them by their std; MBPO-style models regress raw
        # targets.
        target_kind = {"mad": "mad", "scaled_targets": "scale"}.get(cfg.normalization)
        self.target_scaler = (
            None if target_kind is None else Standardizer(self.target_dim, target_kind, cfg.unbiased_std)
        )
        # Reward normalisation (r − shift) / scale of PMDB/MAGO. Only such models carry the two buffers, so models and
        # checkpoints saved before the option existed still load.
        if cfg.reward_normalization:
            self.register_buffer("reward_shift", torch.zeros(()))
            self.register_buffer("reward_scale", torch.ones(()))
        if self.probabilistic and cfg.variance_model == "state_independent":
            # One log σ² per member and output, unbounded (the WMOPO Pendulum study's model starts it at 0).
            self.logvar = nn.Parameter(torch.zeros(cfg.num_ensemble, 1, self.target_dim))
        else:
            # Learned log-variance bounds shared by all members; soft clamping keeps gradients flowing.
            self.max_logvar = nn.Parameter(torch.full((self.target_dim,), cfg.max_logvar_init))
            self.min_logvar = nn.Parameter(torch.full((self.target_dim,), cfg.min_logvar_init))
        self.register_buffer("elites", torch.arange(cfg.num_elites))
        self.register_buffer("holdout_losses", torch.full((cfg.num_ensemble,), float("inf")))

    @property
    def num_members(self) -> int:
        return self.cfg.num_ensemble

    @property
    def device(self) -> torch.device:
        return self.elites.device

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    # ------------------------------------------------------------------------------------------------ forward
    def _forward_normalized(
        self, x: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: standardised inputs [B, in] (shared) or [E, B, in]. Returns mean [E, B, out], log-variance or None
        (for `members` only, if given), in the scaled target space."""
        with self._autocast():
            out = self.net(x, members)
        out = out.float()
        if not self.probabilistic:
            return out, None
        if not self.variance_head:  # state-independent: the member's own log σ² for every row
            logvar = self.logvar if members is None else self.logvar[members]
            return out, logvar.expand_as(out)
        mean, raw = out.split(self.target_dim, dim=-1)
        if self.cfg.variance_bounds == "logstd":  # PMDB/MAGO bound log σ
            return mean, 2 * soft_clamp(raw, self.min_logvar, self.max_logvar)
        return mean, soft_clamp(raw, self.min_logvar, self.max_logvar)

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean (of [Δs, r], or Δs alone without `predict_reward`) and log-variance of every member for a batch of
        (s, a) [B, ...] (every member sees every row) or [E, B, ...] (member i sees rows [i]): shapes [E, B, out].
        `members` (indices into the ensemble) evaluates only those: [M, B, out]. Rewards are in raw units.

        Without grad, large shared batches run in cache-sized chunks.
        """
        x = self.input_scaler(torch.cat([obs, act], dim=-1))
        chunk_rows = INFERENCE_CHUNK[self.cfg.precision] if self.device.type == "cpu" else x.shape[0]
        if torch.is_grad_enabled() or x.shape[0] <= chunk_rows or x.dim() == 3:
            mean, logvar = self._forward_normalized(x, members)
        else:
            means, logvars = zip(*(self._forward_normalized(chunk, members) for chunk in x.split(chunk_rows)))
            mean, logvar = torch.cat(means, 1), None if logvars[0] is None else torch.cat(logvars, 1)
        if self.target_scaler is not None:
            mean = self.target_scaler.inverse(mean)
            logvar = None if logvar is None else logvar + 2 * torch.log(self.target_scaler.scale)
        if self.cfg.reward_normalization:
            mean, logvar = self._raw_reward_units(mean, logvar)
        return mean, logvar

    def _raw_reward_units(
        self, mean: torch.Tensor, logvar: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reward output (last) from normalised back to raw units: r = r_norm · scale + shift."""
        mean = torch.cat([mean[..., :-1], mean[..., -1:] * self.reward_scale + self.reward_shift], dim=-1)
        if logvar is not None:
            logvar = torch.cat([logvar[..., :-1], logvar[..., -1:] + 2 * torch.log(self.reward_scale)], dim=-1)
        return mean, logvar

    def _fit_reward_normalization(self, rewards: torch.Tensor) -> None:
        """shift = r_min − 0.05 (r_max − r_min), scale = 1.1 (r_max − r_min): the data's rewards regress in
        ≈[0.045, 0.955]."""
        low, high = rewards.min(), rewards.max()
        self.reward_shift.copy_(low - 0.05 * (high - low))
        self.reward_scale.copy_(1.1 * (high - low) if high > low else torch.ones_like(high))

    def _decay_loss(self) -> torch.Tensor:
        return sum(wd * 0.5 * layer.weight.square().sum() for wd, layer in zip(self.cfg.weight_decay, self.net.layers))

    def _sample_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member, per-sample loss [E, B] of the standardised inputs x in the scaled target space, by
        `dynamics.loss` (models/dynamics_recipes.py)."""
        mean, logvar = self._forward_normalized(x)
        return sample_loss(self.cfg)(mean, logvar, y)

    def batch_loss(
        self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, include_decay: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ensemble loss on standardised x [E, B, in] (or a shared [B, in]) and targets y [E, B, out], weights
        [E, B] (or [B]) for a weighted MLE; and each member's data term [E].

        The fit leaves the weight-decay term out (include_decay=False) because its optimiser applies the identical
        gradient wd·W inside the fused Adam kernel (see `optimizer`).
        """
        per_sample = self._sample_losses(x, y)
        if weights is not None:
            per_sample = per_sample * weights
        per_member = per_sample.mean(-1)
        loss = per_member.mean() if self.cfg.member_loss == "mean" else per_member.sum()
        if include_decay:
            loss = loss + self._decay_loss()
        if self.variance_head:
            loss = loss + self.cfg.logvar_bound_coef * (self.max_logvar.sum() - self.min_logvar.sum())
        return loss, per_member

    def training_loss(
        self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, include_decay: bool = True
    ) -> torch.Tensor:
        """`batch_loss` without the members' terms, the weight decay included by default."""
        return self.batch_loss(x, y, weights, include_decay)[0]

    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser `dynamics.optimizer` names (models/dynamics_recipes.py): with "adam", Adam whose per-layer
        weight_decay adds wd·W to each weight's gradient, the gradient of wd·½‖W‖² in the loss."""
        return OPTIMIZERS[self.cfg.optimizer](self)

    @torch.no_grad()
    def holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Validation metric per member: MSE of the mean only, over all output dims. x is standardised."""
        mean, _ = self._forward_normalized(x)
        return (mean - y).square().mean(dim=(1, 2))

    @torch.no_grad()
    def holdout_loss(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The holdout metric per member [E] (`holdout_metric`): the mean's MSE, or the training likelihood term
        (weighted by `weights` [B] if given, so that a weighted fit is validated by the loss it minimises)."""
        if self.cfg.holdout_metric == "mse":
            return self.holdout_mse(x, y)
        per_sample = self._sample_losses(x, y)
        return (per_sample if weights is None else per_sample * weights).mean(-1)

    # ------------------------------------------------------------------------------------------------ fitting
    def fit(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        rewards: torch.Tensor | None,
        weights: torch.Tensor | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        progress: bool = True,
        progress_file: str | Path | None = None,
        save_seconds: float | None = None,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        recipe: FitRecipe | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> dict[str, float]:
        """Fit all members the way `recipe` says (default: the one the config selects, `recipe_for`): its split,
        minibatch rows, per-batch loss, holdout/elite policy (`judge`) and stopping rule. The scalers are refitted to
        the training rows first. Returns the final metrics; `log_fn(metrics, epoch)` is called after every epoch.

        `weights` (one per transition) turn the loss into a weighted MLE. `optimizer` continues training with
        moments kept between calls (a warm start); by default a fresh one (`optimizer()`).

        With `progress_file`, the fit's whole state (weights, optimiser, data split, rows, best snapshot, patience
        counter, RNG states, and `extra_state()`) is written there at the end of an epoch once `save_seconds`
        (default FIT_SAVE_SECONDS) have passed since the last write, and a fit that finds the file continues from it
        exactly: a long fit (1000 epochs) survives a kill. The caller removes the file once the model is saved.
        """
        cfg, device, members = self.cfg, self.device, self.cfg.num_ensemble
        recipe = recipe_for(cfg) if recipe is None else recipe
        inputs = torch.cat([obs, act], dim=-1).to(device)
        if cfg.reward_normalization:
            assert rewards is not None, "reward normalisation needs the rewards"
            self._fit_reward_normalization(rewards.to(device))
        targets = self._targets(obs, next_obs, rewards).to(device)
        n = inputs.shape[0]
        num_holdout = recipe.split.holdout_size(n)
        if num_holdout == 0 and recipe.fallback is not None:
            recipe = recipe.fallback
        if n - num_holdout < cfg.batch_size:
            raise UserError(
                f"{n} transitions leave {n - num_holdout} to train on, fewer than one dynamics batch "
                f"({cfg.batch_size}); use more data (online: collect more samples) or lower dynamics.batch_size"
            )
        resume = None
        if progress_file is not None and Path(progress_file).exists():
            resume = read_fit_progress(progress_file, device)
            if resume["rows"] != n:
                raise UserError(
                    f"the dynamics fit saved in {progress_file} was on {resume['rows']} transitions, this data has "
                    f"{n}; delete that file to start the fit afresh"
                )
        order = recipe.split.order(n, device) if resume is None else resume["permutation"]
        order = None if order is None else order.to(device)

        def train_rows(values: torch.Tensor) -> torch.Tensor:
            return values if order is None else values[order[num_holdout:]]

        self.input_scaler.fit(train_rows(inputs))
        if self.target_scaler is not None:
            self.target_scaler.fit(train_rows(targets))
            targets = self.target_scaler(targets)
        x_train, y_train = self.input_scaler(train_rows(inputs)), train_rows(targets)
        weights = None if weights is None else weights.to(device).reshape(-1)
        w_train = None if weights is None else train_rows(weights)
        held = None
        if order is not None and num_holdout:
            rows_out = order[:num_holdout]
            w_out = None if weights is None else weights[rows_out]
            held = HeldOut(self.input_scaler(inputs[rows_out]), targets[rows_out], w_out)
        num_train = x_train.shape[0]

        rows = recipe.rows
        member_rows = rows.first(num_train, members, device)
        optimizer = self.optimizer() if optimizer is None else optimizer
        state = FitState(
            best_losses=torch.full((members,), float("inf"), device=device),
            member_losses=torch.zeros(members, device=device),
        )
        recipe.judge.begin(self, state)
        if resume is not None:

            def load(saved: dict[str, Any]) -> None:
                nonlocal member_rows
                self.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                if rows.persistent:
                    member_rows = saved["member_rows"].to(device)
                if saved["best_state"] is not None:
                    state.best_state = {k: v.to(device) for k, v in saved["best_state"].items()}
                state.best_losses = saved["best_losses"].to(device)
                state.stale, state.epoch, state.metrics = saved["epochs_since_update"], saved["epoch"], saved["metrics"]
                state.steps = saved.get("steps", 0)

            restore_checkpoint(resume, load)
        last_save = time.monotonic()
        save_seconds = FIT_SAVE_SECONDS if save_seconds is None else save_seconds

        def save_progress() -> None:
            saved = {
                "rows": n,
                "epoch": state.epoch,
                "steps": state.steps,
                "model": self.state_dict(),
                "optimizer": optimizer.state_dict(),
                "permutation": None if order is None else order.cpu(),
                "member_rows": member_rows.cpu() if rows.persistent and member_rows is not None else None,
                "best_state": state.best_state,
                "best_losses": state.best_losses,
                "epochs_since_update": state.stale,
                "metrics": state.metrics,
                **(extra_state() if extra_state is not None else {}),
            }
            write_checkpoint(progress_file, FIT_FORMAT, saved)

        bar = tqdm(desc="dynamics", unit="epoch", initial=state.epoch, disable=not progress, dynamic_ncols=True)
        while not recipe.stop.done(state):
            state.epoch += 1
            member_rows = rows.epoch(member_rows, num_train, members, device)
            train_loss_sum = torch.zeros((), device=device)
            member_loss_sum = torch.zeros(members, device=device)
            num_batches = 0
            for batch_rows in member_rows.split(cfg.batch_size, dim=1):
                batch_rows = batch_rows[0] if rows.shared else batch_rows  # one [B, ·] batch for every member
                batch_weights = None if w_train is None else w_train[batch_rows]
                loss, per_member = recipe.loss(self, x_train[batch_rows], y_train[batch_rows], batch_weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # members share no weights: one backward trains each on its own term
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
                optimizer.step()
                train_loss_sum += loss.detach()
                member_loss_sum += per_member.detach()
                num_batches += 1
            state.steps += num_batches
            state.member_losses = member_loss_sum / num_batches
            recipe.judge.end_epoch(self, state, float(train_loss_sum) / num_batches, held)
            if log_fn is not None:
                log_fn(state.metrics, state.epoch)
            bar.update()
            if "dynamics/holdout_loss" in state.metrics:
                bar.set_postfix(holdout=f"{state.metrics['dynamics/holdout_loss']:.4f}", stale=state.stale)
            else:
                bar.set_postfix(loss=f"{state.metrics['dynamics/train_loss']:.4f}")
            due = time.monotonic() - last_save >= save_seconds
            if progress_file is not None and due and not recipe.stop.done(state):
                save_progress()
                last_save = time.monotonic()
        bar.close()
        return recipe.judge.finish(self, state)

    def _targets(self, obs: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor | None) -> torch.Tensor:
        delta = next_obs - obs
        if not self.cfg.predict_reward:
            return delta
        assert rewards is not None, "a model with predict_reward needs rewards to fit"
        reward = rewards.reshape(-1, 1)
        if self.cfg.reward_normalization:
            reward = (reward - self.reward_shift) / self.reward_scale
        return torch.cat([delta, reward], dim=-1)

    # ------------------------------------------------------------------------------------------------ prediction
    @torch.no_grad()
    def step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        uncertainty: UncertaintyFn | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One model step for a batch: each row follows one elite chosen uniformly at random.

        Returns next_obs [B, obs], reward [B], done [B] (termination function on the sampled next state) and
        info; with `uncertainty`, info["uncertainty"] [B] is that statistic of all members' predictions (not only the
        elites'), computed here because only the step has every member's mean and σ at hand.
        """
        if not self.cfg.predict_reward:
            raise UserError(
                "this dynamics model predicts no reward (dynamics.predict_reward=false); set it true for the SAC family"
            )
        mean, logvar = self(obs, act)
        mean[..., : self.obs_dim] += obs
        std = None if logvar is None else torch.exp(0.5 * logvar)
        batch = obs.shape[0]
        rows = torch.arange(batch, device=obs.device)
        members = self.elites[torch.randint(self.cfg.num_elites, (batch,), device=obs.device)]
        chosen = mean[members, rows]
        if not deterministic and std is not None:  # sample only the member each row follows
            chosen = chosen + std[members, rows] * torch.randn_like(chosen)
        next_obs, reward = chosen[:, : self.obs_dim], chosen[:, self.obs_dim]
        if self.termination_fn is None:
            done = torch.zeros(batch, dtype=torch.bool, device=obs.device)
        else:
            done = self.termination_fn(obs, act, next_obs)
        info: dict[str, torch.Tensor] = {"raw_reward": reward}
        if uncertainty is not None:
            info["uncertainty"] = uncertainty(mean, std)
        return next_obs, reward, done, info

    # ------------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path, **metadata: object) -> None:
        """One file holds weights, input normaliser, elites and the config needed to rebuild the model."""
        payload = {
            "format": FORMAT,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": dataclasses.asdict(self.cfg),
            "state_dict": self.state_dict(),
            "metadata": metadata,
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        obs_dim: int | None = None,
        act_dim: int | None = None,
        termination_fn: TerminationFn | None = None,
        device: torch.device | str = "cpu",
    ) -> EnsembleDynamics:
        """Load a saved model; with obs_dim/act_dim given, refuse a model made for another task."""
        path = Path(path)
        payload = load_project_file(
            path,
            FORMAT,
            missing=f"dynamics file {path} does not exist; train one with --set dynamics_only=true",
            unreadable=f"dynamics file {path} cannot be read; retrain it",
            foreign=f"{path} is not a dynamics model saved by this project; retrain it",
            map_location=device,
        )
        if (obs_dim, act_dim) != (None, None) and (payload["obs_dim"], payload["act_dim"]) != (obs_dim, act_dim):
            raise UserError(
                f"dynamics file {path} is for obs/act dims {payload['obs_dim']}/{payload['act_dim']} but this task has "
                f"{obs_dim}/{act_dim}; use a model trained on this task"
            )
        model = cls(payload["obs_dim"], payload["act_dim"], DynamicsConfig(**payload["config"]), termination_fn)
        model.load_state_dict(payload["state_dict"])
        return model.to(device)
