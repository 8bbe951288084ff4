import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import config, experiments, images, losses, model

PROFILE = config.get_profile("smoke")


def test_classifier_outputs_probabilities():
    classifier = model.build_classifier(7, PROFILE)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(classifier(images))
    assert probabilities.shape == (3, 7)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_freezing_leaves_only_the_head_trainable():
    classifier = model.build_classifier(7, PROFILE, freeze_backbone=True)
    assert [w.path for w in classifier.trainable_weights] == ["cells/kernel", "cells/bias"]


def test_warmup_then_polynomial_decay():
    schedule = model.WarmupPolynomialDecay(peak=1e-3, warmup_steps=10, total_steps=110)
    values = np.array([float(schedule(step)) for step in range(111)])
    assert values[0] == 0 and values[10] == pytest.approx(1e-3) and values[110] == pytest.approx(0)
    assert (np.diff(values[:11]) > 0).all() and (np.diff(values[10:]) < 0).all()
    assert values[60] == pytest.approx(0.5e-3)  # linear decay, half way
    restored = model.WarmupPolynomialDecay.from_config(schedule.get_config())
    assert float(restored(30)) == pytest.approx(float(schedule(30)))


def test_optimizer_settings():
    optimizer = model.make_optimizer(PROFILE, steps_per_epoch=10, epochs=2)
    assert (optimizer.beta_1, optimizer.beta_2) == (PROFILE["beta_1"], PROFILE["beta_2"]) == (0.85, 0.95)
    assert optimizer.weight_decay == pytest.approx(PROFILE["weight_decay"]) == pytest.approx(0.01)
    adam = model.make_optimizer(PROFILE, steps_per_epoch=10, epochs=2, betas=(0.9, 0.999))
    assert (adam.beta_1, adam.beta_2) == (0.9, 0.999)


def test_optimizer_decays_only_weight_matrices():
    """One step with zero gradients moves exactly the variables that weight decay acts on."""
    classifier = model.build_classifier(7, PROFILE)
    variables = classifier.trainable_variables
    for variable in variables:
        variable.assign(np.ones(variable.shape, dtype="float32"))  # zeros would hide the decay
    optimizer = model.make_optimizer(PROFILE, steps_per_epoch=10, epochs=2, warmup=False)
    optimizer.apply_gradients([(np.zeros(v.shape, dtype="float32"), v) for v in variables])
    moved = {v.path for v in variables if not np.allclose(np.asarray(v), 1.0)}
    kept = {v.path for v in variables} - moved
    assert moved, "weight decay did nothing"
    assert all(path.endswith("/kernel") for path in moved)
    assert "vit_patching_and_embedding/patch_embedding/kernel" in moved and "cells/kernel" in moved
    assert "vit_encoder/transformer_block_1/mlp/dense_1/kernel" in moved
    no_decay = {"bias", "gamma", "beta", "class_token", "embeddings"}
    assert all(path.rsplit("/", 1)[1] in no_decay for path in kept)
    assert "vit_patching_and_embedding/class_token" in kept
    assert "vit_patching_and_embedding/position_embedding/embeddings" in kept
    assert "vit_encoder/transformer_block_1/ln_1/gamma" in kept and "vit_encoder/ln/beta" in kept
    assert "cells/bias" in kept and "vit_encoder/transformer_block_1/mha/query/bias" in kept
    # decoupled decay: w <- w - learning rate * weight decay * w
    expected = 1 - PROFILE["learning_rate"] * PROFILE["weight_decay"]
    assert float(np.asarray(classifier.get_layer("cells").kernel)[0, 0]) == pytest.approx(expected, rel=1e-6)


def test_optimizer_schedule_warmup_steps_win_over_the_fraction():
    steps = dict(steps_per_epoch=50, epochs=4)  # 200 steps; a 10 % warm-up would be 20 steps
    by_steps = model.learning_rate_schedule(config.get_profile("smoke", warmup_steps=5), **steps)
    by_fraction = model.learning_rate_schedule(PROFILE, **steps)
    peak = PROFILE["learning_rate"]
    assert (by_steps.warmup_steps, by_fraction.warmup_steps) == (5, int(PROFILE["warmup_fraction"] * 200))
    assert float(by_steps(5)) == pytest.approx(peak) and float(by_steps(2)) == pytest.approx(0.4 * peak)
    assert float(by_steps(200)) == pytest.approx(0.0, abs=1e-12)
    assert model.learning_rate_schedule(PROFILE, warmup=False, **steps).warmup_steps == 0
    # never longer than training itself
    too_long = config.get_profile("smoke", warmup_steps=500)
    assert model.learning_rate_schedule(too_long, **steps).warmup_steps == 200


