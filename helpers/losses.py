"""Losses and training metrics for geocell classification, written with ``keras.ops``.

Every function takes the model's *probabilities* (the head ends in a softmax, as in the
report) and the labels ``y_true`` in either of two forms:

* integer cells, shape (batch,) or (batch, 1);
* rows ``[cell, lat, lng]``, shape (batch, 3), float: the cell and the image's own
  location in degrees (what the workbook's input pipeline yields).

Only PIGEON's haversine smoothing needs the location; every other loss and metric reads
the cell (column 0). Distance-aware losses take the cell-centroid distance matrix in km
(notebook 04) and divide it by its largest entry, so distances lie in [0, 1]. That
normalisation is the authors' choice (their notebook divides by ``np.max`` before
training), not something the report's equations say; it keeps the distance terms on a
scale comparable to cross-entropy. The "+ cross-entropy" losses weight cross-entropy by
``ce_weight`` (lambda; 1 in the report and the authors' code).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from helpers import geo

EPSILON = 1e-7

LOSS_NAMES = (
    "cross_entropy",
    "expected_distance_squared",  # the report's equation (1)
    "distance_plus_cross_entropy",  # equation (2): (1) + lambda * cross-entropy
    "log_distance",  # equation (3)
    "log_distance_plus_cross_entropy",  # (3) + lambda * cross-entropy, what the text suggests ran
    "authors_code",  # the authors' notebook: (expected distance + 1)^2 + lambda * cross-entropy
    "haversine_smoothing",  # PIGEON's soft targets from the image's own location
)


# --- labels ---------------------------------------------------------------------------


def true_cells(y_true):
    """The true cell of each sample, int32 (batch,), from either label form."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 2 and y_true.shape[-1] == 3:
        y_true = y_true[:, 0]
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


