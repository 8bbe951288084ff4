"""The Vision Transformer geocell classifier: model, optimiser, input pipeline and training.

Model: a keras-hub ``ViTBackbone`` whose class token feeds a softmax over the cells. In the
``full`` profile the backbone is the report's checkpoint, ``google/vit-base-patch16-224``,
converted from its Hugging Face files by keras-hub (``hf://`` presets, or a local folder
holding ``config.json`` and ``model.safetensors``); in ``default`` and ``rehearsal`` it is
the small ViT the workbook pretrained itself (``workbook:`` presets, ``pretrained/``,
:mod:`helpers.pretrain`), loaded the same way; in ``smoke`` a tiny ViT from scratch.
Inputs are RGB images with values 0-255; the model scales
them to [-1, 1] itself, as the checkpoint expects.

The workbook's other networks live here too: the hybrid cell-and-offset head (notebook 11,
:func:`build_hybrid`), the multi-task ViT and a ResNet-style CNN (notebook 12,
:func:`build_multitask`, :func:`build_cnn`).

Every training run of the workbook goes through one loop, :func:`train` (callbacks, the
checkpoint rule, resume, precision, devices, ``summary.json`` and the results row), on any
Keras backend. Each run lives in ``build/<profile>/runs/<name>/``: ``history.csv`` (one row
per epoch), ``best.keras`` and ``last.keras``, ``backup/`` (to resume an interrupted run),
``logs/`` (TensorBoard) and ``summary.json``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import ops

from helpers import config, device, distribute, losses, safe_paths

# The folder of the workbook's own pretrained checkpoints (helpers.pretrain, `make pretrained`)
PRETRAINED_DIR = config.REPO_ROOT / "pretrained"
_CHECKPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Each committed checkpoint folder holds SHA256SUMS (GNU sha256sum's format), written by
# `make pretrained` (helpers.pretrain.export_backbone) and compared before the folder is used.
CHECKSUMS_NAME = safe_paths.CHECKSUMS_NAME
# a keras-hub preset name (fetched by keras-hub, not a folder here)
_KERAS_HUB_PRESET = re.compile(r"[a-z0-9_]{1,100}")
# config.json of a Hugging Face ViT -> the profile setting whose bound (config.SETTING_RULES) it obeys
_HF_SIZE_SETTINGS = {
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_hidden_layers": "vit_layers",
    "hidden_size": "vit_width",
    "num_attention_heads": "vit_heads",
    "intermediate_size": "vit_mlp_width",
}


class CheckpointError(ValueError):
    """A checkpoint's files are damaged, differ from their checksums, or describe an impossible network."""


def resolve_preset(profile: dict, preset: str | None = None) -> str | None:
    """The checkpoint to load for ``profile``: an ``hf://`` preset, a local folder, or None.

    Two forms name the workbook's own checkpoints, both in the Hugging Face layout and loaded
    through the same keras-hub converter as ``hf://google/vit-base-patch16-224``:

    ``"workbook:<name>"`` (the default and rehearsal profiles)
        the pretrained ViT committed in ``pretrained/<name>/`` (``helpers.pretrain``,
        ``make pretrained``). ``<name>`` must be a plain folder name (lower-case letters,
        digits, ``-``, ``_``) of a checkpoint that is there.
    ``"standin:<name>"``
        a tiny checkpoint with random weights that the workbook writes into
        ``build/<profile>/checkpoints/<name>`` the first time, to rehearse the loading path.
        ``<name>`` must be a plain name (letters, digits, ".", "_", "-"; see
        ``helpers.safe_paths.plain_name``), so that writing it replaces nothing but that one
        checkpoint folder.

    Anything else must be what ``config.pretrained_problem`` allows: ``hf://<owner>/<name>``
    of plain ASCII names (returned as it is, for keras-hub to fetch), a keras-hub preset
    name, or a local checkpoint folder that is a real directory. A local folder that holds
    ``SHA256SUMS`` is compared with it first, and a folder in ``pretrained/`` must hold one
    (:func:`_checked_checkpoint`). Raises UnsafePathError (a ValueError) naming what is wrong.
    """
    preset = preset or profile["pretrained"]
    if not preset:
        return preset
    preset = str(preset)
    if preset.startswith("workbook:"):
        return str(workbook_checkpoint(preset.split(":", 1)[1]))
    if not preset.startswith("standin:"):
        problem = config.pretrained_problem(preset)
        if problem:
            raise safe_paths.UnsafePathError(
                f"The checkpoint to load is not usable: {problem}. Give "
                f"{config.SETTING_RULES['pretrained'][0]}."
            )
        if "://" in preset or _KERAS_HUB_PRESET.fullmatch(preset):
            return preset
        folder = Path(preset).expanduser()
        in_pretrained = folder.resolve().parent == PRETRAINED_DIR.resolve()
        label = f"'workbook:{folder.resolve().name}'" if in_pretrained else str(folder)
        _checked_checkpoint(folder, label, need_checksums=in_pretrained)
        return preset
    name = safe_paths.plain_name(preset.split(":", 1)[1], f"The checkpoint name of {preset!r}")
    checkpoints = config.output_dir(profile, "checkpoints")
    safe_paths.inside(checkpoints, name, "checkpoint folder")  # a link out of the folder, say
    folder = checkpoints / name
    if not (folder / "model.safetensors").exists():
        write_hf_vit_checkpoint(
            folder,
            image_size=profile["image_size"],
            patch=profile["patch_size"],
            hidden=profile["vit_width"],
            heads=profile["vit_heads"],
            layers=profile["vit_layers"],
            mlp=profile["vit_mlp_width"],
            seed=profile["seed"],
        )
    return str(folder)


def checkpoint_name(profile: dict) -> str | None:
    """The checkpoint a run of ``profile`` starts from, as the profile names it (None: from scratch).

    ``"workbook:street-mae-vit"`` or ``"hf://google/vit-base-patch16-224"``: a name that means
    the same on every machine, unlike the folder :func:`resolve_preset` finds.
    """
    return str(profile["pretrained"]) if profile.get("pretrained") else None


def checkpoint_sha256(profile: dict) -> str | None:
    """SHA-256 of the ``model.safetensors`` a run of ``profile`` loads, when it is a local file."""
    preset = resolve_preset(profile)
    path = Path(str(preset)) / "model.safetensors" if preset else None
    if path is None or not path.is_file():
        return None
    return safe_paths.file_sha256(path)


def workbook_checkpoint(name: str) -> Path:
    """The folder of the committed checkpoint ``pretrained/<name>``, checked before use.

    ``name`` must be a plain folder name (no path, no ``..``); the folder must lie in
    ``pretrained/`` (a link out of it is refused) and hold ``config.json``,
    ``model.safetensors`` and ``preprocessor_config.json``, each the file its ``SHA256SUMS``
    records (:func:`_checked_checkpoint`).
    """
    available = sorted(p.name for p in PRETRAINED_DIR.glob("*") if (p / "config.json").exists())
    if not _CHECKPOINT_NAME.match(name):
        raise ValueError(
            f"'workbook:{name}' does not name a checkpoint: after 'workbook:' give a folder name in "
            f"{PRETRAINED_DIR} (lower-case letters, digits, '-' and '_'), one of: "
            f"{', '.join(available) or 'none'}."
        )
    folder = PRETRAINED_DIR / name
    try:
        safe_paths.inside(PRETRAINED_DIR, name, f"The checkpoint folder of 'workbook:{name}'")
    except safe_paths.UnsafePathError as error:
        raise safe_paths.UnsafePathError(f"{error} {_restore_hint(folder)}") from None
    missing = [f for f in HF_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"No complete checkpoint 'workbook:{name}': {folder} lacks {', '.join(missing)}. "
            f"Checkpoints here: {', '.join(available) or 'none'}. Restore the folder from git "
            "(git checkout -- pretrained/) or write it again with `make pretrained`."
        )
    return _checked_checkpoint(folder, f"'workbook:{name}'", need_checksums=True)


