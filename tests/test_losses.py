import numpy as np
import pytest
import tensorflow as tf

from helpers import geo, losses

# three cells on a line, 0, 100 and 200 km apart
DISTANCE_KM = np.array([[0, 100, 200], [100, 0, 100], [200, 100, 0]], dtype="float32")
P = np.array([[0.2, 0.7, 0.1]], dtype="float32")
TRUE = np.array([0])
# the same label as the input pipeline gives it: [cell, lat, lng] of the image
TRUE_WITH_PLACE = np.array([[0, 56.0, 9.0]], dtype="float32")
LABEL_FORMS = {"cells": TRUE, "cells_column": TRUE[:, None], "cell_lat_lng": TRUE_WITH_PLACE}

# three cell centroids on the parallel 56 N, 0.5 degrees of longitude (31 km) apart
CENTROIDS = np.array([[56.0, 9.0], [56.0, 9.5], [56.0, 10.0]], dtype="float32")


def value(loss, probabilities=P, truth=TRUE):
    return float(np.asarray(loss(truth, probabilities))[0])


@pytest.fixture(params=list(LABEL_FORMS), ids=list(LABEL_FORMS))
def truth(request):
    return LABEL_FORMS[request.param]


def test_cross_entropy_by_hand(truth):
    assert value(losses.cross_entropy, truth=truth) == pytest.approx(-np.log(0.2), rel=1e-6)


def test_expected_distance_squared_by_hand(truth):
    # distances normalised by the maximum, 200 km: [0, 0.5, 1]; expected = 0.7 * 0.5 + 0.1 * 1
    loss = losses.expected_distance_squared(DISTANCE_KM)
    assert value(loss, truth=truth) == pytest.approx(0.45**2, rel=1e-6)


def test_distance_plus_cross_entropy_by_hand(truth):
    expected = 0.45**2 - np.log(0.2)
    assert value(losses.distance_plus_cross_entropy(DISTANCE_KM), truth=truth) == pytest.approx(
        expected, rel=1e-6
    )
    weighted = losses.distance_plus_cross_entropy(DISTANCE_KM, ce_weight=0.25)
    assert value(weighted, truth=truth) == pytest.approx(0.45**2 - 0.25 * np.log(0.2), rel=1e-6)


def test_log_distance_by_hand(truth):
    expected = -np.log(1 - 0.7) * 0.5 - np.log(1 - 0.1) * 1.0
    assert value(losses.log_distance(DISTANCE_KM), truth=truth) == pytest.approx(expected, rel=1e-6)
    plus = losses.log_distance_plus_cross_entropy(DISTANCE_KM, ce_weight=2.0)
    assert value(plus, truth=truth) == pytest.approx(expected - 2.0 * np.log(0.2), rel=1e-6)


def test_authors_code_by_hand(truth):
    # their customLoss: (expected normalised distance + 1)^2 + cross-entropy
    expected = (0.45 + 1) ** 2 - np.log(0.2)
    assert value(losses.authors_code(DISTANCE_KM), truth=truth) == pytest.approx(expected, rel=1e-6)
    no_ce = losses.make_loss("authors_code", DISTANCE_KM, ce_weight=0.0)
    assert value(no_ce, truth=truth) == pytest.approx(1.45**2, rel=1e-6)


def pigeon_targets_numpy(lat, lng, centroids, tau_km):
    """exp(-(d(g_i, x) - min_j d(g_j, x)) / tau), haversine written out in NumPy."""
    lat1, lng1 = np.radians(lat), np.radians(lng)
    lat2, lng2 = np.radians(centroids[:, 0]), np.radians(centroids[:, 1])
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    d = 2 * 6371.0088 * np.arcsin(np.sqrt(a))
    return np.exp(-(d - d.min()) / tau_km)


