import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import augment, synthetic

MAGNITUDE = 0.15  # the report's


@pytest.fixture(scope="module")
def scenes(report_locations, municipalities):
    """128 of the workbook's own synthetic scenes at 64 px, float32 0-255."""
    geography = synthetic.build_geography(report_locations, municipalities)
    places = report_locations.sample(128, random_state=0)
    features = synthetic.scene_features(places["lat"], places["lng"], geography)
    return synthetic.render_locations(places, features, np.arange(128) % 48, 64).astype("float32")


def only(operation, seed=0):
    """The policy narrowed to one operation, applied once to every image."""
    return augment.rand_augment(
        MAGNITUDE, augmentations_per_image=1, rate=1.0, operations=(operation,), seed=seed
    )


def levels(images):
    """Mean number of distinct (rounded) values per image and channel."""
    return np.mean([len(np.unique(np.round(image[..., c]))) for image in images for c in range(3)])


# Mean absolute change (grey levels) of each operation at magnitude 0.15 on the scenes above,
# measured when the module was written: auto-contrast 17, equalize 30, solarize 49 (only the
# brightest pixels, mostly sky, are inverted), colour 3, contrast 4, brightness 19, shear x 14,
# shear y 20, translate x 14, translate y 21. keras.layers.RandAugment(factor=0.15) changed
# the same scenes by 117 (solarize) and 73 (posterize). The bounds leave room for other seeds.
UPPER_BOUND = {
    "auto_contrast": 30,
    "equalize": 45,
    "solarize": 75,
    "color": 10,
    "contrast": 10,
    "brightness": 255 * MAGNITUDE / 2 + 3,  # a uniform shift in [-38, 38]: 19 on average
    "shear_x": 30,
    "shear_y": 35,
    "translate_x": 30,
    "translate_y": 35,
}


@pytest.mark.parametrize("operation", augment.OPERATIONS)
def test_each_operation_is_mild_and_keeps_the_picture(scenes, operation):
    out = np.asarray(only(operation)(scenes))
    change = np.abs(out - scenes)
    assert out.shape == scenes.shape and out.min() >= 0 and out.max() <= 255
    assert 0.5 < change.mean() < UPPER_BOUND[operation]
    # nothing posterizes: the images keep most of their grey levels
    assert levels(out) > 0.6 * levels(scenes)
    # nothing inverts a whole image (keras-cv's solarize inverts the pixels above its threshold,
    # about 217: a bright sky, but not the street below it)
    inverted = (change.max(axis=-1) > 100).mean(axis=(1, 2))
    assert (inverted > 0.8).mean() <= 0.02


def test_solarize_inverts_only_bright_pixels(scenes):
    out = np.asarray(only("solarize")(scenes))
    dark = scenes < 128
    # a dark pixel only gets the addition (at most 110) unless the threshold fell below ~240,
    # which N(217, 38) rarely does: in most images no dark pixel is inverted
    untouched = [(np.abs(o - s)[d] <= 110 + 1e-3).all() for o, s, d in zip(out, scenes, dark, strict=True)]
    assert np.mean(untouched) >= 0.9


def test_colour_operations_follow_keras_cv(scenes):
    brightness = np.asarray(only("brightness")(scenes)) - scenes
    assert np.abs(brightness).max() <= 255 * MAGNITUDE + 1e-3  # a uniform shift in [-38, 38]
    contrast = np.asarray(only("contrast")(scenes))
    mean = scenes.mean(axis=(1, 2), keepdims=True)
    assert (np.abs(contrast - scenes) <= MAGNITUDE * np.abs(scenes - mean) + 1e-2).all()
    stretched = np.asarray(only("auto_contrast")(scenes))
    assert np.allclose(stretched.min(axis=(1, 2)), 0, atol=1e-2)
    assert np.allclose(stretched.max(axis=(1, 2)), 255, atol=1e-2)
    grey = scenes @ np.array([0.2989, 0.5870, 0.1140], dtype="float32")
    colour = np.asarray(only("color")(scenes))
    assert (np.abs(colour - scenes) <= np.abs(grey[..., None] - scenes) + 1e-2).all()  # towards grey