def _restore_hint(folder: Path) -> str:
    """How to get the checkpoint folder ``folder`` back, for error messages."""
    folder = Path(folder)
    if folder.parent.resolve() == PRETRAINED_DIR.resolve():
        return (
            f"Restore the committed files with `git checkout -- pretrained/{folder.name}` or write the "
            "checkpoint again with `make pretrained`."
        )
    return f"Write or download {folder} again (it is not one of the workbook's committed checkpoints)."


def _checked_checkpoint(folder: Path, label: str, need_checksums: bool) -> Path:
    """``folder`` after checking it as a checkpoint in the Hugging Face layout, before anything loads.

    Each of :data:`HF_FILES` must be a plain file, not a link; every file ``SHA256SUMS``
    lists must have its recorded SHA-256 (``need_checksums``: the list must be there, as in
    every folder of ``pretrained/``). Raises CheckpointError naming the checkpoint ``label``,
    the file, the expected and the actual hash, and how to restore the folder.
    """
    folder, restore = Path(folder), _restore_hint(folder)
    for name in HF_FILES:
        if (folder / name).is_symlink():
            raise CheckpointError(
                f"The checkpoint {label}: {folder / name} is a link; checkpoint files must be plain files "
                f"in the folder. {restore}"
            )
    if need_checksums or (folder / CHECKSUMS_NAME).exists():
        try:
            safe_paths.check_checksums(folder, required=HF_FILES, restore=restore)
        except safe_paths.ChecksumError as error:
            raise CheckpointError(f"The checkpoint {label} failed its check: {error}") from None
    return folder


HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def hf_vit_config(
    *,
    image_size: int,
    patch: int,
    hidden: int,
    heads: int,
    layers: int,
    mlp: int,
    layer_norm_eps: float = 1e-12,
) -> dict:
    """The ``config.json`` of a Hugging Face ``ViTModel`` (``model_type`` "vit") of this shape."""
    return {
        "model_type": "vit",
        "architectures": ["ViTModel"],
        "image_size": image_size,
        "patch_size": patch,
        "num_channels": 3,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": mlp,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "qkv_bias": True,
        "layer_norm_eps": layer_norm_eps,
        "hidden_act": "gelu",
    }


