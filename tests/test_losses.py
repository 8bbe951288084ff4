import numpy as np
import pytest
import tensorflow as tf

from helpers import losses

# three cells on a line, 0, 100 and 200 km apart
DISTANCE_KM = np.array([[0, 100, 200], [100, 0, 100], [200, 100, 0]], dtype="float32")
P = np.array([[0.2, 0.7, 0.1]], dtype="float32")
TRUE = np.array([0])


def value(loss, probabilities=P, truth=TRUE):
    return float(np.asarray(loss(truth, probabilities))[0])


def test_cross_entropy_by_hand():
    assert value(losses.cross_entropy) == pytest.approx(-np.log(0.2), rel=1e-6)


def test_expected_distance_squared_by_hand():
    # distances normalised by the maximum, 200 km: [0, 0.5, 1]; expected = 0.7 * 0.5 + 0.1 * 1
    assert value(losses.expected_distance_squared(DISTANCE_KM)) == pytest.approx(0.45**2, rel=1e-6)


def test_distance_plus_cross_entropy_by_hand():
    expected = 0.45**2 - np.log(0.2)
    assert value(losses.distance_plus_cross_entropy(DISTANCE_KM)) == pytest.approx(expected, rel=1e-6)


def test_log_distance_by_hand():
    expected = -np.log(1 - 0.7) * 0.5 - np.log(1 - 0.1) * 1.0
    assert value(losses.log_distance(DISTANCE_KM)) == pytest.approx(expected, rel=1e-6)


def test_haversine_smoothing_by_hand():
    weights = np.exp(-np.array([0, 100, 200]) / 75)
    targets = weights / weights.sum()
    assert losses.haversine_targets(DISTANCE_KM, 75)[0] == pytest.approx(targets, rel=1e-6)
    expected = -(targets * np.log(P[0])).sum()
    assert value(losses.haversine_smoothing(DISTANCE_KM, 75)) == pytest.approx(expected, rel=1e-5)


def test_haversine_smoothing_tends_to_cross_entropy_for_small_tau():
    assert value(losses.haversine_smoothing(DISTANCE_KM, 0.5)) == pytest.approx(
        value(losses.cross_entropy), rel=1e-4
    )


def probability_ratio_after_a_step(loss, learning_rate=0.5):
    """Start from equal probabilities, take one gradient step on the logits; return p_near / p_far."""
    logits = tf.Variable(np.zeros((1, 3), dtype="float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_mean(loss(tf.constant(TRUE), tf.nn.softmax(logits)))
    logits.assign_sub(learning_rate * tape.gradient(total, logits))
    p = tf.nn.softmax(logits).numpy()[0]
    return p[1] / p[2], p


@pytest.mark.parametrize(
    "loss",
    [
        losses.expected_distance_squared(DISTANCE_KM),
        losses.distance_plus_cross_entropy(DISTANCE_KM),
        losses.log_distance(DISTANCE_KM),
        losses.haversine_smoothing(DISTANCE_KM, 75),
    ],
    ids=lambda f: f.__name__,
)
def test_distance_losses_pull_probability_towards_nearer_cells(loss):
    ratio, _ = probability_ratio_after_a_step(loss)
    assert ratio > 1.001  # the near wrong cell gains on the far wrong cell


def test_cross_entropy_does_not_care_which_wrong_cell():
    ratio, p = probability_ratio_after_a_step(losses.cross_entropy)
    assert ratio == pytest.approx(1.0, abs=1e-6) and p[0] > 1 / 3


def test_distance_metrics_by_hand():
    centroid, expected = losses.distance_metrics(DISTANCE_KM)
    centroid.update_state(TRUE, P)
    expected.update_state(TRUE, P)
    assert float(centroid.result()) == pytest.approx(100.0)  # arg-max is cell 1, 100 km away
    assert float(expected.result()) == pytest.approx(0.7 * 100 + 0.1 * 200, rel=1e-6)


def test_make_loss_errors():
    with pytest.raises(ValueError, match="needs the cell distance matrix"):
        losses.make_loss("log_distance")
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.make_loss("mse", DISTANCE_KM)
