"""Losses and training metrics for geocell classification, written with ``keras.ops``.

Every function takes the model's *probabilities* (the head ends in a softmax, as in the
report) and integer cell labels, and works on the TensorFlow, JAX and PyTorch backends.
Distance-aware losses take the cell-centroid distance matrix in km (notebook 04) and,
like the report, divide it by its largest entry, so distances lie in [0, 1] and the
losses have a scale comparable to cross-entropy.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

EPSILON = 1e-7


def _labels(y_true):
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


def _rows(matrix, y_true):
    """Row ``y_true`` of ``matrix`` for each sample: shape (batch, n_cells)."""
    return ops.take(matrix, _labels(y_true), axis=0)


def normalised(distance_km) -> np.ndarray:
    """The distance matrix divided by its maximum (the report's normalisation), float32."""
    distance_km = np.asarray(distance_km, dtype="float32")
    return distance_km / distance_km.max()


def cross_entropy(y_true, y_pred):
    """Sparse categorical cross-entropy on probabilities: -log p(true cell)."""
    p_true = ops.take_along_axis(y_pred, ops.expand_dims(_labels(y_true), -1), axis=-1)[:, 0]
    return -ops.log(ops.clip(p_true, EPSILON, 1.0))


def expected_distance_squared(distance_km):
    """The report's loss (1): the squared expected distance, ``(sum_i p_i d(i, true))**2``."""
    d = normalised(distance_km)

    def loss(y_true, y_pred):
        return ops.square(ops.sum(y_pred * _rows(d, y_true), axis=-1))

    loss.__name__ = "expected_distance_squared"
    return loss


def distance_plus_cross_entropy(distance_km):
    """The report's loss (2): loss (1) plus cross-entropy."""
    squared = expected_distance_squared(distance_km)

    def loss(y_true, y_pred):
        return squared(y_true, y_pred) + cross_entropy(y_true, y_pred)

    loss.__name__ = "distance_plus_cross_entropy"
    return loss


def log_distance(distance_km):
    """The report's loss (3): ``sum_i -log(1 - p_i) d(i, true)``.

    Confident mass on a far cell costs most; the true cell (distance 0) costs nothing, so
    this loss only pushes probability *away* from far cells.
    """
    d = normalised(distance_km)

    def loss(y_true, y_pred):
        return ops.sum(-ops.log(ops.clip(1.0 - y_pred, EPSILON, 1.0)) * _rows(d, y_true), axis=-1)

    loss.__name__ = "log_distance"
    return loss


def haversine_targets(distance_km, tau_km: float) -> np.ndarray:
    """PIGEON's soft labels: row t is ``exp(-(d(i, t) - d(t, t)) / tau_km)``, normalised to sum 1."""
    distance_km = np.asarray(distance_km, dtype="float64")
    scores = np.exp(-(distance_km - np.diag(distance_km)[:, None]) / tau_km)
    return (scores / scores.sum(axis=1, keepdims=True)).astype("float32")


def haversine_smoothing(distance_km, tau_km: float = 75.0):
    """Cross-entropy against :func:`haversine_targets` (Haas et al., PIGEON, 2024).

    Beyond the report: nearby cells share some of the target's probability, more so with a
    larger ``tau_km``. As ``tau_km`` shrinks this becomes plain cross-entropy.
    """
    targets = haversine_targets(distance_km, tau_km)

    def loss(y_true, y_pred):
        return -ops.sum(_rows(targets, y_true) * ops.log(ops.clip(y_pred, EPSILON, 1.0)), axis=-1)

    loss.__name__ = f"haversine_smoothing_{tau_km:g}km"
    return loss


def make_loss(name: str, distance_km=None, tau_km: float = 75.0):
    """A loss by name: "cross_entropy", "expected_distance_squared", "distance_plus_cross_entropy",
    "log_distance" or "haversine_smoothing"."""
    if name == "cross_entropy":
        return cross_entropy
    builders = {
        "expected_distance_squared": expected_distance_squared,
        "distance_plus_cross_entropy": distance_plus_cross_entropy,
        "log_distance": log_distance,
    }
    if distance_km is None and name in [*builders, "haversine_smoothing"]:
        raise ValueError(f"The loss {name!r} needs the cell distance matrix (km).")
    if name == "haversine_smoothing":
        return haversine_smoothing(distance_km, tau_km)
    if name not in builders:
        raise ValueError(
            f"Unknown loss {name!r}; choose from cross_entropy, {', '.join(builders)}, haversine_smoothing."
        )
    return builders[name](distance_km)


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
    """Top-1 and top-3 accuracy."""
    return [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3"),
    ]