def write_hf_folder(
    folder: Path, tensors: dict, hf_config: dict, image_size: int, extra_files: dict | None = None
) -> None:
    """Write ``tensors`` and ``hf_config`` as a Hugging Face model folder, atomically.

    ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` (rescale by
    1/255, then mean 0.5 and std 0.5 per channel, as for google/vit-base-patch16-224), plus
    ``extra_files`` (file name -> text). Readers see the whole folder or none of it.
    """
    from safetensors.numpy import save_file

    processor = {
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"height": image_size, "width": image_size},
    }
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    (staging / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    save_file(tensors, str(staging / "model.safetensors"))
    for name, text in (extra_files or {}).items():
        (staging / name).write_text(text + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def write_hf_vit_checkpoint(
    folder: Path,
    *,
    image_size: int,
    patch: int,
    hidden: int,
    heads: int,
    layers: int,
    mlp: int,
    seed: int = 0,
) -> dict:
    """Write a ViT checkpoint with random weights in the Hugging Face layout; return its tensors.

    The files are those of a Hub model folder (:func:`write_hf_folder`): ``config.json``
    (``model_type`` "vit"), ``model.safetensors`` (``vit.*`` tensors, PyTorch layouts: linear
    weights are (out, in), the patch projection (hidden, 3, patch, patch)) and
    ``preprocessor_config.json``. The weights are random (seeded): the checkpoint rehearses
    the loading path, not the benefit of pretraining (``helpers.pretrain`` makes a
    pretrained one).
    """
    rng = np.random.default_rng(seed)
    n_tokens = (image_size // patch) ** 2 + 1

    def weight(*shape):
        return rng.normal(0, 0.02, shape).astype("float32")

    tensors = {
        "vit.embeddings.cls_token": weight(1, 1, hidden),
        "vit.embeddings.position_embeddings": weight(1, n_tokens, hidden),
        "vit.embeddings.patch_embeddings.projection.weight": weight(hidden, 3, patch, patch),
        "vit.embeddings.patch_embeddings.projection.bias": weight(hidden),
        "vit.layernorm.weight": 1 + weight(hidden),
        "vit.layernorm.bias": weight(hidden),
    }
    for i in range(layers):
        prefix = f"vit.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            tensors[f"{prefix}.attention.attention.{name}.weight"] = weight(hidden, hidden)
            tensors[f"{prefix}.attention.attention.{name}.bias"] = weight(hidden)
        tensors[f"{prefix}.attention.output.dense.weight"] = weight(hidden, hidden)
        tensors[f"{prefix}.attention.output.dense.bias"] = weight(hidden)
        tensors[f"{prefix}.intermediate.dense.weight"] = weight(mlp, hidden)
        tensors[f"{prefix}.intermediate.dense.bias"] = weight(mlp)
        tensors[f"{prefix}.output.dense.weight"] = weight(hidden, mlp)
        tensors[f"{prefix}.output.dense.bias"] = weight(hidden)
        for norm in ("layernorm_before", "layernorm_after"):
            tensors[f"{prefix}.{norm}.weight"] = 1 + weight(hidden)
            tensors[f"{prefix}.{norm}.bias"] = weight(hidden)
    hf_config = hf_vit_config(
        image_size=image_size, patch=patch, hidden=hidden, heads=heads, layers=layers, mlp=mlp
    )
    write_hf_folder(folder, tensors, hf_config, image_size)
    return tensors


# google/vit-base-patch16-224's preprocessor_config.json: rescale 1/255, mean 0.5, std 0.5
VIT_PROCESSOR = {"rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def input_scaling(preset: str | None) -> tuple[float, float]:
    """(scale, offset) that turn 0-255 pixels into the checkpoint's inputs: ``x * scale + offset``.

    Read from a local checkpoint's ``preprocessor_config.json``; otherwise the ViT image
    processor's (rescale 1/255, mean 0.5, std 0.5), which gives [-1, 1].
    """
    processor = VIT_PROCESSOR
    if preset and (Path(str(preset)) / "preprocessor_config.json").exists():
        processor = json.loads((Path(str(preset)) / "preprocessor_config.json").read_text())
    mean, std = set(processor["image_mean"]), set(processor["image_std"])
    if len(mean) != 1 or len(std) != 1:
        raise ValueError(
            f"Per-channel means {sorted(mean)} / stds {sorted(std)} are not supported by this workbook."
        )
    mean, std = mean.pop(), std.pop()
    return processor["rescale_factor"] / std, -mean / std


def _checkpoint_settings(preset: str) -> dict:
    """Settings of a Hugging Face ViT checkpoint that keras-hub's converter does not carry over.

    keras-hub builds every ViT with LayerNorm epsilon 1e-6; Google's checkpoints were trained
    with 1e-12 (``layer_norm_eps`` in their config.json). Passing it on makes the backbone
    compute exactly what the checkpoint computes (tests/test_pretrained.py).

    The sizes in ``config.json`` are checked here, before any tensor is allocated, against the
    bounds of the matching profile settings (``config.SETTING_RULES``: ``hidden_size`` as
    ``vit_width``, and so on): a damaged or hostile config could otherwise ask for terabytes.
    """
    from keras_hub.src.utils.preset_utils import load_json

    restore = _restore_hint(Path(preset)) if "://" not in preset else ""
    try:
        hf_config = load_json(preset, "config.json")
    except (OSError, ValueError) as error:
        if "://" in preset:
            raise  # a download that failed says so itself
        raise CheckpointError(
            f"The config.json of checkpoint {preset} cannot be read ({type(error).__name__}: {error}). "
            f"{restore}"
        ) from error
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"The config.json of checkpoint {preset} is not a JSON object. {restore}")
    if hf_config.get("model_type") != "vit":
        if "://" in preset or _KERAS_HUB_PRESET.fullmatch(preset):
            return {}  # a keras-hub preset in its own format: keras-hub reads and checks it
        raise CheckpointError(
            f"The config.json of checkpoint {preset} says model_type={hf_config.get('model_type')!r}; "
            f"a local checkpoint must be a Hugging Face ViT ('vit'). {restore}"
        )
    sizes = {setting: hf_config.get(key) for key, setting in _HF_SIZE_SETTINGS.items()}
    for key, setting in _HF_SIZE_SETTINGS.items():
        allowed, test = config.SETTING_RULES[setting]
        if not test(hf_config.get(key)):
            raise CheckpointError(
                f"The config.json of checkpoint {preset} says {key}={hf_config.get(key)!r}; it must be "
                f"{allowed} (the bound of the setting {setting}). {restore}"
            )
    try:
        config.check_settings(sizes)
    except config.SettingError as error:
        raise CheckpointError(
            f"The config.json of checkpoint {preset} describes no usable ViT: {error} {restore}"
        ) from None
    if hf_config.get("num_channels", 3) != 3:
        raise CheckpointError(
            f"The config.json of checkpoint {preset} says num_channels={hf_config['num_channels']!r}; "
            f"the workbook's images are RGB (3). {restore}"
        )
    if "layer_norm_eps" in hf_config:
        epsilon = hf_config["layer_norm_eps"]
        if not config._number(0, 1, low_open=True)[1](epsilon):
            raise CheckpointError(
                f"The config.json of checkpoint {preset} says layer_norm_eps={epsilon!r}; it must be a "
                f"number in (0, 1]. {restore}"
            )
        return {"layer_norm_epsilon": float(epsilon)}
    return {}


def build_backbone(profile: dict, preset: str | None = None):
    """The ViT backbone of ``profile``: from ``preset`` (or the profile's), else a new one.

    It computes in the profile's precision on this machine (``device.precision``: float32,
    or a mixed policy on a GPU), set on the backbone alone, never as Keras's global policy.
    A checkpoint is checked first (:func:`resolve_preset`, :func:`_checkpoint_settings`:
    its checksums, the sizes in its config.json); a local one whose files then fail to load
    (a truncated file, tensors of other shapes than its config says) raises CheckpointError
    naming it and how to restore it, and so does a checkpoint with a weight that is not finite.
    """
    import keras_hub

    preset = resolve_preset(profile, preset)
    policy = device.precision(profile)
    if preset:
        preset = str(preset)
        settings = _checkpoint_settings(preset)
        local = "://" not in preset and not _KERAS_HUB_PRESET.fullmatch(preset)
        restore = _restore_hint(Path(preset)) if local else ""
        try:
            backbone = keras_hub.models.ViTBackbone.from_preset(preset, dtype=policy, **settings)
        except Exception as error:
            if not local:
                raise
            raise CheckpointError(
                f"The checkpoint {preset} could not be loaded: {type(error).__name__}: {error}. Its files "
                f"are damaged or do not fit its config.json. {restore}"
            ) from error
        broken = [w.path for w in backbone.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
        if broken:
            raise CheckpointError(
                f"The checkpoint {preset} holds weights that are NaN or infinite, in {', '.join(broken[:5])}"
                f"{' and more' if len(broken) > 5 else ''}. {restore}"
            )
        return backbone
    size, patch = profile["image_size"], profile["patch_size"]
    return keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3),
        patch_size=(patch, patch),
        num_layers=profile["vit_layers"],
        num_heads=profile["vit_heads"],
        hidden_dim=profile["vit_width"],
        mlp_dim=profile["vit_mlp_width"],
        dtype=policy,
    )


def build_classifier(
    n_cells: int, profile: dict, preset: str | None = None, freeze_backbone: bool = False, augment=None
):
    """A ViT with a softmax head over ``n_cells`` cells, reading the class token.

    Inputs are RGB pixels 0-255; the first layer scales them as the checkpoint's image
    processor does (:func:`input_scaling`). ``freeze_backbone=True`` trains the head only
    (the report's frozen experiment: 10 %). ``augment``: a layer applied to the pixels
    before that, in training only (:func:`randaugment_layer`, RandAugment on the GPU).
    Built inside :func:`distribution_scope`.
    """
    with distribution_scope(profile):
        preset = resolve_preset(profile, preset)
        backbone = build_backbone(profile, preset)
        backbone.trainable = not freeze_backbone
        size = backbone.image_shape[0] if hasattr(backbone, "image_shape") else profile["image_size"]
        scale, offset = input_scaling(preset)
        inputs = keras.Input((size, size, 3), name="image")
        pixels = augment(inputs) if augment is not None else inputs
        scaled = keras.layers.Rescaling(scale, offset=offset, name="to_minus1_1")(pixels)
        tokens = backbone(scaled)
        # the head, and so the probabilities the losses and metrics read, stay float32 under a
        # mixed policy: a softmax over 129 cells in float16 would round small probabilities to 0
        class_token = keras.layers.Lambda(lambda t: t[:, 0, :], name="class_token", dtype="float32")(tokens)
        probabilities = keras.layers.Dense(n_cells, activation="softmax", name="cells", dtype="float32")(
            class_token
        )
        return keras.Model(inputs, probabilities, name="vit_geocells")


def build_hybrid(n_cells: int, profile: dict):
    """The classifier of :func:`build_classifier` with a second head on the class token.

    Outputs ``{"cells": probabilities (n, n_cells), "offsets": (n, n_cells, 2)}``: for
    every cell, the offset from its centroid as a fraction of its reach (tanh, in (-1, 1);
    ``beyond.cell_extents_km``), one offset per cell as in OpenStreetView-5M's hybrid head.
    Trained with ``losses.offset_loss`` on the offsets (notebook 11).
    """
    with distribution_scope(profile):
        classifier = build_classifier(n_cells, profile)
        token = classifier.get_layer("class_token").output
        flat = keras.layers.Dense(2 * n_cells, activation="tanh", name="offset_head")(token)
        offsets = keras.layers.Reshape((n_cells, 2), name="offsets")(flat)
        return keras.Model(
            classifier.inputs[0], {"cells": classifier.outputs[0], "offsets": offsets}, name="hybrid"
        )


# the heads build_multitask can put beside the cells: the coarser levels and two measures of the place
AUXILIARY_HEADS = ("municipality", "region", "coast", "urbanity")


def build_multitask(
    n_cells: int, n_municipalities: int, n_regions: int, profile: dict, auxiliary=AUXILIARY_HEADS
):
    """The ViT classifier of :func:`build_classifier` with more heads on its class token.

    Outputs, by name: "cells" (softmax over cells, the flat classifier's head) and the
    ``auxiliary`` heads (any of :data:`AUXILIARY_HEADS`): "municipality" and "region"
    (softmax over the coarser levels, for the hierarchy), "coast" and "urbanity" (one
    linear output each, standardised targets). Built after the same seed, the backbone and
    the cell head start from the flat classifier's weights (notebook 12).
    """
    unknown = set(auxiliary) - set(AUXILIARY_HEADS)
    if unknown:
        raise ValueError(f"Unknown heads {sorted(unknown)}; choose from {AUXILIARY_HEADS}.")
    with distribution_scope(profile):
        classifier = build_classifier(n_cells, profile)
        embedding = classifier.get_layer("class_token").output
        dense = keras.layers.Dense
        builders = {  # Keras wants Python ints for the sizes
            "municipality": lambda: dense(int(n_municipalities), activation="softmax", name="municipality"),
            "region": lambda: dense(int(n_regions), activation="softmax", name="region"),
            "coast": lambda: dense(1, name="coast"),
            "urbanity": lambda: dense(1, name="urbanity"),
        }
        outputs = {"cells": classifier.output}
        outputs.update({head: builders[head]()(embedding) for head in AUXILIARY_HEADS if head in auxiliary})
        return keras.Model(classifier.input, outputs, name="vit_multitask")


# --- a CNN to set against the ViT (notebook 12) ----------------------------------------------

# ResNet-50 (timm's "ResNet strikes back" A1 recipe, ImageNet-1k) on the Hugging Face Hub:
# keras-hub converts it on loading, through the same hf:// path as the ViT's checkpoint
RESNET50_PRESET = "hf://timm/resnet50.a1_in1k"
# that checkpoint's input normalisation (timm's ImageNet mean and standard deviation, RGB 0-1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cnn_preset(profile: dict) -> str | None:
    """The pretrained CNN to set against the profile's ViT, or None for a small CNN from scratch.

    Profiles whose ViT is a Hugging Face checkpoint (``full``, ``mapillary``) get
    :data:`RESNET50_PRESET`; the others train both networks from scratch.
    """
    return RESNET50_PRESET if str(profile.get("pretrained") or "").startswith("hf://") else None


def _residual_block(x, filters: int, stride: int, name: str):
    """ResNet's basic block: two 3x3 convolutions with batch norm, added to a shortcut."""
    layers = keras.layers
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(layers.BatchNormalization(name=f"{name}_bn1")(y))
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:  # the shortcut must change shape too
        x = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(x)
        x = layers.BatchNormalization(name=f"{name}_shortcut_bn")(x)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, x]))


