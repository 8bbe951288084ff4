"""Where does the model look? Attention maps of a keras-hub ViT, computed exactly.

:func:`attention_maps` runs the backbone's encoder blocks one by one, asking each block's
``MultiHeadAttention`` for its attention scores, and returns them with the final tokens.
Because the pass reproduces the backbone's own output (a test checks it), the maps are
the model's real attention, not an approximation.

Shapes: ``scores`` is (images, layers, heads, tokens, tokens), token 0 being the class
token; patch maps are (images, layers, heads, rows, columns) on the patch grid.
"""

from __future__ import annotations

import matplotlib
import numpy as np

from helpers import images


def _parts(classifier):
    """The input scaling layer, the backbone's embedding layer and its encoder."""
    backbone = next(
        layer
        for layer in classifier.layers
        if hasattr(layer, "get_layer") and any(sub.name == "vit_encoder" for sub in layer.layers)
    )
    return (
        classifier.get_layer("to_minus1_1"),
        backbone.get_layer("vit_patching_and_embedding"),
        backbone.get_layer("vit_encoder"),
        backbone,
    )


def attention_maps(classifier, images) -> tuple[np.ndarray, np.ndarray]:
    """(attention scores, final tokens) of ``classifier`` (``helpers.model.build_classifier``) on ``images``.

    ``images`` are RGB with values 0-255, shape (n, size, size, 3). Inference mode: no dropout.
    """
    scale, embed, encoder, _ = _parts(classifier)
    x = embed(scale(np.asarray(images, dtype="float32")))
    x = encoder.dropout(x, training=False)
    scores = []
    for block in encoder.encoder_layers:
        normed = block.layer_norm_1(x)
        attended, block_scores = block.mha(normed, normed, return_attention_scores=True, training=False)
        x = x + block.dropout(attended, training=False)
        x = x + block.mlp(block.layer_norm_2(x))
        scores.append(np.asarray(block_scores))
    return np.stack(scores, axis=1), np.asarray(encoder.layer_norm(x))


def backbone_tokens(classifier, images) -> np.ndarray:
    """The backbone's own output on ``images``, for checking :func:`attention_maps` against."""
    scale, _, _, backbone = _parts(classifier)
    return np.asarray(backbone(scale(np.asarray(images, dtype="float32")), training=False))


def class_token_maps(scores: np.ndarray) -> np.ndarray:
    """The class token's attention over the patches, as grids: (images, layers, heads, rows, columns)."""
    patches = scores[..., 0, 1:]
    side = int(round(np.sqrt(patches.shape[-1])))
    return patches.reshape(*patches.shape[:-1], side, side)


def rollout(scores: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar and Zuidema, 2020): how much each patch feeds the class token.

    Per layer, average the heads, add the identity for the residual connection, renormalise
    the rows, and multiply the layers together. Returns grids (images, rows, columns), each
    summing to the rollout's total weight on patches.
    """
    mean = scores.mean(axis=2)  # (images, layers, tokens, tokens)
    tokens = mean.shape[-1]
    joint = np.broadcast_to(np.eye(tokens), (mean.shape[0], tokens, tokens)).copy()
    for layer in range(mean.shape[1]):
        with_residual = 0.5 * mean[:, layer] + 0.5 * np.eye(tokens)
        with_residual /= with_residual.sum(axis=-1, keepdims=True)
        joint = with_residual @ joint
    patches = joint[:, 0, 1:]
    side = int(round(np.sqrt(patches.shape[-1])))
    return patches.reshape(-1, side, side)


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """A patch grid (rows, columns) stretched to (size, size) pixels, each patch a block."""
    factor = size // grid.shape[-1]
    return np.kron(grid, np.ones((factor, factor)))


def sky_share(grid: np.ndarray, sky_mask: np.ndarray) -> float:
    """The share of a map's attention that falls on sky pixels (``sky_mask`` is (size, size) bool)."""
    weights = upsample(grid, sky_mask.shape[0])
    return float(weights[sky_mask].sum() / weights.sum())


def overlay(image: np.ndarray, grid: np.ndarray, alpha: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """``image`` (uint8) with the attention ``grid`` drawn over it in a colour map, as floats 0-1."""
    heat = upsample(grid, image.shape[0])
    heat = (heat - heat.min()) / max(heat.max() - heat.min(), 1e-12)
    coloured = matplotlib.colormaps[cmap](heat)[..., :3]
    return (1 - alpha) * image.astype("float64") / 255 + alpha * coloured


def rollout_batches(classifier, rows, root, size: int, batch_size: int = 64):
    """Yield (rows, pictures, rollout grids) over the rows of an image table, a batch at a time.

    Memory holds one batch: its pictures (uint8) and its attention scores, which for
    ViT-B/16 at 224 px are 12 layers x 12 heads x 197 x 197 float32, 22 MB per image. The
    report's test split (6,400 images) at once would need 143 GB; 16 at a time, 358 MB.
    """
    for start in range(0, len(rows), batch_size):
        part = rows.iloc[start : start + batch_size]
        pictures, part, _ = images.load_images(part, root, size)
        yield part, pictures, rollout(attention_maps(classifier, pictures)[0])


def mean_sky_share(classifier, rows, root, geography: dict, size: int, seed: int = 0, batch_size: int = 64):
    """(mean share of rollout attention on sky pixels, share of pixels that are sky) over the
    synthetic images in ``rows``, computed batch by batch (see :func:`rollout_batches`)."""
    shares, sky_pixels = [], []
    for part, _, grids in rollout_batches(classifier, rows, root, size, batch_size):
        masks = images.synthetic_sky_masks(part, root, geography, size, seed=seed)
        shares += [sky_share(grid, mask) for grid, mask in zip(grids, masks, strict=True)]
        sky_pixels.append(masks.mean(axis=(1, 2)))
    return float(np.mean(shares)), float(np.concatenate(sky_pixels).mean())
