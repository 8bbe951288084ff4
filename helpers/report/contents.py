"""The document's fixed material: the original's figures and the files of a build that stand
for them, this build's extra figures, the loss equations, and Figures 5-6 drawn from a run's
history.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from helpers import config
from helpers.report.build import best_name, best_test_row

# The original's figures, with the file of this build that stands for each, what to read in it,
# and how it differs from the original ({model}, {data}, {epochs} are this build's).
FIGURES = [
    (
        "1",
        "fig01_locations_per_municipality.png",
        "Locations per municipality. Read: a few municipalities hold many times the mean number of "
        "locations; those are the ones split into several geocells.",
        "Unlike the original, which drew the locations on a map, this is a bar chart of the same sample.",
    ),
    (
        "2",
        "fig02_geocells_voronoi.png",
        "The geocells, each the merged Voronoi regions of its locations. Read: small cells in the "
        "cities, large ones in the countryside.",
        "Unlike the original's, these cells are recomputed by the workbook's K-means from the report's "
        "locations; outlines differ where K-means settled differently (notebook 02, fig02c).",
    ),
    (
        "3-4",
        "fig05b_baseline_curves.png",
        "The base model per epoch: accuracy (left) and loss (right), training dashed, validation solid. "
        "Read: the space between the accuracy curves is the overfitting of claim 1.",
        "Unlike the original (ViT-B/16 fine-tuned for {report_epochs} epochs on Street View photos): "
        "{model}, {epochs} on {data}.",
    ),
    (
        "5-6",
        "fig10_last_model_curves.png",
        "The final configuration ({run}) per epoch: accuracy and loss, training dashed, validation solid. "
        "Read: compare the gap with Figures 3-4; augmentation should narrow it.",
        "Drawn by this report from {run}'s history.csv. Unlike the original (its last model, "
        "{report_epochs} epochs on Street View photos): {model}, {epochs} on {data}.",
    ),
    (
        "7",
        "fig07a_distance_curves.png",
        "Distance between the predicted and the true cell's centroids per epoch, for each loss. Read: "
        "lower is better; the distance losses against cross-entropy.",
        "Unlike the original, which showed its last model only: every loss of notebook 07, on {data}.",
    ),
    (
        "8",
        "fig08_confusion.png",
        "Confusion matrix of the test split, cells ordered by region, logarithmic colours. Read: blocks "
        "along the diagonal are confusions between nearby cells (claim 13).",
        "Unlike the original (unordered, linear colours): ordered by region, on the test split of {data}.",
    ),
    (
        "9",
        "fig09_attention_heads.png",
        "The class token's attention in each head of the last layer, over one test image (the most "
        "confident right answer, if any). Read: bright patches are where the model looks; sky or street?",
        "Unlike the original (a Street View photo under ViT-B/16): {model} on {data}.",
    ),
]

# Figures of this build that the original does not have, numbered B1, B2, ... in this order.
EXTRA_FIGURES = [
    ("fig02a_splitting_steps.png", "The K-means splitting of the large municipalities, step by step (02)."),
    ("fig02c_differences_from_report.png", "Where this build's cells differ from the report's (02)."),
    ("fig03c_places_and_sessions.png", "Places and capture sessions of the images (03)."),
    ("fig03d_training_sample.png", "A sample of training images (03)."),
    ("fig04_distance_matrix.png", "Distances between cell centroids, ordered by region (04)."),
    ("fig04b_baseline_errors.png", "Errors of the baselines that need no model (04)."),
    ("fig06a_randaugment.png", "RandAugment as the authors ran it: each row one image, augmented anew (06)."),
    (
        "fig06c_runs_compared.png",
        "Validation top-1 and train-minus-validation gap of each configuration as its difference from the "
        "baseline: the rule's 95 % interval (blue) and each seed (grey) (06). The noise behind claims 1-4.",
    ),
    ("fig07b_accuracy_vs_distance.png", "Accuracy against mean distance for each loss (07). Claims 5-8."),
    ("fig08b_accuracy_vs_area.png", "Per-cell test accuracy against cell area (08). Claim 14."),
    (
        "fig08c_choose_k.png",
        "Continuous prediction: the error of the weighted top-k centroids against k (08).",
    ),
    ("fig09b_rollout.png", "Attention rollout on right and wrong answers (09)."),
    (
        "fig09c_new_capture_day.png",
        "Same day against a new capture day, with and without a sky shortcut (09). Claim 16.",
    ),
]

# The report's losses of its §3.3 as Typst maths, in its order (its equations 1-3), then the loss of
# the authors' notebook and PIGEON's (notebook 07 trains each; helpers/losses.py implements them).
LOSS_EQUATIONS = [
    {
        "typst": 'cal(L)_"dist" = (sum_(i=1)^n p_i thin d(i, t))^2',
        "text": "L_dist = (sum_i p_i d(i, t))^2",
        "explanation": "The report's equation (1): the expected distance to the true cell, squared "
        "(expected_distance_squared).",
    },
    {
        "typst": 'cal(L) = cal(L)_"dist" + lambda thin cal(L)_"CE", quad cal(L)_"CE" = -log p_t',
        "text": "L = L_dist + lambda L_CE, L_CE = -log p_t",
        "explanation": "The report's equation (2): equation (1) plus cross-entropy, weighted by lambda "
        "(distance_plus_cross_entropy).",
    },
    {
        "typst": 'cal(L)_"dist" = sum_(i=1)^n -log(1 - p_i) thin d(i, t)',
        "text": "L_dist = sum_i -log(1 - p_i) d(i, t)",
        "explanation": "The report's equation (3): confident probability on a far cell costs most, the true "
        "cell nothing (log_distance; with cross-entropy added, log_distance_plus_cross_entropy).",
    },
    {
        "typst": 'cal(L) = (sum_(i=1)^n p_i thin d(i, t) + 1)^2 + lambda thin cal(L)_"CE"',
        "text": "L = (sum_i p_i d(i, t) + 1)^2 + lambda L_CE",
        "explanation": "The loss of the authors' notebook (authors_code): unlike equation (1), the expected "
        "distance also enters linearly, so its gradient does not vanish as the distance gets small.",
    },
    {
        "typst": "cal(L) = -sum_(i=1)^n q_i log p_i, quad q_i = exp(-(D(g_i, x) - min_j D(g_j, x)) / tau)",
        "text": "L = -sum_i q_i log p_i, q_i = exp(-(D(g_i, x) - min_j D(g_j, x)) / tau)",
        "explanation": "Beyond the report: PIGEON's haversine smoothing (haversine_smoothing), with x the "
        "image's own location, g_i the centroid of cell i and D the haversine distance in km.",
    },
]


def history_figure(build: dict) -> tuple[Path | None, str | None]:
    """Figures 5-6 of the original (the last model's curves), drawn from a run's history.csv."""
    import matplotlib.pyplot as plt

    from helpers import plots

    candidates = ["final_seed0"]
    best = best_test_row(build["results"])
    if best is not None:
        candidates.append(best_name(best))
    for run in candidates:
        history_path = build["root"] / "runs" / run / "history.csv"
        if history_path.exists():
            history = pd.read_csv(history_path)
            if not {"epoch", "accuracy", "val_accuracy", "loss", "val_loss"} <= set(history):
                continue
            fig, axes = plt.subplots(1, 2, figsize=(13, 4))
            plots.history_curves(
                {run: history}, "accuracy", "top-1 accuracy", "Figure 5 · Accuracy", ax=axes[0]
            )
            plots.history_curves({run: history}, "loss", "loss", "Figure 6 · Loss", ax=axes[1])
            path = config.output_dir(build["profile"], "figures") / "fig10_last_model_curves.png"
            plots.save_figure(fig, path)
            plt.close(fig)
            return path, run
    return None, None
