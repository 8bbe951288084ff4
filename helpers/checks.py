"""Graded "Your turn" cells: each check compares a student's function with the workbook's.

A check runs the student's function and the workbook's on the same inputs, random ones and
edge cases, and compares shapes, dtypes, values and, for losses, gradients. It prints one
line and returns True or False; it never raises, so a notebook runs on whatever the student
wrote. A function whose body is still ``...`` returns None: the check says it is not written
yet, and the notebook continues with the workbook's version::

    ok = checks.check_haversine(haversine)
    distance = haversine if ok else geo.haversine_km

Checks, by notebook: 02 :func:`check_split_rule`; 04 :func:`check_haversine`; 05
:func:`check_attention`, :func:`check_encoder_block`; 06 :func:`check_training`; 07
:func:`check_eq1_loss`, :func:`check_eq3_loss`, :func:`check_smoothed_targets`; 09
:func:`check_rollout`. Worked answers are in ``solutions/`` ("Your turn" sections).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np

PASSED, FAILED, WAITING = "✓", "✗", "…"
CONTINUES = "the notebook continues with the workbook's version"


class _Differs(Exception):
    """Raised inside a check when an answer differs; the message is the line to print."""


def _say(mark: str, name: str, text: str) -> None:
    print(f"{mark} Your turn, {name}: {text}")


def _as_numpy(value) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(value))


def _describe(value: np.ndarray) -> str:
    return f"shape {tuple(value.shape)}, dtype {value.dtype}"


def _compare(got, want, case: str, what: str = "the result", rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Raise :class:`_Differs` naming ``case`` unless ``got`` matches ``want`` in shape, kind and value."""
    got, want = _as_numpy(got), _as_numpy(want)
    if got.shape != want.shape:
        raise _Differs(f"on {case}, {what} has shape {tuple(got.shape)}; expected {tuple(want.shape)}.")
    if want.dtype.kind == "f" and got.dtype.kind not in "f":
        raise _Differs(f"on {case}, {what} is {got.dtype}; expected floating point numbers ({want.dtype}).")
    if want.dtype.kind in "iu" and got.dtype.kind not in "iub":
        raise _Differs(f"on {case}, {what} is {got.dtype}; expected integers ({want.dtype}).")
    got_f, want_f = got.astype("float64"), want.astype("float64")
    if np.isfinite(want_f).all() and not np.isfinite(got_f).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(got_f))[0])
        raise _Differs(f"on {case}, {what} holds {got_f[where]} at index {where}; expected finite numbers.")
    if not np.allclose(got_f, want_f, rtol=rtol, atol=atol, equal_nan=True):
        error = np.abs(got_f - want_f)
        where = np.unravel_index(np.nanargmax(error), error.shape) if error.ndim else ()
        where = tuple(int(i) for i in where)
        raise _Differs(
            f"on {case}, {what} differs by up to {error[where]:.3g} (index {where}: "
            f"got {got_f[where]:.6g}, expected {want_f[where]:.6g})."
        )


def _grade(name: str, cases: Iterable[tuple[str, Callable, Callable]], compare, passed: str) -> bool:
    """Run ``student()`` and ``reference()`` of every case and compare; print one line; never raise.

    ``compare(got, want, case)`` raises :class:`_Differs` with the sentence to print.
    """
    try:
        for number, (case, student, reference) in enumerate(cases):
            try:
                got = student()
            except Exception as error:  # the student's code: any error is a finding, not a crash
                _say(
                    FAILED,
                    name,
                    f"on {case} your function raised {type(error).__name__}: {error}. "
                    f"{CONTINUES.capitalize()}.",
                )
                return False
            if got is None or got is Ellipsis:
                if number == 0:
                    _say(WAITING, name, f"not written yet (it returns None); {CONTINUES}.")
                else:
                    _say(FAILED, name, f"on {case} your function returned None. {CONTINUES.capitalize()}.")
                return False
            compare(got, reference(), case)
    except _Differs as differs:
        _say(FAILED, name, f"{differs} {CONTINUES.capitalize()}.")
        return False
    except Exception as error:  # a check must never stop the notebook
        _say(
            FAILED, name, f"could not be checked ({type(error).__name__}: {error}). {CONTINUES.capitalize()}."
        )
        return False
    _say(PASSED, name, passed)
    return True


