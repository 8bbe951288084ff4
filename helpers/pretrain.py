"""The workbook's own pretrained ViT: masked-patch reconstruction on synthetic street scenes.

The report fine-tuned a ViT that Google had pretrained on ImageNet; a ViT trained from
scratch on a few thousand images learns little beyond shortcuts (Dosovitskiy et al., 2021;
Steiner et al., 2022). So that the ``default`` and ``rehearsal`` profiles fine-tune a
pretrained network too, this module pretrains the small ViT they use and writes it in the
Hugging Face layout (``config.json``, ``model.safetensors``, ``preprocessor_config.json``),
which ``model.resolve_preset("workbook:<name>")`` then loads through keras-hub's converter,
the code path of ``hf://google/vit-base-patch16-224``.

**The pretext task: a masked autoencoder** (He et al., 2022, "Masked Autoencoders Are
Scalable Vision Learners"). Each image is cut into patches; three quarters of them are
hidden at random; the ViT encodes the visible quarter (plus its class token), and a one-block
decoder, discarded afterwards, predicts the hidden patches' pixels (each patch normalised
to mean 0 and variance 1, MAE's "normalised pixel" target). Why this task, here:

* it needs no labels at all, so no geocell and no coordinate can leak into the weights;
* it is the cheapest of the usual choices on two CPU cores: the encoder sees 17 of 65
  tokens, so a step costs about a third of a classification step, where a contrastive
  method (SimCLR) runs the encoder twice per image on two augmented views and needs large
  batches;
* it keeps colour. Contrastive learning is trained to ignore colour jitter, and a street's
  colours (brick, roofs, fields) are among the strongest cues of *where*; rotation
  prediction would mostly learn where the horizon is;
* MAE features are known to fine-tune well even where a linear read-out of them is weak
  (He et al., Table 3 and §5), which is how the report used its checkpoint.

**The data** are synthetic scenes (:mod:`helpers.synthetic`) that are not in any image set
of the workbook: places near the report's locations but moved 0.3-3 km in a random
direction (none within 50 m of any of the 42,570 locations, so no scene is one of a
profile's places), rendered on capture days 100 and later (the image sets use days 0 and
1), with each image's weather drawn at random (no capture session follows a place). The
scenes come from the same renderer (the same "Denmark"), as ImageNet photos come from the
same world as Street View.

``python -m helpers.pretrain`` (``make pretrained``) runs :data:`RECIPE` and writes
``pretrained/<name>/``; ``make all`` never runs it. ``--smoke`` runs :data:`SMOKE_RECIPE`
(seconds; the tests run it). Coordinates are (lat, lng) in degrees; distances in km.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import ops

from helpers import geo, model, synthetic

CHECKPOINT_NAME = "street-mae-vit"
PRETRAINED_DIR = model.PRETRAINED_DIR

# The encoder is the architecture the default and rehearsal profiles fine-tune.
RECIPE = {
    "image_size": 64,
    "patch_size": 8,
    "vit_layers": 2,
    "vit_width": 64,
    "vit_heads": 4,
    "vit_mlp_width": 128,
    "images": 16_000,  # synthetic scenes, rendered once (about 1 min on 2 cores)
    "epochs": 20,
    "batch_size": 128,
    "learning_rate": 1.5e-3,  # MAE's base rate 1.5e-4 per 256 images, scaled up for a small model
    "warmup_fraction": 0.05,
    "weight_decay": 0.05,  # MAE's
    "beta_1": 0.9,  # MAE's betas
    "beta_2": 0.95,
    "mask_ratio": 0.75,  # MAE's: three patches in four hidden
    "decoder_width": 64,
    "decoder_layers": 1,
    "decoder_heads": 4,
    "move_km": (0.3, 3.0),  # each place: a report location moved this far in a random direction
    "min_distance_km": 0.05,  # and no closer than this to any report location
    "first_day": 100,  # capture days 100, 101, ...: the image sets use days 0 and 1
    "images_per_day": 2_000,
    "world_seed": 0,  # the renderer's Denmark: the same as every profile's (seed 0)
    "seed": 2023,  # places, weather, masks and initial weights
    "jit_compile": True,  # XLA: 1.4x the steps/s on 2 cores once compiled (about 40 s)
}
# A few seconds: the tests run the whole recipe at this size.
SMOKE_RECIPE = {
    **RECIPE,
    "image_size": 32,
    "vit_width": 16,
    "vit_heads": 2,
    "vit_mlp_width": 32,
    "images": 96,
    "epochs": 2,
    "batch_size": 32,
    "decoder_width": 16,
    "decoder_heads": 2,
    "images_per_day": 48,
    "jit_compile": False,  # compiling would take longer than the two tiny epochs
}


# --- data ---------------------------------------------------------------------------------


def pretext_places(reference: pd.DataFrame, n: int, recipe: dict) -> pd.DataFrame:
    """``n`` places (lat, lng in degrees) near ``reference`` locations but none of them.

    Each starts at a reference location drawn at random (so places follow where people
    live, as the image sets do) and moves ``recipe["move_km"]`` km in a random direction;
    a place closer than ``recipe["min_distance_km"]`` to any reference location is drawn
    again.
    """
    rng = np.random.default_rng([recipe["seed"], 1])
    tree = geo_tree(reference)
    low, high = recipe["move_km"]
    places = np.empty((0, 2))
    while len(places) < n:
        start = reference[["lat", "lng"]].to_numpy()[rng.integers(len(reference), size=2 * n)]
        bearing, distance = rng.uniform(0, 2 * np.pi, 2 * n), rng.uniform(low, high, 2 * n)
        lat = start[:, 0] + distance * np.cos(bearing) / 111.2
        lng = start[:, 1] + distance * np.sin(bearing) / (111.2 * np.cos(np.radians(start[:, 0])))
        nearest = tree.query(geo.metric_xy_km(lat, lng), k=1)[0][:, 0]
        keep = nearest >= recipe["min_distance_km"]
        places = np.concatenate([places, np.column_stack([lat, lng])[keep]])
    return pd.DataFrame(places[:n], columns=["lat", "lng"])


def geo_tree(reference: pd.DataFrame):
    """A KD-tree of ``reference`` locations in km (EPSG:25832), for nearest-distance queries."""
    from sklearn.neighbors import KDTree

    return KDTree(geo.metric_xy_km(reference["lat"].to_numpy(), reference["lng"].to_numpy()))


def render_pretext_images(places: pd.DataFrame, geography: dict, recipe: dict) -> np.ndarray:
    """The pretext images of ``places``: (n, size, size, 3) uint8.

    Capture day ``first_day + i // images_per_day`` for the i-th place; every image's
    weather is one of the renderer's sessions drawn at random, independent of its place.
    """
    rng = np.random.default_rng([recipe["seed"], 2])
    size, world = recipe["image_size"], recipe["world_seed"]
    features = synthetic.scene_features(places["lat"], places["lng"], geography, seed=world)
    sessions = rng.integers(synthetic.N_SESSIONS, size=len(places))
    images = np.empty((len(places), size, size, 3), dtype=np.uint8)
    step = recipe["images_per_day"]
    for start in range(0, len(places), step):
        chunk = slice(start, start + step)
        day = recipe["first_day"] + start // step
        images[chunk] = synthetic.render_locations(
            places.iloc[chunk], features.iloc[chunk], sessions[chunk], size, day=day, seed=world
        )
    return images


# --- the masked autoencoder -----------------------------------------------------------------


def patch_pixels(images, patch: int):
    """Images (n, S, S, C) -> patches (n, T, P*P*C), row by row (as ``vit_from_scratch.patchify``)."""
    side, channels = images.shape[1], images.shape[3]
    rows = side // patch
    x = ops.reshape(images, (-1, rows, patch, rows, patch, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * rows, patch * patch * channels))


class MaskedAutoencoder(keras.Model):
    """A keras-hub ``ViTBackbone`` as the encoder of a masked autoencoder (He et al., 2022).

    Called on images (n, S, S, 3) with values 0-255, it returns each image's loss: the mean
    squared error of the predicted pixels of its hidden patches (each patch's target
    normalised to mean 0, variance 1). Predicting 0 everywhere scores 1.0.

    The encoder runs the backbone's own layers (patch projection, position embeddings,
    class token, transformer blocks, final LayerNorm) on the visible tokens only, so its
    weights are exactly those that ``ViTBackbone`` uses on a whole image.
    """

    def __init__(self, backbone, recipe: dict, **kwargs):
        super().__init__(**kwargs)
        import keras_hub

        self.backbone = backbone
        self.patch = recipe["patch_size"]
        self.n_patches = (recipe["image_size"] // self.patch) ** 2
        self.n_visible = max(1, int(round(self.n_patches * (1 - recipe["mask_ratio"]))))
        width = recipe["decoder_width"]
        self.embedding = backbone.get_layer("vit_patching_and_embedding")
        self.encoder = backbone.get_layer("vit_encoder")
        self.seed_generator = keras.random.SeedGenerator(recipe["seed"])
        self.to_decoder = keras.layers.Dense(width, name="to_decoder")
        self.mask_token = self.add_weight(
            shape=(1, 1, width), initializer=keras.initializers.RandomNormal(stddev=0.02), name="mask_token"
        )
        self.decoder_positions = keras.layers.Embedding(self.n_patches + 1, width, name="decoder_positions")
        self.decoder_blocks = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim=2 * width,
                num_heads=recipe["decoder_heads"],
                normalize_first=True,
                layer_norm_epsilon=1e-6,
                name=f"decoder_block_{i}",
            )
            for i in range(recipe["decoder_layers"])
        ]
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm")
        self.to_pixels = keras.layers.Dense(self.patch * self.patch * 3, name="to_pixels")

    def encode_visible(self, images):
        """(encoder tokens (n, 1+K, D) after the final LayerNorm, choice (n, K, T)) for K visible patches.

        Row k of the choice is one-hot on the patch that token k+1 shows. With every patch
        visible the class token is exactly the backbone's on the whole image (self-attention
        does not care about the order of the tokens; their positions were added before).
        """
        x = ops.cast(images, "float32") * (2 / 255) - 1  # the checkpoint's image processor: [-1, 1]
        positions = self.embedding.position_embedding.embeddings  # (T+1, D)
        tokens = self.embedding.patch_embedding(x)  # (n, S/P, S/P, D)
        tokens = ops.reshape(tokens, (-1, self.n_patches, tokens.shape[-1])) + positions[1:]
        # a random subset of patches per image: the first n_visible of a random order
        noise = keras.random.uniform((ops.shape(tokens)[0], self.n_patches), seed=self.seed_generator)
        keep = ops.argsort(noise, axis=1)[:, : self.n_visible]
        chosen = ops.one_hot(keep, self.n_patches)  # (n, K, T): row k picks patch keep[k]
        visible = ops.matmul(chosen, tokens)  # (n, K, D)
        class_token = self.embedding.class_token + positions[:1]
        class_token = ops.broadcast_to(class_token, (ops.shape(visible)[0], 1, visible.shape[-1]))
        encoded = ops.concatenate([class_token, visible], axis=1)
        for block in self.encoder.encoder_layers:
            encoded = block(encoded)
        return self.encoder.layer_norm(encoded), chosen

    def call(self, images, training=False):
        encoded, chosen = self.encode_visible(images)
        x = ops.cast(images, "float32") * (2 / 255) - 1
        encoded = self.to_decoder(encoded)
        # put each visible token back in its place; the hidden places get the mask token
        shown = ops.sum(chosen, axis=1)  # (n, T): 1 where visible
        placed = ops.matmul(ops.transpose(chosen, (0, 2, 1)), encoded[:, 1:])
        placed = placed + (1 - shown)[..., None] * self.mask_token
        decoded = ops.concatenate([encoded[:, :1], placed], axis=1)
        decoded = decoded + self.decoder_positions(ops.arange(self.n_patches + 1))
        for block in self.decoder_blocks:
            decoded = block(decoded)
        predicted = self.to_pixels(self.decoder_norm(decoded)[:, 1:])  # (n, T, P*P*3)
        target = patch_pixels(x, self.patch)
        mean = ops.mean(target, axis=-1, keepdims=True)
        target = (target - mean) / ops.sqrt(ops.var(target, axis=-1, keepdims=True) + 1e-6)
        error = ops.mean((predicted - target) ** 2, axis=-1)  # (n, T)
        hidden = 1 - shown
        return ops.sum(error * hidden, axis=1) / ops.sum(hidden, axis=1)


def new_backbone(recipe: dict):
    """A freshly initialised keras-hub ``ViTBackbone`` of the recipe's architecture."""
    import keras_hub

    size, patch = recipe["image_size"], recipe["patch_size"]
    return keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3),
        patch_size=(patch, patch),
        num_layers=recipe["vit_layers"],
        num_heads=recipe["vit_heads"],
        hidden_dim=recipe["vit_width"],
        mlp_dim=recipe["vit_mlp_width"],
    )


