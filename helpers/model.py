"""The Vision Transformer geocell classifier: model, optimiser, input pipeline and training.

Model: a keras-hub ``ViTBackbone`` whose class token feeds a softmax over the cells. In the
``full`` profile the backbone is the report's checkpoint, ``google/vit-base-patch16-224``,
converted from its Hugging Face files by keras-hub (``hf://`` presets, or a local folder
holding ``config.json`` and ``model.safetensors``); in ``smoke`` and ``default`` it is a
small ViT trained from scratch. Inputs are RGB images with values 0-255; the model scales
them to [-1, 1] itself, as the checkpoint expects.

Each training run lives in ``build/<profile>/runs/<name>/``: ``history.csv`` (one row per
epoch), ``best.keras`` and ``last.keras``, ``backup/`` (to resume an interrupted run),
``logs/`` (TensorBoard) and ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import ops

from helpers import config, losses


def build_backbone(profile: dict, preset: str | None = None):
    """The ViT backbone of ``profile``: from ``preset`` (or the profile's), else a new one."""
    import keras_hub

    preset = preset or profile["pretrained"]
    if preset:
        return keras_hub.models.ViTBackbone.from_preset(str(preset))
    size, patch = profile["image_size"], profile["patch_size"]
    return keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3),
        patch_size=(patch, patch),
        num_layers=profile["vit_layers"],
        num_heads=profile["vit_heads"],
        hidden_dim=profile["vit_width"],
        mlp_dim=profile["vit_mlp_width"],
    )


def build_classifier(n_cells: int, profile: dict, preset: str | None = None, freeze_backbone: bool = False):
    """A ViT with a softmax head over ``n_cells`` cells, reading the class token.

    ``freeze_backbone=True`` trains the head only (the report's frozen experiment: 10 %).
    """
    backbone = build_backbone(profile, preset)
    backbone.trainable = not freeze_backbone
    size = backbone.image_shape[0] if hasattr(backbone, "image_shape") else profile["image_size"]
    inputs = keras.Input((size, size, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus1_1")(inputs)
    tokens = backbone(scaled)
    class_token = keras.layers.Lambda(lambda t: t[:, 0, :], name="class_token")(tokens)
    probabilities = keras.layers.Dense(n_cells, activation="softmax", name="cells")(class_token)
    return keras.Model(inputs, probabilities, name="vit_geocells")


@keras.saving.register_keras_serializable(package="workbook")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then polynomial decay to ``end``.

    With ``power=1`` the decay is linear, like the Hugging Face optimiser the report used.
    """

    def __init__(
        self, peak: float, warmup_steps: int, total_steps: int, end: float = 0.0, power: float = 1.0
    ):
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)
        self.end, self.power = float(end), float(power)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / max(self.warmup_steps, 1)
        progress = ops.clip(
            (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0
        )
        decayed = (self.peak - self.end) * (1.0 - progress) ** self.power + self.end
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "end": self.end,
            "power": self.power,
        }


def learning_rate_schedule(profile: dict, steps_per_epoch: int, epochs: int, warmup: bool = True):
    """The profile's learning rate over training: warm-up (optional) then linear decay to 0."""
    total = steps_per_epoch * epochs
    warmup_steps = int(profile["warmup_fraction"] * total) if warmup else 0
    return WarmupPolynomialDecay(profile["learning_rate"], warmup_steps, total)


def make_optimizer(
    profile: dict,
    steps_per_epoch: int,
    epochs: int,
    warmup: bool = True,
    betas: tuple[float, float] | None = None,
):
    """AdamW with the report's settings: warm-up (optional), polynomial decay, weight decay.

    ``betas`` defaults to the profile's (0.85, 0.95 as in the report's final model); pass
    (0.9, 0.999) for Adam's defaults.
    """
    beta_1, beta_2 = betas or (profile["beta_1"], profile["beta_2"])
    return keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(profile, steps_per_epoch, epochs, warmup),
        weight_decay=profile["weight_decay"],
        beta_1=beta_1,
        beta_2=beta_2,
    )


def randaugment(profile: dict, seed: int = 0):
    """The report's augmentation: RandAugment with 2 operations at factor 0.15, no flips.

    Keras' RandAugment draws from colour and geometry operations (contrast, brightness,
    rotation, shear, translation, ...) and never flips: a mirrored street would put
    left-hand traffic and mirrored signs into the data.
    """
    return keras.layers.RandAugment(
        value_range=(0, 255),
        num_ops=profile["randaugment_ops"],
        factor=profile["randaugment_factor"],
        seed=seed,
    )


def image_dataset(
    table: pd.DataFrame,
    root: Path,
    size: int,
    batch_size: int,
    training: bool = False,
    augment=None,
    seed: int = 0,
    cache: bool = True,
):
    """A ``tf.data`` pipeline of (image, cell) batches from an image table's files.

    Images are decoded once and cached in memory (``cache``), shuffled each epoch when
    ``training``, and augmented image by image by ``augment`` (a Keras layer) in parallel
    with training. Unreadable files should be removed first with ``images.readable_rows``.
    """
    import tensorflow as tf

    paths = [str(Path(root) / p) for p in table["image_path"]]
    labels = table["cell"].to_numpy().astype("int32")

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, "float32"), (size, size))
        return image, label

    data = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE
    )
    if cache:
        data = data.cache()
    if training:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        # one image at a time, so each image draws its own operations (and it is faster)
        data = data.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size)
    return data.prefetch(tf.data.AUTOTUNE)