# --- 02: the splitting rule -------------------------------------------------------------------


def check_split_rule(split_in_two) -> bool:
    """Notebook 02: ``split_in_two(lnglat, seed)`` against :func:`helpers.geo.split_in_two`.

    Inputs: two clouds of points side by side, one above the other, a Danish city's worth of
    random points, and two points. The sides must be equal point for point (0 = northern half).
    """
    from helpers import geo

    rng = np.random.default_rng(2)
    stacked = np.concatenate(
        [rng.normal([10.2, 56.3], 0.02, (40, 2)), rng.normal([10.2, 56.1], 0.02, (25, 2))]
    )
    beside = np.concatenate(
        [rng.normal([12.3, 55.7], 0.02, (30, 2)), rng.normal([12.6, 55.68], 0.02, (30, 2))]
    )
    city = np.column_stack([rng.uniform(12.45, 12.65, 300), rng.uniform(55.6, 55.75, 300)])
    two = np.array([[9.9, 57.0], [10.0, 56.0]])
    cases = [
        (
            f"{name} (lnglat {points.shape}, seed {seed})",
            lambda p=points, s=seed: split_in_two(p.copy(), seed=s),
            lambda p=points, s=seed: geo.split_in_two(p, seed=s),
        )
        for name, points, seed in (
            ("two clouds, one north of the other", stacked, 0),
            ("two clouds side by side", beside, 0),
            ("300 random points in Copenhagen", city, 3),
            ("two points", two, 0),
        )
    ]

    def compare(got, want, case):
        got = np.asarray(got)
        _compare(got, want, case, "the sides")
        if set(np.unique(got)) != {0, 1}:
            raise _Differs(f"on {case}, the sides are {sorted(np.unique(got))}; expected 0 and 1.")

    return _grade(
        "the splitting rule",
        cases,
        compare,
        "the same two halves as geo.split_in_two on 4 inputs, the northern half numbered 0.",
    )


# --- 04: haversine ----------------------------------------------------------------------------


def check_haversine(haversine) -> bool:
    """Notebook 04: ``haversine(lat1, lng1, lat2, lng2)`` in km against :func:`helpers.geo.haversine_km`.

    Inputs: random pairs in Denmark (arrays), one point against many (broadcasting), plain
    floats, a point to itself (0 km), pairs across the globe and across the date line.
    Values must agree to 1 part in a million.
    """
    from helpers import geo

    rng = np.random.default_rng(4)
    lat1, lat2 = rng.uniform(54.5, 57.8, (2, 50))
    lng1, lng2 = rng.uniform(8.0, 15.2, (2, 50))
    inputs = {
        "50 random pairs in Denmark": (lat1, lng1, lat2, lng2),
        "Copenhagen against 50 points (broadcasting)": (55.6761, 12.5683, lat2, lng2),
        "Aarhus to Odense as plain floats": (56.1572, 10.2107, 55.4038, 10.4024),
        "a point to itself": (
            np.array([55.0, 56.0]),
            np.array([10.0, 11.0]),
            np.array([55.0, 56.0]),
            np.array([10.0, 11.0]),
        ),
        "Copenhagen to Sydney and to Quito": (
            55.6761,
            12.5683,
            np.array([-33.87, -0.18]),
            np.array([151.21, -78.47]),
        ),
        "across the date line (Fiji to Samoa)": (-17.7, 178.0, -13.8, -172.1),
    }
    cases = [
        (case, lambda a=args: haversine(*a), lambda a=args: geo.haversine_km(*a))
        for case, args in inputs.items()
    ]

    def compare(got, want, case):
        _compare(got, want, case, "the distance (km)", rtol=1e-6, atol=1e-6)

    return _grade(
        "haversine",
        cases,
        compare,
        "the same km as geo.haversine_km on 6 inputs, Denmark, the globe and broadcasting.",
    )