def test_haversine_targets_use_the_images_own_location():
    # an image of cell 0 taken 2 km from the border with cell 1 (the border is at 9.25 E)
    image = np.array([[0, 56.0, 9.22]], dtype="float32")
    tau = 75.0
    own = np.asarray(losses.haversine_targets(image, CENTROIDS, tau))[0]
    assert own == pytest.approx(pigeon_targets_numpy(56.0, 9.22, CENTROIDS.astype(float), tau), rel=1e-4)
    # the centroid-to-centroid version: the same formula seen from the true cell's centroid
    at_centroid = np.array([[0, *CENTROIDS[0]]], dtype="float32")
    coarse = np.asarray(losses.haversine_targets(at_centroid, CENTROIDS, tau))[0]
    neighbour_km = geo.haversine_km(*CENTROIDS[0], *CENTROIDS[1])
    assert coarse[1] == pytest.approx(np.exp(-neighbour_km / tau), rel=1e-4)
    assert own[0] == pytest.approx(1.0) and own[1] > coarse[1] + 0.2  # the neighbour is almost as likely
    # PIGEON's loss: -sum_i q_i log p_i with these (unnormalised) targets
    loss = losses.make_loss("haversine_smoothing", centroids=CENTROIDS, tau_km=tau)
    assert value(loss, truth=image) == pytest.approx(-(own * np.log(P[0])).sum(), rel=1e-5)


def test_haversine_target_peaks_at_the_nearest_centroid_and_narrows_with_tau():
    # labelled cell 0, but nearer to cell 1's centroid: PIGEON's target follows the location
    image = np.array([[0, 56.0, 9.3]], dtype="float32")
    targets = np.asarray(losses.haversine_targets(image, CENTROIDS, 75.0))[0]
    assert targets.argmax() == 1 and targets.max() == pytest.approx(1.0)
    narrow = np.asarray(losses.haversine_targets(image, CENTROIDS, 5.0))[0]
    assert (narrow[[0, 2]] < targets[[0, 2]]).all()


def test_haversine_smoothing_needs_the_location():
    loss = losses.haversine_smoothing(CENTROIDS, 75)
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        loss(TRUE, P)
    with pytest.raises(ValueError, match="centroids"):
        losses.make_loss("haversine_smoothing", DISTANCE_KM)
    with pytest.raises(ValueError, match="tau_km"):
        losses.haversine_smoothing(CENTROIDS, 0)


def probability_ratio_after_a_step(loss, truth=TRUE, learning_rate=0.5):
    """Start from equal probabilities, take one gradient step on the logits; return p_near / p_far."""
    logits = tf.Variable(np.zeros((1, 3), dtype="float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_mean(loss(tf.constant(truth), tf.nn.softmax(logits)))
    logits.assign_sub(learning_rate * tape.gradient(total, logits))
    p = tf.nn.softmax(logits).numpy()[0]
    return p[1] / p[2], p


@pytest.mark.parametrize("name", [n for n in losses.LOSS_NAMES if n != "cross_entropy"])
def test_distance_losses_pull_probability_towards_nearer_cells(name):
    loss = losses.make_loss(name, DISTANCE_KM, centroids=CENTROIDS, tau_km=75)
    # for haversine smoothing: an image at cell 0's centroid, the cells 31 and 62 km away
    truth = np.array([[0, *CENTROIDS[0]]], dtype="float32")
    ratio, _ = probability_ratio_after_a_step(loss, truth)
    assert ratio > 1.001  # the near wrong cell gains on the far wrong cell


def test_cross_entropy_does_not_care_which_wrong_cell():
    ratio, p = probability_ratio_after_a_step(losses.cross_entropy)
    assert ratio == pytest.approx(1.0, abs=1e-6) and p[0] > 1 / 3


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_every_loss_runs_in_a_graph_on_pipeline_labels(name):
    loss = losses.make_loss(name, DISTANCE_KM, centroids=CENTROIDS, tau_km=75)
    traced = tf.function(
        loss,
        input_signature=[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None, 3), tf.float32)],
    )
    labels = np.array([[0, 56.0, 9.1], [2, 56.0, 9.9]], dtype="float32")
    probabilities = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], dtype="float32")
    graph = traced(labels, probabilities).numpy()
    eager = np.asarray(loss(labels, probabilities))
    assert graph.shape == (2,) and np.isfinite(graph).all() and graph == pytest.approx(eager, rel=1e-5)
    if name != "haversine_smoothing":  # the same values from plain integer cells
        assert eager == pytest.approx(np.asarray(loss(np.array([0, 2]), probabilities)), rel=1e-6)


