"""The graded "Your turn" checks: True on the workbook's function and on the worked solution,
False, with one line and no exception, on an unanswered scaffold and on typical wrong answers."""

import re

import numpy as np
import pytest
from keras import ops
from sklearn.cluster import KMeans

from helpers import attention, checks, config, geo, losses, vit_from_scratch

CHECKS = sorted(name for name in dir(checks) if name.startswith("check_"))
SOLUTIONS = sorted((config.REPO_ROOT / "solutions").glob("[0-9][0-9]_*.md"))
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def your_turn_blocks() -> dict[str, str]:
    """{check name: the solution block that answers it} over every solutions file."""
    found = {}
    for path in SOLUTIONS:
        for code in _BLOCK.findall(path.read_text(encoding="utf-8")):
            marker = re.search(r"^# Your turn: (.+)$", code, re.MULTILINE)
            if marker:
                found |= {name.strip(): code for name in marker.group(1).split(",")}
    return found


def graded(check, answer, capsys):
    """(result, the line printed) of ``check(answer)``; fails the test if the check raised."""
    result = check(answer)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1, f"a check prints one line, got {printed}"
    return result, printed[0]


def unanswered(*args, **kwargs):
    """A scaffold as the notebook hands it out: docstring and `...`."""
    ...


# --- every check has a worked solution, and passes it -------------------------------------------


def test_every_check_has_a_worked_solution():
    assert set(CHECKS) == set(your_turn_blocks()), (
        "each check needs a '# Your turn: <check>' block in solutions/"
    )


@pytest.mark.parametrize("check_name", CHECKS)
def test_the_worked_solution_passes(check_name, capsys):
    namespace = {"__name__": "__solution__"}
    exec(compile(your_turn_blocks()[check_name], f"solution of {check_name}", "exec"), namespace)  # asserts
    assert "✓ Your turn" in capsys.readouterr().out


# --- the workbook's own function passes; a scaffold is 'not written yet' -------------------------

WORKBOOK = {
    "check_split_rule": geo.split_in_two,
    "check_haversine": geo.haversine_km,
    "check_attention": vit_from_scratch.scaled_dot_product_attention,
    "check_encoder_block": vit_from_scratch.encoder_block,
    "check_training": checks.train_one_epoch_reference,
    "check_eq1_loss": lambda cells, p, d: losses.expected_distance_squared(d)(cells, p),
    "check_eq3_loss": lambda cells, p, d: losses.log_distance(d)(cells, p),
    "check_smoothed_targets": lambda latlng, centroids, tau: losses.haversine_targets(
        np.column_stack([np.zeros(len(latlng)), latlng]).astype("float32"), centroids, tau
    ),
    "check_rollout": attention.rollout,
}


@pytest.mark.parametrize("check_name", CHECKS)
def test_the_workbook_function_passes(check_name, capsys):
    result, line = graded(getattr(checks, check_name), WORKBOOK[check_name], capsys)
    assert result is True and line.startswith("✓")


@pytest.mark.parametrize("check_name", CHECKS)
def test_an_unanswered_scaffold_is_not_written_yet(check_name, capsys):
    result, line = graded(getattr(checks, check_name), unanswered, capsys)
    assert result is False and "not written yet" in line and "continues with the workbook's version" in line


# --- wrong answers -------------------------------------------------------------------------------


def _kmeans_sides(lnglat, seed):
    return KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(lnglat)


def _haversine(lat1, lng1, lat2, lng2, factor=2.0, to_radians=True):
    convert = np.radians if to_radians else np.asarray
    φ1, λ1, φ2, λ2 = (convert(np.asarray(v, dtype=float)) for v in (lat1, lng1, lat2, lng2))
    a = np.sin((φ2 - φ1) / 2) ** 2 + np.cos(φ1) * np.cos(φ2) * np.sin((λ2 - λ1) / 2) ** 2
    return factor * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _attention(q, k, v, scale=True, axis=-1, transpose_weights=False):
    logits = ops.matmul(q, ops.swapaxes(k, -1, -2)) / (np.sqrt(q.shape[-1]) if scale else 1.0)
    weights = ops.softmax(logits, axis=axis)
    shown = ops.swapaxes(weights, -1, -2) if transpose_weights else weights
    return ops.matmul(weights, v), shown