def true_latlng(y_true):
    """The image's own location, float32 (batch, 2) as (lat, lng) degrees, from (batch, 3) labels."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) != 2 or y_true.shape[-1] != 3:
        raise ValueError(
            f"This loss needs each image's own location: labels of shape (batch, 3) holding "
            f"[cell, lat, lng], got shape {tuple(y_true.shape)}. Use the workbook's input "
            "pipeline (model.image_dataset), whose labels carry the location."
        )
    return ops.cast(y_true[:, 1:], "float32")


def _rows(matrix, y_true):
    """Row ``cell`` of ``matrix`` for each sample: shape (batch, n_cells)."""
    return ops.take(matrix, true_cells(y_true), axis=0)


def normalised(distance_km) -> np.ndarray:
    """The distance matrix divided by its maximum (the authors' normalisation), float32."""
    distance_km = np.asarray(distance_km, dtype="float32")
    if distance_km.ndim != 2 or distance_km.shape[0] != distance_km.shape[1] or distance_km.max() <= 0:
        raise ValueError(
            "Expected a square cell distance matrix in km with a positive entry, "
            f"got shape {distance_km.shape}."
        )
    return distance_km / distance_km.max()


# --- losses ---------------------------------------------------------------------------


def cross_entropy(y_true, y_pred):
    """Sparse categorical cross-entropy on probabilities: -log p(true cell)."""
    p_true = ops.take_along_axis(y_pred, ops.expand_dims(true_cells(y_true), -1), axis=-1)[:, 0]
    return -ops.log(ops.clip(p_true, EPSILON, 1.0))


def _expected_distance(d, y_true, y_pred):
    """sum_i p_i d(i, true), with ``d`` the normalised matrix: in [0, 1]."""
    return ops.sum(y_pred * _rows(d, y_true), axis=-1)


def expected_distance_squared(distance_km):
    """The report's equation (1): ``(sum_i p_i d(i, true))**2``, distances divided by their maximum."""
    d = normalised(distance_km)

    def loss(y_true, y_pred):
        return ops.square(_expected_distance(d, y_true, y_pred))

    loss.__name__ = "expected_distance_squared"
    return loss


def plus_cross_entropy(base, ce_weight: float, name: str):
    """The loss ``base`` plus ``ce_weight`` times cross-entropy (lambda), named ``name``."""

    def loss(y_true, y_pred):
        return base(y_true, y_pred) + ce_weight * cross_entropy(y_true, y_pred)

    loss.__name__ = name
    return loss


def distance_plus_cross_entropy(distance_km, ce_weight: float = 1.0):
    """The report's equation (2): equation (1) plus ``ce_weight`` times cross-entropy."""
    return plus_cross_entropy(
        expected_distance_squared(distance_km), ce_weight, "distance_plus_cross_entropy"
    )


def log_distance(distance_km):
    """The report's equation (3): ``sum_i -log(1 - p_i) d(i, true)``, distances divided by their maximum.

    Confident mass on a far cell costs most; the true cell (distance 0) costs nothing, so
    this loss alone only pushes probability *away* from far cells.
    """
    d = normalised(distance_km)

    def loss(y_true, y_pred):
        return ops.sum(-ops.log(ops.clip(1.0 - y_pred, EPSILON, 1.0)) * _rows(d, y_true), axis=-1)

    loss.__name__ = "log_distance"
    return loss


def log_distance_plus_cross_entropy(distance_km, ce_weight: float = 1.0):
    """Equation (3) plus ``ce_weight`` times cross-entropy: the report's text suggests this is what ran."""
    return plus_cross_entropy(log_distance(distance_km), ce_weight, "log_distance_plus_cross_entropy")


def authors_code(distance_km, ce_weight: float = 1.0):
    """The loss in the authors' notebook: ``(sum_i p_i d(i, true) + 1)**2`` plus cross-entropy.

    ``customLoss`` in ``5-image-classification.ipynb`` (csiztom/dl-geolocation-vit), with
    distances divided by their maximum. Expanded, ``(e + 1)**2 = e**2 + 2 e + 1``: unlike
    equation (1) the expected distance ``e`` also enters linearly, so its gradient does not
    vanish as ``e`` gets small. ``ce_weight`` scales the cross-entropy (1 in their code).
    """
    d = normalised(distance_km)

    def loss(y_true, y_pred):
        shifted = ops.square(_expected_distance(d, y_true, y_pred) + 1.0)
        return shifted + ce_weight * cross_entropy(y_true, y_pred)

    loss.__name__ = "authors_code"
    return loss


def checked_centroids(centroids) -> np.ndarray:
    """``centroids`` as float32 (n_cells, 2) (lat, lng) degrees, or a clear error."""
    centroids = np.asarray(centroids, dtype="float32")
    if centroids.ndim != 2 or centroids.shape[1] != 2:
        raise ValueError(f"centroids must be (n_cells, 2) (lat, lng) degrees, got shape {centroids.shape}.")
    return centroids


def haversine_km_to_cells(latlng, centroids):
    """Great-circle distances (km) from each (lat, lng) in ``latlng`` (batch, 2) to each centroid.

    ``centroids``: (n_cells, 2) (lat, lng) degrees. ``keras.ops``, so it runs inside the loss;
    Earth radius :data:`helpers.geo.EARTH_RADIUS_KM`. Returns (batch, n_cells).
    """
    to_radians = np.pi / 180.0
    points = ops.cast(latlng, "float32") * to_radians
    cells = ops.convert_to_tensor(np.asarray(centroids, dtype="float32") * to_radians)
    lat1, lng1 = points[:, :1], points[:, 1:]
    lat2, lng2 = cells[None, :, 0], cells[None, :, 1]
    a = ops.sin((lat2 - lat1) / 2) ** 2 + ops.cos(lat1) * ops.cos(lat2) * ops.sin((lng2 - lng1) / 2) ** 2
    return 2 * geo.EARTH_RADIUS_KM * ops.arcsin(ops.sqrt(ops.clip(a, 0.0, 1.0)))


def haversine_targets(y_true, centroids, tau_km: float = 75.0):
    """PIGEON's soft targets: ``exp(-(d(g_i, x) - min_j d(g_j, x)) / tau_km)`` for every cell i.

    ``x`` is the image's own (lat, lng) (labels of shape (batch, 3)), ``g_i`` the centroid of
    cell i (``centroids``, (n_cells, 2) lat, lng degrees), ``d`` the haversine distance in
    km. As in PIGEON (``smooth_labels`` in ``preprocessing/utils.py``) the targets are not
    normalised: the cell whose centroid is nearest gets 1, and that cell need not be the
    labelled one for an image near a border. Returns (batch, n_cells).
    """
    distances = haversine_km_to_cells(true_latlng(y_true), centroids)
    return ops.exp(-(distances - ops.min(distances, axis=-1, keepdims=True)) / tau_km)


def haversine_smoothing(centroids, tau_km: float = 75.0):
    """Cross-entropy against :func:`haversine_targets`: ``-sum_i q_i log p_i`` (Haas et al., PIGEON).

    Beyond the report. Cells near the image's own location share the target, more so with
    a larger ``tau_km`` (PIGEON: 75 km; PIGEOTTO: 65 km). As in PIGEON's
    ``nn.CrossEntropyLoss`` with these targets, they are not renormalised, so an image with
    many cell centroids nearby weighs more. Needs labels of shape (batch, 3).
    """
    centroids = checked_centroids(centroids)
    if tau_km <= 0:
        raise ValueError(f"tau_km must be positive, got {tau_km}.")

    def loss(y_true, y_pred):
        targets = haversine_targets(y_true, centroids, tau_km)
        return -ops.sum(targets * ops.log(ops.clip(y_pred, EPSILON, 1.0)), axis=-1)

    loss.__name__ = "haversine_smoothing"
    return loss


def make_loss(name: str, distance_km=None, *, centroids=None, tau_km: float = 75.0, ce_weight: float = 1.0):
    """A loss by name, one of :data:`LOSS_NAMES`.

    The distance losses need ``distance_km`` (the cell distance matrix, km); haversine
    smoothing needs ``centroids`` ((n_cells, 2) lat, lng degrees, in cell order) and
    ``tau_km``; ``ce_weight`` (lambda) weights cross-entropy in every "+ cross-entropy" loss.
    """
    if name not in LOSS_NAMES:
        raise ValueError(f"Unknown loss {name!r}; choose from {', '.join(LOSS_NAMES)}.")
    if name == "cross_entropy":
        return cross_entropy
    if name == "haversine_smoothing":
        if centroids is None:
            raise ValueError(
                "The loss 'haversine_smoothing' needs the cell centroids (centroids=, (n_cells, 2) lat, lng)."
            )
        return haversine_smoothing(centroids, tau_km)
    if distance_km is None:
        raise ValueError(f"The loss {name!r} needs the cell distance matrix (km).")
    if name == "expected_distance_squared":
        return expected_distance_squared(distance_km)
    if name == "log_distance":
        return log_distance(distance_km)
    builders = {
        "distance_plus_cross_entropy": distance_plus_cross_entropy,
        "log_distance_plus_cross_entropy": log_distance_plus_cross_entropy,
        "authors_code": authors_code,
    }
    return builders[name](distance_km, ce_weight)


# --- metrics during training ------------------------------------------------------------


def distance_metrics(distance_km) -> list:
    """Keras metrics in km: ``centroid_km`` (distance between the arg-max cell's centroid and
    the true cell's, the report's metric) and ``expected_km`` (``sum_i p_i d(i, true)``)."""
    d = np.asarray(distance_km, dtype="float32")

    def centroid_km(y_true, y_pred):
        predicted = ops.expand_dims(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), -1)
        return ops.take_along_axis(_rows(d, y_true), predicted, axis=-1)[:, 0]

    def expected_km(y_true, y_pred):
        return ops.sum(y_pred * _rows(d, y_true), axis=-1)

    return [
        keras.metrics.MeanMetricWrapper(centroid_km, name="centroid_km"),
        keras.metrics.MeanMetricWrapper(expected_km, name="expected_km"),
    ]


