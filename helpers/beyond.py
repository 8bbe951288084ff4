"""Beyond the arg-max centroid: retrieval refinement, a hybrid head, and GeoScore.

Three ideas from the image geolocation literature, small enough to run on a laptop:

* **Retrieval refinement** (PIGEON's refiner, GeoCLIP's gallery): among the training images
  of a test image's top-``k`` cells, find the ones whose class-token embedding is most like
  the test image's, and answer with their (weighted) location instead of a cell centroid.
* **Hybrid head** (OpenStreetView-5M's best model): next to the cell softmax, regress the
  offset in km from the cell's centroid to the photo, one offset per cell; train both
  jointly and answer with the arg-max centroid plus its offset.
* **GeoScore**: GeoGuessr's points, ``5000 * exp(-d / 1492.7 km)`` as OpenStreetView-5M
  computes it, and the same curve rescaled to the size of Denmark.

Coordinates are (lat, lng) in degrees; metric work happens in EPSG:25832 (x, y) in km
(``geo.metric_xy_km``), where a sum of a centroid and an offset means what it says.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from pyproj import Transformer

from helpers import config, experiments, geo, images, losses, metrics, model

MAX_POINTS = 5000  # GeoGuessr's points for a perfect guess
# OpenStreetView-5M's GeoScore scale (gastruc/osv5m, metrics/distance_based.py): world-sized
WORLD_SCALE_KM = 1492.7
# the largest error possible on the globe: half a great circle (geo's mean Earth radius)
WORLD_MAX_KM = np.pi * geo.EARTH_RADIUS_KM

_TO_LATLNG = Transformer.from_crs(geo.METRIC_CRS, "EPSG:4326", always_xy=True)


# --- scores ------------------------------------------------------------------------------


def geoscore(errors_km, scale_km: float = WORLD_SCALE_KM) -> np.ndarray:
    """GeoGuessr points of guesses ``errors_km`` away from the truth: ``5000 * exp(-d / scale)``.

    5000 for a perfect guess, 5000/e at ``scale_km``. The default scale (1492.7 km) is
    OpenStreetView-5M's, made for guesses anywhere on Earth; pass :func:`country_scale_km`
    for a score that still separates guesses inside one country.
    """
    errors_km = np.asarray(errors_km, dtype=float)
    if np.any(errors_km < 0) or not np.all(np.isfinite(errors_km)):
        raise ValueError(
            "Errors must be finite distances in km, 0 or more; compute them with geo.haversine_km."
        )
    if scale_km <= 0:
        raise ValueError(f"The scale must be a positive number of km, not {scale_km}.")
    return MAX_POINTS * np.exp(-errors_km / scale_km)


def largest_distance_km(lat, lng) -> float:
    """The largest great-circle distance (km) between two of the points (lat, lng degrees).

    Only the corners of the points' convex hull (in EPSG:25832) can be farthest apart, so
    the search is over those few points, whatever the number of points.
    """
    from scipy.spatial import ConvexHull

    lat, lng = np.asarray(lat, dtype=float), np.asarray(lng, dtype=float)
    if len(lat) < 2:
        raise ValueError("Need at least two points to measure the size of an area.")
    corners = ConvexHull(geo.metric_xy_km(lat, lng)).vertices if len(lat) > 3 else np.arange(len(lat))
    return float(geo.pairwise_haversine_km(np.column_stack([lat[corners], lng[corners]])).max())


def country_scale_km(lat, lng, world_scale_km: float = WORLD_SCALE_KM) -> float:
    """A GeoScore scale (km) for guesses inside the area spanned by the points (lat, lng degrees).

    The world scale, shrunk by the ratio of the area's largest distance to the world's
    (half a great circle, :data:`WORLD_MAX_KM`): a guess that is off by a given share of the
    largest possible error then scores the same points in both games. Over Denmark this
    turns 1492.7 km into a few tens of km.
    """
    return world_scale_km * largest_distance_km(lat, lng) / WORLD_MAX_KM


def method_scores(errors_km, denmark_scale_km: float) -> dict:
    """The columns of the comparison table for one method's test errors (km).

    Mean and median error, the share within 1 and 25 km, mean GeoScore (world scale) and
    mean Denmark-scaled score (``denmark_scale_km``), plus the rest of
    ``metrics.distance_summary``.
    """
    return {
        **metrics.distance_summary(errors_km),
        "geoscore": float(geoscore(errors_km).mean()),
        "denmark_score": float(geoscore(errors_km, denmark_scale_km).mean()),
    }


# --- coordinates -------------------------------------------------------------------------


def latlng_from_xy_km(xy_km) -> np.ndarray:
    """(lat, lng) in degrees of points given as EPSG:25832 (x, y) in km: shape (n, 2)."""
    xy_km = np.asarray(xy_km, dtype=float).reshape(-1, 2)
    lng, lat = _TO_LATLNG.transform(xy_km[:, 0] * 1000.0, xy_km[:, 1] * 1000.0)
    return np.column_stack([lat, lng])


def errors_km(table: pd.DataFrame, guesses_latlng) -> np.ndarray:
    """Great-circle error in km of each guess (n, 2) (lat, lng) against the table's lat/lng."""
    guesses_latlng = np.asarray(guesses_latlng, dtype=float)
    return geo.haversine_km(table["lat"], table["lng"], guesses_latlng[:, 0], guesses_latlng[:, 1])


