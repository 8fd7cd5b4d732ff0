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
    linestyle: str = "-"


# Line styles that tell algorithms apart when each has several colour-coded configurations.
_LINESTYLES = ("-", "--", "-.", ":")


def group_styles(groups: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """A (colour, line style) per label of `(algorithm, label)` pairs in display order, fixed for the whole call so
    the same label looks the same in every figure: distinct colours in order (tab10, tab20 beyond 10 labels, evenly
    spaced turbo beyond 20), and, when several algorithms each have several labels, one line style per algorithm."""
    labels = list(dict.fromkeys(label for _, label in groups))
    if len(labels) <= 20:
        palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20").colors
        colors = [matplotlib.colors.to_hex(palette[i]) for i in range(len(labels))]
    else:
        turbo = plt.get_cmap("turbo")
        colors = [matplotlib.colors.to_hex(turbo(0.05 + 0.9 * i / (len(labels) - 1))) for i in range(len(labels))]
    algos = list(dict.fromkeys(algo for algo, _ in groups))
    variants = len(labels) > len(algos) > 1
    style_of = {label: _LINESTYLES[algos.index(algo) % len(_LINESTYLES)] if variants else "-" for algo, label in groups}
    return {label: (color, style_of[label]) for label, color in zip(labels, colors)}


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
    _draw_bands(ax, curves, xlabel, ylabel, markers)
    ax.set_title(title, fontsize=12)
    _save(fig, path)


def curves_in_panels(
    path: str | Path, panels: Sequence[tuple[str, Sequence[BandCurve]]], ylabel: str, title: str
) -> None:
    """One panel per x axis, side by side and sharing the y axis: `panels` are (x label, curves). For curves whose
    steps count different things (gradient steps, iterations, environment samples), which one axis would mislabel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), sharey=True, squeeze=False)
    for ax, (xlabel, curves) in zip(axes[0], panels):
        _draw_bands(ax, curves, xlabel, ylabel if ax is axes[0][0] else "", markers=False)
    fig.suptitle(title, fontsize=12)
    _save(fig, path)


def _draw_bands(ax: plt.Axes, curves: Sequence[BandCurve], xlabel: str, ylabel: str, markers: bool) -> None:
    """The lines and ±std bands of `curves` on one axis, with its labels, grid and legend."""
    for curve in curves:
        x, mean, std = (np.asarray(v, dtype=float) for v in (curve.x, curve.mean, curve.std))
        style = {"marker": "o", "markersize": 3} if markers or len(x) == 1 else {"linewidth": 1.8}
        (line,) = ax.plot(x, mean, color=curve.color, linestyle=curve.linestyle, label=curve.label or None, **style)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if max((np.max(np.abs(c.x)) for c in curves if len(c.x)), default=0) >= 1e4:
        ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.grid(alpha=0.3)
    if any(c.label for c in curves):
        ax.legend(frameon=False, fontsize=9, loc="best")


MAX_HEATMAP_COLUMNS = 3  # panels per figure row; more wrap onto further rows


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
    vmin: float | None = None,
    vmax: float | None = None,
) -> tuple[float, float]:
    """One annotated heatmap per grid [rows, cols] on one colour range shared by every panel, stated on the colour
    bar, so panels (and, with fixed `vmin`/`vmax`, separate figures) compare by colour. The range defaults to the
    data's minimum and maximum over all panels; values outside a given range get the end colours and the bar an arrow.
    Returns the range used."""
    data_min = min(float(np.nanmin(g)) for g in grids)
    data_max = max(float(np.nanmax(g)) for g in grids)
    low = data_min if vmin is None else float(vmin)
    high = data_max if vmax is None else float(vmax)
    if vmin is None:
        low = min(low, high)
    if vmax is None:
        high = max(low, high)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (data_min < low, data_max > high)
    ]
    cell = 0.55
    width = max(4.0, cell * len(col_values) + 1.5)
    height = max(3.0, cell * len(row_values) + 1.2)
    ncols = min(len(grids), MAX_HEATMAP_COLUMNS)
    nrows = -(-len(grids) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained")
    used = list(axes.ravel()[: len(grids)])
    for ax in axes.ravel()[len(grids) :]:
        ax.remove()
    for ax, grid, panel_title in zip(used, grids, panel_titles):
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(col_values)), [f"{v:.2g}" for v in col_values], rotation=45)
        ax.set_yticks(range(len(row_values)), [f"{v:.2g}" for v in row_values])
        ax.set(xlabel=col_label, ylabel=row_label, title=panel_title)
        if grid.size <= 400:
            for (i, j), value in np.ndenumerate(grid):
                text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
                color = "black" if image.norm(value) > 0.5 else "white"  # readable on viridis' light and dark ends
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    shared = "\nshared by all panels" if len(grids) > 1 else ""
    bar = fig.colorbar(image, ax=used, extend=extend)
    bar.set_label(f"{value_label}\ncolour range {low:.3g} to {high:.3g}{shared}", fontsize=9)
    fig.suptitle(title)
    _save(fig, path)
    return low, high


def state_scatter_panels(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]],
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    title: str,
) -> None:
    """Side-by-side scatter plots of 2-D states: each panel is (title, data [N, 2], colour values [N] or None,
    overlay points [M, 2] or None). Coloured panels share one colour scale and bar (WMOPO's Figure 1: the visited
    states over the data, and the data coloured by log10 of their learned weights)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    coloured = [values for _, _, values, _ in panels if values is not None]
    low = min(float(v.min()) for v in coloured) if coloured else 0.0
    high = max(float(v.max()) for v in coloured) if coloured else 1.0
    mappable = None
    for ax, (name, points, values, overlay) in zip(axes[0], panels):
        if values is None:
            ax.scatter(points[:, 0], points[:, 1], s=6, c="0.6", label="data")
        else:
            mappable = ax.scatter(points[:, 0], points[:, 1], s=6, c=values, cmap="jet", vmin=low, vmax=high)
        if overlay is not None:
            ax.scatter(overlay[:, 0], overlay[:, 1], s=3, marker="x", c="tab:red", alpha=0.4, label="visited")
            ax.legend(loc="upper right", fontsize=7)
        ax.set(xlim=xlim, ylim=ylim, xlabel=xlabel, ylabel=ylabel, title=name)
        ax.title.set_fontsize(9)
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes[0]), shrink=0.85, label="log10 weight")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