def _block(x, w, heads, epsilon=1e-6, post_norm=False, residual=True):
    norm = vit_from_scratch.layer_norm
    if post_norm:  # the original Transformer: normalise after adding
        attended, weights = vit_from_scratch.self_attention(x, w, heads)
        x = norm(x + attended, w["ln1_gamma"], w["ln1_beta"], epsilon)
        hidden = ops.gelu(ops.matmul(x, w["w1"]) + w["b1"], approximate=False)
        return norm(
            x + ops.matmul(hidden, w["w2"]) + w["b2"], w["ln2_gamma"], w["ln2_beta"], epsilon
        ), weights
    attended, weights = vit_from_scratch.self_attention(
        norm(x, w["ln1_gamma"], w["ln1_beta"], epsilon), w, heads
    )
    x = x + attended if residual else attended
    hidden = ops.gelu(
        ops.matmul(norm(x, w["ln2_gamma"], w["ln2_beta"], epsilon), w["w1"]) + w["b1"], approximate=False
    )
    return (x if residual else 0) + ops.matmul(hidden, w["w2"]) + w["b2"], weights


def _fit(epochs=1, validation=True, loss=losses.cross_entropy, give_back="history"):
    import keras

    def train(classifier, train_data, val_data, optimizer):
        classifier.compile(optimizer=optimizer, loss=loss, metrics=losses.accuracy_metrics())
        history = classifier.fit(
            train_data,
            validation_data=val_data if validation else None,
            epochs=epochs,
            verbose=0,
            shuffle=False,
        )
        return history if give_back == "history" else classifier

    if loss == "keras":  # Keras' own loss on the pipeline's [cell, lat, lng] labels
        return _fit(epochs, validation, keras.losses.SparseCategoricalCrossentropy(), give_back)
    return train


def _rows(d, cells, axis=0):
    return ops.take(d, ops.cast(cells, "int32"), axis=axis)


def _rollout(scores, residual=True, left=True, column=False, last_only=False):
    mean = scores.mean(axis=2)
    tokens = mean.shape[-1]
    joint = np.broadcast_to(np.eye(tokens), (mean.shape[0], tokens, tokens))
    for layer in range(mean.shape[1]) if not last_only else [mean.shape[1] - 1]:
        mixed = 0.5 * mean[:, layer] + 0.5 * np.eye(tokens) if residual else mean[:, layer]
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)  # a no-op on rows that sum to 1: not a wrong answer
        joint = mixed @ joint if left else joint @ mixed
    patches = joint[:, 1:, 0] if column else joint[:, 0, 1:]
    side = int(round(np.sqrt(tokens - 1)))
    return patches.reshape(-1, side, side)


def _targets(latlng, centroids, tau, subtract_min=True, renormalise=False, min_axis=-1):
    km = losses.haversine_km_to_cells(latlng, centroids)
    shift = ops.min(km, axis=min_axis, keepdims=True) if subtract_min else 0.0
    targets = ops.exp(-(km - shift) / tau)
    return targets / ops.sum(targets, axis=-1, keepdims=True) if renormalise else targets