def run_dir(profile: str, name: str) -> Path:
    """The folder of training run ``name``: ``build/<profile>/runs/<name>``."""
    return config.output_dir(profile, "runs") / name


def train(
    model,
    train_data,
    val_data,
    folder: Path,
    epochs: int,
    loss,
    distance_km=None,
    optimizer=None,
    verbose: int = 2,
    extra_callbacks=(),
) -> pd.DataFrame:
    """Compile and fit ``model``; return the per-epoch history (also in ``folder/history.csv``).

    Resumable: if ``folder/backup`` exists from an interrupted run, training continues after
    the last finished epoch instead of starting again. Saves ``best.keras`` (lowest
    validation loss) and ``last.keras``; stops on a NaN loss.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backup = folder / "backup"
    resuming = backup.exists()
    if not resuming:
        (folder / "history.csv").unlink(missing_ok=True)
        shutil.rmtree(folder / "logs", ignore_errors=True)
    metrics = losses.accuracy_metrics() + (
        losses.distance_metrics(distance_km) if distance_km is not None else []
    )
    model.compile(optimizer=optimizer or "adamw", loss=loss, metrics=metrics)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=resuming),
        keras.callbacks.ModelCheckpoint(str(folder / "best.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.ModelCheckpoint(str(folder / "last.keras")),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False),
        *extra_callbacks,
    ]
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )  # the pipeline shuffles
    return pd.read_csv(folder / "history.csv")


def predict(model, data) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, n_cells), true cells (n,)) over a dataset of (image, cell) batches."""
    probabilities, labels = [], []
    for batch_images, batch_labels in data:
        probabilities.append(np.asarray(model(batch_images, training=False)))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(probabilities), np.concatenate(labels)


def write_summary(folder: Path, summary: dict) -> None:
    """Write ``summary.json`` of a run atomically (settings and final metrics)."""
    with config.atomic_target(Path(folder) / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2, default=float))


def load_model(folder: Path, which: str = "best"):
    """Load ``best.keras`` or ``last.keras`` of a run (custom losses are not needed to predict)."""
    return keras.saving.load_model(Path(folder) / f"{which}.keras", compile=False, safe_mode=False)


def load_dataset(profile: str, extra: str | None = None) -> tuple[pd.DataFrame, Path]:
    """The image table written by notebook 03 and the folder its paths are relative to.

    ``extra="new_day"`` gives the test locations re-captured on another day.
    """
    root = config.output_dir(profile, "images")
    name = "dataset.csv" if extra is None else f"dataset_{extra}.csv"
    if not (root / name).exists():
        raise FileNotFoundError(f"No {name} in {root}. Run notebook 03 first (make all PROFILE={profile}).")
    return pd.read_csv(root / name), root
