"""The whole course on one page: the pipeline from locations to the report, notebook by notebook.

:data:`STEPS` is the one list; :func:`pipeline_figure` draws it (notebook 01 saves the figure)
and :func:`pipeline_mermaid` writes it as the Mermaid diagram of the README, which GitHub draws.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

# (notebooks, step, what it makes for the next steps)
STEPS = [
    ("01", "locations", "42,570 addresses,\nmunicipalities"),
    ("02", "geocells", "129 cells\n(geocells.geojson)"),
    ("03", "images", "photos per cell,\nsplits (dataset.csv)"),
    ("04", "distances", "cell distance matrix,\nbaselines"),
    ("05", "model", "a ViT, from scratch\nand keras-hub"),
    ("06-07", "experiments", "augmentation, schedule,\ndistance losses"),
    ("08", "evaluation", "test metrics,\nconfusions, maps"),
    ("09", "attention", "rollout,\nthe sky shortcut"),
    ("10", "report", "report.html\nand report.pdf"),
    ("11-12", "beyond", "retrieval, GeoScore,\nthe report's future work"),
]


def pipeline_figure(per_row: int = 5):
    """The pipeline as boxes and arrows, snaking over two rows; returns the matplotlib figure."""
    rows = -(-len(STEPS) // per_row)
    fig, ax = plt.subplots(figsize=(2.8 * per_row, 2.3 * rows))
    width, height = 2.3, 1.3
    centres = []
    for index, (numbers, step, makes) in enumerate(STEPS):
        row, position = divmod(index, per_row)
        column = position if row % 2 == 0 else per_row - 1 - position  # every other row runs back
        x, y = column * 2.8, -row * 2.3
        centres.append((x, y))
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.05",
                facecolor="#e8f0fa" if index % 2 == 0 else "#fdf1e3",
                edgecolor="#34495e",
            )
        )
        ax.text(x, y + 0.35, f"{numbers} · {step}", ha="center", va="center", fontsize=10.5, weight="bold")
        ax.text(x, y - 0.2, makes, ha="center", va="center", fontsize=8.5, color="#34495e")
    for (x0, y0), (x1, y1) in zip(centres[:-1], centres[1:], strict=True):
        if y0 == y1:  # along a row: from edge to edge
            step = width / 2 + 0.08 if x1 > x0 else -(width / 2 + 0.08)
            start, end = (x0 + step, y0), (x1 - step, y1)
        else:  # down to the next row
            start, end = (x0, y0 - height / 2 - 0.08), (x1, y1 + height / 2 + 0.08)
        ax.annotate("", end, start, arrowprops={"arrowstyle": "-|>", "color": "#34495e", "lw": 1.5})
    ax.set_xlim(-1.4, 2.8 * (per_row - 1) + 1.4)
    ax.set_ylim(-2.3 * (rows - 1) - 1.0, 1.0)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title("The course: each step is a notebook and writes what the next ones read", fontsize=12)
    return fig


def pipeline_mermaid() -> str:
    """The pipeline as a Mermaid flowchart (the README's picture), one node per step."""
    lines = ["flowchart LR"]
    for index, (numbers, step, makes) in enumerate(STEPS):
        label = f"{numbers} {step}<br/><small>{makes.replace(chr(10), ' ')}</small>"
        lines.append(f'    s{index}["{label}"]' + (f" --> s{index + 1}" if index + 1 < len(STEPS) else ""))
    return "\n".join(lines)
