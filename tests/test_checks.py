"""The graded "Your turn" checks: True on the workbook's function, on the worked solution and on
other right answers (in place, float64 NumPy); False, with one line that names the case and a
hint and with no exception, on an unanswered scaffold, on typical wrong answers, and on answers
that exit, interrupt, loop forever, change their inputs or return a huge broadcast view."""

import ast
import inspect
import json
import os
import re
import signal
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from keras import ops
from sklearn.cluster import KMeans

from helpers import attention, checks, config, geo, losses, vit_from_scratch

CHECKS = sorted(name for name in dir(checks) if name.startswith("check_"))
SOLUTIONS = sorted((config.REPO_ROOT / "solutions").glob("[0-9][0-9]_*.md"))
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
# a plural subject with a singular verb: "the sides differs", "the weights 'kernel' has"
_PLURAL_WITH_SINGULAR_VERB = re.compile(
    r"\bthe \w*[^s\W]s\b(?: \([^)]*\)| '[^']*')? (?:differs|has|is|holds)\b"
)


def your_turn_blocks() -> dict[str, str]:
    """{check name: the solution block that answers it} over every solutions file."""
    found = {}
    for path in SOLUTIONS:
        for code in _BLOCK.findall(path.read_text(encoding="utf-8")):
            marker = re.search(r"^# Your turn: (.+)$", code, re.MULTILINE)
            if marker:
                found |= {name.strip(): code for name in marker.group(1).split(",")}
    return found


def graded(check, answer, capsys, **options):
    """(result, the line printed) of ``check(answer)``; fails the test if the check raised."""
    result = check(answer, **options)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1, f"a check prints one line, got {printed}"
    return result, printed[0]


def unanswered(*args, **kwargs):
    """A scaffold as the notebook hands it out: docstring and `...`."""
    ...


