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

* it needs no labels at all: no geocell and no coordinate is an input or a target (what the
  weights can know of *where* is only what the scenes themselves show; see the data below);
* it is the cheapest of the usual choices on two CPU cores: the encoder sees 17 of 65
  tokens, so a step costs about a third of a classification step, where a contrastive
  method (SimCLR) runs the encoder twice per image on two augmented views and needs large
  batches;
* it keeps colour. Contrastive learning is trained to ignore colour jitter, and a street's
  colours (brick, roofs, fields) are among the strongest cues of *where*; rotation
  prediction would mostly learn where the horizon is;
* MAE features are known to fine-tune well even where a linear read-out of them is weak
  (He et al., Table 3 and §5), which is how the report used its checkpoint.

**The data** are unlabelled synthetic scenes (:mod:`helpers.synthetic`) of the same
synthetic world as the image sets, around *training* places only. The ``default``
profile's image set and its split are computed as notebooks 01-03 compute them
(:func:`image_set_locations`, no build needed). Each pretext place is one of its training
locations moved 0.3-3 km in a random direction, and is drawn again if it comes closer to
a validation or test location than that location's nearest training location, or than the
median distance from a validation location to its nearest training location (0.50 km;
:func:`held_out_radius_km`): the pretraining never sees a held-out place from closer than
the training set does. A larger quantile would push the places out of the towns, where most
of the image set is (measured on candidates drawn as here: the median keeps 71 % of them;
0.75 sets a 1.17 km floor, keeps 52 % and left two cells without any of 4,000 places; 0.9:
3.67 km, 18 %, 32 cells without). No place lies within 50 m of any of the report's 42,570
locations, so no scene is one of any profile's places. The scenes are captured on days 100
and later and in weather sessions 1000-1047 (:func:`pretext_captures`); the image sets use
days 0 and 1 and sessions 0-47, so no sky of the pretraining is a sky of an image set, and
a session never follows a place. The renderer draws a place from smooth maps of Denmark, so
the scenes show what the regions of the training places look like (held-out places of the
same regions included), as ImageNet photos come from the same world as Street View.

``python -m helpers.pretrain`` (``make pretrained``) runs :data:`RECIPE` and writes
``pretrained/<name>/``; ``make all`` never runs it. ``--smoke`` runs :data:`SMOKE_RECIPE`
(seconds; the tests run it). Coordinates are (lat, lng) in degrees; distances in km.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import ops

from helpers import config, geo, model, safe_paths, synthetic

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
    # whose image set's validation and test places the pretext keeps away from (helpers.images
    # splits it as notebook 03 does); the rehearsal profile draws its own places and split
    "held_out_profile": "default",
    "move_km": (0.3, 3.0),  # each place: a *training* location moved this far in a random direction
    # and no closer to a validation or test location than that location's nearest training
    # location, nor than this quantile (the median) of validation locations' distance to theirs
    "held_out_quantile": 0.5,
    "min_distance_km": 0.05,  # and no closer than this to any of the report's 42,570 locations
    "first_day": 100,  # capture days 100, 101, ...: the image sets use days 0 and 1
    "images_per_day": 2_000,
    # weather: sessions 1000-1047, whose draws no image set makes (they draw sessions 0-47)
    "first_session": 1_000,
    "sessions": 48,
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


def image_set_locations(profile_name: str = "default") -> pd.DataFrame:
    """The locations of a synthetic profile's image set and their split, as notebooks 01-03 make them.

    Columns ``lat``, ``lng`` (degrees), ``cell`` and ``split`` ("train", "val", "test"), one
    row per image of ``dataset.csv``, in its order. Computed from the same functions, data
    and seed as the notebooks (locations, municipalities, ``geo.make_geocells``,
    ``datasets.sample_per_cell``, ``images.split_dataset``), so it needs no build: ``make
    pretrained`` runs on a fresh clone before any notebook has.
    """
    from helpers import config, datasets, images

    profile = config.get_profile(profile_name)
    if profile["image_source"] != "synthetic":
        raise ValueError(
            f"Profile {profile_name!r} downloads its images (image_source {profile['image_source']!r}), "
            "so its split depends on what the download returned; name a synthetic profile such as "
            "'default'."
        )
    municipalities = datasets.load_municipalities()
    located = geo.assign_municipality(datasets.load_locations(profile), municipalities)
    labels, _ = geo.make_geocells(located, municipalities, n_cells=profile["n_cells"], seed=profile["seed"])
    table = pd.DataFrame(located.loc[labels.index].drop(columns="geometry")).assign(cell=labels)
    subarea = "postcode" if "postcode" in table.columns else None  # notebook 03's rule
    chosen = datasets.sample_per_cell(
        table, table["cell"], profile["images_per_cell"], seed=profile["seed"], subarea=subarea, warn=False
    )
    chosen = chosen[["lat", "lng", "cell"]].reset_index(drop=True)
    return images.split_dataset(chosen, seed=profile["seed"])


