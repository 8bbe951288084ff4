"""How far off is a guess? Distance metrics, the baselines a model must beat, and the results table.

Distances are great-circle kilometres (``helpers.geo.haversine_km``); coordinates are
(lat, lng) in degrees. The thresholds 1, 25, 200 and 750 km are the street, city, region
and country levels used across the image geolocation literature (Im2GPS onwards).
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd

from helpers import config, geo

THRESHOLDS_KM = (1, 25, 200, 750)
RESULT_COLUMNS = [
    "experiment",
    "data",
    "split",
    "top1",
    "top3",
    "mean_km",
    "median_km",
    # the report's distance: the arg-max cell's centroid to the true cell's centroid (0 when right)
    "centroid_mean_km",
    *[f"within_{t}km" for t in THRESHOLDS_KM],
    "train_top1",  # on a clean pass over the training images (no augmentation)
    "seed",
    "notes",
]


def distance_summary(errors_km) -> dict:
    """Mean and median error in km and the share of guesses within each threshold."""
    errors_km = np.asarray(errors_km, dtype=float)
    summary = {"mean_km": float(errors_km.mean()), "median_km": float(np.median(errors_km))}
    summary.update({f"within_{t}km": float((errors_km <= t).mean()) for t in THRESHOLDS_KM})
    return summary


def random_cell_errors_km(lat, lng, centroids) -> np.ndarray:
    """Every error a uniformly random cell guess can make: shape (n_points, n_cells), km.

    Row i holds the distance from point i (degrees) to each cell centroid (``centroids``
    has shape (n_cells, 2), (lat, lng) degrees); each column is equally likely, so
    ``distance_summary(errors.ravel())`` is the exact expected summary of random guessing.
    """
    return geo.pairwise_haversine_km(np.column_stack([lat, lng]), centroids)


def best_single_point(lat, lng, iterations: int = 100) -> tuple[float, float]:
    """The (lat, lng) that minimises the mean distance to all points: their geometric median.

    Weiszfeld's algorithm in the metric projection EPSG:25832, which over Denmark differs
    from great-circle distance by well under 1 %. This is the best a model that always
    gives the same answer can do.
    """
    xy = geo.metric_xy_km(lat, lng)
    guess = xy.mean(axis=0)
    for _ in range(iterations):
        weights = 1.0 / np.maximum(np.linalg.norm(xy - guess, axis=1), 1e-9)  # 1 µm: no division by 0
        guess = (xy * weights[:, None]).sum(axis=0) / weights.sum()
    metres = guess * 1000.0
    back = gpd.GeoSeries(gpd.points_from_xy([metres[0]], [metres[1]]), crs=geo.METRIC_CRS).to_crs(4326)
    return float(back.y.iloc[0]), float(back.x.iloc[0])


def results_path(profile: str | dict):
    """Where the results table of ``profile`` lives: ``build/<profile>/tables/results.csv``."""
    return config.output_dir(profile, "tables") / "results.csv"


def load_results(profile: str | dict) -> pd.DataFrame:
    """The results table so far (empty, with its columns, before anything was recorded)."""
    path = results_path(profile)
    if not path.exists():
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def record_result(
    profile: str | dict, experiment: str, data: str, split: str, notes: str = "", **values
) -> pd.DataFrame:
    """Add or replace the row (``experiment``, ``split``) of the results table; return the table.

    ``values`` are metric columns (``top1``, ``mean_km``, ...; fractions, not percent).
    Re-running a notebook replaces its own rows instead of adding duplicates.
    """
    unknown = set(values) - set(RESULT_COLUMNS)
    if unknown:
        raise KeyError(f"Unknown result columns {sorted(unknown)}; known: {RESULT_COLUMNS}.")
    table = load_results(profile)
    keep = ~((table["experiment"] == experiment) & (table["split"] == split))
    row = pd.DataFrame([{"experiment": experiment, "data": data, "split": split, "notes": notes, **values}])
    table = pd.concat([table[keep], row], ignore_index=True)[RESULT_COLUMNS]
    with config.atomic_target(results_path(profile)) as temporary:
        table.to_csv(temporary, index=False)
    return table


def weighted_top_k(probabilities: np.ndarray, centroids: np.ndarray, k: int) -> np.ndarray:
    """A continuous guess per image: the probability-weighted mean of its top-``k`` cell centroids.

    The report's future-work idea. ``centroids`` is (n_cells, 2) (lat, lng) degrees; the
    mean is taken on the sphere (of unit vectors), so it is right wherever the cells are.
    Returns (n_images, 2) (lat, lng). ``k=1`` is the arg-max cell's centroid.
    """
    top = np.argsort(-probabilities, axis=1)[:, :k]
    weights = np.take_along_axis(probabilities, top, axis=1)
    weights = weights / weights.sum(axis=1, keepdims=True)
    lat, lng = np.radians(centroids[:, 0]), np.radians(centroids[:, 1])
    vectors = np.column_stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)])
    mean = (vectors[top] * weights[..., None]).sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    return np.column_stack(
        [np.degrees(np.arcsin(mean[:, 2])), np.degrees(np.arctan2(mean[:, 1], mean[:, 0]))]
    )


def top_k_errors(probabilities, true_lat, true_lng, centroids, ks=range(1, 11)) -> pd.DataFrame:
    """Mean and median error (km) of :func:`weighted_top_k` for each ``k``: one row per k."""
    rows = []
    for k in ks:
        guess = weighted_top_k(probabilities, centroids, k)
        errors = geo.haversine_km(true_lat, true_lng, guess[:, 0], guess[:, 1])
        rows.append({"k": k, "mean_km": float(errors.mean()), "median_km": float(np.median(errors))})
    return pd.DataFrame(rows)


def neighbour_error_share(true_cells, predicted_cells, adjacency: np.ndarray) -> dict:
    """How often a wrong guess lands in a cell bordering the true one, against chance.

    ``adjacency`` is the (n_cells, n_cells) boolean matrix of cells that touch. The chance
    share is, per error, the number of neighbours of the true cell divided by the number of
    other cells (a wrong guess drawn uniformly), averaged over the errors.

    Also, pair by pair (the report: "Classes that were neighbouring each other often had
    higher confusion"): ``neighbour_pairs`` counts the ordered pairs (true cell, neighbour)
    whose true cell has images here and at least one non-neighbour, and
    ``neighbour_pairs_higher`` those in which more images of the true cell went to that
    neighbour than, on average, to each of the true cell's non-neighbouring cells.
    """
    true_cells, predicted_cells = np.asarray(true_cells), np.asarray(predicted_cells)
    wrong = true_cells != predicted_cells
    to_neighbour = adjacency[true_cells[wrong], predicted_cells[wrong]]
    chance = adjacency.sum(axis=1)[true_cells[wrong]] / (adjacency.shape[0] - 1)
    n_cells = adjacency.shape[0]
    confusion = np.zeros((n_cells, n_cells))
    np.add.at(confusion, (true_cells, predicted_cells), 1)
    pairs = higher = 0
    for cell in np.unique(true_cells):
        others = ~adjacency[cell].astype(bool)
        others[cell] = False
        neighbours = adjacency[cell].astype(bool).copy()
        neighbours[cell] = False
        if not others.any():
            continue
        baseline = confusion[cell, others].mean()
        pairs += int(neighbours.sum())
        higher += int((confusion[cell, neighbours] > baseline).sum())
    share = float(to_neighbour.mean()) if wrong.any() else float("nan")
    expected = float(chance.mean()) if wrong.any() else float("nan")
    return {
        "errors": int(wrong.sum()),
        "to_neighbours": share,
        "chance": expected,
        "ratio": share / expected if wrong.any() and expected > 0 else float("nan"),
        "neighbour_pairs": pairs,
        "neighbour_pairs_higher": higher,
    }


def facts_path(profile: str | dict):
    """Where single measured facts of a build live: ``build/<profile>/tables/facts.json``."""
    return config.output_dir(profile, "tables") / "facts.json"


def record_facts(profile: str | dict, **facts) -> dict:
    """Merge ``facts`` (name -> number or text) into the build's facts; return them all.

    For findings that are one number, not a row of the results table: the share of errors
    that go to neighbouring cells (notebook 08), the share of attention on the sky (09), ...
    The report reads them from here, so no number in it is typed by hand.
    """
    merged = {name: _plain(value) for name, value in {**load_facts(profile), **facts}.items()}
    with config.atomic_target(facts_path(profile)) as temporary:
        temporary.write_text(json.dumps(merged, indent=2, sort_keys=True, allow_nan=False))
    return merged


def _plain(value):
    """A fact as strict JSON holds it: NumPy numbers as Python numbers, NaN and infinity as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def load_facts(profile: str | dict) -> dict:
    """The facts recorded so far (empty before any)."""
    path = facts_path(profile)
    return json.loads(path.read_text()) if path.exists() else {}
