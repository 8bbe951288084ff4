"""A Vision Transformer written out with ``keras.ops``, one readable function per step.

Notebook 05 shows these functions and runs them step by step. :func:`weights_from_backbone`
copies the weights of a keras-hub ``ViTBackbone`` into plain arrays, and :func:`forward` with
them gives the backbone's own output (a test checks it): this is the model the workbook
trains, not a simplified cousin.

Shapes: n images of S x S pixels, patches of P x P pixels, T = (S / P)² patches, width D,
H heads of d = D / H numbers each, MLP width M. Token 0 is the class token.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def patchify(images, patch: int):
    """Images (n, S, S, C) -> patches (n, T, P*P*C): row by row, each patch flattened."""
    n, side, _, channels = images.shape
    if side % patch:
        raise ValueError(f"Image side {side} px is not a multiple of the patch size {patch} px.")
    rows = side // patch
    x = ops.reshape(images, (n, rows, patch, rows, patch, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (n, row, column, P, P, C): patches together
    return ops.reshape(x, (n, rows * rows, patch * patch * channels))


def embed(images, w: dict):
    """Patches -> tokens (n, T+1, D): linear projection, class token in front, positions added."""
    tokens = ops.matmul(patchify(images, w["patch"]), w["patch_kernel"]) + w["patch_bias"]
    class_token = ops.broadcast_to(w["class_token"], (tokens.shape[0], 1, tokens.shape[2]))
    return ops.concatenate([class_token, tokens], axis=1) + w["positions"]


def layer_norm(x, gamma, beta, epsilon: float = 1e-6):
    """Each token rescaled to mean 0 and variance 1 over its D numbers, then ``* gamma + beta``."""
    mean = ops.mean(x, axis=-1, keepdims=True)
    variance = ops.var(x, axis=-1, keepdims=True)
    return (x - mean) / ops.sqrt(variance + epsilon) * gamma + beta


def scaled_dot_product_attention(q, k, v):
    """softmax(Q Kᵀ / √d) V for queries, keys and values (n, H, T+1, d), each head on its own.

    Returns (output (n, H, T+1, d), attention weights (n, H, T+1 queries, T+1 keys), each
    row summing to 1).
    """
    d = q.shape[-1]
    weights = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / np.sqrt(d), axis=-1)
    return ops.matmul(weights, v), weights


def self_attention(x, w: dict, heads: int):
    """Multi-head self-attention of tokens x (n, T+1, D): softmax(Q Kᵀ / √d) V in each head.

    Returns (output (n, T+1, D), attention scores (n, H, T+1, T+1), each row summing to 1).
    """
    n, tokens, width = x.shape
    d = width // heads

    def per_head(t):  # (n, T+1, D) -> (n, H, T+1, d): head h gets numbers h*d .. (h+1)*d
        return ops.transpose(ops.reshape(t, (n, tokens, heads, d)), (0, 2, 1, 3))

    q, k, v = (per_head(ops.matmul(x, w[f"w{name}"]) + w[f"b{name}"]) for name in "qkv")
    attended, scores = scaled_dot_product_attention(q, k, v)
    mixed = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)), (n, tokens, width))
    return ops.matmul(mixed, w["wo"]) + w["bo"], scores  # heads side by side, then projected


def encoder_block(x, w: dict, heads: int, epsilon: float = 1e-6):
    """One pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x)).

    Returns (tokens (n, T+1, D), attention scores (n, H, T+1, T+1)).
    """
    attended, scores = self_attention(layer_norm(x, w["ln1_gamma"], w["ln1_beta"], epsilon), w, heads)
    x = x + attended  # residual: the block only adds to what the token already was
    normed = layer_norm(x, w["ln2_gamma"], w["ln2_beta"], epsilon)
    hidden = ops.gelu(ops.matmul(normed, w["w1"]) + w["b1"], approximate=False)  # as keras-hub's MLP
    return x + ops.matmul(hidden, w["w2"]) + w["b2"], scores


def forward(images, weights: dict):
    """The whole ViT: images scaled to [-1, 1] (n, S, S, 3) -> final tokens (n, T+1, D)."""
    x = embed(images, weights)
    for block in weights["blocks"]:
        x, _ = encoder_block(x, block, weights["heads"], weights["epsilon"])
    return layer_norm(x, weights["ln_gamma"], weights["ln_beta"], weights["epsilon"])


def weights_from_backbone(backbone) -> dict:
    """The weights of a keras-hub ``ViTBackbone`` as NumPy arrays under the names used above.

    keras-hub keeps each attention projection as (D, H, d) and the patch projection as a
    convolution kernel (P, P, C, D); reshaped, they are the plain matrices of this module.
    """
    embedding = backbone.get_layer("vit_patching_and_embedding")
    encoder = backbone.get_layer("vit_encoder")
    width = backbone.hidden_dim

    def array(variable, *shape):
        return np.asarray(variable).reshape(shape or variable.shape)

    weights = {
        "patch": backbone.patch_size[0],
        "heads": backbone.num_heads,
        "epsilon": backbone.layer_norm_epsilon,  # 1e-6 in keras-hub, 1e-12 in Google's checkpoints
        "patch_kernel": array(embedding.patch_embedding.kernel, -1, width),
        "patch_bias": array(embedding.patch_embedding.bias),
        "class_token": array(embedding.class_token),
        "positions": array(embedding.position_embedding.embeddings),
        "ln_gamma": array(encoder.layer_norm.gamma),
        "ln_beta": array(encoder.layer_norm.beta),
        "blocks": [],
    }
    for block in encoder.encoder_layers:
        mha = block.mha
        weights["blocks"].append(
            {
                **{f"w{name}": array(dense.kernel, width, -1) for name, dense in _qkv(mha)},
                **{f"b{name}": array(dense.bias, -1) for name, dense in _qkv(mha)},
                "wo": array(mha.output_dense.kernel, -1, width),
                "bo": array(mha.output_dense.bias),
                "ln1_gamma": array(block.layer_norm_1.gamma),
                "ln1_beta": array(block.layer_norm_1.beta),
                "ln2_gamma": array(block.layer_norm_2.gamma),
                "ln2_beta": array(block.layer_norm_2.beta),
                "w1": array(block.mlp.dense_1.kernel),
                "b1": array(block.mlp.dense_1.bias),
                "w2": array(block.mlp.dense_2.kernel),
                "b2": array(block.mlp.dense_2.bias),
            }
        )
    return weights


def _qkv(mha):
    return (("q", mha.query_dense), ("k", mha.key_dense), ("v", mha.value_dense))