def build_cnn(n_cells: int, profile: dict, width: int | None = None, preset: str | None = None):
    """A ResNet-style classifier over ``n_cells`` cells: RGB pixels 0-255 in, softmax out.

    From scratch (``preset`` None and :func:`cnn_preset` None): a 3x3 stem convolution
    with stride 2 and a 2x2 max-pool (ResNet's stem, scaled down), three basic residual
    blocks of ``width``, ``2 * width`` and ``4 * width`` filters (the last two halve the
    resolution), global average pooling and a softmax head. ``width`` defaults to
    :func:`matched_width`, about the parameter count of the profile's ViT. With a preset
    (:data:`RESNET50_PRESET`), keras-hub's ``ResNetBackbone`` loads it and the pixels are
    normalised as the checkpoint was trained (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`).
    The layer "pooled" gives the image embedding. Built inside :func:`distribution_scope`.
    """
    layers = keras.layers
    size = profile["image_size"]
    preset = preset or cnn_preset(profile)
    with distribution_scope(profile):
        inputs = keras.Input((size, size, 3), name="image")
        if preset:
            import keras_hub

            backbone = keras_hub.models.ResNetBackbone.from_preset(preset)
            x = layers.Rescaling(1 / 255, name="to_0_1")(inputs)
            x = layers.Normalization(
                mean=list(IMAGENET_MEAN),
                variance=list(np.square(IMAGENET_STD)),
                name="imagenet_normalisation",
            )(x)
            features = backbone(x)
        else:
            width = width or matched_width(n_cells, profile)
            x = layers.Rescaling(1 / 127.5, offset=-1, name="to_minus1_1")(inputs)
            x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
            x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
            x = layers.MaxPooling2D(2, name="stem_pool")(x)
            for stage, (multiple, stride) in enumerate([(1, 1), (2, 2), (4, 2)], start=1):
                x = _residual_block(x, multiple * width, stride, name=f"stage{stage}")
            features = x
        pooled = layers.GlobalAveragePooling2D(name="pooled")(features)
        probabilities = layers.Dense(n_cells, activation="softmax", name="cells")(pooled)
        return keras.Model(inputs, probabilities, name="cnn_geocells")


def cnn_parameters(width: int, n_cells: int) -> int:
    """The parameter count of :func:`build_cnn` from scratch, by hand (Keras counts the same).

    Convolutions have no bias (batch norm follows); each batch norm holds 4 numbers per
    channel (scale, offset, moving mean and variance). Stem: ``27 w + 4 w``; block 1
    (w to w): ``18 w² + 8 w``; block 2 (w to 2w, with a 1x1 shortcut): ``56 w² + 24 w``;
    block 3 (2w to 4w): ``224 w² + 48 w``; head: ``4 w n + n``.
    """
    return 298 * width**2 + 111 * width + 4 * width * n_cells + n_cells


def matched_width(n_cells: int, profile: dict) -> int | None:
    """The CNN width whose parameter count (:func:`cnn_parameters`) is closest to the profile's
    ViT classifier's. None where the profile's CNN is a pretrained checkpoint
    (:func:`cnn_preset`), whose size is fixed."""
    if cnn_preset(profile):
        return None
    target = build_classifier(n_cells, profile).count_params()
    return min(range(1, 1025), key=lambda width: abs(cnn_parameters(width, n_cells) - target))


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


# the values of a profile's "lr_schedule", with what each does
LR_SCHEDULES = {
    "decay": "warm-up, then linear decay to 0 over the steps taken",
    "authors": "warm-up, then the decay the authors' notebook ran: laid out over training images x epochs, "
    "so the rate ends at (1 - 1/batch) of its peak",
}