def test_the_authors_schedule_decays_over_images_times_epochs():
    """create_optimizer(num_train_steps=images * epochs, num_warmup_steps=20): the authors' notebook."""
    authors = config.get_profile("full")
    assert authors["lr_schedule"] == "authors" and authors["final_batch_size"] == 16
    images_, epochs, batch = 1600, 20, 16
    steps = model.steps_per_epoch(images_, batch)  # 100 steps per epoch, 2,000 in all
    theirs = model.learning_rate_schedule(authors, steps, epochs, train_images=images_)
    ours = model.learning_rate_schedule(config.get_profile("full", lr_schedule="decay"), steps, epochs)
    peak, taken = authors["learning_rate"], steps * epochs
    assert (theirs.warmup_steps, theirs.total_steps) == (20, images_ * epochs)
    # polynomial decay of power 1 over 32,000 - 20 steps, stopped after 2,000: 1/16 of the way down
    assert float(theirs(taken)) == pytest.approx(
        peak * (1 - (taken - 20) / (images_ * epochs - 20)), rel=1e-5
    )
    assert float(theirs(taken)) == pytest.approx(5.6e-5, abs=0.05e-5)  # issue 21: 6e-5 to about 5.6e-5
    rates = np.array([float(theirs(s)) for s in range(0, taken, 10)])
    assert rates.mean() == pytest.approx(5.8e-5, abs=0.05e-5)
    assert float(ours(taken)) == pytest.approx(0.0, abs=1e-12)  # "decay": to zero over the real steps
    with pytest.raises(ValueError, match="train_images"):
        model.learning_rate_schedule(authors, steps, epochs)
    with pytest.raises(ValueError, match="lr_schedule"):
        model.learning_rate_schedule(config.get_profile("smoke", lr_schedule="cosine"), steps, epochs)


def test_randaugment_keeps_shape_and_range():
    augment = model.randaugment(PROFILE, seed=0)
    batch = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    out = np.asarray(augment(batch, training=True))
    assert out.shape == batch.shape and out.dtype == batch.dtype and out.min() >= 0 and out.max() <= 255
    assert not np.array_equal(out, batch)
    assert np.array_equal(np.asarray(augment(batch, training=False)), batch)
    assert augment.settings["augmentations_per_image"] == PROFILE["randaugment_ops"] == 2
    assert augment.settings["magnitude"] == PROFILE["randaugment_factor"] == 0.15


def test_pretrained_weights_load_from_a_hugging_face_checkpoint(tmp_path):
    tensors = model.write_hf_vit_checkpoint(
        tmp_path / "tiny-vit", image_size=32, patch=8, hidden=16, heads=2, layers=2, mlp=32
    )
    classifier = model.build_classifier(5, PROFILE, preset=str(tmp_path / "tiny-vit"))
    backbone = next(layer for layer in classifier.layers if "backbone" in layer.name.lower())
    assert backbone.num_layers == 2 and backbone.hidden_dim == 16
    weights = {w.path: np.asarray(w) for w in backbone.weights}
    cls = next(v for k, v in weights.items() if k.endswith("class_token"))
    assert np.allclose(cls.reshape(-1), tensors["vit.embeddings.cls_token"].reshape(-1))
    patches = next(v for k, v in weights.items() if "patch_embedding/kernel" in k)
    expected = np.transpose(tensors["vit.embeddings.patch_embeddings.projection.weight"], (2, 3, 1, 0))
    assert np.allclose(patches, expected)
    out = np.asarray(classifier(np.zeros((1, 32, 32, 3), dtype="float32")))
    assert out.shape == (1, 5)


def tiny_image_set(folder, n_cells=3, per_cell=8, size=32):
    rows = []
    rng = np.random.default_rng(0)
    for cell in range(n_cells):
        for i in range(per_cell):
            colour = np.array([80 * cell, 255 - 80 * cell, 120]) + rng.integers(-20, 20, 3)
            path = folder / f"{cell}/{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((size, size, 3), colour.clip(0, 255), dtype=np.uint8)).save(path)
            rows.append({"image_path": f"{cell}/{i}.png", "cell": cell, "lat": 56.0, "lng": 10.0})
    return pd.DataFrame(rows)


