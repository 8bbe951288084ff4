"""The pretext recipe (helpers.pretrain) at smoke size, and the pieces it is made of."""

import json

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import config, geo, model, pretrain, synthetic

RECIPE = pretrain.SMOKE_RECIPE


def test_pretext_places_are_near_the_reference_but_none_of_it(report_locations):
    places = pretrain.pretext_places(report_locations, 500, RECIPE)
    assert len(places) == 500 and list(places.columns) == ["lat", "lng"]
    nearest = pretrain.geo_tree(report_locations).query(geo.metric_xy_km(places["lat"], places["lng"]), k=1)[
        0
    ]
    assert nearest.min() >= RECIPE["min_distance_km"]
    assert nearest.max() <= RECIPE["move_km"][1] + 0.01  # moved at most that far from a reference location
    # in Denmark's bounding box, and the same places for the same seed
    assert places["lat"].between(54.4, 57.9).all() and places["lng"].between(7.8, 15.4).all()
    assert places.equals(pretrain.pretext_places(report_locations, 500, RECIPE))
    other = pretrain.pretext_places(report_locations, 500, {**RECIPE, "seed": RECIPE["seed"] + 1})
    assert not np.allclose(other.to_numpy(), places.to_numpy())


def test_the_masked_encoder_is_the_backbone():
    """With every patch visible, the encoder's class token is the backbone's: same weights, same function."""
    keras.utils.set_random_seed(0)
    backbone = pretrain.new_backbone(RECIPE)
    autoencoder = pretrain.MaskedAutoencoder(backbone, {**RECIPE, "mask_ratio": 0.0})
    pictures = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    encoded, chosen = autoencoder.encode_visible(pictures)
    whole = backbone(pictures * (2 / 255) - 1)
    assert np.allclose(np.asarray(encoded)[:, 0], np.asarray(whole)[:, 0], atol=1e-5)
    # every patch exactly once, in a different order for each image
    chosen = np.asarray(chosen)
    assert np.allclose(chosen.sum(axis=1), 1) and not np.array_equal(chosen[0], chosen[1])
    # with three quarters hidden the encoder sees a quarter of the patches and the loss is per image
    masked = pretrain.MaskedAutoencoder(backbone, RECIPE)
    assert np.asarray(masked.encode_visible(pictures)[0]).shape == (3, 1 + 16 // 4, RECIPE["vit_width"])
    losses = np.asarray(masked(pictures))
    assert losses.shape == (3,) and np.isfinite(losses).all() and (losses > 0).all()


def test_export_round_trips_through_keras_hub(tmp_path):
    """A backbone written by export_backbone and loaded by keras-hub's converter computes the same tokens."""
    keras.utils.set_random_seed(1)
    backbone = pretrain.new_backbone(RECIPE)
    rng = np.random.default_rng(1)
    for variable in backbone.weights:  # move every weight off its initial value, biases included
        variable.assign(np.asarray(variable) + rng.normal(0, 0.05, variable.shape).astype("float32"))
    folder = pretrain.export_backbone(backbone, tmp_path / "exported", extra={"note": "test"})
    assert sorted(p.name for p in folder.iterdir()) == [*model.HF_FILES, "pretraining.json"]
    loaded = model.build_backbone(config.get_profile("smoke"), preset=str(folder))
    pictures = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    assert np.allclose(np.asarray(loaded(pictures)), np.asarray(backbone(pictures)), atol=1e-5)
    assert loaded.layer_norm_epsilon == pytest.approx(backbone.layer_norm_epsilon)


def test_the_smoke_recipe_pretrains_and_writes_a_loadable_checkpoint(
    tmp_path, report_locations, municipalities
):
    reference = report_locations.iloc[::20].reset_index(drop=True)  # a lighter geography, same code
    geography = synthetic.build_geography(reference, municipalities)
    folder = tmp_path / "smoke-mae"
    record = pretrain.pretrain(RECIPE, folder, geography=geography, reference=reference, verbose=0)
    assert len(record["loss_per_epoch"]) == RECIPE["epochs"]
    assert record["loss_per_epoch"][-1] < record["loss_per_epoch"][0], record["loss_per_epoch"]
    assert json.loads((folder / "pretraining.json").read_text())["recipe"]["images"] == RECIPE["images"]
    hf = json.loads((folder / "config.json").read_text())
    assert (hf["image_size"], hf["hidden_size"], hf["num_hidden_layers"]) == (32, 16, 2)
    # trained: the weights are no longer the seeded initial ones
    keras.utils.set_random_seed(RECIPE["seed"])
    initial = pretrain.hf_tensors(pretrain.new_backbone(RECIPE))
    trained = load_file(str(folder / "model.safetensors"))
    assert set(initial) == set(trained)
    assert not np.allclose(
        initial["vit.encoder.layer.0.attention.attention.query.weight"],
        trained["vit.encoder.layer.0.attention.attention.query.weight"],
    )
    classifier = model.build_classifier(5, config.get_profile("smoke"), preset=str(folder))
    assert classifier.output_shape == (None, 5)


def test_the_command_line_refuses_a_name_that_is_a_path(tmp_path, capsys):
    for name in ("../outside", "a/b", "", "Upper"):
        with pytest.raises(SystemExit):
            pretrain.main(["--smoke", "--name", name, "--output", str(tmp_path)])
        assert "--name" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