def test_metrics_by_hand(truth):
    accuracy, top3 = losses.accuracy_metrics()
    centroid, expected = losses.distance_metrics(DISTANCE_KM)
    for metric in (accuracy, top3, centroid, expected):
        metric.update_state(truth, P)
    assert float(accuracy.result()) == 0.0 and float(top3.result()) == 1.0  # cell 0 ranks second
    assert float(centroid.result()) == pytest.approx(100.0)  # arg-max is cell 1, 100 km away
    assert float(expected.result()) == pytest.approx(0.7 * 100 + 0.1 * 200, rel=1e-6)
    assert [m.name for m in (accuracy, top3, centroid, expected)] == [
        "accuracy",
        "top3",
        "centroid_km",
        "expected_km",
    ]


def test_accuracy_metrics_on_a_batch():
    labels = np.array([[2, 56.0, 9.0], [1, 56.0, 9.0], [0, 56.0, 9.0]], dtype="float32")
    probabilities = np.array([[0.1, 0.2, 0.7], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]], dtype="float32")
    accuracy, top3 = losses.accuracy_metrics()
    accuracy.update_state(labels, probabilities)
    assert float(accuracy.result()) == pytest.approx(1 / 3)
    top1_of_3 = losses.accuracy_metrics()[0]
    top1_of_3.update_state(labels[:, 0].astype(int), probabilities)
    assert float(top1_of_3.result()) == pytest.approx(1 / 3)


def test_make_loss_errors():
    with pytest.raises(ValueError, match="needs the cell distance matrix"):
        losses.make_loss("log_distance")
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.make_loss("mse", DISTANCE_KM)
    assert losses.make_loss("cross_entropy") is losses.cross_entropy


def test_image_distance_loss_by_hand():
    # two cells on the meridian 12° E, one degree of latitude (111.2 km) apart
    centroids = np.array([[55.0, 12.0], [56.0, 12.0]])
    one_degree_km = geo.haversine_km(55.0, 12.0, 56.0, 12.0)
    loss = losses.image_distance_loss(centroids, scale_km=2 * one_degree_km)
    at_first = np.array([[0.0, 55.0, 12.0]], dtype="float32")  # [cell, lat, lng]: the photo at cell 0
    assert float(loss(at_first, np.array([[1.0, 0.0]]))[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(at_first, np.array([[0.0, 1.0]]))[0]) == pytest.approx(0.25, rel=1e-3)
    assert float(loss(at_first, np.array([[0.5, 0.5]]))[0]) == pytest.approx(0.0625, rel=1e-3)
    with pytest.raises(ValueError, match="positive"):
        losses.image_distance_loss(centroids, scale_km=0)


def test_offset_loss_by_hand_and_its_errors():
    centroids_xy = np.array([[500.0, 6200.0], [600.0, 6100.0]])
    reach = np.array([[10.0, 10.0], [5.0, 8.0]])  # cell 1 reaches 5 km east-west, 8 km north-south
    loss = losses.offset_loss(centroids_xy, reach)
    y_true = np.array([[1.0, 603.0, 6096.0]], dtype="float32")  # (3, -4) km from cell 1's centroid
    right = np.array([[[0.9, 0.9], [0.6, -0.5]]], dtype="float32")  # (3, -4) km / (5, 8) km
    assert float(np.asarray(loss(y_true, right))[0]) == pytest.approx(0.0, abs=1e-6)
    one_reach_off = np.array([[[0.0, 0.0], [-0.4, -0.5]]], dtype="float32")
    assert float(np.asarray(loss(y_true, one_reach_off))[0]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="n_cells, 2"):
        losses.offset_loss(centroids_xy, reach[:1])
    with pytest.raises(ValueError, match="positive"):
        losses.offset_loss(centroids_xy, np.zeros((2, 2)))