def held_out_radius_km(image_set: pd.DataFrame, quantile: float) -> tuple[pd.DataFrame, float]:
    """How close a pretext place may come to each validation and test location of ``image_set``.

    Returns (the validation and test rows with a column ``radius_km``, the floor in km). A
    location's radius is its distance to its nearest training location, but at least the
    floor: ``quantile`` of the validation locations' distances to their nearest training
    location. So the pretraining never sees a held-out place from closer than the training
    set does, and never from closer than a typical validation location's training neighbour.
    """
    train = image_set[image_set["split"] == "train"]
    held_out = image_set[image_set["split"].isin(["val", "test"])].reset_index(drop=True)
    if train.empty or held_out.empty:
        raise ValueError("The image set needs training and validation/test rows (a 'split' column).")
    to_train = geo_tree(train).query(geo.metric_xy_km(held_out["lat"], held_out["lng"]), k=1)[0][:, 0]
    floor = float(np.quantile(to_train[held_out["split"].to_numpy() == "val"], quantile))
    return held_out.assign(radius_km=np.maximum(to_train, floor)), floor


def too_close_to_held_out(lat, lng, held_out: pd.DataFrame) -> np.ndarray:
    """Whether each place (lat, lng degrees) lies within some held-out location's ``radius_km``."""
    tree = geo_tree(held_out)
    radius = held_out["radius_km"].to_numpy()
    neighbours, distances = tree.query_radius(
        geo.metric_xy_km(lat, lng), r=radius.max(), return_distance=True
    )
    return np.array([bool((d < radius[n]).any()) for n, d in zip(neighbours, distances, strict=True)])