def hf_tensors(backbone) -> dict:
    """The weights of a keras-hub ``ViTBackbone`` as Hugging Face ``ViTModel`` tensors (NumPy).

    The inverse of keras-hub's converter (``keras_hub/src/utils/transformers/convert_vit.py``):
    linear weights become (out, in), the patch convolution (D, C, P, P), each attention
    projection (D, H, d) a (D, D) matrix.
    """
    embedding = backbone.get_layer("vit_patching_and_embedding")
    encoder = backbone.get_layer("vit_encoder")
    width = backbone.hidden_dim

    def array(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float32")

    tensors = {
        "vit.embeddings.cls_token": array(embedding.class_token).reshape(1, 1, width),
        "vit.embeddings.position_embeddings": array(embedding.position_embedding.embeddings)[None],
        "vit.embeddings.patch_embeddings.projection.weight": array(
            embedding.patch_embedding.kernel
        ).transpose(3, 2, 0, 1),
        "vit.embeddings.patch_embeddings.projection.bias": array(embedding.patch_embedding.bias),
        "vit.layernorm.weight": array(encoder.layer_norm.gamma),
        "vit.layernorm.bias": array(encoder.layer_norm.beta),
    }
    for i, block in enumerate(encoder.encoder_layers):
        prefix = f"vit.encoder.layer.{i}"
        mha = block.mha
        for name, dense in (("query", mha.query_dense), ("key", mha.key_dense), ("value", mha.value_dense)):
            tensors[f"{prefix}.attention.attention.{name}.weight"] = (
                array(dense.kernel).reshape(width, width).T
            )
            tensors[f"{prefix}.attention.attention.{name}.bias"] = array(dense.bias).reshape(width)
        tensors[f"{prefix}.attention.output.dense.weight"] = (
            array(mha.output_dense.kernel).reshape(width, width).T
        )
        tensors[f"{prefix}.attention.output.dense.bias"] = array(mha.output_dense.bias)
        tensors[f"{prefix}.intermediate.dense.weight"] = array(block.mlp.dense_1.kernel).T
        tensors[f"{prefix}.intermediate.dense.bias"] = array(block.mlp.dense_1.bias)
        tensors[f"{prefix}.output.dense.weight"] = array(block.mlp.dense_2.kernel).T
        tensors[f"{prefix}.output.dense.bias"] = array(block.mlp.dense_2.bias)
        tensors[f"{prefix}.layernorm_before.weight"] = array(block.layer_norm_1.gamma)
        tensors[f"{prefix}.layernorm_before.bias"] = array(block.layer_norm_1.beta)
        tensors[f"{prefix}.layernorm_after.weight"] = array(block.layer_norm_2.gamma)
        tensors[f"{prefix}.layernorm_after.bias"] = array(block.layer_norm_2.beta)
    return {name: np.ascontiguousarray(value) for name, value in tensors.items()}


def export_backbone(backbone, folder: Path, extra: dict | None = None) -> Path:
    """Write ``backbone`` to ``folder`` in the Hugging Face layout; ``extra`` goes to pretraining.json."""
    size = backbone.image_shape[0]
    hf_config = model.hf_vit_config(
        image_size=size,
        patch=backbone.patch_size[0],
        hidden=backbone.hidden_dim,
        heads=backbone.num_heads,
        layers=backbone.num_layers,
        mlp=backbone.mlp_dim,
        layer_norm_eps=backbone.layer_norm_epsilon,
    )
    extra_files = {"pretraining.json": json.dumps(extra, indent=2)} if extra else {}
    model.write_hf_folder(folder, hf_tensors(backbone), hf_config, size, extra_files)
    return Path(folder)


# --- the recipe -------------------------------------------------------------------------------


def pretrain(
    recipe: dict, folder: Path, geography: dict | None = None, reference=None, verbose: int = 2
) -> dict:
    """Run ``recipe`` and write its encoder to ``folder``; return the record (also in pretraining.json).

    ``reference`` (the report's 42,570 locations) and ``geography``
    (``synthetic.build_geography``) are loaded when not given. The record holds the recipe,
    the loss per epoch, the time of each stage (s) and where the data came from.
    """
    from helpers import datasets

    started = time.perf_counter()
    if reference is None:
        reference = datasets.load_report_locations()
    if geography is None:
        geography = synthetic.build_geography(reference, datasets.load_municipalities())
    places = pretext_places(reference, recipe["images"], recipe)
    pictures = render_pretext_images(places, geography, recipe)
    rendered = time.perf_counter()

    keras.utils.set_random_seed(recipe["seed"])
    backbone = new_backbone(recipe)
    autoencoder = MaskedAutoencoder(backbone, recipe)
    batch = recipe["batch_size"]
    steps = max(len(pictures) // batch, 1)
    schedule = model.WarmupPolynomialDecay(
        recipe["learning_rate"],
        int(recipe["warmup_fraction"] * steps * recipe["epochs"]),
        steps * recipe["epochs"],
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=recipe["weight_decay"],
        beta_1=recipe["beta_1"],
        beta_2=recipe["beta_2"],
    )
    optimizer.exclude_from_weight_decay(
        var_names=[r"(^|/)(bias|gamma|beta|class_token|embeddings|mask_token)(:\d+)?$"]
    )
    autoencoder.compile(
        optimizer=optimizer,
        loss=lambda _, per_image: per_image,
        jit_compile=recipe["jit_compile"] and keras.backend.backend() != "torch",
    )
    data = _pretext_dataset(pictures, batch, recipe["seed"])
    history = autoencoder.fit(data, epochs=recipe["epochs"], verbose=verbose)
    trained = time.perf_counter()
    record = {
        "pretext": "masked autoencoder (He et al., 2022): 75 % of patches hidden, normalised pixels",
        "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
        "loss_per_epoch": [round(float(v), 4) for v in history.history["loss"]],
        "data": (
            f"{len(pictures):,} synthetic scenes (helpers.synthetic, renderer version "
            f"{synthetic.RENDERER_VERSION}) at {recipe['image_size']} px: places moved "
            f"{recipe['move_km'][0]}-{recipe['move_km'][1]} km from the report's locations (none within "
            f"{recipe['min_distance_km'] * 1000:.0f} m of one), capture days {recipe['first_day']} and "
            "later, "
            "weather drawn at random; no geocell labels, no coordinates"
        ),
        "seconds_rendering": round(rendered - started, 1),
        "seconds_training": round(trained - rendered, 1),
        "keras_backend": keras.backend.backend(),
    }
    export_backbone(backbone, folder, record)
    return record


def _pretext_dataset(pictures: np.ndarray, batch: int, seed: int):
    """Shuffled full batches of uint8 pictures with a dummy target (the model returns its own loss)."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((pictures, np.zeros(len(pictures), dtype="float32")))
    data = data.shuffle(len(pictures), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch, drop_remainder=len(pictures) >= batch).prefetch(2)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pretrain the workbook's small ViT (make pretrained).")
    parser.add_argument("--smoke", action="store_true", help="the recipe at smoke size (seconds)")
    parser.add_argument("--name", default=CHECKPOINT_NAME, help="folder name under --output")
    parser.add_argument(
        "--output", type=Path, default=PRETRAINED_DIR, help="parent folder (default pretrained/)"
    )
    args = parser.parse_args(argv)
    if not model._CHECKPOINT_NAME.match(args.name):
        parser.error(f"--name {args.name!r}: use lower-case letters, digits, '-' and '_' (a folder name).")
    folder = args.output / args.name
    record = pretrain(SMOKE_RECIPE if args.smoke else RECIPE, folder)
    print(json.dumps({k: v for k, v in record.items() if k != "recipe"}, indent=2))
    for name in sorted(p.name for p in folder.iterdir()):
        path = folder / name
        print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
