"""The pretrained path computes what the checkpoint computes.

A tiny ViT is written in the Hugging Face layout, loaded through keras-hub's converter (the
code path of ``hf://google/vit-base-patch16-224``), and compared with a forward pass written
here in NumPy straight from the safetensors dictionary, independent of keras and keras-hub.
"""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy.special import erf

from helpers import attention, config, model

SETTINGS = {"image_size": 32, "patch": 8, "hidden": 16, "heads": 2, "layers": 2, "mlp": 32}


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def numpy_vit_class_token(t: dict, hf: dict, processor: dict, image: np.ndarray) -> np.ndarray:
    """The class token of a Hugging Face ViTModel (last_hidden_state[0, 0]) on one image, in NumPy."""
    p, hidden, heads = hf["patch_size"], hf["hidden_size"], hf["num_attention_heads"]
    eps = hf["layer_norm_eps"]
    x = image.astype("float64") * processor["rescale_factor"]
    x = (x - np.array(processor["image_mean"])) / np.array(processor["image_std"])
    n = x.shape[0] // p
    # a patch flattened as (channel, row, column), the order of the conv weight (out, in, kh, kw)
    patches = x.reshape(n, p, n, p, 3).transpose(0, 2, 4, 1, 3).reshape(n * n, 3 * p * p)
    weight = t["vit.embeddings.patch_embeddings.projection.weight"].reshape(hidden, -1)
    embedded = patches @ weight.T + t["vit.embeddings.patch_embeddings.projection.bias"]
    tokens = (
        np.concatenate([t["vit.embeddings.cls_token"][0], embedded])
        + t["vit.embeddings.position_embeddings"][0]
    )
    d = hidden // heads
    for i in range(hf["num_hidden_layers"]):
        w = {
            k[len(f"vit.encoder.layer.{i}.") :]: v
            for k, v in t.items()
            if k.startswith(f"vit.encoder.layer.{i}.")
        }
        h = layer_norm(tokens, w["layernorm_before.weight"], w["layernorm_before.bias"], eps)
        q, k, v = (
            (h @ w[f"attention.attention.{name}.weight"].T + w[f"attention.attention.{name}.bias"])
            .reshape(-1, heads, d)
            .transpose(1, 0, 2)
            for name in ("query", "key", "value")
        )
        mixed = (softmax(q @ k.transpose(0, 2, 1) / np.sqrt(d)) @ v).transpose(1, 0, 2).reshape(-1, hidden)
        tokens = tokens + mixed @ w["attention.output.dense.weight"].T + w["attention.output.dense.bias"]
        h = layer_norm(tokens, w["layernorm_after.weight"], w["layernorm_after.bias"], eps)
        inner = gelu(h @ w["intermediate.dense.weight"].T + w["intermediate.dense.bias"])
        tokens = tokens + inner @ w["output.dense.weight"].T + w["output.dense.bias"]
    return layer_norm(tokens, t["vit.layernorm.weight"], t["vit.layernorm.bias"], eps)[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    model.write_hf_vit_checkpoint(folder, seed=3, **SETTINGS)
    return folder


def test_the_checkpoint_has_the_hugging_face_layout(checkpoint):
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    hf = json.loads((checkpoint / "config.json").read_text())
    assert hf["model_type"] == "vit" and hf["hidden_size"] == 16 and hf["num_hidden_layers"] == 2
    tensors = load_file(str(checkpoint / "model.safetensors"))
    assert tensors["vit.embeddings.patch_embeddings.projection.weight"].shape == (16, 3, 8, 8)
    assert tensors["vit.embeddings.position_embeddings"].shape == (1, 17, 16)


def test_keras_hub_computes_what_the_checkpoint_computes(checkpoint):
    tensors = load_file(str(checkpoint / "model.safetensors"))
    hf = json.loads((checkpoint / "config.json").read_text())
    processor = json.loads((checkpoint / "preprocessor_config.json").read_text())
    classifier = model.build_classifier(5, config.get_profile("smoke"), preset=str(checkpoint))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype("uint8")
    ours = attention.backbone_tokens(classifier, image[None].astype("float32"))[0, 0]
    expected = numpy_vit_class_token(tensors, hf, processor, image)
    # float32 against float64; with keras-hub's default LayerNorm epsilon (1e-6 where the
    # checkpoint says 1e-12) this tiny model differed by 4e-4, which model._checkpoint_settings fixes
    assert np.allclose(ours, expected, atol=1e-5), np.abs(ours - expected).max()
    # and a different image gives a different token (the comparison is not vacuous)
    other = numpy_vit_class_token(tensors, hf, processor, 255 - image)
    assert np.abs(other - expected).max() > 1e-2


def test_input_scaling_matches_the_image_processor(checkpoint):
    scale, offset = model.input_scaling(str(checkpoint))
    pixels = np.array([0.0, 127.5, 255.0])
    assert np.allclose(pixels * scale + offset, (pixels / 255 - 0.5) / 0.5)
    assert model.input_scaling("hf://google/vit-base-patch16-224") == pytest.approx((2 / 255, -1.0))
    classifier = model.build_classifier(3, config.get_profile("smoke"), preset=str(checkpoint))
    layer = classifier.get_layer("to_minus1_1")
    assert layer.scale == pytest.approx(2 / 255) and layer.offset == pytest.approx(-1.0)


def test_a_standin_preset_writes_its_checkpoint_once_and_loads_it(isolated_build):
    profile = config.get_profile("smoke", pretrained="standin:tiny-vit")
    path = model.resolve_preset(profile)
    assert path == str(isolated_build / "smoke" / "checkpoints" / "tiny-vit")
    written = (isolated_build / "smoke" / "checkpoints" / "tiny-vit" / "model.safetensors").stat().st_mtime_ns
    classifier = model.build_classifier(129, profile)
    assert classifier.output_shape == (None, 129)
    assert model.resolve_preset(profile) == path
    assert (
        isolated_build / "smoke" / "checkpoints" / "tiny-vit" / "model.safetensors"
    ).stat().st_mtime_ns == written
    tensors = load_file(path + "/model.safetensors")
    weights = {w.path: np.asarray(w) for w in classifier.weights}
    class_token = next(v for k, v in weights.items() if k.endswith("class_token"))
    assert np.allclose(class_token.reshape(-1), tensors["vit.embeddings.cls_token"].reshape(-1))
    # hf:// and other presets pass through unchanged; smoke trains from scratch
    assert model.resolve_preset(config.get_profile("full")) == "hf://google/vit-base-patch16-224"
    assert model.resolve_preset(config.get_profile("smoke")) is None


# --- the workbook's committed pretrained checkpoint (helpers.pretrain, `make pretrained`) ---------

COMMITTED = model.PRETRAINED_DIR / "street-mae-vit"


def test_default_and_rehearsal_fine_tune_the_committed_checkpoint():
    for name in ("default", "rehearsal"):
        profile = config.get_profile(name)
        assert profile["pretrained"] == "workbook:street-mae-vit"
        assert model.resolve_preset(profile) == str(COMMITTED)
        assert model.checkpoint_name(profile) == "workbook:street-mae-vit"
        # the profile's own architecture settings are the checkpoint's: a from-scratch run of the
        # profile (pretrained=None, notebook 05) is the same network
        hf = json.loads((COMMITTED / "config.json").read_text())
        assert (hf["image_size"], hf["patch_size"]) == (profile["image_size"], profile["patch_size"])
        assert (hf["num_hidden_layers"], hf["hidden_size"]) == (profile["vit_layers"], profile["vit_width"])
        assert (hf["num_attention_heads"], hf["intermediate_size"]) == (
            profile["vit_heads"],
            profile["vit_mlp_width"],
        )
    assert model.checkpoint_name(config.get_profile("smoke")) is None


def test_the_committed_checkpoint_loads_through_keras_hub_and_computes_what_it_says():
    assert sorted(p.name for p in COMMITTED.iterdir()) == [
        "README.md",  # what the checkpoint saw and did not see (helpers/pretrain.py writes it)
        "SHA256SUMS",  # what `make pretrained` wrote, compared before every load (tests/test_build_safety.py)
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "pretraining.json",
    ]
    assert (COMMITTED / "model.safetensors").stat().st_size < 5e6  # a few MB at most
    tensors = load_file(str(COMMITTED / "model.safetensors"))
    hf = json.loads((COMMITTED / "config.json").read_text())
    processor = json.loads((COMMITTED / "preprocessor_config.json").read_text())
    profile = config.get_profile("default")
    classifier = model.build_classifier(129, profile)  # through keras_hub ViTBackbone.from_preset
    size = hf["image_size"]
    image = np.random.default_rng(5).integers(0, 256, (size, size, 3)).astype("uint8")
    ours = attention.backbone_tokens(classifier, image[None].astype("float32"))[0, 0]
    expected = numpy_vit_class_token(tensors, hf, processor, image)
    assert np.allclose(ours, expected, atol=1e-4), np.abs(ours - expected).max()
    # pretrained, not random: its reconstruction error fell well below its first epoch's
    record = json.loads((COMMITTED / "pretraining.json").read_text())
    assert record["loss_per_epoch"][-1] < 0.8 * record["loss_per_epoch"][0]
    assert record["recipe"]["image_size"] == size and record["recipe"]["vit_width"] == hf["hidden_size"]


@pytest.mark.parametrize(
    "name", ["../pretrained/street-mae-vit", "street-mae-vit/", "/etc", "", "Street", "a b"]
)
def test_a_workbook_preset_must_be_a_plain_name_in_the_folder(name, isolated_build):
    # a hand-built profile skips the settings check, so resolve_preset checks the name itself
    profile = {**config.get_profile("default"), "pretrained": f"workbook:{name}"}
    with pytest.raises(ValueError, match="street-mae-vit"):  # the message lists what is there
        model.resolve_preset(profile)
    assert not isolated_build.exists()  # nothing was written


@pytest.mark.parametrize("name", ["../pretrained/street-mae-vit", "street-mae-vit/", "/etc", "", "a b"])
def test_the_settings_check_refuses_a_workbook_preset_that_is_a_path(name):
    with pytest.raises(config.SettingError, match="workbook:<plain name>"):
        config.get_profile("default", pretrained=f"workbook:{name}")


def test_a_missing_workbook_checkpoint_says_how_to_get_it_back(isolated_build):
    profile = config.get_profile("default", pretrained="workbook:not-there")
    with pytest.raises(FileNotFoundError, match="make pretrained"):
        model.build_classifier(129, profile)
    assert not isolated_build.exists()