def notebook_scaffold(notebook: str, function: str):
    """The student's function as notebook ``notebook`` hands it out, defined from its code cell."""
    cells = json.loads((config.REPO_ROOT / "notebooks" / f"{notebook}.ipynb").read_text(encoding="utf-8"))
    for cell in cells["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or f"def {function}(" not in source:
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name == function:
                namespace = {}
                exec(compile(ast.Module([node], []), notebook, "exec"), namespace)
                return namespace[function], source
    raise AssertionError(f"{notebook} has no code cell defining {function}")


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


# --- the interface the notebooks and the autograder use ------------------------------------------


def test_graded_names_every_check_with_its_notebook_and_function():
    assert set(checks.GRADED) == set(CHECKS)
    for check_name, (notebook, function) in checks.GRADED.items():
        _, cell = notebook_scaffold(notebook, function)
        assert f"checks.{check_name}({function})" in cell, f"{notebook} does not grade {function}"


@pytest.mark.parametrize("check_name", CHECKS)
def test_the_notebooks_scaffold_is_not_written_yet(check_name, capsys):
    scaffold, _ = notebook_scaffold(*checks.GRADED[check_name])
    started = time.perf_counter()
    result, line = graded(getattr(checks, check_name), scaffold, capsys)
    assert result is False and line.startswith("…") and "not written yet" in line
    assert "continues with the workbook's version" in line
    assert time.perf_counter() - started < 5, "a scaffold is not run, so check_training trains nothing"


@pytest.mark.parametrize("check_name", CHECKS)
def test_every_check_takes_hidden_quiet_and_a_time_limit_by_keyword(check_name):
    parameters = inspect.signature(getattr(checks, check_name)).parameters
    first, *options = parameters.values()
    assert first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert {p.name: p.default for p in options} == {"hidden": False, "quiet": False, "seconds_per_case": None}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options)


# --- the workbook's own function passes, hidden cases included; a scaffold is 'not written yet' -

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
def test_the_workbook_function_passes_the_hidden_cases_too(check_name, capsys):
    result, line = graded(getattr(checks, check_name), WORKBOOK[check_name], capsys, hidden=True)
    assert result is True and line.startswith("✓") and "of them hidden" in line


@pytest.mark.parametrize("check_name", CHECKS)
def test_an_unanswered_scaffold_is_not_written_yet(check_name, capsys):
    result, line = graded(getattr(checks, check_name), unanswered, capsys)
    assert result is False and "not written yet" in line and "continues with the workbook's version" in line


def test_code_that_returns_nothing_is_told_of_its_missing_return(capsys):
    def rollout(scores):
        mean = scores.mean(axis=2)  # written, but never returned
        del mean

    result, line = graded(checks.check_rollout, rollout, capsys)
    assert result is False and "not written yet" not in line
    assert "returned None" in line and "missing `return`" in line


@pytest.mark.parametrize("check_name", CHECKS)
def test_quiet_prints_nothing(check_name, capsys):
    assert getattr(checks, check_name)(unanswered, quiet=True) is False
    assert capsys.readouterr().out == ""


def test_quiet_prints_nothing_on_a_pass_or_a_failure_either(capsys):
    assert checks.check_haversine(geo.haversine_km, quiet=True) is True
    assert checks.check_haversine(lambda *a: _haversine(*a, factor=1.0), quiet=True) is False
    assert capsys.readouterr().out == ""


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


def _one_start_sides(lnglat, seed=0):
    """The rule with scikit-learn's default n_init (one start for k-means++): no n_init=10."""
    side = KMeans(n_clusters=2, random_state=seed).fit_predict(lnglat)
    north = int(lnglat[side == 1, 1].mean() > lnglat[side == 0, 1].mean())
    return (side != north).astype(int)


def _zeroing_attention(q, k, v):
    """Zeroes its inputs in place, then answers right on what is left: all zeros."""
    for array in (q, k, v):
        array[...] = 0
    return vit_from_scratch.scaled_dot_product_attention(q, k, v)


def _moving_centroids(latlng, centroids, tau):
    """Moves the centroids in place, then answers right for the moved centroids."""
    centroids += np.float32(0.5)
    return losses.haversine_targets(
        np.column_stack([np.zeros(len(latlng)), latlng]).astype("float32"), centroids, tau
    )


def _first_layer_only(scores):
    """Right with one layer; with several it uses the first layer's mean every time."""
    return _rollout(np.repeat(scores[:, :1], scores.shape[1], axis=1))


def _fit_with_metrics(metrics):
    def train(classifier, train_data, val_data, optimizer):
        classifier.compile(optimizer=optimizer, loss=losses.cross_entropy, metrics=metrics())
        return classifier.fit(train_data, validation_data=val_data, epochs=1, verbose=0, shuffle=False)

    return train


def _metrics_named_like_the_workbooks():
    """'top3' as the workbook's, and an 'accuracy' that counts predictions of cell 0."""
    import keras

    def predicts_cell_0(y_true, y_pred):
        return ops.cast(ops.argmax(y_pred, axis=-1) == 0, "float32")

    top3 = losses.accuracy_metrics()[1]
    return [keras.metrics.MeanMetricWrapper(predicts_cell_0, name="accuracy"), top3]


# {check: {wrong answer: (the function, a fragment of the hint it must get, or None)}}
WRONG = {
    "check_split_rule": {
        "a constant": (lambda lnglat, seed=0: np.zeros(len(lnglat), dtype=int), "all points on one side"),
        "K-means' own numbering (no north rule)": (
            lambda lnglat, seed=0: _kmeans_sides(lnglat, seed),
            "halves swapped",
        ),
        "the southern half numbered 0": (
            lambda lnglat, seed=0: 1 - geo.split_in_two(lnglat, seed),
            "halves swapped",
        ),
        "sides 1 and 2 (off by one)": (
            lambda lnglat, seed=0: geo.split_in_two(lnglat, seed) + 1,
            "numbered 1 and 2",
        ),
        "K-means started once (no n_init=10)": (_one_start_sides, "single start"),
    },
    "check_haversine": {
        "a constant": (lambda lat1, lng1, lat2, lng2: np.full(np.broadcast(lat1, lat2).shape, 100.0), None),
        "a missing factor 2": (lambda *a: _haversine(*a, factor=1.0), "factor 2"),
        "degrees into the sine": (lambda *a: _haversine(*a, to_radians=False), "np.radians"),
        "(lng, lat) swapped": (
            lambda lat1, lng1, lat2, lng2: _haversine(lng1, lat1, lng2, lat2),
            "latitude and longitude swapped",
        ),
    },
    "check_attention": {
        "a constant": (
            lambda q, k, v: (ops.zeros_like(q), ops.zeros(q.shape[:-1] + (k.shape[-2],))),
            "rows do not sum to 1",
        ),
        "a missing scale factor 1/√d": (lambda q, k, v: _attention(q, k, v, scale=False), "no scale"),
        "softmax over the queries (axis -2)": (
            lambda q, k, v: _attention(q, k, v, axis=-2),
            "softmax over the wrong axis",
        ),
        "transposed weights": (lambda q, k, v: _attention(q, k, v, transpose_weights=True), "transposed"),
        "q, k and v zeroed in place": (_zeroing_attention, "changes its arguments in place"),
    },
    "check_encoder_block": {
        "a constant": (lambda x, w, heads, epsilon=1e-6: (ops.zeros_like(x), None), None),
        "post-LayerNorm": (lambda *a: _block(*a, post_norm=True), "reads LN(x)"),
        "no residual connections": (lambda *a: _block(*a, residual=False), "residual connections missing"),
    },
    "check_training": {
        "two epochs": (_fit(epochs=2), "epochs=1"),
        "no validation data": (_fit(validation=False), "validation_data"),
        "Keras' sparse cross-entropy on [cell, lat, lng] labels": (_fit(loss="keras"), None),
        "returns the model, not the history": (_fit(give_back="model"), "not the model"),
        "Keras' own metrics=['accuracy']": (_fit_with_metrics(lambda: ["accuracy"]), "accuracy_metrics()"),
        "another metric named 'accuracy'": (
            _fit_with_metrics(_metrics_named_like_the_workbooks),
            "misreads [cell, lat, lng] labels",
        ),
    },
    "check_eq1_loss": {
        "a constant": (lambda cells, p, d: ops.ones((p.shape[0],)), None),
        "the square missing": (lambda cells, p, d: ops.sum(p * _rows(d, cells), axis=-1), "square missing"),
        "summed over the batch (axis 0)": (
            lambda cells, p, d: ops.sum(ops.square(p * _rows(d, cells)), axis=0),
            "one value per image",
        ),
        "NumPy, no gradient": (
            lambda cells, p, d: np.square((np.asarray(p) * np.asarray(d)[cells]).sum(-1)),
            "keras.ops",
        ),
    },
    "check_eq3_loss": {
        "log p instead of log(1 - p)": (
            lambda cells, p, d: ops.sum(-ops.log(ops.clip(p, 1e-7, 1.0)) * _rows(d, cells), axis=-1),
            "log p instead",
        ),
        "no clipping (p = 1 gives infinity)": (
            lambda cells, p, d: ops.sum(-ops.log(1.0 - p) * _rows(d, cells), axis=-1),
            "clip 1 - p",
        ),
        "the minus sign missing": (
            lambda cells, p, d: ops.sum(ops.log(ops.clip(1.0 - p, 1e-7, 1.0)) * _rows(d, cells), axis=-1),
            "minus sign",
        ),
    },
    "check_smoothed_targets": {
        "a constant": (
            lambda latlng, centroids, tau: ops.ones((len(latlng), len(centroids))),
            "every target is 1",
        ),
        "the minimum not subtracted": (lambda *a: _targets(*a, subtract_min=False), "own smallest distance"),
        "renormalised rows": (lambda *a: _targets(*a, renormalise=True), "renormalised"),
        "the minimum over images (axis 0)": (lambda *a: _targets(*a, min_axis=0), "(axis -1)"),
        "tau multiplied, not divided": (
            lambda latlng, centroids, tau: _targets(latlng, centroids, 1 / tau),
            "tau multiplied",
        ),
        "centroids moved in place": (_moving_centroids, "changes its arguments in place"),
    },
    "check_rollout": {
        "a constant": (lambda scores: np.ones((len(scores), 4, 4)), "one √T x √T grid"),
        "no residual": (lambda scores: _rollout(scores, residual=False), "residual missing"),
        "layers multiplied in reverse order": (lambda scores: _rollout(scores, left=False), "wrong order"),
        "the class token's column (transposed)": (lambda scores: _rollout(scores, column=True), "column"),
        "only the last layer": (lambda scores: _rollout(scores, last_only=True), "only the last layer"),
        "the first layer's attention for every layer": (
            _first_layer_only,
            "passes with one layer but not with 2",
        ),
    },
}
WRONG_CASES = [(check, wrong) for check, answers in WRONG.items() for wrong in answers]


def test_every_check_has_wrong_answers():
    assert set(WRONG) == set(CHECKS)


@pytest.mark.parametrize(("check_name", "wrong"), WRONG_CASES, ids=[f"{c}-{w}" for c, w in WRONG_CASES])
def test_a_wrong_answer_fails_with_one_line_and_a_hint(check_name, wrong, capsys):
    answer, hint = WRONG[check_name][wrong]
    result, line = graded(getattr(checks, check_name), answer, capsys)
    assert result is False, f"{check_name} accepted {wrong}"
    assert line.startswith("✗") and "continues with the workbook's version" in line
    assert " on " in line, "the line names the input where the answer differs"
    if hint is not None:
        assert "Hint: " in line and hint in line, line
    assert not _PLURAL_WITH_SINGULAR_VERB.search(line), f"grammar: {line}"


def test_a_failure_names_the_input_and_the_size_of_the_difference(capsys):
    result, line = graded(checks.check_haversine, lambda *a: _haversine(*a, factor=1.0), capsys)
    assert result is False
    assert "on Aarhus to Odense as plain floats" in line, "the simplest case comes first"
    assert "the distance (km) differs from the workbook's by up to" in line and "expected" in line


def test_an_axis_mistake_is_named_on_the_smallest_case(capsys):
    result, line = graded(checks.check_attention, lambda q, k, v: _attention(q, k, v, axis=-2), capsys)
    assert result is False and "on 1 image, 1 head, 3 tokens, d = 2, the attention weights differ" in line


def test_the_three_villages_need_ten_kmeans_starts():
    """The split-rule case where n_init matters: one start and ten cut differently, for the seeds
    the check uses (0 shown, 4 and 11 hidden), and ten starts agree with geo.split_in_two."""
    villages = checks._three_villages()
    for seed in (0, 4, 11):
        workbook = geo.split_in_two(villages, seed=seed)
        ten = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(villages)
        one = KMeans(n_clusters=2, n_init=1, random_state=seed).fit_predict(villages)
        assert (ten == workbook).all() or (ten != workbook).all()
        assert not ((one == workbook).all() or (one != workbook).all()), f"seed {seed}: one start suffices"


def test_a_split_rule_without_ten_starts_fails_on_the_three_villages(capsys):
    result, line = graded(checks.check_split_rule, _one_start_sides, capsys)
    assert result is False and "on three villages in a row" in line and "n_init=1" in line


# --- right answers the old checks refused --------------------------------------------------------


def _attention_scaling_q_in_place(q, k, v):
    q /= np.sqrt(q.shape[-1])  # changes the caller's q: the check gives each call its own copy
    weights = ops.softmax(ops.matmul(q, ops.swapaxes(k, -1, -2)), axis=-1)
    return ops.matmul(weights, v), weights


def _attention_in_float64_numpy(q, k, v):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v, weights


def _targets_in_float64_numpy(latlng, centroids, tau_km):
    latlng, centroids = np.asarray(latlng, dtype=float), np.asarray(centroids, dtype=float)
    km = _haversine(latlng[:, None, 0], latlng[:, None, 1], centroids[None, :, 0], centroids[None, :, 1])
    return np.exp(-(km - km.min(axis=-1, keepdims=True)) / tau_km)


def _rollout_scaling_scores_in_place(scores):
    scores *= 2.0  # the caller's scores: the check gives each call its own copy
    return _rollout(scores / 2.0)


RIGHT = {
    "check_attention": {
        "q /= √d in place": _attention_scaling_q_in_place,
        "NumPy in float64": _attention_in_float64_numpy,
    },
    "check_smoothed_targets": {"NumPy in float64": _targets_in_float64_numpy},
    "check_rollout": {"scores changed in place": _rollout_scaling_scores_in_place},
    "check_split_rule": {"sides as booleans": lambda lnglat, seed=0: geo.split_in_two(lnglat, seed) == 1},
}
RIGHT_CASES = [(check, right) for check, answers in RIGHT.items() for right in answers]


@pytest.mark.parametrize(("check_name", "right"), RIGHT_CASES, ids=[f"{c}-{r}" for c, r in RIGHT_CASES])
def test_a_right_answer_in_another_form_passes(check_name, right, capsys):
    result, line = graded(getattr(checks, check_name), RIGHT[check_name][right], capsys, hidden=True)
    assert result is True, line


# --- answers that try to crash, hang or exhaust the check ----------------------------------------


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("a message that cannot be read")


def _exits(*args):
    sys.exit(3)


def _interrupts(*args):
    raise KeyboardInterrupt


def _raises_unprintable(*args):
    raise _Unprintable()


@pytest.mark.parametrize(
    ("answer", "reported"),
    [(_exits, "SystemExit"), (_interrupts, "KeyboardInterrupt"), (_raises_unprintable, "_Unprintable")],
    ids=["sys.exit", "KeyboardInterrupt", "an exception whose str() raises"],
)
def test_what_the_answer_raises_is_reported_not_raised(answer, reported, capsys):
    result, line = graded(checks.check_rollout, answer, capsys)
    assert (
        result is False and f"raised {reported}" in line and "continues with the workbook's version" in line
    )


def test_an_answer_that_raises_names_its_error(capsys):
    def broken(scores):
        raise KeyError("layer")

    result, line = graded(checks.check_rollout, broken, capsys)
    assert result is False and "raised KeyError: 'layer'" in line


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="SIGINT: main thread")
def test_a_real_ctrl_c_still_stops_the_check():
    before = signal.getsignal(signal.SIGINT)

    def pressed(scores):
        os.kill(os.getpid(), signal.SIGINT)  # what Jupyter's interrupt button sends the kernel
        for _ in range(10**7):  # the handler runs at the next Python step
            pass
        return attention.rollout(scores)

    with pytest.raises(KeyboardInterrupt):
        checks.check_rollout(pressed)
    assert signal.getsignal(signal.SIGINT) is before