# --- 05: attention and the encoder block ------------------------------------------------------


def _random(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype("float32")


def check_attention(attention) -> bool:
    """Notebook 05: ``attention(q, k, v)`` -> (output, weights) against
    :func:`helpers.vit_from_scratch.scaled_dot_product_attention`.

    q, k, v: (n, H, T+1, d). Inputs: random tokens of a few shapes, two tokens, d = 1, and
    large values (a softmax must not overflow). Both the output (n, H, T+1, d) and the
    weights (n, H, T+1, T+1) must match.
    """
    from helpers import vit_from_scratch

    rng = np.random.default_rng(5)
    shapes = {
        "2 images, 4 heads, 17 tokens, d = 8": (2, 4, 17, 8),
        "1 image, 2 heads, 5 tokens, d = 16": (1, 2, 5, 16),
        "two tokens": (3, 2, 2, 4),
        "d = 1": (2, 1, 6, 1),
    }
    inputs = {case: tuple(_random(rng, *shape) for _ in range(3)) for case, shape in shapes.items()}
    inputs["large values (x 30)"] = tuple(_random(rng, 2, 2, 9, 8, scale=30.0) for _ in range(3))
    cases = [
        (case, lambda a=qkv: attention(*a), lambda a=qkv: vit_from_scratch.scaled_dot_product_attention(*a))
        for case, qkv in inputs.items()
    ]

    def compare(got, want, case):
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise _Differs(f"on {case}, return two things, (output, weights); got {type(got).__name__}.")
        _compare(got[1], want[1], case, "the attention weights", rtol=1e-4, atol=1e-5)
        _compare(got[0], want[0], case, "the output", rtol=1e-4, atol=1e-4)

    return _grade(
        "scaled dot-product attention",
        cases,
        compare,
        "the same output and weights as the workbook's on 5 inputs, large values included.",
    )


def random_block_weights(rng, width: int, heads: int, mlp: int) -> dict:
    """Random weights of one encoder block, named as in `vit_from_scratch.weights_from_backbone`."""
    block = {f"w{name}": _random(rng, width, width, scale=width**-0.5) for name in "qkvo"}
    block |= {f"b{name}": _random(rng, width, scale=0.1) for name in "qkvo"}
    block |= {
        "ln1_gamma": 1 + _random(rng, width, scale=0.1),
        "ln1_beta": _random(rng, width, scale=0.1),
        "ln2_gamma": 1 + _random(rng, width, scale=0.1),
        "ln2_beta": _random(rng, width, scale=0.1),
        "w1": _random(rng, width, mlp, scale=width**-0.5),
        "b1": _random(rng, mlp, scale=0.1),
        "w2": _random(rng, mlp, width, scale=mlp**-0.5),
        "b2": _random(rng, width, scale=0.1),
    }
    return block


def check_encoder_block(encoder_block) -> bool:
    """Notebook 05: ``encoder_block(x, w, heads, epsilon)`` -> (tokens, weights) against
    :func:`helpers.vit_from_scratch.encoder_block`.

    x: (n, T+1, D) tokens; w: one block's weights as in ``weights["blocks"][0]``. Inputs:
    random blocks of three sizes, one with offset inputs (LayerNorm must come first).
    """
    from helpers import vit_from_scratch

    rng = np.random.default_rng(6)
    inputs = []
    for case, (n, tokens, width, heads, mlp, shift) in {
        "2 images, 17 tokens, D = 16, 4 heads": (2, 17, 16, 4, 32, 0.0),
        "1 image, 5 tokens, D = 8, 2 heads, inputs around 3": (1, 5, 8, 2, 16, 3.0),
        "two tokens, D = 12, 3 heads": (2, 2, 12, 3, 24, 0.0),
    }.items():
        inputs.append(
            (
                case,
                _random(rng, n, tokens, width) + shift,
                random_block_weights(rng, width, heads, mlp),
                heads,
            )
        )
    cases = [
        (
            case,
            lambda a=(x, w, h): encoder_block(*a, 1e-6),
            lambda a=(x, w, h): vit_from_scratch.encoder_block(*a, 1e-6),
        )
        for case, x, w, h in inputs
    ]

    def compare(got, want, case):
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise _Differs(
                f"on {case}, return two things, (tokens, attention weights); got {type(got).__name__}."
            )
        _compare(got[1], want[1], case, "the attention weights", rtol=1e-4, atol=1e-5)
        _compare(got[0], want[0], case, "the tokens", rtol=1e-4, atol=1e-4)

    return _grade(
        "the encoder block",
        cases,
        compare,
        "the same tokens and weights as the workbook's pre-LayerNorm block on 3 inputs.",
    )


# --- 06: compile and fit -------------------------------------------------------------------------


def train_one_epoch_reference(classifier, train_data, val_data, optimizer):
    """The workbook's answer to notebook 06's Your turn: compile, then fit one epoch.

    Cross-entropy on the head's probabilities (:func:`helpers.losses.cross_entropy`, which
    reads the cell from the pipeline's [cell, lat, lng] labels), top-1 and top-3 accuracy.
    Returns the ``History`` of ``fit``.
    """
    from helpers import losses

    classifier.compile(optimizer=optimizer, loss=losses.cross_entropy, metrics=losses.accuracy_metrics())
    return classifier.fit(train_data, validation_data=val_data, epochs=1, verbose=0, shuffle=False)


def _tiny_training_case(seed: int = 0):
    """A small softmax classifier and a labelled pipeline like the workbook's: (model, train, val)."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    n_cells, size = 5, 8
    images = rng.uniform(0, 255, (48, size, size, 3)).astype("float32")
    cells = rng.integers(0, n_cells, 48)
    labels = np.column_stack([cells, rng.uniform(54.6, 57.7, 48), rng.uniform(8.1, 15.1, 48)]).astype(
        "float32"
    )
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(n_cells, activation="softmax"),
        ]
    )
    train = tf.data.Dataset.from_tensor_slices((images[:32], labels[:32])).batch(8)
    val = tf.data.Dataset.from_tensor_slices((images[32:], labels[32:])).batch(16)
    return model, train, val


def check_training(train_one_epoch) -> bool:
    """Notebook 06: ``train_one_epoch(classifier, train_data, val_data, optimizer)`` against
    :func:`train_one_epoch_reference`, on a small softmax classifier and a pipeline of
    (images 0-255, [cell, lat, lng] labels) batches like the workbook's.

    Both start from the same weights with a fresh AdamW; after the call the history must
    hold one epoch with validation and accuracy columns, and the loss and the trained
    weights must be the reference's.
    """
    import keras

    def run(function):
        model, train, val = _tiny_training_case()
        with warnings.catch_warnings():  # Keras' advice (e.g. on shuffle) is not the check's line
            warnings.simplefilter("ignore")
            history = function(model, train, val, keras.optimizers.AdamW(learning_rate=1e-2))
        return None if history is None else (history, model)

    case = "a small softmax classifier, 4 batches of 8 images"

    def compare(got, want, case):
        if not isinstance(got[0], keras.callbacks.History):
            raise _Differs(
                f"on {case}, return what model.fit returns (a History); got {type(got[0]).__name__}."
            )
        (history, model), (reference, trained) = got, want
        logged = history.history
        if len(logged.get("loss", [])) != 1:
            raise _Differs(
                f"on {case}, the history holds {len(logged.get('loss', []))} epochs; train for one."
            )
        for column in ("val_loss", "accuracy"):
            if column not in logged:
                raise _Differs(
                    f"on {case}, the history has no {column!r} "
                    f"({'pass validation_data' if column == 'val_loss' else 'compile with metrics'})."
                )
        _compare(
            logged["loss"][0], reference.history["loss"][0], case, "the training loss", rtol=1e-4, atol=1e-5
        )
        _compare(
            logged["val_loss"][0],
            reference.history["val_loss"][0],
            case,
            "the validation loss",
            rtol=1e-4,
            atol=1e-5,
        )
        for ours, theirs in zip(model.weights, trained.weights, strict=True):
            _compare(ours, theirs, case, f"the trained weights {ours.name!r}", rtol=1e-4, atol=1e-5)

    return _grade(
        "compile and fit",
        [(case, lambda: run(train_one_epoch), lambda: run(train_one_epoch_reference))],
        compare,
        "the same loss, metrics and trained weights as the workbook's one epoch.",
    )


# --- 07: the losses -------------------------------------------------------------------------------


def _loss_inputs(rng, n_cells: int = 6, batch: int = 5):
    """Cells (batch,), probabilities (batch, n_cells) and a normalised symmetric distance matrix."""
    points = rng.uniform(0, 1, (n_cells, 2))
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    d = (d / d.max()).astype("float32")
    logits = rng.normal(size=(batch, n_cells)) * 2
    probabilities = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    cells = rng.integers(0, n_cells, batch).astype("int32")
    return cells, probabilities, d


def _gradient(function, probabilities):
    """d sum(function(p)) / dp on the Keras backend (TensorFlow or JAX), or None if there is none."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        p = tf.constant(probabilities)
        with tf.GradientTape() as tape:
            tape.watch(p)
            total = tf.reduce_sum(function(p))
        gradient = tape.gradient(total, p)
        return None if gradient is None else gradient.numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda p: function(p).sum())(probabilities))
    raise NotImplementedError(f"gradients are checked on TensorFlow or JAX, not {backend}")