def learning_rate_schedule(
    profile: dict, steps_per_epoch: int, epochs: int, warmup: bool = True, train_images: int | None = None
):
    """The profile's learning rate over training: warm-up (optional), then linear decay.

    The warm-up lasts ``profile["warmup_steps"]`` optimiser steps when that is set (the
    authors' notebook: 20), else ``profile["warmup_fraction"]`` of all steps; never more
    than all steps. The decay follows ``profile["lr_schedule"]``:

    ``"decay"``
        linear decay to 0 over the ``steps_per_epoch * epochs`` steps taken.
    ``"authors"``
        what the authors' notebook ran: Hugging Face ``create_optimizer`` (polynomial decay,
        power 1, to 0 over ``num_train_steps - num_warmup_steps`` after the warm-up) given
        ``num_train_steps = train_images * epochs``, images rather than steps. Training stops
        after ``1 / batch`` of that, so the rate ends at ``(1 - 1/batch)`` of its peak
        (6e-5 to 5.6e-5 at batch 16). Needs ``train_images``.
    """
    kind = profile.get("lr_schedule", "decay")
    if kind not in LR_SCHEDULES:
        raise ValueError(f"Unknown lr_schedule {kind!r}; choose one of {', '.join(LR_SCHEDULES)}.")
    taken = steps_per_epoch * epochs
    if kind == "authors":
        if not train_images:
            raise ValueError('lr_schedule "authors" decays over training images x epochs: pass train_images.')
        total = int(train_images) * epochs
    else:
        total = taken
    if not warmup:
        warmup_steps = 0
    elif profile.get("warmup_steps") is not None:
        warmup_steps = min(int(profile["warmup_steps"]), taken)
    else:
        warmup_steps = int(profile["warmup_fraction"] * taken)
    return WarmupPolynomialDecay(profile["learning_rate"], warmup_steps, total)


def make_optimizer(
    profile: dict,
    steps_per_epoch: int,
    epochs: int,
    warmup: bool = True,
    betas: tuple[float, float] | None = None,
    train_images: int | None = None,
):
    """AdamW with the authors' settings: warm-up (optional), linear decay, decoupled weight decay.

    The decay is the profile's ``lr_schedule`` (:func:`learning_rate_schedule`; "authors"
    needs ``train_images``). ``betas`` defaults to the profile's (0.85, 0.95 as in the
    report's final model); pass (0.9, 0.999) for Adam's defaults. Weight decay
    (``profile["weight_decay"]``, 0.01 in the authors' notebook) applies to the weight
    matrices only: biases, LayerNorm scales and offsets, the class token and the position
    embeddings are left alone, as is standard for fine-tuning a ViT (pulling a LayerNorm
    scale or a position embedding towards 0 changes what the layer computes, not how
    complex the model is).
    """
    beta_1, beta_2 = betas or (profile["beta_1"], profile["beta_2"])
    with distribution_scope(profile):  # its variables live where the model's do
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate_schedule(profile, steps_per_epoch, epochs, warmup, train_images),
            weight_decay=profile["weight_decay"],
            beta_1=beta_1,
            beta_2=beta_2,
        )
        # Keras searches these in variable names: "bias", "gamma"/"beta" (LayerNorm), "class_token"
        # and "embeddings" (the position embedding) in a keras-hub ViTBackbone; the TensorFlow
        # backend sees the full path plus ":0". The patch embedding is a convolution whose
        # weights, "kernel", do decay.
        optimizer.exclude_from_weight_decay(
            var_names=[r"(^|/)(bias|gamma|beta|class_token|embeddings)(:\d+)?$"]
        )
        # loss scaling under mixed_float16; a GPU profile without a GPU warns here
        return device.training_optimizer(optimizer, profile)


def randaugment(profile: dict, seed: int = 0):
    """The report's augmentation: keras-cv's RandAugment policy, as the authors ran it.

    ``augment(images, training=True)`` on float batches (n, h, w, 3) of values 0-255, for a
    ``tf.data`` map after ``.batch()``: ``profile["randaugment_ops"]`` rounds (2) at
    magnitude ``profile["randaugment_factor"]`` (0.15), each image drawing its own
    operations from auto-contrast, equalize, solarize, colour, contrast, brightness, shear
    and translation (:mod:`helpers.augment`). No rotation, no posterize and no flip: a
    mirrored street would put left-hand traffic and mirrored signs into the data.
    """
    from helpers import augment

    return augment.rand_augment(
        magnitude=profile["randaugment_factor"],
        augmentations_per_image=profile["randaugment_ops"],
        seed=seed,
    )


def augmentation_on_device() -> bool:
    """Whether RandAugment runs inside the training step on the accelerator (a GPU is there)
    rather than in the ``tf.data`` pipeline on the CPU, which on a 2-core Colab machine would
    cap the GPU's training rate."""
    return device.has_gpu()


def randaugment_layer(profile: dict, seed: int = 0):
    """:func:`randaugment`'s policy as a layer for :func:`build_classifier` (``augment=``): it
    runs in the compiled training step on the device and passes images through at inference."""
    from helpers import augment

    return augment.RandAugmentLayer(
        magnitude=profile["randaugment_factor"],
        augmentations_per_image=profile["randaugment_ops"],
        seed=seed,
        name="randaugment",
    )


def labels_of(table: pd.DataFrame) -> np.ndarray:
    """The training targets of an image table: (n, 3) float32 rows [cell, lat, lng].

    The cell index is what a classifier predicts; the image's own (lat, lng) in degrees lets
    a loss measure distances to where the photo was taken (PIGEON's label smoothing).
    """
    return np.stack(
        [table["cell"].to_numpy(), table["lat"].to_numpy(), table["lng"].to_numpy()], axis=1
    ).astype("float32")


def cache_fits(n_images: int, size: int, budget_gb: float) -> bool:
    """Whether ``n_images`` decoded images of ``size`` px fit the cache budget (uint8, GB = 1e9 bytes)."""
    return n_images * size * size * 3 <= budget_gb * 1e9


