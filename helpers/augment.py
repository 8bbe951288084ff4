"""RandAugment as the report's authors ran it, vectorised over a batch with ``keras.ops``.

The authors' notebook (csiztom/dl-geolocation-vit, ``5-image-classification.ipynb``) used
``keras_cv.layers.RandAugment(value_range=[-1, 1], augmentations_per_image=2,
magnitude=0.15)``. This module rebuilds keras-cv's *standard policy*
(``keras_cv/layers/preprocessing/rand_augment.py`` and the layers it calls) for Keras 3,
where keras-cv is no longer maintained:

* 10 operations: auto-contrast, equalize, solarize, colour, contrast, brightness, shear x,
  shear y, translate x and translate y. No rotation, no posterize, no flip (a mirrored
  street would show left-hand traffic and mirrored signs).
* Each of the ``augmentations_per_image`` rounds picks one operation uniformly at random
  and applies it with probability ``rate`` (10/11, RandAugment's identity operation).
  Like keras-cv's pipeline, a skipped round returns the *original* image, dropping what
  earlier rounds did.
* Magnitudes at ``magnitude`` m (0.15 in the report), in pixel values 0-255:
  - solarize: add a ~ N(110 m, 110 s) clipped to [0, 110], then invert the pixels at or
    above a threshold t ~ N(255 (1 - m), 255 s) clipped to [0, 255] (at m = 0.15 only the
    brightest pixels, about 217 and above, are inverted: mostly sky);
  - colour: blend towards grey by f ~ N(m, s) clipped to [0, 1];
  - contrast: scale each channel about its mean by a factor uniform in [1 - m, 1 + m];
  - brightness: add a value uniform in [-255 m, 255 m];
  - shear: a shear of f ~ N(m, s) clipped to [0, 1], with a random sign, about the
    top-left corner (keras-cv's matrix); translate: a shift uniform in [-m, m] of the side;
    both bilinear with reflected borders;
  - auto-contrast and equalize have no magnitude.
  ``s`` is ``magnitude_stddev`` (0.15, keras-cv's default).

Every image draws its own operations and magnitudes. Each round splits the batch by
operation family (colour, as one 3 x 3 matrix and offset per image; solarize; equalize;
shear and translation along x; the same along y, each a 1-D bilinear resampling),
computes each family on its own images only and puts the images back in order, so a
round costs about one pass over the batch: cheap enough to run in the input pipeline
after ``.batch()``. The augmenter works on TensorFlow tensors in a ``tf.data`` map (graph
mode) and eagerly on NumPy arrays, with the TensorFlow backend (the split gives tensors
of data-dependent size). On another backend, called on NumPy arrays, it runs the
fixed-shape form below, compiled once on JAX (:func:`compiled_batch_augmenter`).

On an accelerator the same policy runs inside the training step (``on_device=True``,
:class:`RandAugmentLayer`): every family is computed on the whole batch and each image
keeps its own family's result, so every shape is fixed and the step compiles with XLA on
any Keras backend (TensorFlow, JAX, PyTorch). It costs about five passes over the batch,
which a GPU does in a fraction of a training step, and frees the 2 CPU cores of a Colab
machine from augmentation.

Where the randomness comes from: every call draws one table of seeds, one row for each
random draw the policy makes (which operation, whether the round applies, each
magnitude), and each draw reads its own row with a stateless random op. The table comes
from ``seed``: a (2,) integer tensor (the ``tf.data`` pipeline carries one per batch, so a
batch's augmentation is a function of its seed alone, whichever thread computes it and
whatever was augmented before), an int, or a ``keras.random.SeedGenerator`` (one draw per
call: what the layer inside the model uses, which the training step runs in order).
"""

from __future__ import annotations

import functools
import numbers

import keras
import numpy as np
from keras import ops

