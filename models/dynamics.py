"""Probabilistic ensemble dynamics (docs/dynamics.md), shared by MOPO, MICRO, WMOPO and the NPG family.

Targets are [Δs, r] (reward last, as OfflineRL-Kit/MICRO). Inputs [s, a] are standardised with the training split's
statistics; targets are not. One batched network holds all members, so a forward pass is one matmul per layer.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from config import DynamicsConfig
from models.ensemble import EnsembleMLP, soft_clamp
from utils.checkpoint import atomic_torch_save, capture_rng_state, load_project_file, restore_rng_state
from utils.errors import UserError

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
        if cfg.loss not in ("nll", "mse", "beta_nll"):
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
        """Per-member, per-sample loss [E, B] (means over output dims; no ½ on the NLL, as MBPO/MOPO).

        beta_nll: −log N(y | μ, σ) per element times w = stopgrad(σ)^{2β} / mean over the batch of it (PMDB/MAGO;
        β = 0 is the plain NLL with its ½ and log 2π). In the scaled target space this differs from the loss in raw
        units by a constant only: the scales cancel in w.
        """
        mean, logvar = self._forward_normalized(x)
        if logvar is None:
            return (mean - y).square().mean(-1)
        if self.cfg.loss == "beta_nll":
            nll = 0.5 * ((mean - y).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
            weight = torch.exp(self.cfg.nll_beta * logvar.detach())  # σ^{2β}
            return (nll * weight / weight.mean(-2, keepdim=True)).mean(-1)
        return ((mean - y).square() * torch.exp(-logvar) + logvar).mean(-1)

    def training_loss(
        self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, include_decay: bool = True
    ) -> torch.Tensor:
        """Ensemble loss on standardised x [E, B, in] and targets y [E, B, out]; weights [E, B] for weighted MLE.

        `fit` leaves the weight-decay term out (include_decay=False) because its optimiser applies the identical
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
        return loss

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam whose per-layer weight_decay adds wd·W to each weight's gradient before the moment updates: the
        gradient of wd·½‖W‖² in the loss (coupled L2, as MBPO/MOPO; not AdamW), in one fused kernel. With
        optimizer=adamw: AdamW decaying every parameter by `adamw_weight_decay` (PMDB/MAGO). With optimizer=adam_l2:
        Adam with the coupled L2 `param_weight_decay` on every parameter (the WMOPO Pendulum study)."""
        if self.cfg.optimizer == "adam_l2":
            return torch.optim.Adam(
                self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.param_weight_decay, fused=True
            )
        if self.cfg.optimizer == "adamw":
            return torch.optim.AdamW(
                self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.adamw_weight_decay, fused=True
            )
        layer_weights = [layer.weight for layer in self.net.layers]
        others = [p for p in self.parameters() if all(p is not w for w in layer_weights)]
        groups = [{"params": [w], "weight_decay": wd} for w, wd in zip(layer_weights, self.cfg.weight_decay)]
        return torch.optim.Adam([*groups, {"params": others, "weight_decay": 0.0}], lr=self.cfg.lr, fused=True)

    @torch.no_grad()
    def holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Validation metric per member: MSE of the mean only, over all output dims. x is standardised."""
        mean, _ = self._forward_normalized(x)
        return (mean - y).square().mean(dim=(1, 2))

    @torch.no_grad()
    def holdout_loss(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The holdout metric per member [E] (`holdout_metric`): the mean's MSE, or the training likelihood term
        (weighted by `weights` [B] if given, as WMOPO validates its weighted fit)."""
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
        rewards: torch.Tensor,
        weights: torch.Tensor | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        progress: bool = True,
        progress_file: str | Path | None = None,
        save_seconds: float | None = None,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        extra_loss: Callable[[], torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Fit all members with bootstrapped data, holdout early stopping and elite selection; with holdout_ratio 0,
        `max_epochs` epochs (or fewer, by `train_loss_patience`) and the last weights (PMDB/MAGO, WMOPO's Pendulum
        model), the first `num_elites` members as elites.

        `weights` (one per transition, e.g. WMOPO's density ratios) turn the loss into a weighted MLE.
        `extra_loss()` is added to every batch's loss (and to the training loss early stopping watches): WMOPO's
        Algorithm 1 adds its gradient-correction term ⟨θ − θ_i, g⟩ this way.
        Returns the final metrics; `log_fn(metrics, epoch)` is called after every epoch.

        With `progress_file`, the fit's whole state (weights, optimiser, data split, bootstrap rows, best snapshot,
        patience counter, RNG states, and `extra_state()`) is written there at the end of an epoch once `save_seconds`
        (default FIT_SAVE_SECONDS) have passed since the last write, and a fit that finds the file continues from it
        exactly: a long fit (MAGO's 1000 epochs) survives a kill. The caller removes the file once the model is
        saved.
        """
        cfg, device = self.cfg, self.device
        inputs = torch.cat([obs, act], dim=-1).to(device)
        if cfg.reward_normalization:
            assert rewards is not None, "reward normalisation needs the rewards"
            self._fit_reward_normalization(rewards.to(device))
        targets = self._targets(obs, next_obs, rewards).to(device)
        n = inputs.shape[0]
        num_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
        if n - num_holdout < cfg.batch_size:
            raise UserError(
                f"dataset has {n} transitions, too few to fit the dynamics model with batch size "
                f"{cfg.batch_size}; use more data or --set dynamics.batch_size=..."
            )
        resume = None
        if progress_file is not None and Path(progress_file).exists():
            resume = read_fit_progress(progress_file, device)
            if resume["rows"] != n:
                raise UserError(
                    f"the dynamics fit saved in {progress_file} was on {resume['rows']} transitions, this data has "
                    f"{n}; delete that file to start the fit afresh"
                )
        permutation = torch.randperm(n, device=device) if resume is None else resume["permutation"].to(device)
        train_idx, holdout_idx = permutation[num_holdout:], permutation[:num_holdout]
        self.input_scaler.fit(inputs[train_idx])
        if self.target_scaler is not None:
            self.target_scaler.fit(targets[train_idx])
            targets = self.target_scaler(targets)
        x_train, y_train = self.input_scaler(inputs[train_idx]), targets[train_idx]
        x_holdout, y_holdout = self.input_scaler(inputs[holdout_idx]), targets[holdout_idx]
        w_train = None if weights is None else weights.to(device).reshape(-1)[train_idx]
        w_holdout = None if weights is None else weights.to(device).reshape(-1)[holdout_idx]
        num_train, members = x_train.shape[0], cfg.num_ensemble

        shared = cfg.shared_batches and not cfg.bootstrap

        def draw_rows() -> torch.Tensor:
            if cfg.bootstrap:
                return torch.randint(num_train, (members, num_train), device=device)
            return torch.arange(num_train, device=device).expand(members, num_train)

        member_rows = draw_rows()
        optimizer = self.optimizer()
        best_losses = torch.full((members,), float("inf"), device=device)
        best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        epochs_since_update, epoch = 0, 0
        metrics: dict[str, float] = {}
        fresh_rows_each_epoch = cfg.bootstrap and cfg.bootstrap_every_epoch
        if resume is not None:
            self.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if not fresh_rows_each_epoch:
                member_rows = resume["member_rows"].to(device)
            if num_holdout:
                best_state = {k: v.to(device) for k, v in resume["best_state"].items()}
            best_losses = resume["best_losses"].to(device)
            epochs_since_update, epoch, metrics = resume["epochs_since_update"], resume["epoch"], resume["metrics"]
            restore_rng_state(resume["rng"])
        last_save = time.monotonic()
        save_seconds = FIT_SAVE_SECONDS if save_seconds is None else save_seconds

        def save_progress() -> None:
            state = {
                "format": FIT_FORMAT,
                "rows": n,
                "epoch": epoch,
                "model": self.state_dict(),
                "optimizer": optimizer.state_dict(),
                "permutation": permutation.cpu(),
                "member_rows": None if fresh_rows_each_epoch else member_rows.cpu(),
                "best_state": best_state if num_holdout else None,
                "best_losses": best_losses,
                "epochs_since_update": epochs_since_update,
                "metrics": metrics,
                "rng": capture_rng_state(),
                **(extra_state() if extra_state is not None else {}),
            }
            atomic_torch_save(state, progress_file)

        bar = tqdm(desc="dynamics", unit="epoch", initial=epoch, disable=not progress, dynamic_ncols=True)
        while not self._fit_done(epoch, epochs_since_update, num_holdout):
            epoch += 1
            if fresh_rows_each_epoch:
                member_rows = draw_rows()  # i.i.d. rows: already in random order
            elif shared:  # one order for all members
                member_rows = torch.randperm(num_train, device=device).expand(members, num_train)
            else:
                member_rows = member_rows.gather(1, torch.rand(members, num_train, device=device).argsort(1))
            train_loss_sum = torch.zeros((), device=device)
            num_batches = 0
            for rows in member_rows.split(cfg.batch_size, dim=1):
                rows = rows[0] if shared else rows  # shared rows: one [B, ·] batch broadcast to every member
                batch_weights = None if w_train is None else w_train[rows]
                loss = self.training_loss(x_train[rows], y_train[rows], batch_weights, include_decay=False)
                if extra_loss is not None:
                    loss = loss + extra_loss()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
                optimizer.step()
                train_loss_sum += loss.detach()
                num_batches += 1
            if num_holdout == 0:  # nothing to select on; optionally patience on the training loss
                metrics = {"dynamics/train_loss": float(train_loss_sum) / num_batches}
                if cfg.train_loss_patience is not None:  # best_losses holds the best training loss in every entry
                    if metrics["dynamics/train_loss"] < float(best_losses[0]):
                        best_losses.fill_(metrics["dynamics/train_loss"])
                        epochs_since_update = 0
                    else:
                        epochs_since_update += 1
                if log_fn is not None:
                    log_fn(metrics, epoch)
                bar.update()
                bar.set_postfix(loss=f"{metrics['dynamics/train_loss']:.4f}")
            else:
                holdout = self.holdout_loss(x_holdout, y_holdout, w_holdout)
                last_holdout = holdout
                if cfg.holdout_metric == "nll":  # any lower loss counts (WMOPO)
                    improved = holdout < best_losses
                else:  # relative improvement > 1 % per member (MBPO/MOPO); the first epoch always counts
                    improved = best_losses.isinf() | ((best_losses - holdout) / best_losses > cfg.improvement_threshold)
                if bool(improved.any()):
                    if cfg.keep_weights == "best":
                        self._snapshot(best_state, improved)
                    best_losses = torch.where(improved, holdout, best_losses)
                    epochs_since_update = 0
                elif epoch > cfg.patience_after_epoch:
                    epochs_since_update += 1
                metrics = {
                    "dynamics/train_loss": float(train_loss_sum) / num_batches,
                    # KIT's figure: mean holdout MSE of the best num_elites members this epoch.
                    "dynamics/holdout_loss": float(holdout.sort().values[: cfg.num_elites].mean()),
                }
                if log_fn is not None:
                    log_fn(metrics, epoch)
                bar.update()
                bar.set_postfix(holdout=f"{metrics['dynamics/holdout_loss']:.4f}", stale=epochs_since_update)
            due = time.monotonic() - last_save >= save_seconds
            if progress_file is not None and due and not self._fit_done(epoch, epochs_since_update, num_holdout):
                save_progress()
                last_save = time.monotonic()
        bar.close()
        if num_holdout == 0:
            self.elites.copy_(torch.arange(cfg.num_elites, device=device))
            return {**metrics, "dynamics/epochs": epoch, "dynamics/elite_holdout_loss": float("nan")}
        if cfg.keep_weights == "best":
            self.net.load_state_dict(best_state)
            self.holdout_losses.copy_(best_losses)
        else:  # the last epoch's weights, judged by the last epoch's holdout losses
            self.holdout_losses.copy_(last_holdout)
        self.elites.copy_(self.holdout_losses.argsort()[: cfg.num_elites])
        metrics.update(
            {"dynamics/epochs": epoch, "dynamics/elite_holdout_loss": float(best_losses[self.elites].mean())}
        )
        return metrics

    def _fit_done(self, epoch: int, epochs_since_update: int, num_holdout: int) -> bool:
        """Without a holdout: after max_epochs, or train_loss_patience epochs without a lower training loss. With one:
        after max_epochs_since_update epochs without a >1 % improvement of any member, or at max_epochs if set."""
        cfg = self.cfg
        if epoch == 0:
            return False
        if num_holdout == 0:
            patience_spent = cfg.train_loss_patience is not None and epochs_since_update >= cfg.train_loss_patience
            return epoch >= cfg.max_epochs or patience_spent
        return epochs_since_update >= cfg.max_epochs_since_update or bool(cfg.max_epochs and epoch >= cfg.max_epochs)

    @torch.no_grad()
    def _snapshot(self, best_state: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
        """Store the current weights of the improved members (dim 0 of every ensemble tensor is the member)."""
        for name, value in self.net.state_dict().items():
            mask = improved.view(-1, *([1] * (value.dim() - 1)))
            best_state[name].copy_(torch.where(mask, value, best_state[name]))

    def _targets(self, obs: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor | None) -> torch.Tensor:
        delta = next_obs - obs
        if not self.cfg.predict_reward:
            return delta
        assert rewards is not None, "a model with predict_reward needs rewards to fit"
        reward = rewards.reshape(-1, 1)
        if self.cfg.reward_normalization:
            reward = (reward - self.reward_shift) / self.reward_scale
        return torch.cat([delta, reward], dim=-1)

    def fit_epochs(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        max_steps: int | None = None,
        rewards: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | int]:
        """mjrl's fit for the NPG family: `epochs` passes over all the data (no holdout, bootstrap or early stopping),
        every member with its own shuffle and `cfg.batch_size` rows per step (the last partial batch dropped),
        stopping after the first epoch that brings the gradient steps to `max_steps`.

        Warm start: training continues from the current weights with `optimizer` (its moments persist between
        calls); the input and target scalers are re-fitted to the data first, as mjrl does on every fit. Returns
        the last epoch's mean loss per member [E] (in the scaled target space), the epochs and steps taken.
        """
        cfg = self.cfg
        inputs, targets = torch.cat([obs, act], dim=-1), self._targets(obs, next_obs, rewards)
        n, members = inputs.shape[0], cfg.num_ensemble
        steps_per_epoch = n // cfg.batch_size
        if steps_per_epoch == 0:
            raise UserError(
                f"{n} transitions are fewer than one dynamics batch ({cfg.batch_size}); collect more samples or "
                "lower dynamics.batch_size"
            )
        self.input_scaler.fit(inputs)
        if self.target_scaler is not None:
            self.target_scaler.fit(targets)
            targets = self.target_scaler(targets)
        x = self.input_scaler(inputs)
        losses = torch.zeros(members, device=x.device)
        steps, epoch = 0, 0
        while epoch < epochs and (max_steps is None or steps < max_steps):
            epoch += 1
            order = torch.rand(members, n, device=x.device).argsort(1)[:, : steps_per_epoch * cfg.batch_size]
            losses = torch.zeros(members, device=x.device)
            for rows in order.split(cfg.batch_size, dim=1):
                per_member = self._sample_losses(x[rows], targets[rows]).mean(-1)
                optimizer.zero_grad(set_to_none=True)
                per_member.sum().backward()  # members share no weights: one backward trains each on its own loss
                optimizer.step()
                losses += per_member.detach()
            losses /= steps_per_epoch
            steps += steps_per_epoch
        return {"loss": losses, "epochs": epoch, "steps": steps}

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