def image_dataset(
    table: pd.DataFrame,
    root: Path,
    size: int,
    batch_size: int,
    training: bool = False,
    augment=None,
    seed: int = 0,
    cache_budget_gb: float = 4.0,
):
    """A ``tf.data`` pipeline of (images, targets) batches from an image table's files.

    Images are decoded and resized to ``size`` once and kept in memory as uint8 while the
    set fits ``cache_budget_gb`` (42,570 images at 224 px would need 6.4 GB); a larger set
    streams from disk, decoded again each epoch. Batches are float32 0-255, shuffled each
    epoch when ``training``, and augmented batch by batch by ``augment`` (each image still
    draws its own operations). Targets are :func:`labels_of` rows. Remove unreadable files
    first with ``images.readable_rows``.

    Randomness: the shuffle and one augmentation seed per batch are drawn by ``tf.data``
    from ``seed`` and TensorFlow's global seed as it is when the pipeline is built, anew on
    each pass (epoch) in a fixed sequence. So a pipeline built right after
    ``keras.utils.set_random_seed`` (as ``experiments.run_experiment`` does) gives the same
    batches and the same augmented images, epoch by epoch, in any process and whatever ran
    before; each batch carries its seed, so the threads that augment batches side by side
    cannot change what a batch gets.
    """
    import tensorflow as tf

    paths = [str(Path(root) / p) for p in table["image_path"]]

    def decode(path, target):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, "float32"), (size, size))
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), "uint8"), target

    data = tf.data.Dataset.from_tensor_slices((paths, labels_of(table))).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE
    )
    if cache_fits(len(paths), size, cache_budget_gb):
        # From memory the pipeline costs little, and tf.data's autotuner only adds threads that
        # compete with the model for the CPU: in notebook 06's runs on 2 cores (4,491 training
        # images and a validation pass each epoch) epochs took 2.8 s or 5 s at random with it,
        # 2.8 s without. make bench's shorter runs do not show it (its last two rows). The
        # option holds for the whole pipeline, wherever it is set.
        options = tf.data.Options()
        options.autotune.enabled = False
        data = data.cache().with_options(options)
    if training:
        data = data.shuffle(min(len(paths), 20_000), seed=seed, reshuffle_each_iteration=True)
    # Training drops the last incomplete batch (different images each epoch, as the order is
    # shuffled), so every step has one shape and a compiled step is traced once.
    drop = training and len(paths) >= batch_size
    data = data.batch(batch_size, drop_remainder=drop).map(lambda x, y: (tf.cast(x, "float32"), y))
    if augment is not None:
        data = tf.data.Dataset.zip(data, _augmentation_seeds(seed)).map(
            _augment_outside_tf_data(augment), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    return data.prefetch(tf.data.AUTOTUNE)


def _augmentation_seeds(seed: int):
    """An endless ``tf.data`` stream of stateless seeds, (2,) int32, one per batch to augment.

    Drawn from ``seed`` and TensorFlow's global seed when it is built; each pass over it
    (each epoch of the pipeline it is zipped into) draws a new sequence, the same one in
    every process. Zip it with the batches before :func:`_augment_outside_tf_data`.
    """
    import tensorflow as tf

    pairs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return pairs.map(lambda pair: tf.cast(tf.math.floormod(pair, 2**31 - 1), "int32"))


def _augment_outside_tf_data(augment):
    """A ``tf.data`` map function that augments a batch in a ``tf.function`` of its own.

    Traced into the map, the augmenter's graph runs on tf.data's executor, one op after
    another: about 2,000 images/s on 2 cores, against 6,000-7,000 for the same function
    called as a ``tf.function``, whose independent ops (one branch per family of
    operations) run side by side. ``tf.py_function`` calls it that way from the pipeline:
    training with RandAugment went from 0.70x to 0.87-0.92x the rate of the model alone
    (64 px, batch 64, this repository's make bench set-up). The pipeline must run in this
    Python process, as Keras's ``fit`` runs it. The map takes ((images, targets), seed):
    each batch's (2,) seed (:func:`image_dataset`) decides its draws, so batches augmented
    on parallel threads get what they would get one after another. On a backend other than
    TensorFlow (whose ``keras.ops`` cannot trace TensorFlow's tensors) the ``py_function``
    hands the augmenter NumPy arrays, on which the workbook's RandAugment runs its
    fixed-shape form, compiled once on JAX (``augment.rand_augment``); an augmenter of your
    own runs as it is. On TensorFlow the workbook's RandAugment brings its ``tf.function``
    (``augment.traced()``), traced once per policy and process, so a notebook's runs share
    it; an augmenter of your own is wrapped in a ``tf.function`` per pipeline.
    """
    import tensorflow as tf

    traced = getattr(augment, "traced", None)  # the workbook's RandAugment has one
    if keras.backend.backend() == "tensorflow" and traced is not None:
        step = traced()  # traced once per policy and process, shared by every run's pipeline
    elif keras.backend.backend() == "tensorflow":
        step = tf.function(lambda images, seed: augment(images, training=True, seed=seed))
    else:

        def step(images, seed):
            augmented = augment(np.asarray(images), training=True, seed=np.asarray(seed))
            return np.asarray(augmented, dtype="float32")

    def augmented(batch, seed):
        images, targets = batch
        result = tf.py_function(step, [images, seed], tf.float32)
        result.set_shape(images.shape)
        return result, targets

    return augmented


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Optimiser steps in one epoch over ``n_images``: full batches only (see :func:`image_dataset`)."""
    return max(n_images // batch_size, 1)


def jit_compile(profile: dict):
    """The profile's ``jit_compile`` for ``Model.compile`` here: off on Apple's Metal, "auto" on
    the PyTorch backend, where True would mean ``torch.compile`` (``device.jit_compile``)."""
    return device.jit_compile(profile)


def run_dir(profile: str | dict, name: str) -> Path:
    """The folder of training run ``name``: ``build/<profile>/runs/<name>``.

    :func:`train` deletes and writes in this folder, so ``name`` must be a plain name
    (letters, digits, ".", "_", "-", not starting with "."; ``safe_paths.plain_name``) and
    ``runs/<name>`` must not be a link out of ``runs/``; otherwise UnsafePathError, before
    anything is written.
    """
    safe_paths.plain_name(name, "The run name")
    runs = config.output_dir(profile, "runs")
    safe_paths.inside(runs, name, "The run folder")
    return runs / name


def distribution_scope(profile: dict):
    """The context in which a model, its optimiser, ``compile`` and ``fit`` are made for ``profile``.

    ``distribute.scope(profile)``: data-parallel training over the profile's ``devices``
    (TensorFlow's MirroredStrategy, Keras's distribution API on JAX), nothing on one device.
    Entering it again inside itself is harmless, so the builders below may call each other.
    """
    return distribute.scope(profile)


def _outputs_by_head(network) -> bool:
    """Whether ``network`` has several named heads (a dict of outputs, with the cells as "cells")."""
    return isinstance(network.output, dict)


def best_epoch_metric(network) -> str:
    """The history column the checkpoint rule reads: validation top-1 of the cell head.

    "val_accuracy" for a classifier, "val_cells_accuracy" for a network with several heads.
    """
    return "val_cells_accuracy" if _outputs_by_head(network) else "val_accuracy"


def train(
    profile: str | dict,
    folder: Path,
    network,
    train_data,
    val_data,
    *,
    loss,
    epochs: int,
    optimizer=None,
    loss_weights: dict | None = None,
    head_metrics: dict | None = None,
    distance_km=None,
    settings: dict | None = None,
    score=None,
    record: dict | None = None,
    verbose: int = 2,
    extra_callbacks=(),
    jit_compile=None,
) -> dict:
    """Train ``network`` as every run of the workbook trains: compile, fit, checkpoints, summary, record.

    The one training loop of notebooks 05-12 (the classifiers, the hybrid head, the CNN, the
    multi-task network). ``folder`` is the run's folder (:func:`run_dir`); its name is the run's.

    * **Loss and metrics.** ``loss`` is one loss, or {head: loss} for a network with several
      heads (``loss_weights`` {head: weight}). The cell head ("cells", or the only output)
      always gets top-1 and top-3 (``losses.accuracy_metrics``) and, with ``distance_km``
      (the cell distance matrix, km), ``losses.distance_metrics``; ``head_metrics``
      {head: function returning a list of metrics} adds the other heads' (called inside the
      distribution scope, where metrics must make their variables).
    * **Optimiser and precision.** ``optimizer`` (default AdamW with Keras's settings; pass
      :func:`make_optimizer`'s) gets loss scaling when the profile computes in float16
      (``device.training_optimizer``); ``jit_compile`` defaults to the profile's on this
      machine (:func:`jit_compile`, no XLA for a MirroredStrategy: ``distribute.jit_compile``).
      Compile and fit run inside :func:`distribution_scope`; the network must have been
      built there too (the builders here do), and ``batch_size`` is the global batch.
    * **The checkpoint rule.** ``best.keras`` is the epoch with the highest validation top-1
      of the cell head (:func:`best_epoch_metric`; the rule that also ranks runs, see
      ``experiments.best_run``); ``last.keras`` the last epoch. A NaN loss stops training.
    * **Resumable.** If ``folder/backup`` exists from an interrupted run, training continues
      after the last finished epoch, and ``best.keras`` is replaced only by a better epoch.
    * **Records.** ``history.csv`` (one row per epoch), ``logs/`` (TensorBoard) and
      ``summary.json``: ``settings`` (what the caller wants kept, e.g. the loss), then what
      every run records (epochs, best epoch, seed, overrides, image source, checkpoint,
      precision, backend, seconds) and, when ``score`` is given, ``"val"``: what
      ``score(kept model)`` returns (validation scores, fractions and km). With ``record``
      ({"data": label, "notes": text}) those scores also become the run's validation row in
      the results table (:func:`record_result`).

    Batches may come from ``tf.data`` on any Keras backend: Keras's own data adapters hand
    JAX NumPy arrays. Returns {"name", "folder", "history" (DataFrame), "model" (the kept
    checkpoint, loaded), "val" (scores or None), "settings" (the summary without name,
    profile and val), "seconds" (training only)}.
    """
    if record is not None and score is None:
        raise ValueError(
            "record= writes the run's validation scores to the results table: pass score= too "
            "(a function of the kept model that returns them), or leave record out."
        )
    profile = config.get_profile(profile)
    folder = Path(folder)
    monitor = best_epoch_metric(network)
    # XLA as the profile and the devices allow (no XLA for a MirroredStrategy on TensorFlow)
    jit = distribute.jit_compile(profile, device.jit_compile(profile) if jit_compile is None else jit_compile)
    distribute.check_model(network, profile)  # built in distribution_scope when the profile has devices
    # JAX with several devices needs batches that split evenly: the last one padded, at weight 0
    train_data, val_data = (
        distribute.even_batches(train_data, profile),
        distribute.even_batches(val_data, profile),
    )
    with distribution_scope(profile):
        # metrics hold variables: made here, they live on every device as the model's weights do
        cell_metrics = losses.accuracy_metrics() + (
            losses.distance_metrics(distance_km) if distance_km is not None else []
        )
        if _outputs_by_head(network):
            others = {head: make() for head, make in (head_metrics or {}).items()}
            metrics_of = {"cells": cell_metrics, **others}
        else:
            metrics_of = cell_metrics
        optimizer = optimizer or keras.optimizers.AdamW()
        if device.precision(profile) == "mixed_float16" and not isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            optimizer = device.training_optimizer(optimizer, profile)
        # several devices on TensorFlow: sparse gradients summed dense (distribute.prepare_optimizer)
        optimizer = distribute.prepare_optimizer(optimizer, profile)
        # several devices on JAX pad the last batch at weight 0: metrics must read the weights
        weighted = distribute.replicas(profile) > 1
        network.compile(
            optimizer=optimizer,
            loss=loss,
            loss_weights=loss_weights,
            metrics=None if weighted else metrics_of,
            weighted_metrics=metrics_of if weighted else None,
            jit_compile=jit,
        )
        fitted = fit_run(
            folder,
            network,
            train_data,
            validation_data=val_data,
            epochs=epochs,
            monitor=monitor,
            mode="max",
            extra_callbacks=extra_callbacks,
            verbose=verbose,
        )
    history, seconds = fitted["history"], fitted["seconds"]
    kept = load_model(folder, "best")
    scores = score(kept) if score is not None else None
    summary = {
        **(settings or {}),
        "epochs": epochs,
        "best_epoch": int(history[monitor].idxmax()),
        "seed": profile["seed"],
        "overrides": profile["overrides"],
        "image_source": profile["image_source"],
        "pretrained": checkpoint_name(profile),  # the checkpoint this run started from
        "pretrained_sha256": checkpoint_sha256(profile),
        "precision": device.precision(profile),
        "jit_compile": jit,
        "keras_backend": keras.backend.backend(),
        "seconds": seconds,
    }
    write_summary(
        folder,
        {"name": folder.name, "profile": profile["name"], **summary, **({"val": scores} if scores else {})},
    )
    if record is not None:
        record_result(profile, folder.name, scores, data=record["data"], notes=record.get("notes", ""))
    return {
        "name": folder.name,
        "folder": folder,
        "history": history,
        "model": kept,
        "val": scores,
        "settings": summary,
        "seconds": seconds,
    }


def record_result(
    profile: str | dict, name: str, scores: dict, *, data: str, notes: str = "", split: str = "val"
) -> None:
    """Write the results row (``name``, ``split``) of a run or method: the one way rows are written.

    ``scores`` are the row's numbers (``metrics.RESULT_COLUMNS``; other keys are left out);
    the profile's overrides (a seed, an image size) are added to ``notes`` in brackets, and
    its seed goes to the ``seed`` column.
    """
    from helpers import metrics

    profile = config.get_profile(profile)
    if profile["overrides"]:
        changed = ", ".join(f"{k}={v}" for k, v in profile["overrides"].items())
        notes = f"{notes} [{changed}]" if notes else f"[{changed}]"
    values = {k: v for k, v in scores.items() if k in metrics.RESULT_COLUMNS}
    values.setdefault("seed", profile["seed"])
    metrics.record_result(profile, name, data=data, split=split, notes=notes, **values)


def fit_run(
    folder: Path,
    network,
    train_data,
    *,
    epochs: int,
    validation_data=None,
    monitor: str = "val_accuracy",
    mode: str = "max",
    checkpoints: bool = True,
    extra_callbacks=(),
    verbose: int = 2,
) -> dict:
    r"""Fit the compiled ``network`` in the run folder ``folder``: the one ``fit`` of the workbook.

    :func:`train` (every classifier of notebooks 05-12) and ``pretrain.pretrain`` (the masked
    autoencoder) train through it, so every run gets the same care:

    * **Resumable.** ``folder/backup`` (``BackupAndRestore``) holds the weights, the optimiser
      and the epoch after every epoch. A run that finds a backup continues after its last
      finished epoch (a kill -9 loses at most the epoch under way). The resumed epochs draw
      their own shuffles and dropout, so they are not bit for bit those of an uninterrupted
      run. The backup is removed when training finishes.
    * **Records.** ``history.csv`` (one row per epoch, the resumed ones appended) and
      ``logs/`` (TensorBoard); a fresh run deletes the old ones first.
    * **Checkpoints.** With ``checkpoints`` (whole ``.keras`` models: the network must be
      serialisable), ``best.keras`` is the epoch with the best ``monitor`` (a history column,
      e.g. "val_accuracy" or "loss"), the highest with ``mode="max"``, the lowest with "min";
      after a resume only a better epoch than the history's best replaces it. ``last.keras``
      is the last epoch. Without ``checkpoints`` the backup is the only saved state.
    * **A NaN loss stops training** (``TerminateOnNaN``).
    * **Devices.** Call it inside :func:`distribution_scope` when the profile has devices, as
      :func:`train` does; the network must have been built and compiled there.

    ``extra_callbacks`` come after these (they see an epoch once it is backed up). Returns
    {"history": the DataFrame of history.csv, every epoch of the run; "seconds": the time
    spent in fit by this call (s); "resumed_after": the epochs finished before this call, 0
    for a fresh run}.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r}: use 'max' (higher {monitor} is better) or 'min' (lower is better).")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backup = folder / "backup"
    finished = _finished_epochs(backup)
    best_so_far = None
    if finished is None:
        (folder / "history.csv").unlink(missing_ok=True)
        shutil.rmtree(folder / "logs", ignore_errors=True)
    else:
        best_so_far = _resume_history(folder, monitor, mode) if checkpoints else None
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup)),
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=finished is not None),
    ]
    if checkpoints:
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                str(folder / "best.keras"),
                monitor=monitor,
                mode=mode,
                save_best_only=True,
                # resumed: best.keras already holds the best epoch so far; only a better one replaces it
                initial_value_threshold=best_so_far,
            ),
            keras.callbacks.ModelCheckpoint(str(folder / "last.keras")),
        ]
    callbacks += [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False),
        *extra_callbacks,
    ]
    if network.built and network.optimizer is not None and not network.optimizer.built:
        # its slots made now, not while TensorFlow traces the first step: a variable made in a
        # trace makes tf.function trace the step twice (2.7 s instead of 1.4 s in smoke)
        network.optimizer.build(network.trainable_variables)
    start = time.perf_counter()
    network.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles
    )
    seconds = time.perf_counter() - start
    return {
        "history": pd.read_csv(folder / "history.csv"),
        "seconds": seconds,
        "resumed_after": finished or 0,
    }