OPERATIONS = (
    "auto_contrast",
    "equalize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_GREY = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's weights, as keras-cv uses


# random draws one round makes at most: which operation and whether it applies (2), the colour
# family's factor, shift and blend (3), solarize's addition and threshold (2), and each axis's
# shear, sign and shift (2 x 3)
_DRAWS_PER_ROUND = 13


class _SeedTable(keras.random.SeedGenerator):
    """Stateless seeds for one call's random draws: the k-th draw gets row k of ``seeds``.

    ``keras.random`` takes a seed as an int or a ``SeedGenerator``, not a tensor; this
    generator hands out the rows of a (draws, 2) tensor of seeds instead of advancing a
    state, so the draws are a pure function of the table. It holds no variable, so
    ``SeedGenerator.__init__`` (which makes one) is not called; ``keras.random`` only calls
    :meth:`next`.
    """

    def __init__(self, seeds):  # not SeedGenerator.__init__, which makes a state variable
        self.seeds = seeds
        self.rows = int(ops.shape(seeds)[0])
        self.drawn = 0

    def next(self, ordered=True):
        if self.drawn >= self.rows:
            raise RuntimeError(
                f"RandAugment made more than the {self.rows} random draws its seed table holds; "
                "raise _DRAWS_PER_ROUND to the number of keras.random calls one round makes."
            )
        row = self.seeds[self.drawn]
        self.drawn += 1
        return row


def _seed_dtype():
    """The dtype ``keras.random`` reads a seed in: JAX keys are uint32; TensorFlow and PyTorch take int32."""
    return "uint32" if keras.backend.backend() in ("jax", "numpy") else "int32"


def _seed_table(seed, draws: int) -> _SeedTable:
    """A table of ``draws`` independent seeds drawn from ``seed`` (see the module docstring).

    ``seed``: a ``keras.random.SeedGenerator`` (advanced by one draw), an int, or a (2,)
    integer tensor. The rows are random in [0, 2**31 - 1), so two calls' tables overlap
    only by chance, unlike the consecutive seeds (s, c), (s, c + 1) a SeedGenerator gives.
    """
    if isinstance(seed, numbers.Integral):
        seed = int(seed)  # NumPy's integers too
    elif not isinstance(seed, keras.random.SeedGenerator):  # a stateless (2,) seed tensor
        seed = _SeedTable(ops.reshape(ops.cast(seed, _seed_dtype()), (1, 2)))
    rows = keras.random.randint((draws, 2), 0, 2**31 - 1, dtype="int32", seed=seed)
    return _SeedTable(ops.cast(rows, _seed_dtype()))


def _clipped_normal(shape, mean, stddev, low, high, seed):
    return ops.clip(keras.random.normal(shape, mean=mean, stddev=stddev, seed=seed), low, high)


def _sign(shape, seed):
    return ops.where(keras.random.uniform(shape, seed=seed) < 0.5, -1.0, 1.0)


def equalize(images, on_device: bool = False):
    """keras-cv's ``Equalization``: per image and channel, histogram equalisation on 256 levels.

    ``images``: float (n, h, w, 3), values 0-255. Values are truncated to integers first, as
    keras-cv does; a channel whose histogram gives a step of 0 (nearly constant) keeps its
    (truncated) values. ``on_device``: counted so that XLA compiles it (needs a fixed batch size).
    """
    shape = ops.shape(images)
    n, pixels = shape[0], shape[1] * shape[2]
    # one histogram of 3 x 256 bins per image: channel c's level v goes to bin 256 c + v
    levels = ops.cast(ops.clip(images, 0.0, 255.0), "int32") + ops.convert_to_tensor([0, 256, 512])
    # one id per pixel and channel over the whole batch: image i's bins are 768 i to 768 i + 767
    ids = ops.reshape(levels, (n, pixels * 3)) + 768 * ops.arange(n, dtype="int32")[:, None]
    ids = ops.reshape(ids, (-1,))
    if on_device:  # a segment sum: XLA compiles it, TensorFlow's bincount it does not
        counts = ops.segment_sum(ops.ones_like(ids), ids, num_segments=n * 768)
    else:  # one flat bincount and one flat gather: 1.4x faster than batched ones on 2 CPU cores
        counts = ops.bincount(ids, minlength=n * 768)
    histogram = ops.reshape(counts, (n, 3, 256))
    # keras-cv's step: (pixels - the smallest non-zero count) // 255; ``initial`` allows n = 0
    smallest = ops.min(ops.where(histogram == 0, pixels, histogram), axis=2, keepdims=True, initial=pixels)
    step = (pixels - smallest) // 255
    safe_step = ops.maximum(step, 1)
    table = (ops.cumsum(histogram, axis=2) + safe_step // 2) // safe_step
    table = ops.clip(ops.concatenate([ops.zeros_like(table[..., :1]), table[..., :-1]], axis=2), 0, 255)
    table = ops.where(step == 0, ops.arange(256, dtype="int32"), table)
    equalised = ops.take(ops.reshape(table, (-1,)), ids)  # each pixel's new level, by its id
    return ops.cast(ops.reshape(equalised, shape), images.dtype)


_COLOUR = ("auto_contrast", "contrast", "brightness", "color")  # one 3 x 3 matrix + offset each
_GEOMETRY_X = ("shear_x", "translate_x")  # 1-D resampling along rows
_GEOMETRY_Y = ("shear_y", "translate_y")  # the same along columns


def _colour_affine(images, op, magnitude, stddev, generator):
    """auto-contrast, contrast, brightness and colour as x -> clip(x M + b) per image."""
    n = ops.shape(images)[0]
    eye = ops.eye(3, dtype="float32")[None]

    def pick(name):
        return ops.cast(op == _COLOUR.index(name), "float32")[:, None]

    # ``initial``: a family may have no images in this batch (values lie in [0, 255] anyway)
    low = ops.min(images, axis=(1, 2), initial=255.0)  # (n, 3)
    high = ops.max(images, axis=(1, 2), initial=0.0)
    spread = high - low
    stretch = ops.where(spread > 0, 255.0 / ops.maximum(spread, 1e-6), 1.0)  # flat channels stay
    factor = keras.random.uniform((n, 1), 1 - magnitude, 1 + magnitude, seed=generator)
    mean = ops.mean(images, axis=(1, 2))
    delta = keras.random.uniform((n, 1), -255.0 * magnitude, 255.0 * magnitude, seed=generator)
    blend = _clipped_normal((n, 1), magnitude, stddev, 0.0, 1.0, generator)

    scale = pick("auto_contrast") * stretch + pick("contrast") * factor + pick("brightness")
    offset = (
        pick("auto_contrast") * ops.where(spread > 0, -low * stretch, 0.0)
        + pick("contrast") * (1.0 - factor) * mean
        + pick("brightness") * delta
    )
    # colour: out_d = (1 - f) x_d + f grey(x), as a matrix whose rows are input channels
    f = (pick("color") * blend)[..., None]
    grey = ops.convert_to_tensor(_GREY, "float32")[None, :, None] * ops.ones((1, 1, 3))
    matrix = eye * (scale + pick("color"))[:, None, :] * (1.0 - f) + f * grey
    result = ops.einsum("nhwc,ncd->nhwd", images, matrix) + offset[:, None, None, :]
    return ops.clip(result, 0.0, 255.0)


def _solarize(images, magnitude, stddev, generator):
    """Add a ~ N(110 m, 110 s) in [0, 110], then invert the pixels at or above t ~ N(255 (1 - m), 255 s)."""
    n = ops.shape(images)[0]
    added = _clipped_normal((n, 1, 1, 1), 110 * magnitude, 110 * stddev, 0.0, 110.0, generator)
    threshold = _clipped_normal((n, 1, 1, 1), 255 * (1 - magnitude), 255 * stddev, 0.0, 255.0, generator)
    lifted = ops.clip(images + added, 0.0, 255.0)
    return ops.where(lifted < threshold, lifted, 255.0 - lifted)


def _resample_rows(images, slope, offset):
    """Bilinear 1-D resampling along x with reflected borders: out[y, x] = in[y, x + slope y + offset].

    ``slope`` and ``offset`` (pixels) are per image. Equal to TensorFlow's
    ``ImageProjectiveTransformV3`` (bilinear, reflect) for these maps, at half its cost:
    each row moves by one amount, so two gathers along the row do it.
    """
    shape = ops.shape(images)
    height, width = shape[1], shape[2]
    rows = ops.cast(ops.arange(height), "float32")
    shift = slope[:, None] * rows[None, :] + offset[:, None]  # (n, h)
    whole = ops.floor(shift)
    fraction = (shift - whole)[:, :, None, None]
    source = ops.arange(width, dtype="int32")[None, None, :] + ops.cast(whole, "int32")[:, :, None]

    def reflect(index):  # (d c b a | a b c d | d c b a), as the TensorFlow op
        index = ops.mod(index, 2 * width)
        return ops.where(index >= width, 2 * width - 1 - index, index)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # a batched gather: keras.ops.take_along_axis is 4x slower here

        left = tf.gather(images, reflect(source), axis=2, batch_dims=2)
        right = tf.gather(images, reflect(source + 1), axis=2, batch_dims=2)
    else:  # the same gather along x, for every channel, on JAX or PyTorch
        channels = ops.shape(images)[3]

        def gather(index):
            index = ops.broadcast_to(index[..., None], (*ops.shape(index), channels))
            return ops.take_along_axis(images, index, axis=2)

        left, right = gather(reflect(source)), gather(reflect(source + 1))
    return left + fraction * (right - left)


def _geometry(images, op, magnitude, stddev, generator, axis):
    """Shear (keras-cv's matrix, about the top-left corner) or translation along ``axis``.

    ``axis`` "x": shear x (``op`` 0) or translate x (1); "y": shear y (0) or translate y (1).
    Bilinear with reflected borders, as keras-cv's ``RandomShear`` and ``RandomTranslation``.
    """
    n = ops.shape(images)[0]
    if axis == "y":  # the same 1-D resampling on the transposed images
        images = ops.transpose(images, (0, 2, 1, 3))
    size = ops.cast(ops.shape(images)[2], "float32")
    shear = _clipped_normal((n,), magnitude, stddev, 0.0, 1.0, generator) * _sign((n,), generator)
    shift = keras.random.uniform((n,), -magnitude, magnitude, seed=generator)
    is_shear = ops.cast(op == 0, "float32")
    # output (x, y) reads input x + shear * y (shear) or x - shift * width (translation)
    warped = _resample_rows(images, is_shear * shear, -(1.0 - is_shear) * shift * size)
    if axis == "y":
        warped = ops.transpose(warped, (0, 2, 1, 3))
    return ops.clip(warped, 0.0, 255.0)  # interpolation can overshoot 255 by a rounding error


# the families a round splits the batch into; 0 holds the images whose round is skipped
_FAMILIES = ("skipped", "colour", "solarize", "equalize", "geometry_x", "geometry_y")


def _family_of(operation: str) -> int:
    """The index in :data:`_FAMILIES` of the family that computes ``operation``."""
    for family, members in (
        ("colour", _COLOUR),
        ("solarize", ("solarize",)),
        ("equalize", ("equalize",)),
        ("geometry_x", _GEOMETRY_X),
        ("geometry_y", _GEOMETRY_Y),
    ):
        if operation in members:
            return _FAMILIES.index(family)
    raise ValueError(f"no family computes {operation!r}")


def _positions_in(members) -> list[int]:
    """For each of :data:`OPERATIONS`, its index within ``members`` (one family's operations), or -1."""
    return [members.index(o) if o in members else -1 for o in OPERATIONS]


def _one_round(current, original, generator, operations, magnitude, stddev, rate):
    """One round for every image: (images, index in ``operations`` drawn, or -1 if skipped).

    The batch is split by operation family (``tf.dynamic_partition``), each family computed on
    its own images only, and the images put back in their places (``tf.dynamic_stitch``): a
    round costs about one pass of the cheapest operation over the batch, and a family that
    the policy does not use costs nothing.
    """
    import tensorflow as tf  # this path runs in tf.data, on TensorFlow tensors

    n = ops.shape(current)[0]
    chosen = keras.random.randint((n,), 0, len(operations), seed=generator)
    applied = keras.random.uniform((n,), seed=generator) <= rate
    chosen = ops.where(applied, chosen, -1)
    lookup = ops.where(chosen < 0, len(operations), chosen)  # a skipped round reads the last entry
    global_op = tf.gather(tf.constant([OPERATIONS.index(o) for o in operations] + [-1]), lookup)
    family = tf.gather(tf.constant([_family_of(o) for o in operations] + [0]), lookup)
    count = len(_FAMILIES)
    places = tf.dynamic_partition(tf.range(n), family, count)
    images = tf.dynamic_partition(current, family, count)
    drawn = tf.dynamic_partition(global_op, family, count)
    used = {_FAMILIES[_family_of(o)] for o in operations}

    def local(members, index):  # each image's index within ``members``
        return tf.gather(tf.constant(_positions_in(members)), index)

    parts = [tf.gather(original, places[0])]  # keras-cv: a skipped round returns the input image
    for number, name in enumerate(_FAMILIES[1:], start=1):
        part = images[number]
        if name not in used:  # always empty
            parts.append(part)
        elif name == "colour":
            parts.append(_colour_affine(part, local(_COLOUR, drawn[number]), magnitude, stddev, generator))
        elif name == "solarize":
            parts.append(_solarize(part, magnitude, stddev, generator))
        elif name == "equalize":
            parts.append(equalize(part))
        else:
            axis, members = ("x", _GEOMETRY_X) if name == "geometry_x" else ("y", _GEOMETRY_Y)
            parts.append(_geometry(part, local(members, drawn[number]), magnitude, stddev, generator, axis))
    return tf.dynamic_stitch(places, parts), chosen


def _one_round_on_device(current, original, generator, operations, magnitude, stddev, rate):
    """:func:`_one_round` with fixed shapes: every family on the whole batch, each image keeping
    its own family's result. Same policy and distributions; compiles with XLA on any backend."""
    n = ops.shape(current)[0]
    chosen = keras.random.randint((n,), 0, len(operations), seed=generator)
    applied = keras.random.uniform((n,), seed=generator) <= rate
    chosen = ops.where(applied, chosen, -1)
    global_op = ops.take(ops.convert_to_tensor([OPERATIONS.index(o) for o in operations] + [-1]), chosen)

    def local(members):  # each image's index within ``members``, -1 when not a member
        return ops.take(
            ops.convert_to_tensor(_positions_in(members) + [-1]),
            ops.where(global_op < 0, len(OPERATIONS), global_op),
        )

    def member(members):
        return ops.reshape(
            ops.any(ops.stack([global_op == OPERATIONS.index(m) for m in members]), axis=0), (-1, 1, 1, 1)
        )

    result = original  # keras-cv: a skipped round returns the input image
    if any(o in _COLOUR for o in operations):
        coloured = _colour_affine(current, local(_COLOUR), magnitude, stddev, generator)
        result = ops.where(member([o for o in _COLOUR if o in operations]), coloured, result)
    if "solarize" in operations:
        result = ops.where(member(["solarize"]), _solarize(current, magnitude, stddev, generator), result)
    if "equalize" in operations:
        result = ops.where(member(["equalize"]), equalize(current, on_device=True), result)
    for axis, family in (("x", _GEOMETRY_X), ("y", _GEOMETRY_Y)):
        present = [o for o in family if o in operations]
        if present:
            warped = _geometry(current, local(family), magnitude, stddev, generator, axis)
            result = ops.where(member(present), warped, result)
    return result, chosen


def rand_augment_batch(
    images,
    seed,
    *,
    magnitude: float = 0.15,
    augmentations_per_image: int = 2,
    rate: float = 10 / 11,
    magnitude_stddev: float = 0.15,
    operations=OPERATIONS,
    return_choices: bool = False,
    on_device: bool = False,
):
    """Augment a float batch (n, h, w, 3) of values 0-255; same shape, range and dtype.

    ``seed`` is a (2,) integer tensor or an int (the result is a function of ``images``
    and ``seed`` alone), or a ``keras.random.SeedGenerator`` (each call advances it, so
    successive calls draw anew). With ``return_choices`` also returns an int array (n,
    augmentations_per_image): the index in ``operations`` each image drew per round, or -1
    where the round was skipped. ``on_device=True``: fixed shapes, for a compiled training
    step on any backend (see the module docstring); otherwise the batch is split by family
    (TensorFlow, ``tf.data``).
    """
    generator = _seed_table(seed, _DRAWS_PER_ROUND * augmentations_per_image)
    images = ops.convert_to_tensor(images)
    dtype = images.dtype
    original = ops.cast(images, "float32")
    result, choices = original, []
    one_round = _one_round_on_device if on_device else _one_round
    for _ in range(augmentations_per_image):
        result, chosen = one_round(
            result, original, generator, tuple(operations), magnitude, magnitude_stddev, rate
        )
        choices.append(chosen)
    # the reshape restores the static batch size that splitting the batch loses in a graph
    result = ops.reshape(ops.cast(result, dtype), ops.shape(images))
    if return_choices:
        return result, ops.stack(choices, axis=1)
    return result


def rand_augment(
    magnitude: float = 0.15,
    augmentations_per_image: int = 2,
    rate: float = 10 / 11,
    magnitude_stddev: float = 0.15,
    operations=OPERATIONS,
    seed: int | None = None,
):
    """An augmenter ``augment(images, training=True, seed=None)`` for float batches (n, h, w, 3), 0-255.

    keras-cv's standard RandAugment policy (see the module docstring); the defaults are the
    report's settings. ``operations`` narrows the policy (a subset of :data:`OPERATIONS`,
    e.g. to look at one operation alone). ``training=False`` returns the images unchanged.
    A call's ``seed`` (a (2,) integer tensor, as the training pipeline passes one per batch)
    makes its draws a function of that seed alone; without one, each call takes the next
    draw of a generator started at ``seed`` here (None: from Keras's global seed). In a
    parallel ``tf.data`` map, pass each batch's seed: calls running side by side may read
    the generator's state at once, and which batches then share draws depends on timing.
    """
    if not 0 <= magnitude <= 1:
        raise ValueError(f"magnitude must be in [0, 1] (keras-cv's scale), got {magnitude}.")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}.")
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown or not operations:
        raise ValueError(f"Unknown or no operations {unknown}; choose from {OPERATIONS}.")
    generator = keras.random.SeedGenerator(seed)
    settings = {
        "magnitude": float(magnitude),
        "augmentations_per_image": int(augmentations_per_image),
        "rate": float(rate),
        "magnitude_stddev": float(magnitude_stddev),
        "operations": tuple(operations),
    }
    policy = tuple(sorted(settings.items()))  # the key of the compiled and traced forms' caches

    def augment(images, training: bool = True, seed=None):
        if not training:
            return images
        if isinstance(images, np.ndarray) and keras.backend.backend() != "tensorflow":
            # Off TensorFlow, on NumPy arrays (the tf.data pipeline's py_function, notebook 06's
            # figure), the batch-splitting form ran op by op, and eager JAX compiles each op on
            # first use: 1.4-4.4 s per batch of 32 images at 32 px, 17 s for the figure. The
            # fixed-shape form, compiled once, draws the same policy (in another order).
            draw = generator.next() if seed is None else seed
            return compiled_batch_augmenter(policy)(images, np.asarray(draw))
        return rand_augment_batch(images, generator if seed is None else seed, **settings)

    augment.settings = settings  # for notebooks and run summaries
    # for model.image_dataset on TensorFlow: this policy's traced form, shared by every run
    augment.traced = functools.partial(traced_batch_augmenter, policy)
    return augment


@functools.lru_cache(maxsize=8)
def compiled_batch_augmenter(settings: tuple):
    """RandAugment's fixed-shape form (``on_device=True``) as a function of (images, seed).

    ``settings``: the sorted items of an augmenter's ``settings``. For NumPy batches outside
    a TensorFlow graph: on JAX ``jax.jit``-compiled (once per policy, process and batch
    shape); on other backends the plain function. The same policy and distributions as the
    batch-splitting form that TensorFlow's pipeline runs, drawn in another order.
    """

    def augment_batch(images, seed):
        return rand_augment_batch(images, seed, on_device=True, **dict(settings))

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(augment_batch)
    return augment_batch


@functools.lru_cache(maxsize=8)
def traced_batch_augmenter(settings: tuple):
    """RandAugment's batch-splitting form as a ``tf.function`` of (images, seed), on TensorFlow.

    ``settings``: the sorted items of an augmenter's ``settings``. One function per policy
    and process, so the training runs of a notebook that share a policy trace its graph
    once, and TensorFlow prepares that graph for running once (four augmented smoke runs in
    one process on 2 cores: 24.5 s against 29.9 s, the same numbers). A call's
    result depends on (images, seed, settings) alone, as an augmenter's call with a seed does.
    """
    import tensorflow as tf  # this form runs in tf.data, on TensorFlow tensors

    return tf.function(lambda images, seed: rand_augment_batch(images, seed, **dict(settings)))


@keras.saving.register_keras_serializable(package="workbook")
class RandAugmentLayer(keras.layers.Layer):
    """RandAugment inside the model, so it runs in the training step on the accelerator.

    The policy of :func:`rand_augment` (the same settings) with fixed shapes
    (``on_device=True``); an identity at inference (``training=False``), so a model that
    contains it predicts exactly as one without it. Always computes in float32. Its draws
    come from a ``SeedGenerator`` started at ``seed`` (one draw per training step, in step
    order): a model built with the same seed augments its n-th batch the same way.
    """

    def __init__(
        self,
        magnitude: float = 0.15,
        augmentations_per_image: int = 2,
        rate: float = 10 / 11,
        magnitude_stddev: float = 0.15,
        operations=OPERATIONS,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.settings = rand_augment(
            magnitude, augmentations_per_image, rate, magnitude_stddev, operations
        ).settings
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        return rand_augment_batch(images, self.generator, on_device=True, **self.settings)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({**self.settings, "operations": list(self.settings["operations"]), "seed": self.seed})
        return config
