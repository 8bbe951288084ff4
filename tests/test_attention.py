import keras
import numpy as np
import pytest

from helpers import attention, config, model


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    profile = {**config.get_profile("smoke"), "vit_layers": 2, "vit_heads": 2}
    return model.build_classifier(5, profile)


@pytest.fixture(scope="module")
def pictures():
    return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


def test_block_by_block_pass_reproduces_the_backbone(classifier, pictures):
    scores, tokens = attention.attention_maps(classifier, pictures)
    np.testing.assert_allclose(tokens, attention.backbone_tokens(classifier, pictures), atol=1e-5, rtol=1e-5)
    assert scores.shape == (4, 2, 2, 17, 17)  # images, layers, heads, 1 + 16 patches
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, atol=1e-5)  # softmax rows


def test_class_token_maps_are_patch_grids(classifier, pictures):
    scores, _ = attention.attention_maps(classifier, pictures)
    grids = attention.class_token_maps(scores)
    assert grids.shape == (4, 2, 2, 4, 4)
    np.testing.assert_allclose(grids[0, 1, 0].ravel(), scores[0, 1, 0, 0, 1:])


def test_rollout_by_hand():
    # one layer, one head, a class token and four patches attending uniformly
    scores = np.full((1, 1, 1, 5, 5), 0.2)
    grid = attention.rollout(scores)
    # with the residual: row 0 = 0.5 * 0.2 + 0.5 * [1, 0, 0, 0, 0] = [0.6, 0.1, 0.1, 0.1, 0.1]
    np.testing.assert_allclose(grid, np.full((1, 2, 2), 0.1))


def test_rollout_of_two_layers_multiplies_them():
    rng = np.random.default_rng(0)
    raw = rng.random((1, 2, 3, 5, 5))
    scores = raw / raw.sum(axis=-1, keepdims=True)
    layers = [0.5 * scores[0, i].mean(axis=0) + 0.5 * np.eye(5) for i in range(2)]
    layers = [m / m.sum(axis=-1, keepdims=True) for m in layers]
    expected = (layers[1] @ layers[0])[0, 1:].reshape(2, 2)
    np.testing.assert_allclose(attention.rollout(scores)[0], expected)


def test_sky_share_and_overlay():
    grid = np.zeros((4, 4))
    grid[0] = 1.0  # all attention on the top row of patches
    sky = np.zeros((32, 32), dtype=bool)
    sky[:16] = True
    assert attention.sky_share(grid, sky) == 1.0
    assert attention.sky_share(np.ones((4, 4)), sky) == 0.5
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    shown = attention.overlay(image, grid)
    assert shown.shape == (32, 32, 3) and shown.min() >= 0 and shown.max() <= 1