class StopAfterEpoch(keras.callbacks.Callback):
    """Simulates an interruption (power cut, Ctrl-C) at the end of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_training_writes_its_files_and_resumes_after_an_interruption(tmp_path, isolated_build):
    table = tiny_image_set(tmp_path / "images")
    data = model.image_dataset(table, tmp_path / "images", 32, 8, training=True)
    distance = np.array([[0, 50, 100], [50, 0, 50], [100, 50, 0]], dtype="float32")
    folder = model.run_dir("smoke", "run")  # load_model opens only run folders of a build

    def fresh():
        keras.utils.set_random_seed(0)
        return model.build_classifier(3, PROFILE)

    def run(callback):
        return model.train(
            PROFILE,
            folder,
            fresh(),
            data,
            data,
            loss=losses.cross_entropy,
            epochs=4,
            distance_km=distance,
            verbose=0,
            extra_callbacks=[callback],
        )["history"]

    with pytest.raises(KeyboardInterrupt):
        run(StopAfterEpoch(1))
    assert (folder / "backup").exists()
    assert list(pd.read_csv(folder / "history.csv")["epoch"]) == [0, 1]

    started = []
    history = run(keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.append(epoch)))
    assert started == [2, 3]  # continued after the last finished epoch, not from zero
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert {"accuracy", "top3", "centroid_km", "expected_km", "val_loss"} <= set(history.columns)
    assert (folder / "best.keras").exists() and (folder / "last.keras").exists()
    assert not (folder / "backup").exists()  # removed once training finished
    reloaded = model.load_model(folder, "last")
    assert np.asarray(reloaded(np.zeros((1, 32, 32, 3), dtype="float32"))).shape == (1, 3)


class KeepWeights(keras.callbacks.Callback):
    """Keeps each finished epoch's weights, to check which epoch best.keras holds."""

    def __init__(self, store):
        super().__init__()
        self.store = store

    def on_epoch_end(self, epoch, logs=None):
        self.store[epoch] = [np.array(w) for w in self.model.get_weights()]


def test_after_a_resume_best_keras_is_the_best_epoch_of_the_history(tmp_path, isolated_build):
    """Interrupted after a good epoch, resumed with worse ones: best.keras must stay the good one.

    A fresh ModelCheckpoint starts with no best value; without the history's best it saved the
    first resumed epoch, however poor, while best_epoch (the history's arg-max) named another.
    """
    table = tiny_image_set(tmp_path / "images")
    data = model.image_dataset(table, tmp_path / "images", 32, 8, training=True)
    # the resumed epochs are scored against a cell no image belongs to: validation top-1 is 0 there
    wrong = model.image_dataset(table.assign(cell=3), tmp_path / "images", 32, 8)
    folder, weights = model.run_dir("smoke", "run"), {}

    def run(val_data, *callbacks):
        keras.utils.set_random_seed(0)
        classifier = model.build_classifier(4, PROFILE)
        optimizer = keras.optimizers.Adam(0.01)
        return model.train(
            PROFILE,
            folder,
            classifier,
            data,
            val_data,
            loss=losses.cross_entropy,
            epochs=4,
            optimizer=optimizer,
            verbose=0,
            extra_callbacks=[KeepWeights(weights), *callbacks],
        )["history"]

    with pytest.raises(KeyboardInterrupt):
        run(data, StopAfterEpoch(1))
    before = pd.read_csv(folder / "history.csv")
    assert before["val_accuracy"].max() > 0  # something was learnt before the interruption
    history = run(wrong)
    assert list(history["epoch"]) == [0, 1, 2, 3] and (history["val_accuracy"].iloc[2:] == 0).all()
    best_epoch = int(history["val_accuracy"].idxmax())
    assert best_epoch in (0, 1)
    kept = model.load_model(folder, "best").get_weights()
    assert all(np.array_equal(k, w) for k, w in zip(kept, weights[best_epoch], strict=True))


