"""Static figures (matplotlib and seaborn) in one consistent style, saved to the build folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm

from helpers.config import atomic_target

sns.set_theme(context="notebook", style="whitegrid")


def save_figure(fig: plt.Figure, path: Path, dpi: int = 150) -> None:
    """Save ``fig`` as PNG at ``path`` atomically (temporary file, then rename).

    Returns nothing, so a notebook cell ending with it shows the figure, not a path.
    """
    with atomic_target(path) as temporary:
        fig.savefig(temporary, dpi=dpi, bbox_inches="tight")


def counts_bar(counts: pd.Series, xlabel: str, ylabel: str, title: str, highlight: int = 2) -> plt.Figure:
    """Bar chart of ``counts`` sorted from largest to smallest, one bar per index value.

    The ``highlight`` largest bars are drawn in a second colour, to draw the eye to outliers
    (the report's Figure 1 singles out Copenhagen and Aarhus).
    """
    ordered = counts.sort_values(ascending=False)
    colours = ["#d62728" if i < highlight else "#1f77b4" for i in range(len(ordered))]
    fig, ax = plt.subplots(figsize=(max(8, 0.16 * len(ordered)), 4.5))
    sns.barplot(
        x=ordered.index.astype(str),
        y=ordered.to_numpy(),
        hue=ordered.index.astype(str),
        palette=colours,
        legend=False,
        ax=ax,
    )
    ax.axhline(ordered.mean(), color="black", linestyle="--", linewidth=1, label=f"mean {ordered.mean():.0f}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def cell_colours(n: int, seed: int = 0) -> list:
    """``n`` distinct-looking colours in a shuffled order, so neighbouring cells rarely match."""
    palette = sns.color_palette("tab20", 20) + sns.color_palette("Set2", 8)
    order = np.random.default_rng(seed).permutation(n)
    return [palette[i % len(palette)] for i in order]


def plot_cells(cells, ax=None, points=None, bounds=None, title: str | None = None, edge: str = "white"):
    """Draw cell polygons in shuffled colours, optionally with the points on top.

    ``cells`` is a GeoDataFrame (EPSG:4326), ``points`` one with ``lat``/``lng``;
    ``bounds`` = (lng_min, lat_min, lng_max, lat_max) in degrees zooms in.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 7))
    cells.plot(ax=ax, color=cell_colours(len(cells)), edgecolor=edge, linewidth=0.4)
    if points is not None:
        ax.scatter(points["lng"], points["lat"], s=0.2, color="black", alpha=0.5, linewidths=0)
    if bounds is not None:
        ax.set_xlim(bounds[0], bounds[2])
        ax.set_ylim(bounds[1], bounds[3])
    ax.set_aspect(1 / 0.56)  # a degree of longitude is about 0.56 of a degree of latitude at 56° N
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def history_curves(histories: dict, metric: str, ylabel: str, title: str, ax=None):
    """Training (dashed) and validation (solid) curves of ``metric`` for each named run.

    ``histories`` maps a run name to its history table (``history.csv``: one row per epoch).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for (name, history), colour in zip(histories.items(), sns.color_palette("tab10"), strict=False):
        epochs = history["epoch"] + 1
        ax.plot(epochs, history[metric], linestyle="--", color=colour, label=f"{name} (train)")
        ax.plot(epochs, history[f"val_{metric}"], color=colour, label=f"{name} (validation)")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return ax


def confusion_heatmap(confusion, order, regions, title: str):
    """A confusion matrix (rows: true cell, columns: predicted) with cells in ``order``,
    a logarithmic colour scale, and lines between the ``regions`` (one label per ordered cell)."""
    shown = np.asarray(confusion)[np.ix_(order, order)].astype(float)
    shown[shown == 0] = np.nan  # empty cells stay white
    fig, ax = plt.subplots(figsize=(9, 8))
    image = ax.imshow(
        shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=np.nanmax(shown)), interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="images (log scale)", shrink=0.8)
    regions = np.asarray(regions)
    edges = np.flatnonzero(regions[1:] != regions[:-1]) + 0.5
    for edge in edges:
        ax.axhline(edge, color="crimson", linewidth=0.8)
        ax.axvline(edge, color="crimson", linewidth=0.8)
    starts = np.r_[0, np.ceil(edges).astype(int)]
    middles = (starts + np.r_[starts[1:], len(regions)]) / 2
    ax.set_yticks(middles, [str(r).replace("Region ", "") for r in regions[starts]])
    ax.set_xticks(middles, [str(r).replace("Region ", "") for r in regions[starts]], rotation=30)
    ax.set(xlabel="predicted cell", ylabel="true cell", title=title)
    return fig