def _endless(*args):
    while True:
        pass


def _endless_and_swallowing(*args):
    while True:
        try:  # noqa: SIM105 (the point: an answer that swallows everything, the time limit too)
            sum(range(1000))
        except BaseException:
            pass


def _sleeping(*args):
    time.sleep(3600)


@pytest.mark.parametrize("answer", [_endless, _endless_and_swallowing, _sleeping], ids=lambda f: f.__name__)
def test_an_endless_answer_stops_at_the_time_limit(answer, capsys):
    tracer, timer = sys.gettrace(), signal.getitimer(signal.ITIMER_REAL)
    started = time.perf_counter()
    result, line = graded(checks.check_haversine, answer, capsys, seconds_per_case=0.3)
    assert time.perf_counter() - started < 10
    assert result is False and "on Aarhus to Odense as plain floats" in line and "time limit of 0.3 s" in line
    assert sys.gettrace() is tracer and signal.getitimer(signal.ITIMER_REAL) == timer, "left as found"
    assert checks.check_haversine(geo.haversine_km, quiet=True), "and the next check runs normally"


@pytest.mark.parametrize("answer", [_endless, _endless_and_swallowing], ids=lambda f: f.__name__)
def test_the_time_limit_holds_off_the_main_thread(answer, capsys):
    """Where SIGALRM cannot serve (Windows, a worker thread), the watchdog thread stops the answer."""
    results = []
    worker = threading.Thread(
        target=lambda: results.append(checks.check_haversine(answer, seconds_per_case=0.3))
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and results == [False]
    assert "time limit of 0.3 s" in capsys.readouterr().out


def test_a_huge_broadcast_view_is_refused_by_its_size_without_a_copy(capsys):
    """A (60000, 60000) view of one number is 26.8 GiB once copied: the check reads its shape only."""

    def huge(lat1, lng1, lat2, lng2):
        return np.broadcast_to(np.float64(100.0), (60000, 60000))

    tracemalloc.start()
    try:
        started = time.perf_counter()
        result, line = graded(checks.check_haversine, huge, capsys)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is False and "shape (60000, 60000) (3,600,000,000 numbers)" in line
    assert seconds < 10 and peak < 50 * 2**20, (seconds, peak)


# --- hidden cases ---------------------------------------------------------------------------------


def _haversine_for_flat_arrays_only(lat1, lng1, lat2, lng2):
    """Right on the notebook's cases (floats and 1-D arrays), wrong on a 2-D grid."""
    km = _haversine(lat1, lng1, lat2, lng2)
    return km if np.ndim(km) < 2 else km.T.copy().reshape(km.shape)


def test_hidden_cases_run_only_when_asked_and_show_no_inputs(capsys):
    result, line = graded(checks.check_haversine, _haversine_for_flat_arrays_only, capsys)
    assert result is True and "hidden" not in line
    result, line = graded(checks.check_haversine, _haversine_for_flat_arrays_only, capsys, hidden=True)
    assert result is False and "on hidden case 1," in line
    assert "index" not in line and "got" not in line, "no index or value of a hidden input"