def equalize_like_keras_cv(channel):
    """keras-cv's Equalization of one channel, written out in NumPy."""
    levels = channel.astype(int)
    histogram = np.bincount(levels.ravel(), minlength=256)
    step = (histogram.sum() - histogram[histogram > 0].min()) // 255
    if step == 0:
        return levels
    table = np.clip(np.concatenate([[0], ((np.cumsum(histogram) + step // 2) // step)[:-1]]), 0, 255)
    return table[levels]


def test_equalize_matches_keras_cv(scenes):
    flat = np.full((1, 64, 64, 3), 80.0, dtype="float32")  # a constant channel stays as it is
    batch = np.concatenate([scenes[:6], flat])
    out = np.asarray(augment.equalize(batch))
    expected = np.stack(
        [np.stack([equalize_like_keras_cv(image[..., c]) for c in range(3)], axis=-1) for image in batch]
    )
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("slope, offset", [(0.3, 0.0), (-0.6, 0.0), (0.0, 7.4), (0.0, -9.6)])
def test_shear_and_translation_match_the_projective_transform(scenes, slope, offset):
    """The 1-D resampling equals keras-cv's op (ImageProjectiveTransformV3, bilinear, reflect)."""
    batch = scenes[:4]
    ones, zeros = np.ones(4, "float32"), np.zeros(4, "float32")
    matrix = np.stack([ones, ones * slope, ones * offset, zeros, ones, zeros, zeros, zeros], axis=1)
    expected = np.asarray(
        keras.ops.image.affine_transform(batch, matrix, interpolation="bilinear", fill_mode="reflect")
    )
    resampled = augment._resample_rows(batch, ones * slope, ones * offset)
    assert np.abs(np.asarray(resampled) - expected).max() < 0.01


def test_each_image_draws_its_own_operations(scenes):
    same = np.repeat(scenes[:1], 64, axis=0)
    out, choices = augment.rand_augment_batch(same, 0, return_choices=True)
    out, choices = np.asarray(out), np.asarray(choices)
    assert choices.shape == (64, 2) and choices.min() >= -1 and choices.max() < len(augment.OPERATIONS)
    assert len(set(choices[:, 0])) >= 6  # many operations in one batch
    assert (choices[:, 0] != choices[0, 0]).any()
    # one picture, many results (auto-contrast and equalize have no magnitude, and about 1 in 11
    # images come back unchanged, so a few results repeat)
    assert len({image.tobytes() for image in out}) >= 45


def test_rate_and_skipped_rounds():
    images = np.random.default_rng(0).uniform(0, 255, (512, 8, 8, 3)).astype("float32")
    never = augment.rand_augment_batch(images, 0, rate=0.0, return_choices=True)
    assert np.array_equal(np.asarray(never[0]), images) and (np.asarray(never[1]) == -1).all()
    _, choices = augment.rand_augment_batch(images, 0, return_choices=True)
    assert (np.asarray(choices) == -1).mean() == pytest.approx(1 / 11, abs=0.03)


def test_shape_range_dtype_and_training_flag(scenes):
    augmenter = augment.rand_augment(seed=1)
    out = augmenter(scenes[:8], training=True)
    assert out.shape == (8, 64, 64, 3) and out.dtype == "float32"
    assert float(np.min(out)) >= 0 and float(np.max(out)) <= 255
    batch = scenes[:8]
    assert augmenter(batch, training=False) is batch


def test_runs_in_a_tf_data_map_after_batching_with_a_seed_per_batch(scenes):
    """As model.image_dataset runs it: each batch carries its seed, which alone decides its draws."""
    augmenter = augment.rand_augment(seed=0)
    seeds = tf.data.Dataset.from_tensor_slices(tf.constant([[1, 2], [3, 4], [1, 2], [3, 4]], "int32"))
    data = tf.data.Dataset.zip(tf.data.Dataset.from_tensors(scenes[:16]).repeat(4), seeds)
    data = data.map(lambda batch, seed: augmenter(batch, training=True, seed=seed), num_parallel_calls=4)
    assert data.element_spec.shape.as_list() == [16, 64, 64, 3]
    first, second, first_again, second_again = [batch.numpy() for batch in data]
    assert not np.array_equal(first, second)  # another seed, other draws
    # the same seed, the same images, whichever of the parallel calls ran first
    assert np.array_equal(first, first_again) and np.array_equal(second, second_again)
    assert first.min() >= 0 and first.max() <= 255
    # outside tf.data too, and on the fixed-shape path of the layer: a function of the seed alone
    seed = tf.constant([1, 2], "int32")
    eager = augment.rand_augment_batch(scenes[:16], seed, operations=("equalize", "brightness"))
    assert np.array_equal(
        eager, augment.rand_augment_batch(scenes[:16], seed, operations=("equalize", "brightness"))
    )
    fixed = augment.rand_augment_batch(scenes[:16], seed, on_device=True)
    assert np.array_equal(fixed, augment.rand_augment_batch(scenes[:16], seed, on_device=True))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="magnitude"):
        augment.rand_augment(magnitude=15)
    with pytest.raises(ValueError, match="Unknown or no operations"):
        augment.rand_augment(operations=("rotate",))


def test_the_training_pipeline_traces_the_workbooks_policy_once_per_process(scenes):
    """Two augmenters with one policy (two training runs) share one traced step on TensorFlow,
    and it augments as the augmenter's own call with that seed does; another policy gets its own."""
    first, second = augment.rand_augment(seed=0), augment.rand_augment(seed=5)
    step = first.traced()
    assert step is second.traced() is augment.traced_batch_augmenter(tuple(sorted(first.settings.items())))
    seed = tf.constant([7, 8], "int32")
    batch = tf.constant(scenes[:16])
    assert np.array_equal(step(batch, seed), first(batch, training=True, seed=seed))
    traced = step.experimental_get_tracing_count()
    step(tf.constant(scenes[16:32]), tf.constant([1, 2], "int32"))  # another batch and seed: no new trace
    assert step.experimental_get_tracing_count() == traced
    stronger = augment.rand_augment(magnitude=0.4)
    assert stronger.traced() is not step
