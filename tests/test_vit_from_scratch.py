"""The ViT written out with keras.ops gives the same tokens as the keras-hub backbone it copies."""

import keras_hub
import numpy as np
import pytest

from helpers import vit_from_scratch as vit


@pytest.fixture(scope="module")
def backbone():
    """A small keras-hub ViT whose every weight is random, so a wrong mapping cannot hide
    behind the initial LayerNorm ones and zero biases."""
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=12,
        layer_norm_epsilon=1e-12,  # as Google's checkpoints: the copy must carry it over
    )
    rng = np.random.default_rng(0)
    backbone.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in backbone.get_weights()])
    return backbone


def test_forward_equals_the_keras_hub_backbone(backbone):
    images = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    expected = np.asarray(backbone(images, training=False))
    weights = vit.weights_from_backbone(backbone)
    assert weights["epsilon"] == 1e-12 and weights["patch"] == 4 and weights["heads"] == 2
    ours = np.asarray(vit.forward(images, weights))
    assert ours.shape == expected.shape == (3, 1 + 16, 8)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_attention_rows_are_distributions_with_one_map_per_head(backbone):
    weights = vit.weights_from_backbone(backbone)
    images = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    tokens = vit.embed(images, weights)
    assert tokens.shape == (2, 17, 8)
    out, scores = vit.encoder_block(tokens, weights["blocks"][0], weights["heads"], weights["epsilon"])
    assert out.shape == (2, 17, 8) and scores.shape == (2, 2, 17, 17)
    assert np.allclose(np.asarray(scores).sum(axis=-1), 1.0, atol=1e-5)
    assert (np.asarray(scores) >= 0).all()


def test_patchify_cuts_row_by_row():
    images = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3)
    patches = np.asarray(vit.patchify(images, 4))
    assert patches.shape == (2, 4, 4 * 4 * 3)
    # patch 1 is the first row's second patch: pixel rows 0-3, columns 4-7
    assert np.array_equal(patches[1, 1], images[1, 0:4, 4:8].ravel())
    assert np.array_equal(patches[0, 2], images[0, 4:8, 0:4].ravel())


def test_patchify_refuses_a_size_that_is_not_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        vit.patchify(np.zeros((1, 10, 10, 3), dtype="float32"), 4)