def _loss_check(name: str, student, reference, cases, passed: str) -> bool:
    """Values and gradients (with respect to the probabilities) of a loss against the reference."""

    def compare(got, want, case):
        got_value, args = got
        want_value, _ = want
        _compare(got_value, want_value, case, "the loss per image", rtol=1e-4, atol=1e-6)
        cells, probabilities, d = args
        got_gradient = _gradient(lambda p: student(cells, p, d), probabilities)
        if got_gradient is None:
            raise _Differs(
                f"on {case}, your loss has no gradient with respect to the probabilities: "
                "write it with keras.ops, not NumPy, so the model can learn from it."
            )
        want_gradient = _gradient(lambda p: reference(cells, p, d), probabilities)
        _compare(got_gradient, want_gradient, case, "the gradient", rtol=1e-3, atol=1e-5)

    graded = [
        (case, lambda a=args: _pair(student(*a), a), lambda a=args: (reference(*a), a))
        for case, args in cases
    ]
    return _grade(name, graded, compare, passed)


def _pair(value, args):
    return None if value is None else (value, args)


def _eq_cases(rng):
    cells, probabilities, d = _loss_inputs(rng)
    sure = np.eye(6, dtype="float32")[[0, 3, 5]]  # all mass on one cell: right, and far off
    return [
        ("5 images, 6 cells, random probabilities", (cells, probabilities, d)),
        ("3 images sure of one cell (two right, one wrong)", (np.array([0, 3, 1], "int32"), sure, d)),
        ("1 image", (cells[:1], probabilities[:1], d)),
    ]