# --- embeddings --------------------------------------------------------------------------


def embedding_model(classifier):
    """A model that returns (class-token embeddings, cell probabilities) of ``classifier``."""
    token = classifier.get_layer("class_token").output
    return keras.Model(classifier.inputs[0], [token, classifier.outputs[0]], name="embeddings_and_cells")


def embed_split(classifier, dataset: pd.DataFrame, image_root, split: str, profile: dict):
    """Embeddings and probabilities of one split in a single pass over its images.

    Returns (embeddings (n, width), probabilities (n, n_cells), rows used), like
    ``experiments.predict_split``. Unreadable image files are skipped.
    """
    rows, _ = images.readable_rows(dataset[dataset["split"] == split], image_root)
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"The {split!r} split has no readable images; run notebook 03 first.")
    data = model.image_dataset(rows, image_root, profile["image_size"], 256, cache_budget_gb=0)
    tokens, probabilities = model.predict_outputs(embedding_model(classifier), data)
    return tokens, probabilities, rows


def _unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype="float32")
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# --- retrieval refinement ----------------------------------------------------------------


def refine(
    probabilities,
    embeddings,
    gallery_embeddings,
    gallery_cells,
    gallery_xy_km,
    centroids_xy_km,
    k: int = 3,
    neighbours: int = 5,
    weight: float = 10.0,
) -> np.ndarray:
    """Refined guesses (n, 2) in EPSG:25832 km: from the training images most like each image.

    For each image, every training ("gallery") image in its ``k`` most probable cells is a
    candidate with the score ``log p(candidate's cell) + weight * cosine similarity`` of
    the two class-token embeddings. The guess is the mean location of the ``neighbours``
    best candidates, weighted by ``softmax(score)`` (that is, by ``p(cell) *
    exp(weight * similarity)``). ``neighbours=1`` answers with one training location;
    ``weight=0`` trusts the cell probabilities only. An image whose top cells hold no
    training image keeps its arg-max centroid (``centroids_xy_km``, (n_cells, 2) km).
    """
    if neighbours < 1 or weight < 0:
        raise ValueError(f"Need neighbours >= 1 and weight >= 0 (got {neighbours}, {weight}).")
    if len(gallery_xy_km) != len(gallery_cells):
        raise ValueError("The gallery's locations and cells must have one row per training image.")
    candidates = _candidates(probabilities, embeddings, gallery_embeddings, gallery_cells, k)
    fallback = np.asarray(centroids_xy_km, dtype=float)[np.asarray(probabilities).argmax(axis=1)]
    return _combine(*candidates, np.asarray(gallery_xy_km, dtype=float), fallback, neighbours, weight)