def _finished_epochs(backup: Path) -> int | None:
    """The epochs a backup (``BackupAndRestore``'s folder) holds as finished; None without a backup."""
    if not backup.exists():
        return None
    metadata = backup / "training_metadata.json"
    return int(json.loads(metadata.read_text())["epoch"]) if metadata.exists() else 0


def _resume_history(folder: Path, monitor: str = "val_accuracy", mode: str = "max") -> float | None:
    """Before resuming the run in ``folder``: the best value of ``monitor`` so far, or None.

    The best is the largest value with ``mode="max"``, the smallest with "min".

    ``BackupAndRestore`` restores the weights and the epoch, but a new ``ModelCheckpoint``
    would start from no best at all and overwrite ``best.keras`` with the first resumed
    epoch, however poor. The history of the finished epochs knows the best value; rows of
    epochs the backup does not hold (the run stopped between the two writes) are dropped,
    as those epochs run again.
    """
    history_path = folder / "history.csv"
    if not history_path.exists():
        return None
    history = pd.read_csv(history_path)
    metadata = folder / "backup" / "training_metadata.json"
    if metadata.exists() and "epoch" in history:
        finished = int(json.loads(metadata.read_text())["epoch"])
        if (history["epoch"] >= finished).any():
            history = history[history["epoch"] < finished]
            with config.atomic_target(history_path) as temporary:
                history.to_csv(temporary, index=False)
    has_best = (folder / "best.keras").exists() and monitor in history
    if has_best and history[monitor].notna().any():
        return float(history[monitor].max() if mode == "max" else history[monitor].min())
    return None