def pretext_places(
    image_set: pd.DataFrame, n: int, recipe: dict, avoid: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``n`` places (lat, lng in degrees) around ``image_set``'s training locations only.

    Each starts at a training location drawn at random (so places follow where the image set
    is dense) and moves ``recipe["move_km"]`` km in a random direction. A place is drawn
    again when it lies within a validation or test location's radius
    (:func:`held_out_radius_km` with ``recipe["held_out_quantile"]``), or closer than
    ``recipe["min_distance_km"]`` to any location of ``image_set`` or of ``avoid`` (e.g. the
    report's 42,570, which other profiles sample from). Column ``origin`` is the row of
    ``image_set`` each place started from; the pretraining never reads it.
    """
    rng = np.random.default_rng([recipe["seed"], 1])
    held_out, _ = held_out_radius_km(image_set, recipe["held_out_quantile"])
    train = image_set.index[image_set["split"] == "train"].to_numpy()
    start_latlng = image_set.loc[train, ["lat", "lng"]].to_numpy()
    taken = [image_set[["lat", "lng"]]] + ([avoid[["lat", "lng"]]] if avoid is not None else [])
    occupied = geo_tree(pd.concat(taken))
    low, high = recipe["move_km"]
    kept = []
    for _ in range(200):  # each round draws 2n candidates; in the default recipe about 70 % survive
        pick = rng.integers(len(train), size=2 * n)
        bearing, distance = rng.uniform(0, 2 * np.pi, 2 * n), rng.uniform(low, high, 2 * n)
        start = start_latlng[pick]
        lat = start[:, 0] + distance * np.cos(bearing) / 111.2
        lng = start[:, 1] + distance * np.sin(bearing) / (111.2 * np.cos(np.radians(start[:, 0])))
        nearest = occupied.query(geo.metric_xy_km(lat, lng), k=1)[0][:, 0]
        keep = (nearest >= recipe["min_distance_km"]) & ~too_close_to_held_out(lat, lng, held_out)
        kept.append(pd.DataFrame({"lat": lat[keep], "lng": lng[keep], "origin": train[pick[keep]]}))
        if sum(len(part) for part in kept) >= n:
            return pd.concat(kept, ignore_index=True).iloc[:n]
    raise ValueError(
        f"Only {sum(len(part) for part in kept):,} of {n:,} pretext places kept their distance from the "
        f"validation and test locations; widen move_km {recipe['move_km']} or lower held_out_quantile "
        f"{recipe['held_out_quantile']}."
    )


def geo_tree(reference: pd.DataFrame):
    """A KD-tree of ``reference`` locations in km (EPSG:25832), for nearest-distance queries."""
    from sklearn.neighbors import KDTree

    return KDTree(geo.metric_xy_km(reference["lat"].to_numpy(), reference["lng"].to_numpy()))


def pretext_captures(n: int, recipe: dict) -> pd.DataFrame:
    """The capture ``session`` and ``day`` of each of ``n`` pretext images, in order.

    Day ``first_day + i // images_per_day`` for the i-th image; its session is drawn at
    random, independent of its place, from ``sessions`` numbers starting at
    ``first_session``: weather draws of the renderer that no image set makes (image sets
    draw sessions 0 to ``synthetic.N_SESSIONS - 1`` on days 0 and 1).
    """
    rng = np.random.default_rng([recipe["seed"], 2])
    sessions = recipe["first_session"] + rng.integers(recipe["sessions"], size=n)
    days = recipe["first_day"] + np.arange(n) // recipe["images_per_day"]
    return pd.DataFrame({"session": sessions, "day": days})


def render_pretext_images(places: pd.DataFrame, geography: dict, recipe: dict) -> np.ndarray:
    """The pretext images of ``places``: (n, size, size, 3) uint8, captured per :func:`pretext_captures`."""
    size, world = recipe["image_size"], recipe["world_seed"]
    features = synthetic.scene_features(places["lat"], places["lng"], geography, seed=world)
    captures = pretext_captures(len(places), recipe)
    images = np.empty((len(places), size, size, 3), dtype=np.uint8)
    for day, rows in captures.groupby("day").indices.items():
        sessions = captures["session"].to_numpy()[rows]
        images[rows] = synthetic.render_locations(
            places.iloc[rows], features.iloc[rows], sessions, size, day=int(day), seed=world
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


def build_symbolically(autoencoder: MaskedAutoencoder, recipe: dict) -> None:
    """Create every weight of ``autoencoder`` by calling it on a symbolic batch (no data, no draws).

    ``fit`` would create them while tracing its first step; ``model.fit_run``'s backup needs
    them before (a resumed run restores into them). A symbolic call creates them in the same
    order, so the weights start as they would, and it moves no random state (the masks'
    seed generator stays where the seed put it). ``Model.build(shape)`` would not do: on a
    subclassed model it marks the model built without creating its layers' weights.
    """
    size = recipe["image_size"]
    autoencoder(keras.Input((size, size, 3), batch_size=recipe["batch_size"], dtype="uint8"))


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
    """Write ``backbone`` to ``folder`` in the Hugging Face layout; ``extra`` goes to pretraining.json.

    Beside the files goes ``SHA256SUMS``: the SHA-256 of each of them, in the format of GNU
    ``sha256sum`` (``sha256sum -c SHA256SUMS`` checks it). ``helpers.model`` compares the
    files of ``pretrained/<name>`` with it before loading them. The folder is written
    complete under a temporary name and then renamed into place.
    """
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
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.export")
    model.write_hf_folder(staging, hf_tensors(backbone), hf_config, size, extra_files)
    safe_paths.write_checksums(staging, [*model.HF_FILES, *extra_files])
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


# --- the recipe -------------------------------------------------------------------------------


def pretrain(
    recipe: dict,
    folder: Path,
    geography: dict | None = None,
    reference=None,
    image_set: pd.DataFrame | None = None,
    verbose: int = 2,
) -> dict:
    """Run ``recipe`` and write its encoder to ``folder``; return the record (also in pretraining.json).

    ``reference`` (the report's 42,570 locations), ``geography``
    (``synthetic.build_geography``) and ``image_set`` (the held-out profile's locations and
    split, :func:`image_set_locations`) are computed when not given. The record holds the
    recipe, the loss per epoch, the time of each stage (s), where the data came from and
    how far it stayed from the held-out places; ``folder/README.md`` says the same in prose.
    """
    from helpers import datasets

    started = time.perf_counter()
    if reference is None:
        reference = datasets.load_report_locations()
    if geography is None:
        geography = synthetic.build_geography(reference, datasets.load_municipalities())
    if image_set is None:
        image_set = image_set_locations(recipe["held_out_profile"])
    places = pretext_places(image_set, recipe["images"], recipe, avoid=reference)
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
    run = run_folder(folder, recipe)
    build_symbolically(autoencoder, recipe)  # BackupAndRestore restores into built weights
    # the workbook's one fit: backup and restore, history.csv, a NaN loss stops it; no .keras
    # checkpoints (the autoencoder is a subclassed model: the exported encoder is the result)
    fitted = model.fit_run(
        run, autoencoder, data, epochs=recipe["epochs"], checkpoints=False, verbose=verbose
    )
    trained = time.perf_counter()
    losses_per_epoch = fitted["history"]["loss"].tolist()
    if len(losses_per_epoch) < recipe["epochs"] or not np.all(np.isfinite(losses_per_epoch)):
        raise RuntimeError(
            f"Pretraining stopped after {len(losses_per_epoch)} of {recipe['epochs']} epochs with losses "
            f"{losses_per_epoch} (a NaN loss stops it): lower learning_rate in the recipe and run it again; "
            f"nothing was exported to {folder}."
        )
    record = {
        "pretext": "masked autoencoder (He et al., 2022): 75 % of patches hidden, normalised pixels",
        "recipe": recipe_record(recipe),
        "loss_per_epoch": [round(float(v), 4) for v in losses_per_epoch],
        **data_record(places, image_set, recipe),
        "seconds_rendering": round(rendered - started, 1),
        "seconds_training": round(trained - rendered, 1),
        "keras_backend": keras.backend.backend(),
    }
    export_backbone(backbone, folder, record)
    with config.atomic_target(Path(folder) / "README.md") as temporary:
        temporary.write_text(checkpoint_readme(record))
    shutil.rmtree(run, ignore_errors=True)  # exported: the history is in the record
    return record


def recipe_record(recipe: dict) -> dict:
    """``recipe`` as JSON writes and reads it back (its tuples as lists), for records and comparisons."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}


def run_folder(folder: Path, recipe: dict) -> Path:
    """The run folder of a pretraining that exports to ``folder``: ``.<name>.run`` beside it.

    It holds ``model.fit_run``'s backup (a killed pretraining resumes from its last finished
    epoch), ``history.csv`` and ``logs/``, and ``recipe.json``. A run folder left by another
    recipe is removed first, so a backup only resumes the recipe that wrote it. Removed once
    the encoder is exported.
    """
    folder = Path(folder)
    run = folder.with_name(f".{folder.name}.run")
    wanted = json.dumps(recipe_record(recipe), sort_keys=True)
    recorded = run / "recipe.json"
    if run.exists() and (not recorded.exists() or recorded.read_text() != wanted):
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    if not recorded.exists():
        with config.atomic_target(recorded) as temporary:
            temporary.write_text(wanted)
    return run


def places_fingerprint(places: pd.DataFrame) -> str:
    """SHA-256 of the places' (lat, lng) rounded to 1e-6 degrees (about 0.1 m), in order.

    Rounded so that the last bits of another machine's trigonometry do not change it.
    """
    rounded = np.round(places[["lat", "lng"]].to_numpy(dtype="float64"), 6) + 0.0  # no -0.0
    return hashlib.sha256(np.ascontiguousarray(rounded).tobytes()).hexdigest()


def data_record(places: pd.DataFrame, image_set: pd.DataFrame, recipe: dict) -> dict:
    """What the pretext data are and how far they kept from the held-out places (pretraining.json).

    ``data``: one sentence; ``held_out``: the held-out profile, its numbers of validation and
    test locations, the rule's floor (km) and the pretext places' nearest approach to a
    held-out location (km); ``places_sha256``: :func:`places_fingerprint` of the places.
    """
    held_out, floor = held_out_radius_km(image_set, recipe["held_out_quantile"])
    nearest = geo_tree(held_out).query(geo.metric_xy_km(places["lat"], places["lng"]), k=1)[0][:, 0]
    to_pretext = geo_tree(places).query(geo.metric_xy_km(held_out["lat"], held_out["lng"]), k=1)[0][:, 0]
    captures = pretext_captures(len(places), recipe)
    low, high = recipe["move_km"]
    profile = recipe["held_out_profile"]
    first, last = recipe["first_session"], recipe["first_session"] + recipe["sessions"] - 1
    data = (
        f"{len(places):,} unlabelled synthetic scenes at {recipe['image_size']} px from the workbook's "
        f"renderer (helpers.synthetic, version {synthetic.RENDERER_VERSION}): the same synthetic Denmark "
        f"as the image sets, around training places only. Each place is a training location of the "
        f"{profile} profile's image set moved {low}-{high} km, and lies no closer to any of its "
        f"validation or test locations than that location's nearest training location, nor closer than "
        f"{floor:.2f} km (the median distance from a validation location to the training set); the "
        f"nearest comes within {nearest.min():.2f} km. Capture days {captures['day'].min()}-"
        f"{captures['day'].max()} and weather sessions {first}-{last}, which no image set uses (they use "
        f"days 0 and 1, sessions 0-{synthetic.N_SESSIONS - 1}). The pretext reads pixels only: no geocell "
        "label and no coordinate enters its loss, but a scene's content follows its place, so the "
        "encoder has seen what the training places' surroundings look like."
    )
    return {
        "data": data,
        "held_out": {
            "profile": profile,
            "validation_locations": int((held_out["split"] == "val").sum()),
            "test_locations": int((held_out["split"] == "test").sum()),
            "floor_km": round(floor, 3),
            "nearest_pretext_place_km": round(float(nearest.min()), 3),
            "median_nearest_pretext_place_km": round(float(np.median(to_pretext)), 3),
        },
        "places_sha256": places_fingerprint(places),
    }


def checkpoint_readme(record: dict) -> str:
    """The checkpoint folder's README.md: what the encoder saw and did not see, from ``record``."""
    import textwrap

    recipe, held = record["recipe"], record["held_out"]
    losses = record["loss_per_epoch"]
    architecture = (
        f"{recipe['vit_layers']} layers, width {recipe['vit_width']}, {recipe['vit_heads']} heads, "
        f"{recipe['patch_size']}-pixel patches, {recipe['image_size']} px"
    )
    paragraphs = [
        "# street-mae-vit: the workbook's small pretrained ViT",
        "Written by `make pretrained` (`python -m helpers.pretrain`, the recipe `RECIPE` in "
        "`helpers/pretrain.py`); every number here comes from `pretraining.json` beside it.",
        f"**What it is.** A keras-hub `ViTBackbone` ({architecture}) in the Hugging Face layout, "
        "self-supervised on unlabelled images of the same synthetic world, around training places "
        f"only: {record['pretext']}; {recipe['epochs']} epochs; reconstruction error {losses[0]} after "
        f"the first epoch, {losses[-1]} after the last (1.0 is predicting nothing).",
        f"**What it saw.** {record['data']}",
        "**What it did not see.**",
        f"- any validation or test place of the `{held['profile']}` profile's image set from closer "
        f"than its nearest training location, or than {held['floor_km']} km: the pretext place "
        f"nearest to any of its {held['validation_locations']} validation and {held['test_locations']} "
        f"test locations is {held['nearest_pretext_place_km']} km away, and half of those locations "
        f"have none within {held['median_nearest_pretext_place_km']} km;",
        "- any image of any image set, or any capture day or weather session an image set uses;",
        "- any geocell label or coordinate, as an input or as a target.",
        "**What that does not rule out.** The renderer draws a place's houses, colours, hills and "
        "trees from smooth maps of Denmark, so scenes near a training place look like the region "
        "around it, held-out places of the same region included, as ImageNet photos look like the "
        "world that Street View photographs. The rule holds for the "
        f"`{held['profile']}` profile as committed (its seed and images per cell): another seed, or "
        "the `rehearsal` profile, samples and splits other places, which these scenes may come "
        "closer to.",
        f"`places_sha256` fingerprints the {recipe['images']:,} places, so that `tests/test_pretrain.py` "
        "can recompute them and check the rule against the split of today's code.",
    ]
    filled = [
        textwrap.fill(text, 96, subsequent_indent="  " if text.startswith("- ") else "")
        for text in paragraphs
    ]
    text = filled[0]
    for previous, paragraph, block in zip(paragraphs, paragraphs[1:], filled[1:], strict=False):
        in_list = previous.startswith("- ") and paragraph.startswith("- ")  # list items: no blank line
        text += ("\n" if in_list else "\n\n") + block
    return text + "\n"


def _pretext_dataset(pictures: np.ndarray, batch: int, seed: int):
    """Shuffled full batches of uint8 pictures with a dummy target (the model returns its own loss)."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((pictures, np.zeros(len(pictures), dtype="float32")))
    data = data.shuffle(len(pictures), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch, drop_remainder=len(pictures) >= batch).prefetch(2)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex (``safe_paths.file_sha256``)."""
    return safe_paths.file_sha256(path)


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
    # export_backbone's SHA256SUMS, checked against the files, and extended to the files written
    # after it (README.md): every committed file of the folder is listed; commit SHA256SUMS too
    listed = safe_paths.check_checksums(folder, required=model.HF_FILES)
    later = [p.name for p in folder.iterdir() if p.is_file() and safe_paths.is_plain_name(p.name)]
    safe_paths.write_checksums(folder, sorted({*listed, *later} - {safe_paths.CHECKSUMS_NAME}))
    for name, digest in safe_paths.check_checksums(folder, required=model.HF_FILES).items():
        path = folder / name
        print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  sha256 {digest}")
    print(f"{folder / safe_paths.CHECKSUMS_NAME}: checked")


if __name__ == "__main__":
    main()
