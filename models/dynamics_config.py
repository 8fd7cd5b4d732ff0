"""The dynamics ensemble's settings (the `dynamics.*` block of every model-based run config).

They live beside the model that reads them, so models/ needs nothing from config.py; config.py imports this class
for its shared blocks and YAML handling.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DynamicsConfig:
    """Probabilistic ensemble dynamics (docs/dynamics.md)."""

    num_ensemble: int = 7
    num_elites: int = 5
    hidden_dims: list[int] = field(default_factory=lambda: [200, 200, 200, 200])
    # L2 coefficient per layer (hidden layers then output layer), applied as wd * 0.5 * ||W||^2.
    weight_decay: list[float] = field(default_factory=lambda: [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4])
    lr: float = 1e-3
    batch_size: int = 256
    # holdout_ratio 0: no holdout, no early stopping, exactly max_epochs epochs (PMDB/MAGO).
    holdout_ratio: float = 0.2
    max_holdout: int = 1000
    max_epochs: int | None = None
    max_epochs_since_update: int = 5
    # Without a holdout: stop once this many epochs passed without a lower training loss, keeping the last weights
    # (the WMOPO Pendulum study: 21); null runs exactly max_epochs.
    train_loss_patience: int | None = None
    improvement_threshold: float = 0.01
    # Epochs without improvement count only after this epoch (WMOPO: 6, its counter starts after epoch index 5).
    patience_after_epoch: int = 0
    # What the holdout measures per member: "mse" of the mean (MBPO/OfflineRL-Kit) or the (weighted) Gaussian NLL,
    # mean over outputs (WMOPO); with "nll" any lower loss counts as an improvement (NLLs can be negative).
    holdout_metric: str = "mse"
    # "best": each member's weights from its best holdout epoch, elites by best holdout loss (MBPO); "last": the last
    # epoch's weights, elites by the last epoch's holdout loss (WMOPO).
    keep_weights: str = "best"
    bootstrap: bool = True
    bootstrap_every_epoch: bool = False  # fresh bootstrap rows every epoch (PMDB/MAGO) instead of once per fit
    shared_batches: bool = False  # without bootstrap: every member sees the same minibatches (WMOPO), not its own order
    # The ensemble's loss over members: "sum" of the members' losses (MBPO/OfflineRL-Kit) or their "mean" (WMOPO),
    # which scales the likelihood against the decay and log-variance-bound terms.
    member_loss: str = "sum"
    # "nll": Gaussian NLL with learned variance (MOPO, MICRO); "mse": deterministic mean regression (PAL/MAL);
    # "beta_nll": the full Gaussian NLL per element weighted by stopgrad(σ)^(2·nll_beta) / its batch mean (MAGO).
    loss: str = "nll"
    nll_beta: float = 0.5
    logvar_bound_coef: float = 0.01
    # What the learned soft bounds clamp: log σ² (MBPO/OfflineRL-Kit) or log σ (PMDB/MAGO); max_logvar_init and
    # min_logvar_init are then bounds on log σ.
    variance_bounds: str = "logvar"
    # "network": the network outputs log σ² for every input, inside the learned soft bounds (MBPO); "state_independent":
    # one free log σ² per member and output, initialised at 0 and unbounded (the WMOPO Pendulum study's model).
    variance_model: str = "network"
    # "adam": Adam with the per-layer coupled L2 of `weight_decay` (MBPO); "adamw": AdamW whose decoupled decay
    # `adamw_weight_decay` acts on every parameter (PMDB/MAGO; `weight_decay` must then be zeros).
    # "adam_l2": Adam with the coupled L2 `param_weight_decay` on every parameter, torch Adam's weight_decay (the WMOPO
    # Pendulum study's model; `weight_decay` must then be zeros).
    optimizer: str = "adam"
    adamw_weight_decay: float = 7.5e-5
    param_weight_decay: float = 1e-4
    grad_clip: float | None = None  # max global gradient norm over all members per step (PMDB/MAGO: 10)
    # Rewards regressed as (r − shift) / scale with shift = r_min − 0.05 (r_max − r_min), scale = 1.1 (r_max − r_min),
    # so dataset rewards fall in ≈[0.045, 0.955] (PMDB/MAGO); predictions come back in raw units either way.
    reward_normalization: bool = False
    # Network shape and scaling: MBPO's SiLU with truncated-normal init and standardised inputs; the NPG family's
    # mjrl models use relu, torch's default ("uniform") init and "mad" scaling (mean and mean absolute deviation of
    # inputs and of the Δs targets, dimensions whose targets never change predicted as unchanged); "scaled_targets"
    # standardises inputs and divides the targets by their std without shifting them (PMDB/MAGO: μ = net_μ · std,
    # log σ = net_log σ + log std); "none" feeds raw inputs and regresses raw targets (the WMOPO Pendulum study).
    activation: str = "silu"
    init: str = "truncated_normal"
    normalization: str = "standard"
    # False: the model predicts Δs only and rewards come from the task's known reward function (PAL/MAL/MOReL).
    predict_reward: bool = True
    # "bf16" runs the ensemble's matmuls under bfloat16 autocast (weights, optimiser and loss stay float32):
    # about 2x faster on CPUs with AVX512-BF16 and on GPUs; "fp32" is the bit-faithful reference.
    precision: str = "fp32"
    max_logvar_init: float = 0.5
    min_logvar_init: float = -10.0
    # The std of the input and target scalers: the population std (n, MBPO/OfflineRL-Kit) or, with true, the
    # unbiased std (n − 1) of PMDB/MAGO's ensemble trainer.
    unbiased_std: bool = False
