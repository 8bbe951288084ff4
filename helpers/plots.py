"""Static figures (matplotlib and seaborn) in one consistent style, saved to the build folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from helpers.config import atomic_target

sns.set_theme(context="notebook", style="whitegrid")


def save_figure(fig: plt.Figure, path: Path, dpi: int = 150) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically (temporary file, then rename)."""
    with atomic_target(path) as temporary:
        fig.savefig(temporary, dpi=dpi, bbox_inches="tight")
    return Path(path)


def counts_bar(counts: pd.Series, xlabel: str, ylabel: str, title: str, highlight: int = 2) -> plt.Figure:
    """Bar chart of ``counts`` sorted from largest to smallest, one bar per index value.

    The ``highlight`` largest bars are drawn in a second colour, to draw the eye to outliers
    (the report's Figure 1 singles out Copenhagen and Aarhus).
    """
    ordered = counts.sort_values(ascending=False)
    colours = ["#d62728" if i < highlight else "#1f77b4" for i in range(len(ordered))]
    fig, ax = plt.subplots(figsize=(max(8, 0.16 * len(ordered)), 4.5))
    sns.barplot(x=ordered.index.astype(str), y=ordered.to_numpy(), hue=ordered.index.astype(str),
                palette=colours, legend=False, ax=ax)
    ax.axhline(ordered.mean(), color="black", linestyle="--", linewidth=1, label=f"mean {ordered.mean():.0f}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