def _cell_members(gallery_cells, n_cells: int) -> np.ndarray:
    """(n_cells, most images in one cell): the gallery rows of each cell, padded with -1."""
    counts = np.bincount(gallery_cells, minlength=n_cells)
    table = np.full((n_cells, max(int(counts.max(initial=0)), 1)), -1)
    order = np.argsort(gallery_cells, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    table[gallery_cells[order], np.arange(len(order)) - starts[gallery_cells[order]]] = order
    return table


def _candidates(probabilities, embeddings, gallery_embeddings, gallery_cells, k: int):
    """The gallery rows in each image's top-``k`` cells, (n, c) padded with -1, with the log
    probability of their cell and their cosine similarity to the image (both (n, c))."""
    probabilities = np.asarray(probabilities, dtype="float64")
    gallery_cells = np.asarray(gallery_cells, dtype=int)
    if k < 1:
        raise ValueError(f"Need k >= 1 top cells to search (got {k}).")
    if len(gallery_cells) != len(gallery_embeddings):
        raise ValueError("The gallery's embeddings and cells must have one row per training image.")
    if len(probabilities) != len(embeddings):
        raise ValueError("probabilities and embeddings must have one row per image.")
    members = _cell_members(gallery_cells, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1)[:, :k]
    rows = members[top].reshape(len(top), -1)
    top_p = np.repeat(np.take_along_axis(probabilities, top, axis=1), members.shape[1], axis=1)
    queries, gallery = _unit(embeddings), _unit(gallery_embeddings)
    similarity = np.empty(rows.shape, dtype="float32")
    step = max(1, 4_000_000 // (rows.shape[1] * gallery.shape[1]))  # ~16 MB of gathered embeddings
    for start in range(0, len(rows), step):
        block = slice(start, start + step)
        similarity[block] = np.einsum("nd,ncd->nc", queries[block], gallery[np.maximum(rows[block], 0)])
    return rows, np.log(np.maximum(top_p, 1e-30)), similarity


def _combine(rows, log_p, similarity, gallery_xy_km, fallback, neighbours: int, weight: float):
    """The guesses of :func:`refine` from its candidates (see :func:`_candidates`)."""
    score = np.where(rows >= 0, log_p + weight * similarity, -np.inf)
    m = min(neighbours, score.shape[1])
    best = np.argpartition(-score, m - 1, axis=1)[:, :m]
    best_score = np.take_along_axis(score, best, axis=1)
    found = np.isfinite(best_score).any(axis=1)
    # softmax over the candidates kept; padding (-inf) gets weight 0
    weights = np.exp(best_score - np.where(found, best_score.max(axis=1), 0.0)[:, None])
    weights[found] /= weights[found].sum(axis=1, keepdims=True)
    places = gallery_xy_km[np.maximum(np.take_along_axis(rows, best, axis=1), 0)]
    return np.where(found[:, None], (weights[..., None] * places).sum(axis=1), fallback)


def choose_refinement(
    probabilities,
    embeddings,
    table: pd.DataFrame,
    gallery: dict,
    ks=(1, 2, 3, 5),
    neighbours=(1, 5, 20),
    weights=(0.0, 5.0, 20.0, 50.0),
) -> pd.DataFrame:
    """Try every (k, neighbours, weight) of :func:`refine` on a validation split; one row each.

    ``gallery`` is :func:`gallery_of`'s. Columns: k, neighbours, weight, mean_km,
    median_km. Choose on validation data only; the test split is scored once, with the
    chosen setting. The candidates of each ``k`` are found once and reused.
    """
    fallback = gallery["centroids_xy_km"][np.asarray(probabilities).argmax(axis=1)]
    results = []
    for k in ks:
        candidates = _candidates(
            probabilities, embeddings, gallery["gallery_embeddings"], gallery["gallery_cells"], k
        )
        for n in neighbours:
            for w in weights:
                xy = _combine(*candidates, gallery["gallery_xy_km"], fallback, n, w)
                errors = errors_km(table, latlng_from_xy_km(xy))
                results.append(
                    {
                        "k": k,
                        "neighbours": n,
                        "weight": w,
                        "mean_km": float(errors.mean()),
                        "median_km": float(np.median(errors)),
                    }
                )
    return pd.DataFrame(results)


def gallery_of(embeddings, rows: pd.DataFrame, cells: pd.DataFrame) -> dict:
    """The retrieval gallery: training ``embeddings`` with their cells and locations (km).

    ``rows`` are the training images (``cell``, ``lat``, ``lng``); ``cells`` the geocells
    (``cell``, ``lat``, ``lng`` of each centroid). Keyword arguments for :func:`refine`.
    """
    centroids = cells.sort_values("cell")[["lat", "lng"]].to_numpy()
    return {
        "gallery_embeddings": np.asarray(embeddings, dtype="float32"),
        "gallery_cells": rows["cell"].to_numpy(dtype=int),
        "gallery_xy_km": geo.metric_xy_km(rows["lat"], rows["lng"]),
        "centroids_xy_km": geo.metric_xy_km(centroids[:, 0], centroids[:, 1]),
    }


def locator(classifier, gallery: dict, k: int, neighbours: int, weight: float):
    """A function ``images -> (probabilities, refined (lat, lng))`` for a batch of images.

    ``images`` is float32 (n, size, size, 3), values 0-255, as the classifier expects; the
    guesses follow :func:`refine` with the chosen setting. The "guess where" explorer uses it.
    """
    both = embedding_model(classifier)

    def locate(batch):
        token, p = both(np.asarray(batch, dtype="float32"), training=False)
        p = np.asarray(p)
        xy = refine(p, np.asarray(token), **gallery, k=k, neighbours=neighbours, weight=weight)
        return p, latlng_from_xy_km(xy)

    return locate


# --- hybrid head -------------------------------------------------------------------------


def offset_targets_km(table: pd.DataFrame, centroids_xy_km) -> np.ndarray:
    """Each image's offset (n, 2) in km (EPSG:25832 x, y) from its true cell's centroid."""
    xy = geo.metric_xy_km(table["lat"], table["lng"])
    return xy - np.asarray(centroids_xy_km, dtype=float)[table["cell"].to_numpy(dtype=int)]


def hybrid_guess_xy_km(probabilities, offsets_km, centroids_xy_km) -> np.ndarray:
    """The hybrid head's answer (n, 2) in EPSG:25832 km: arg-max centroid plus that cell's offset.

    ``offsets_km`` is (n, n_cells, 2) km, one (x, y) offset per cell, as the head predicts
    them; only the arg-max cell's is used.
    """
    probabilities, offsets_km = np.asarray(probabilities), np.asarray(offsets_km, dtype=float)
    if offsets_km.shape != (*probabilities.shape, 2):
        raise ValueError(
            f"offsets_km must have shape (n, n_cells, 2) = {(*probabilities.shape, 2)}, "
            f"not {offsets_km.shape}."
        )
    chosen = probabilities.argmax(axis=1)
    return np.asarray(centroids_xy_km, dtype=float)[chosen] + offsets_km[np.arange(len(chosen)), chosen]


def cell_extents_km(table: pd.DataFrame, centroids_xy_km, floor_km: float = 1.0) -> np.ndarray:
    """Each cell's reach (n_cells, 2): the largest |offset| east and north of its images, km.

    The hybrid head predicts offsets as fractions of this reach, in (-1, 1), as
    OpenStreetView-5M's head predicts them as fractions of its cells' half-size. Cells
    with one image or none get ``floor_km``.
    """
    centroids_xy_km = np.asarray(centroids_xy_km, dtype=float)
    reach = np.full(centroids_xy_km.shape, float(floor_km))
    offsets = np.abs(offset_targets_km(table, centroids_xy_km))
    np.maximum.at(reach, table["cell"].to_numpy(dtype=int), offsets)
    return reach


def _hybrid_data(rows, image_root, profile, training=False, augment=None, batch=None):
    """(images, {"cells": [cell, lat, lng], "offsets": [cell, x_km, y_km]}) batches of ``rows``.

    Each head gets its own targets: the cell loss rows in the form every cell loss takes
    (:func:`helpers.model.labels_of`: (lat, lng) in degrees, which PIGEON's haversine
    smoothing measures from), the offset loss the photo's EPSG:25832 (x, y) in km, so it
    needs no projection in TensorFlow.
    """
    import tensorflow as tf

    # model.image_dataset carries two numbers per image next to the cell; we let it carry the
    # row's index and look both kinds of coordinates up after batching (the shuffle keeps
    # each image with its own index)
    xy = geo.metric_xy_km(rows["lat"], rows["lng"]).astype("float32")
    degrees = rows[["lat", "lng"]].to_numpy().astype("float32")
    indexed = rows.assign(lat=np.arange(len(rows), dtype="float32"), lng=0.0)
    data = model.image_dataset(
        indexed,
        image_root,
        profile["image_size"],
        batch or profile["batch_size"],
        training=training,
        augment=augment,
        seed=profile["seed"],
        cache_budget_gb=profile["cache_budget_gb"],
    )
    degrees, xy = tf.constant(degrees), tf.constant(xy)

    def targets(x, y):
        index = tf.cast(y[:, 1], "int32")
        cell = y[:, :1]
        return x, {
            "cells": tf.concat([cell, tf.gather(degrees, index)], axis=1),
            "offsets": tf.concat([cell, tf.gather(xy, index)], axis=1),
        }

    return data.map(targets)


def train_hybrid(
    profile: str | dict,
    name: str,
    dataset: pd.DataFrame,
    image_root,
    like: dict | None = None,
    offset_weight: float = 1.0,
    verbose: int = 2,
) -> dict:
    """Train the hybrid head jointly: the cell loss + ``offset_weight`` * ``losses.offset_loss``.

    ``like`` is the ``summary.json`` of the run to compare with
    (``experiments.finished_run``): its cell loss, augmentation, warm-up, betas and
    overrides (its seed) and epochs are copied, so the second head is the only difference;
    without it, cross-entropy, no augmentation, warm-up, the profile's betas and epochs.
    Batch size is the ``like`` run's (:func:`experiments.batch_size_of`), learning rate and
    optimiser the profile's, as for every run. Offsets are fractions
    of each cell's reach on the training images, so the offset loss stays below 2 per image,
    and weight 1.0 weighs it as OpenStreetView-5M does (``configs/model/loss/hybrid.yaml``).
    Keeps the epoch with the best validation top-1 (``best.keras`` in ``runs/<name>/``).
    Returns the kept model, the history, the cells' reach and centroids in km
    (n_cells, 2), and the training seconds.
    """
    like = like or {}
    profile = config.get_profile(profile, **like.get("overrides", {}))
    augment, warmup = bool(like.get("augment", False)), bool(like.get("warmup", True))
    betas = tuple(like.get("betas") or (profile["beta_1"], profile["beta_2"]))
    epochs = int(like.get("epochs") or profile["epochs"])
    cells, distance_km = experiments.cells_and_distances(profile)
    dataset, _ = images.readable_rows(dataset, image_root)
    train_rows = dataset[dataset["split"] == "train"].reset_index(drop=True)
    val_rows = dataset[dataset["split"] == "val"].reset_index(drop=True)
    centroids = cells.sort_values("cell")[["lat", "lng"]].to_numpy()
    centroids_xy = geo.metric_xy_km(centroids[:, 0], centroids[:, 1])
    reach = cell_extents_km(train_rows, centroids_xy)
    cell_loss = losses.make_loss(
        like.get("loss", "cross_entropy"),
        distance_km,
        centroids=centroids,
        tau_km=like.get("tau_km") or 75.0,
        ce_weight=like.get("ce_weight", 1.0),
    )

    batch = int(
        like.get("batch_size")
        or experiments.batch_size_of(profile, augment=augment, warmup=warmup, betas=betas)
    )
    # seeded before the pipelines are built (tf.data's shuffle takes the global seed then)
    keras.utils.set_random_seed(profile["seed"])
    augmenter = model.randaugment(profile, seed=profile["seed"]) if augment else None
    train_data = _hybrid_data(train_rows, image_root, profile, training=True, augment=augmenter, batch=batch)
    val_data = _hybrid_data(val_rows, image_root, profile, batch=256)
    hybrid = model.build_hybrid(len(cells), profile)
    steps = model.steps_per_epoch(len(train_rows), batch)
    optimizer = model.make_optimizer(
        profile, steps, epochs, warmup=warmup, betas=betas, train_images=len(train_rows)
    )
    folder = model.run_dir(profile, name)
    run = model.train(
        profile,
        folder,
        hybrid,
        train_data,
        val_data,
        loss={"cells": cell_loss, "offsets": losses.offset_loss(centroids_xy, reach)},
        loss_weights={"cells": 1.0, "offsets": offset_weight},
        epochs=epochs,
        optimizer=optimizer,
        settings={
            "head": "hybrid: cell softmax + per-cell offset (EPSG:25832, fraction of the cell's reach)",
            "like": like.get("name"),
            "loss": like.get("loss", "cross_entropy"),
            "augment": augment,
            "warmup": warmup,
            "betas": list(betas),
            "offset_weight": offset_weight,
            "batch_size": batch,
            "train_images": len(train_rows),
        },
        verbose=verbose,
    )
    reach_table = pd.DataFrame(reach, columns=["reach_east_km", "reach_north_km"])
    with config.atomic_target(folder / "cell_reach_km.csv") as temporary:
        reach_table.to_csv(temporary)
    return {
        "model": run["model"],
        "history": run["history"],
        "reach_km": reach,
        "centroids_xy_km": centroids_xy,
        "seconds": run["seconds"],
    }


def hybrid_predict_split(hybrid, dataset: pd.DataFrame, image_root, split: str, profile: dict, reach_km):
    """(probabilities (n, n_cells), offsets in km (n, n_cells, 2), rows used) of one split.

    ``reach_km`` (n_cells, 2) turns the head's fractions into km (:func:`cell_extents_km`);
    ``hybrid`` is ``model.build_hybrid``'s network as :func:`train_hybrid` keeps it.
    """
    rows, _ = images.readable_rows(dataset[dataset["split"] == split], image_root)
    rows = rows.reset_index(drop=True)
    data = model.image_dataset(rows, image_root, profile["image_size"], 256, cache_budget_gb=0)
    outputs = model.predict_outputs(hybrid, data)
    return outputs["cells"], outputs["offsets"] * np.asarray(reach_km)[None], rows


# --- the comparison table ----------------------------------------------------------------


def comparison_table(errors_by_method: dict, denmark_scale_km: float) -> pd.DataFrame:
    """One row per method (``errors_by_method``: name -> test errors in km), the issue's columns.

    mean_km, median_km, within_1km, within_25km, geoscore (world scale) and denmark_score.
    """
    rows = {name: method_scores(errors, denmark_scale_km) for name, errors in errors_by_method.items()}
    columns = ["mean_km", "median_km", "within_1km", "within_25km", "geoscore", "denmark_score"]
    return pd.DataFrame.from_dict(rows, orient="index")[columns].rename_axis("method")


def record_comparison(profile: str | dict, table: pd.DataFrame, extra: dict, notes: dict) -> pd.DataFrame:
    """Write the comparison everywhere the report reads it; return ``tables/beyond.csv``'s table.

    Each method becomes a ``results.csv`` row "beyond: <method>" on split "test" (with
    ``extra[method]``: top1, top3 of the cells behind it); GeoScore and the Denmark score,
    which ``results.csv`` has no columns for, go to ``tables/beyond.csv`` and to the facts
    as ``beyond_<method>_geoscore`` / ``beyond_<method>_denmark_score``.
    """
    label = experiments.data_label(profile)
    facts = {}
    for method, row in table.iterrows():
        summary = {c: row[c] for c in metrics.RESULT_COLUMNS if c in row.index}
        metrics.record_result(
            profile,
            f"beyond: {method}",
            data=label,
            split="test",
            notes=notes.get(method, ""),
            **summary,
            **extra.get(method, {}),
        )
        slug = "_".join(method.replace("-", " ").split())
        facts[f"beyond_{slug}_geoscore"] = float(row["geoscore"])
        facts[f"beyond_{slug}_denmark_score"] = float(row["denmark_score"])
    metrics.record_facts(profile, **facts)
    with config.atomic_target(config.output_dir(profile, "tables") / "beyond.csv") as temporary:
        table.to_csv(temporary)
    return table