WRONG = {
    "check_split_rule": {
        "a constant": lambda lnglat, seed=0: np.zeros(len(lnglat), dtype=int),
        "K-means' own numbering (no north rule)": lambda lnglat, seed=0: _kmeans_sides(lnglat, seed),
        "the southern half numbered 0": lambda lnglat, seed=0: 1 - geo.split_in_two(lnglat, seed),
        "sides 1 and 2 (off by one)": lambda lnglat, seed=0: geo.split_in_two(lnglat, seed) + 1,
    },
    "check_haversine": {
        "a constant": lambda lat1, lng1, lat2, lng2: np.full(np.broadcast(lat1, lat2).shape, 100.0),
        "a missing factor 2": lambda *a: _haversine(*a, factor=1.0),
        "degrees into the sine": lambda *a: _haversine(*a, to_radians=False),
        "(lng, lat) swapped": lambda lat1, lng1, lat2, lng2: _haversine(lng1, lat1, lng2, lat2),
    },
    "check_attention": {
        "a constant": lambda q, k, v: (ops.zeros_like(q), ops.zeros(q.shape[:-1] + (k.shape[-2],))),
        "a missing scale factor 1/√d": lambda q, k, v: _attention(q, k, v, scale=False),
        "softmax over the queries (axis -2)": lambda q, k, v: _attention(q, k, v, axis=-2),
        "transposed weights": lambda q, k, v: _attention(q, k, v, transpose_weights=True),
    },
    "check_encoder_block": {
        "a constant": lambda x, w, heads, epsilon=1e-6: (ops.zeros_like(x), None),
        "post-LayerNorm": lambda *a: _block(*a, post_norm=True),
        "no residual connections": lambda *a: _block(*a, residual=False),
    },
    "check_training": {
        "two epochs": _fit(epochs=2),
        "no validation data": _fit(validation=False),
        "Keras' sparse cross-entropy on [cell, lat, lng] labels": _fit(loss="keras"),
        "returns the model, not the history": _fit(give_back="model"),
    },
    "check_eq1_loss": {
        "a constant": lambda cells, p, d: ops.ones((p.shape[0],)),
        "the square missing": lambda cells, p, d: ops.sum(p * _rows(d, cells), axis=-1),
        "summed over the batch (axis 0)": lambda cells, p, d: ops.sum(
            ops.square(p * _rows(d, cells)), axis=0
        ),
        "NumPy, no gradient": lambda cells, p, d: np.square((np.asarray(p) * np.asarray(d)[cells]).sum(-1)),
    },
    "check_eq3_loss": {
        "log p instead of log(1 - p)": lambda cells, p, d: ops.sum(
            -ops.log(ops.clip(p, 1e-7, 1.0)) * _rows(d, cells), axis=-1
        ),
        "no clipping (p = 1 gives infinity)": lambda cells, p, d: ops.sum(
            -ops.log(1.0 - p) * _rows(d, cells), axis=-1
        ),
        "the minus sign missing": lambda cells, p, d: ops.sum(
            ops.log(ops.clip(1.0 - p, 1e-7, 1.0)) * _rows(d, cells), axis=-1
        ),
    },
    "check_smoothed_targets": {
        "a constant": lambda latlng, centroids, tau: ops.ones((len(latlng), len(centroids))),
        "the minimum not subtracted": lambda *a: _targets(*a, subtract_min=False),
        "renormalised rows": lambda *a: _targets(*a, renormalise=True),
        "the minimum over images (axis 0)": lambda *a: _targets(*a, min_axis=0),
        "tau multiplied, not divided": lambda latlng, centroids, tau: _targets(latlng, centroids, 1 / tau),
    },
    "check_rollout": {
        "a constant": lambda scores: np.ones((len(scores), 4, 4)),
        "no residual": lambda scores: _rollout(scores, residual=False),
        "layers multiplied in reverse order": lambda scores: _rollout(scores, left=False),
        "the class token's column (transposed)": lambda scores: _rollout(scores, column=True),
        "only the last layer": lambda scores: _rollout(scores, last_only=True),
    },
}
WRONG_CASES = [(check, wrong) for check, answers in WRONG.items() for wrong in answers]


def test_every_check_has_wrong_answers():
    assert set(WRONG) == set(CHECKS)


@pytest.mark.parametrize(("check_name", "wrong"), WRONG_CASES, ids=[f"{c}-{w}" for c, w in WRONG_CASES])
def test_a_wrong_answer_fails_with_one_line(check_name, wrong, capsys):
    result, line = graded(getattr(checks, check_name), WRONG[check_name][wrong], capsys)
    assert result is False, f"{check_name} accepted {wrong}"
    assert line.startswith("✗") and "continues with the workbook's version" in line
    assert " on " in line, "the line names the input where the answer differs"


def test_a_failure_names_the_input_and_the_size_of_the_difference(capsys):
    result, line = graded(checks.check_haversine, lambda *a: _haversine(*a, factor=1.0), capsys)
    assert result is False
    assert "50 random pairs in Denmark" in line and "differs by up to" in line and "expected" in line


def test_an_answer_that_raises_is_reported_not_raised(capsys):
    def broken(scores):
        raise KeyError("layer")

    result, line = graded(checks.check_rollout, broken, capsys)
    assert result is False and "raised KeyError" in line
