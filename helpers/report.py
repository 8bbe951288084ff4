"""Assemble the executed notebooks' figures and tables into one report (HTML, and PDF).

The report mirrors the original's figures 1 to 9, followed by the figures that go beyond
it, and one results table with the published numbers of the original in their own,
labelled column. Everything is read from ``build/<profile>/``; nothing is recomputed.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import pandas as pd

from helpers import config, metrics

# (report figure number, file in build/<profile>/figures, caption)
FIGURES = [
    ("1", "fig01_locations_per_municipality.png", "Sampled locations per municipality (notebook 01)."),
    (
        "2",
        "fig02_geocells_voronoi.png",
        "The geocells as merged Voronoi regions of their locations (notebook 02).",
    ),
    (
        "3-4",
        "fig05b_baseline_curves.png",
        "Base model: accuracy and loss, training (dashed) and validation (05).",
    ),
    (
        "5-6",
        "fig06c_runs_compared.png",
        "Augmentation and schedule runs against the base model (notebook 06).",
    ),
    (
        "7",
        "fig07a_distance_curves.png",
        "Distance between predicted and true cell centroids per epoch (notebook 07).",
    ),
    (
        "8",
        "fig08_confusion.png",
        "Confusion matrix on the test split, cells ordered by region (notebook 08).",
    ),
    ("9", "fig09_attention_heads.png", "Class-token attention of each head in the last layer (notebook 09)."),
]
BEYOND = [
    ("fig02a_splitting_steps.png", "The K-means splitting, step by step (02)."),
    ("fig02c_differences_from_report.png", "Where our cells differ from the report's (02)."),
    ("fig04_distance_matrix.png", "Distances between cell centroids, ordered by region (04)."),
    ("fig04b_baseline_errors.png", "Errors of the three baselines (04)."),
    ("fig03a_scene_cues.png", "Geographic cues of the synthetic scenes (03)."),
    ("fig03d_training_sample.png", "A sample of training images (03)."),
    ("fig07b_accuracy_vs_distance.png", "Accuracy against distance for each loss (07)."),
    ("fig08b_accuracy_vs_area.png", "Accuracy against cell area (08)."),
    ("fig08c_choose_k.png", "Continuous prediction: choosing k (08)."),
    ("fig09b_rollout.png", "Attention rollout on right and wrong answers (09)."),
    ("fig09c_new_capture_day.png", "Sky shortcut: same day against a new capture day (09)."),
]
PUBLISHED = {  # the original report's numbers, Street View images, its validation split
    "random cell": {"mean_km": 150.0},
    "baseline": {"top1": 0.29},
    "augmented": {"top1": 0.35},
    "best": {"top1": 0.37, "mean_km": 62.0},
}


def results_with_published(profile: str) -> pd.DataFrame:
    """The results table, with the original report's published figures in their own columns."""
    table = metrics.load_results(profile)
    table["report_top1"] = table["experiment"].map(lambda e: PUBLISHED.get(e, {}).get("top1"))
    table["report_mean_km"] = table["experiment"].map(lambda e: PUBLISHED.get(e, {}).get("mean_km"))
    best_rows = table["experiment"].str.startswith("best run (")
    table.loc[best_rows, "report_top1"] = PUBLISHED["best"]["top1"]
    table.loc[best_rows, "report_mean_km"] = PUBLISHED["best"]["mean_km"]
    return table


def _image_tag(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(path.name)}">'


def write_html(profile: str) -> Path:
    """Write ``build/<profile>/report.html`` (one self-contained file) and return its path."""
    settings = config.get_profile(profile)
    figures = config.output_dir(profile, "figures")
    table = results_with_published(profile)
    parts = [
        "<h1>Image geolocation in Denmark with Vision Transformers: the workbook's report</h1>",
        f"<p class='meta'>Profile <b>{html.escape(profile)}</b> ({html.escape(settings['description'])}); "
        f"image source <b>{html.escape(settings['image_source'])}</b>; built "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
        "<p>The figures are numbered like those of the original report (Csizmadia and Głowaczewski, 2023). "
        "Numbers in the columns <i>report_*</i> are that report's published results on real Street View "
        "images; all other numbers were computed by this build, on the data named in the <i>data</i> "
        "column.</p>",
        "<h2>Results</h2>",
        table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="", border=0),
        "<h2>Figures of the original report</h2>",
    ]
    missing = []
    for number, name, caption in FIGURES:
        if (figures / name).exists():
            parts.append(
                f"<figure>{_image_tag(figures / name)}<figcaption><b>Figure {number}.</b> "
                f"{html.escape(caption)}</figcaption></figure>"
            )
        else:
            missing.append(name)
    parts.append("<h2>Beyond the report</h2>")
    for name, caption in BEYOND:
        if (figures / name).exists():
            figure = _image_tag(figures / name)
            parts.append(f"<figure>{figure}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if missing:
        parts.append(f"<p class='meta'>Not built yet: {', '.join(missing)}.</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;line-height:1.45}"
        "img{max-width:100%}figure{margin:2em 0}figcaption{color:#444}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
        ".meta{color:#666}"
    )
    document = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Workbook report "
        f"({html.escape(profile)})</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = config.build_dir(profile) / "report.html"
    with config.atomic_target(path) as temporary:
        temporary.write_text(document, encoding="utf-8")
    return path


def write_pdf(profile: str) -> Path:
    """Write ``build/<profile>/report.pdf``: the results table, then one figure per page (matplotlib)."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    figures = config.output_dir(profile, "figures")
    table = results_with_published(profile)
    columns = ["experiment", "split", "top1", "top3", "mean_km", "median_km", "report_top1", "report_mean_km"]
    shown = table[columns].map(
        lambda v: f"{v:.3f}" if isinstance(v, float) and pd.notna(v) else ("" if pd.isna(v) else str(v))
    )
    path = config.build_dir(profile) / "report.pdf"
    with config.atomic_target(path) as temporary, PdfPages(temporary) as pdf:
        page = plt.figure(figsize=(11.7, 8.3))
        page.text(0.05, 0.95, f"Workbook report, profile {profile}: results", fontsize=16, va="top")
        axis = page.add_axes([0.03, 0.05, 0.94, 0.82])
        axis.axis("off")
        drawn = axis.table(cellText=shown.to_numpy(), colLabels=columns, loc="upper center", cellLoc="left")
        drawn.auto_set_font_size(False)
        drawn.set_fontsize(7)
        pdf.savefig(page)
        plt.close(page)
        for number, name, caption in [*FIGURES, *(("", n, c) for n, c in BEYOND)]:
            if not (figures / name).exists():
                continue
            page = plt.figure(figsize=(11.7, 8.3))
            axis = page.add_axes([0.03, 0.08, 0.94, 0.88])
            axis.imshow(mpimg.imread(figures / name))
            axis.axis("off")
            page.text(0.05, 0.03, (f"Figure {number}. " if number else "") + caption, fontsize=11)
            pdf.savefig(page)
            plt.close(page)
    return path
