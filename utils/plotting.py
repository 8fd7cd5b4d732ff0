"""Figures written next to results: curves with a std band, and annotated heatmaps. Files only (Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from utils.checkpoint import atomic_write  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> None:
    atomic_write(Path(path), lambda handle: fig.savefig(handle, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def curve_with_band(
    path: str | Path,
    x: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
    xlabel: str,
    ylabel: str,
    title: str,
) -> None:
    """One line with a ±std band."""
    curves_with_bands(path, [BandCurve("", x, mean, std)], xlabel, ylabel, title, markers=True, figsize=(5.5, 3.8))


@dataclass(frozen=True)
class BandCurve:
    """One line of a figure: its legend label (empty: none), x, mean and the std drawn as a band around it."""

    label: str
    x: Sequence[float]
    mean: Sequence[float]
    std: Sequence[float]
    color: str | None = None


def _step_label(value: float, _position: object = None) -> str:
    """Tick labels for step counts: 0, 500, 250k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def curves_with_bands(
    path: str | Path,
    curves: Sequence[BandCurve],
    xlabel: str,
    ylabel: str,
    title: str,
    markers: bool = False,
    figsize: tuple[float, float] = (6.4, 4.4),
) -> None:
    """Several lines on one axis, each with a ±std band; a legend when any curve has a label; 250k-style x ticks."""
    fig, ax = plt.subplots(figsize=figsize)
    for curve in curves:
        x, mean, std = (np.asarray(v, dtype=float) for v in (curve.x, curve.mean, curve.std))
        style = {"marker": "o", "markersize": 3} if markers or len(x) == 1 else {"linewidth": 1.8}
        (line,) = ax.plot(x, mean, color=curve.color, label=curve.label or None, **style)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if max((np.max(np.abs(c.x)) for c in curves if len(c.x)), default=0) >= 1e4:
        ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=12)
    ax.grid(alpha=0.3)
    if any(c.label for c in curves):
        ax.legend(frameon=False, fontsize=9, loc="best")
    _save(fig, path)


def heatmaps(
    path: str | Path,
    grids: Sequence[np.ndarray],
    row_values: Sequence[float],
    col_values: Sequence[float],
    row_label: str,
    col_label: str,
    panel_titles: Sequence[str],
    title: str,
    value_label: str,
) -> None:
    """One annotated heatmap per grid [rows, cols], side by side on a shared colour scale."""
    vmin = min(float(np.nanmin(g)) for g in grids)
    vmax = max(float(np.nanmax(g)) for g in grids)
    cell = 0.55
    width = max(4.0, cell * len(col_values) + 1.5)
    fig, axes = plt.subplots(
        1, len(grids), figsize=(width * len(grids), max(3.0, cell * len(row_values) + 1.2)), squeeze=False
    )
    for ax, grid, panel_title in zip(axes[0], grids, panel_titles):
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(col_values)), [f"{v:.2g}" for v in col_values], rotation=45)
        ax.set_yticks(range(len(row_values)), [f"{v:.2g}" for v in row_values])
        ax.set(xlabel=col_label, ylabel=row_label, title=panel_title)
        if grid.size <= 400:
            middle = (vmin + vmax) / 2
            for (i, j), value in np.ndenumerate(grid):
                text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
                color = "black" if value > middle else "white"  # readable on viridis' light and dark ends
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=axes[0].tolist(), label=value_label)
    fig.suptitle(title)
    _save(fig, path)