def test_training_batches_are_full_and_validation_keeps_every_image(tmp_path):
    table = tiny_image_set(tmp_path, per_cell=7)  # 21 images: two full batches of 8, 5 left over
    training = [len(x) for x, _ in model.image_dataset(table, tmp_path, 32, 8, training=True)]
    assert training == [8, 8] and len(training) == model.steps_per_epoch(len(table), 8)
    validation = [len(x) for x, _ in model.image_dataset(table, tmp_path, 32, 8)]
    assert validation == [8, 8, 5]
    # a set smaller than one batch still trains, on one short batch
    assert [len(x) for x, _ in model.image_dataset(table.head(5), tmp_path, 32, 8, training=True)] == [5]
    assert model.steps_per_epoch(5, 8) == 1


def test_the_autotuner_is_off_only_for_cached_pipelines(tmp_path):
    table = tiny_image_set(tmp_path)
    cached = model.image_dataset(table, tmp_path, 32, 8, training=True, cache_budget_gb=1.0)
    streamed = model.image_dataset(table, tmp_path, 32, 8, training=True, cache_budget_gb=0.0)
    assert cached.options().autotune.enabled is False
    assert streamed.options().autotune.enabled is not False  # decoding from disk keeps it


def test_xla_compiled_training_matches_uncompiled(tmp_path, isolated_build):
    table = tiny_image_set(tmp_path / "images")
    histories = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        # a fresh pipeline each time: a shuffled dataset draws a new order on every pass
        data = model.image_dataset(table, tmp_path / "images", 32, 8, training=True)
        classifier = model.build_classifier(3, PROFILE)
        optimizer = model.make_optimizer(PROFILE, model.steps_per_epoch(len(table), 8), 2)
        histories[jit] = model.train(
            PROFILE,
            model.run_dir(PROFILE, f"run_{jit}"),
            classifier,
            data,
            data,
            loss=losses.cross_entropy,
            epochs=2,
            optimizer=optimizer,
            verbose=0,
            jit_compile=jit,
        )["history"]
    # the same steps on the same batches: only the order of floating-point operations differs
    for column in ("loss", "val_loss"):
        assert np.allclose(histories[True][column], histories[False][column], rtol=1e-3)
    # the laptop profile compiles with XLA; the tiny CI runs leave it to Keras (no XLA on a CPU)
    assert model.jit_compile(config.get_profile("default")) is True and model.jit_compile(PROFILE) == "auto"


def test_unreadable_images_are_left_out(tmp_path):
    table = tiny_image_set(tmp_path, n_cells=1, per_cell=4)
    (tmp_path / table["image_path"][0]).write_bytes(b"not a png")
    good, skipped = images.readable_rows(table, tmp_path)
    assert skipped == 1 and len(good) == 3


def test_evaluate_by_hand():
    cells = pd.DataFrame({"cell": [0, 1, 2], "lat": [56.0, 56.0, 55.0], "lng": [10.0, 11.0, 10.0]})
    table = pd.DataFrame({"cell": [0, 2], "lat": [56.0, 55.0], "lng": [10.0, 10.0]})
    probabilities = np.array([[0.6, 0.3, 0.1], [0.1, 0.5, 0.4]])
    scores = experiments.evaluate(probabilities, table, cells)
    assert scores["top1"] == 0.5 and scores["top3"] == 1.0
    from helpers import geo

    second = float(geo.haversine_km(55.0, 10.0, 56.0, 11.0))
    assert scores["mean_km"] == pytest.approx(second / 2)
    assert scores["within_1km"] == 0.5


def test_fit_run_refuses_a_mode_it_cannot_compare_by(tmp_path):
    network = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="mode='maximum'"):
        model.fit_run(tmp_path / "run", network, None, epochs=1, mode="maximum")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_augmented_pipelines_of_one_policy_trace_its_randaugment_once(tmp_path):
    """Each training run builds its own pipeline and augmenter; on TensorFlow the workbook's
    RandAugment is traced once per policy and process, not once per run, and augments alike."""
    from helpers import augment

    table = tiny_image_set(tmp_path)
    augment.traced_batch_augmenter.cache_clear()  # whatever ran before in this process
    policy = model.randaugment(PROFILE, seed=0)
    step = policy.traced()
    runs = [
        [x.numpy() for x, _ in model.image_dataset(table, tmp_path, 32, 8, training=True, augment=augmenter)]
        for augmenter in (policy, model.randaugment(PROFILE, seed=1))
    ]
    assert step.experimental_get_tracing_count() == 1
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))  # one seed per batch decides