def numpy_batches(data):
    """The batches of ``data`` (a ``tf.data`` pipeline or any iterable of (inputs, targets)) as NumPy.

    What every Keras backend accepts: JAX's compiled functions refuse TensorFlow tensors
    (``TypeError: Error interpreting argument ... EagerTensor``). Targets that are a dict stay
    a dict, of arrays.
    """
    for inputs, targets in data:
        if isinstance(targets, dict):
            targets = {key: np.asarray(value) for key, value in targets.items()}
        else:
            targets = np.asarray(targets)
        yield np.asarray(inputs), targets


def predict(model, data) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, n_cells), true cells (n,)) over a dataset of (images, targets) batches."""
    probabilities, labels = [], []
    for batch_images, targets in numpy_batches(data):
        probabilities.append(np.asarray(model.predict_on_batch(batch_images)))
        labels.append((targets[:, 0] if targets.ndim == 2 else targets).astype(int))
    return np.concatenate(probabilities), np.concatenate(labels)


def predict_outputs(network, data) -> dict | np.ndarray:
    """The network's outputs over a dataset of (images, targets) batches, in inference mode.

    A dict of arrays by output name for a network with several heads, else one array (the
    (n_images, n_cells) probabilities of a classifier).
    """
    if keras.backend.backend() == "tensorflow":
        collected = [network(batch_images, training=False) for batch_images, _ in numpy_batches(data)]
    else:  # JAX runs a model called outside a compiled function op by op: compile it once
        collected = [network.predict_on_batch(batch_images) for batch_images, _ in numpy_batches(data)]
    if isinstance(collected[0], dict):
        return {key: np.concatenate([np.asarray(c[key]) for c in collected]) for key in collected[0]}
    if isinstance(collected[0], list | tuple):
        return [np.concatenate([np.asarray(c[i]) for c in collected]) for i in range(len(collected[0]))]
    return np.concatenate([np.asarray(c) for c in collected])


def write_summary(folder: Path, summary: dict) -> None:
    """Write ``summary.json`` of a run atomically (settings and final metrics)."""
    with config.atomic_target(Path(folder) / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2, default=float))


def load_model(folder: Path, which: str = "best"):
    """Load ``best.keras`` or ``last.keras`` of a run (custom losses are not needed to predict).

    The workbook's models hold a Lambda layer, so they load with ``safe_mode=False``: a
    ``.keras`` file may then run the Python code it carries. So only a run folder of this
    workbook's build is loaded: ``folder`` must resolve (links followed) to
    ``<build>/<profile>/runs/<plain name>`` of one of the profiles (:func:`run_dir`), and the
    file must be a plain file there. Anything else raises UnsafePathError before the file is
    opened.
    """
    from helpers import augment  # noqa: F401 (registers RandAugmentLayer, inside models trained on a GPU)

    if which not in ("best", "last"):
        raise ValueError(f"which={which!r}: a run keeps 'best' (best.keras) and 'last' (last.keras).")
    folder = Path(folder)
    resolved = folder.resolve()
    runs_folders = {(config.build_dir(name) / "runs").resolve() for name in config.PROFILES}
    path = folder / f"{which}.keras"
    if resolved.parent not in runs_folders or not safe_paths.is_plain_name(resolved.name):
        raise safe_paths.UnsafePathError(
            f"load_model loads only the run folders of this workbook's build, such as "
            f"{config.build_dir('default') / 'runs' / 'baseline'}; {folder} (resolved: {resolved}) is not "
            "one. A .keras file can run the Python code it carries when it is loaded, and these models "
            "are loaded with that allowed (safe_mode=False, for their Lambda layer). Train the model "
            "here (helpers.experiments.run_experiment), or copy a run folder you trust into runs/."
        )
    if path.is_symlink() or not path.is_file() or path.resolve() != resolved / path.name:
        raise safe_paths.UnsafePathError(
            f"{path} is missing or not a plain file in its run folder (a link, say): train the run again "
            "(its notebook) to write it."
        )
    return keras.saving.load_model(path, compile=False, safe_mode=False)


def load_dataset(profile: str | dict, extra: str | None = None) -> tuple[pd.DataFrame, Path]:
    """The image table written by notebook 03 and the folder its paths are relative to.

    ``extra="new_day"`` gives the test locations re-captured on another day.
    """
    root = config.output_dir(profile, "images")
    name = "dataset.csv" if extra is None else f"dataset_{extra}.csv"
    if not (root / name).exists():
        raise FileNotFoundError(
            f"No {name} in {root}. Run notebook 03 first (make all PROFILE={config.profile_name(profile)})."
        )
    return pd.read_csv(root / name), root