def check_eq1_loss(eq1_loss) -> bool:
    """Notebook 07: ``eq1_loss(cells, probabilities, d)`` -> (batch,), the report's equation (1),
    against :func:`helpers.losses.expected_distance_squared`: values and gradients."""
    from helpers import losses

    def reference(cells, probabilities, d):
        return losses.expected_distance_squared(d)(cells, probabilities)

    return _loss_check(
        "equation (1)",
        eq1_loss,
        reference,
        _eq_cases(np.random.default_rng(7)),
        "the same loss and gradient as losses.expected_distance_squared on 3 inputs.",
    )


def check_eq3_loss(eq3_loss) -> bool:
    """Notebook 07: ``eq3_loss(cells, probabilities, d)`` -> (batch,), the report's equation (3),
    against :func:`helpers.losses.log_distance`: values and gradients, a probability of 1 included."""
    from helpers import losses

    def reference(cells, probabilities, d):
        return losses.log_distance(d)(cells, probabilities)

    return _loss_check(
        "equation (3)",
        eq3_loss,
        reference,
        _eq_cases(np.random.default_rng(8)),
        "the same loss and gradient as losses.log_distance on 3 inputs.",
    )


def check_smoothed_targets(smoothed_targets) -> bool:
    """Notebook 07: ``smoothed_targets(latlng, centroids, tau_km)`` -> (batch, n_cells) against
    :func:`helpers.losses.haversine_targets` (PIGEON's targets, not renormalised).

    Inputs: images at random places in Denmark, one image on a centroid, and three values of tau.
    """
    from helpers import losses

    rng = np.random.default_rng(9)
    centroids = np.column_stack([rng.uniform(54.7, 57.6, 8), rng.uniform(8.2, 15.0, 8)]).astype("float32")
    places = np.column_stack([rng.uniform(54.7, 57.6, 4), rng.uniform(8.2, 15.0, 4)]).astype("float32")
    inputs = [
        ("4 images, 8 cells, tau 75 km", places, 75.0),
        ("the same images, tau 15 km", places, 15.0),
        ("one image on a centroid, tau 200 km", centroids[2:3].copy(), 200.0),
    ]

    def reference(latlng, tau):
        labels = np.column_stack([np.zeros(len(latlng)), latlng]).astype("float32")
        return losses.haversine_targets(labels, centroids, tau)

    cases = [
        (case, lambda x=x, t=t: smoothed_targets(x, centroids, t), lambda x=x, t=t: reference(x, t))
        for case, x, t in inputs
    ]

    def compare(got, want, case):
        _compare(got, want, case, "the targets", rtol=1e-4, atol=1e-5)

    return _grade(
        "PIGEON's smoothed targets",
        cases,
        compare,
        "the same targets as losses.haversine_targets on 3 inputs.",
    )