def accuracy_metrics() -> list:
    """Top-1 (``accuracy``) and top-3 (``top3``) accuracy, for either label form."""

    def accuracy(y_true, y_pred):
        return ops.cast(ops.cast(ops.argmax(y_pred, axis=-1), "int32") == true_cells(y_true), "float32")

    def top3(y_true, y_pred):
        return ops.cast(ops.in_top_k(true_cells(y_true), y_pred, 3), "float32")

    return [
        keras.metrics.MeanMetricWrapper(accuracy, name="accuracy"),
        keras.metrics.MeanMetricWrapper(top3, name="top3"),
    ]


# --- losses of notebooks 11 and 12 ------------------------------------------------------


def image_distance_loss(centroids, scale_km: float):
    """The report's loss (1) with distances to the image's own location, and no cross-entropy.

    ``(sum_i p_i d(centroid_i, image) / scale_km) ** 2``: the expected great-circle distance
    (km, :func:`haversine_km_to_cells`) from the predicted cells' centroids (``centroids``,
    (n_cells, 2) lat, lng degrees) to where the photo was taken, divided by ``scale_km``
    (the largest distance between two centroids, the authors' normalisation), squared.
    Needs labels of shape (batch, 3), rows [cell, lat, lng] (``model.image_dataset``'s);
    :func:`expected_distance_squared` measures to the true cell's centroid instead.
    """
    centroids = checked_centroids(centroids)
    if not scale_km > 0:
        raise ValueError(f"scale_km must be a positive distance in km, got {scale_km}.")

    def loss(y_true, y_pred):
        distance_km = haversine_km_to_cells(true_latlng(y_true), centroids)
        return ops.square(ops.sum(y_pred * distance_km, axis=-1) / scale_km)

    loss.__name__ = "image_distance_squared"
    return loss


def offset_loss(centroids_xy_km, reach_km):
    """The hybrid head's loss: squared error of the true cell's offset, as a fraction of its reach.

    ``y_true`` rows are [cell, x_km, y_km], the photo's EPSG:25832 position in km; ``y_pred``
    is (batch, n_cells, 2), one (x, y) offset per cell as a fraction of that cell's reach;
    ``centroids_xy_km`` and ``reach_km`` are (n_cells, 2) km (``beyond.cell_extents_km``).
    Training scores the true cell's offset (its centroid is known); at test time the arg-max
    cell's offset is used.
    """
    centroids = np.asarray(centroids_xy_km, dtype="float32")
    reach = np.asarray(reach_km, dtype="float32")
    if centroids.ndim != 2 or centroids.shape[1] != 2 or reach.shape != centroids.shape:
        raise ValueError(
            "centroids_xy_km and reach_km must both be (n_cells, 2) km, got shapes "
            f"{centroids.shape} and {reach.shape}."
        )
    if not (reach > 0).all():
        raise ValueError("Every cell's reach must be a positive number of km (beyond.cell_extents_km).")

    def offsets(y_true, y_pred):
        cell = true_cells(y_true)
        target = (ops.cast(y_true[:, 1:3], "float32") - ops.take(centroids, cell, axis=0)) / ops.take(
            reach, cell, axis=0
        )
        chosen = ops.take_along_axis(y_pred, ops.reshape(cell, (-1, 1, 1)), axis=1)[:, 0, :]
        return ops.sum(ops.square(chosen - target), axis=-1)

    return offsets