# --- 09: attention rollout -------------------------------------------------------------------------


def random_attention(rng, images: int, layers: int, heads: int, tokens: int) -> np.ndarray:
    """Random attention weights (images, layers, heads, tokens, tokens), each row summing to 1."""
    logits = rng.normal(size=(images, layers, heads, tokens, tokens)) * 2
    weights = np.exp(logits)
    return (weights / weights.sum(-1, keepdims=True)).astype("float32")


def check_rollout(rollout) -> bool:
    """Notebook 09: ``rollout(scores)`` -> grids (images, rows, columns) against
    :func:`helpers.attention.rollout`.

    scores: (images, layers, heads, T+1, T+1). Inputs: random attention of 3 and 1 layers,
    a 2 x 2 patch grid, and attention that looks only at itself (rollout stays on the class token).
    """
    from helpers import attention

    rng = np.random.default_rng(10)
    identity = np.broadcast_to(np.eye(10, dtype="float32"), (1, 2, 2, 10, 10)).copy()
    inputs = [
        ("2 images, 3 layers, 4 heads, a 4 x 4 grid", random_attention(rng, 2, 3, 4, 17)),
        ("1 image, 1 layer, 2 heads, a 2 x 2 grid", random_attention(rng, 1, 1, 2, 5)),
        ("3 images, 2 layers, 1 head, a 3 x 3 grid", random_attention(rng, 3, 2, 1, 10)),
        ("every token attending only to itself", identity),
    ]
    cases = [(case, lambda s=s: rollout(s.copy()), lambda s=s: attention.rollout(s)) for case, s in inputs]

    def compare(got, want, case):
        _compare(got, want, case, "the rollout grid", rtol=1e-4, atol=1e-6)

    return _grade("attention rollout", cases, compare, "the same grids as attention.rollout on 4 inputs.")
