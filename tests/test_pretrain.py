"""The pretext recipe (helpers.pretrain) at smoke size, and the pieces it is made of."""

import json
import re

import keras
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from helpers import config, geo, model, pretrain, safe_paths, synthetic
from tests.test_model import StopAfterEpoch  # an interruption at the end of one epoch

RECIPE = pretrain.SMOKE_RECIPE
COMMITTED = model.PRETRAINED_DIR / pretrain.CHECKPOINT_NAME


@pytest.fixture(scope="module")
def default_image_set(data_files):
    """The default profile's image set and split (computed as notebooks 01-03 do: about 2 s)."""
    return pretrain.image_set_locations("default")


def places_too_close(places, image_set, quantile):
    """The pretext places that break the rule, checked by brute force in EPSG:25832 km.

    The rule: no place closer to a validation or test location than that location's nearest
    training location, nor than ``quantile`` of the validation locations' distances to theirs.
    """
    xy = {name: geo.metric_xy_km(rows["lat"], rows["lng"]) for name, rows in image_set.groupby("split")}
    held_xy = np.concatenate([xy["val"], xy["test"]])
    to_train = cdist(held_xy, xy["train"]).min(axis=1)
    floor = np.quantile(to_train[: len(xy["val"])], quantile)
    radius = np.maximum(to_train, floor)
    places_xy = geo.metric_xy_km(places["lat"], places["lng"])
    bad = [
        start + np.flatnonzero((cdist(places_xy[start : start + 2000], held_xy) < radius).any(axis=1))
        for start in range(0, len(places_xy), 2000)
    ]
    return places.iloc[np.concatenate(bad)]


def test_pretext_places_lie_around_training_places_and_away_from_held_out_ones(
    default_image_set, report_locations
):
    places = pretrain.pretext_places(default_image_set, 2_000, RECIPE, avoid=report_locations)
    assert len(places) == 2_000 and list(places.columns) == ["lat", "lng", "origin"]
    assert places_too_close(places, default_image_set, RECIPE["held_out_quantile"]).empty
    # each moved move_km from a training location of the image set
    origin = default_image_set.loc[places["origin"]]
    assert (origin["split"] == "train").all()
    moved = geo.haversine_km(origin["lat"].to_numpy(), origin["lng"].to_numpy(), places["lat"], places["lng"])
    low, high = RECIPE["move_km"]
    assert np.all(moved >= low * 0.99) and np.all(moved <= high * 1.01)
    # none is a place of the image set or of the report (which other profiles sample from)
    for taken in (default_image_set, report_locations):
        nearest = cKDTree(geo.metric_xy_km(taken["lat"], taken["lng"])).query(
            geo.metric_xy_km(places["lat"], places["lng"])
        )[0]
        assert nearest.min() >= RECIPE["min_distance_km"]
    # the same places for the same seed, others for another
    assert places.equals(pretrain.pretext_places(default_image_set, 2_000, RECIPE, avoid=report_locations))
    other = pretrain.pretext_places(default_image_set, 2_000, {**RECIPE, "seed": RECIPE["seed"] + 1})
    assert not np.allclose(other[["lat", "lng"]].to_numpy(), places[["lat", "lng"]].to_numpy())


def test_a_rule_that_cannot_be_met_is_refused_with_what_to_change():
    # training places ringed by validation and test places 3 km away: a place moved at most
    # 1 km from them comes closer to one of those than the training set does
    north, east = 3 / 111.2, 3 / (111.2 * np.cos(np.radians(56.0)))
    image_set = pd.DataFrame(
        {
            "lat": [56.0, 56.0005, 56.0 + north, 56.0 - north, 56.0, 56.0],
            "lng": [10.0, 10.0, 10.0, 10.0, 10.0 + east, 10.0 - east],
            "cell": 0,
            "split": ["train", "train", "val", "val", "test", "test"],
        }
    )
    with pytest.raises(ValueError, match="held_out_quantile"):
        pretrain.pretext_places(image_set, 10, {**RECIPE, "move_km": (0.3, 1.0)})
    # with room to move, the same rule is met
    assert len(pretrain.pretext_places(image_set, 10, {**RECIPE, "move_km": (4.0, 6.0)})) == 10


def test_the_committed_checkpoint_never_saw_a_held_out_place(default_image_set, report_locations):
    """Its pretext places, recomputed from its recorded recipe, keep the rule against today's split."""
    record = json.loads((COMMITTED / "pretraining.json").read_text())
    recipe = record["recipe"]
    assert recipe["held_out_profile"] == "default"
    places = pretrain.pretext_places(default_image_set, recipe["images"], recipe, avoid=report_locations)
    assert pretrain.places_fingerprint(places) == record["places_sha256"], (
        "The default profile's image set or split has changed since the checkpoint was pretrained, so its "
        "pretext places may now lie near validation or test places: run `make pretrained` again."
    )
    assert places_too_close(places, default_image_set, recipe["held_out_quantile"]).empty
    held = record["held_out"]
    assert held["nearest_pretext_place_km"] >= held["floor_km"] > 0
    assert (held["validation_locations"], held["test_locations"]) == tuple(
        (default_image_set["split"] == split).sum() for split in ("val", "test")
    )
    assert "around training places only" in record["data"]


def image_set_days() -> set[int]:
    """Every capture day a notebook renders an image set on (``day=<n>``), and the default, day 0."""
    days = {0}  # render_synthetic's and the stand-in's default
    for notebook in sorted((config.REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        days |= {int(day) for day in re.findall(r"\bday=(\d+)", code)}
    return days


@pytest.mark.parametrize("source", ["smoke", "committed"])
def test_pretext_weather_and_capture_days_are_in_no_image_set(source):
    recipe = (
        RECIPE if source == "smoke" else json.loads((COMMITTED / "pretraining.json").read_text())["recipe"]
    )
    captures = pretrain.pretext_captures(recipe["images"], recipe)
    assert len(captures) == recipe["images"]
    days = image_set_days()
    assert days >= {0, 1} and not days & set(captures["day"])
    # image sets draw sessions 0..N_SESSIONS-1 (assign_sessions, the stand-in) with the profile's seed
    image_set_skies = {
        synthetic.session_weather(session, seed)["cloud_texture"]
        for session in range(synthetic.N_SESSIONS)
        for seed in {config.get_profile(name)["seed"] for name in config.PROFILES}
    }
    pretext_skies = {
        synthetic.session_weather(session, recipe["world_seed"])["cloud_texture"]
        for session in np.unique(captures["session"])
    }
    assert not pretext_skies & image_set_skies
    first = recipe["first_session"]
    assert captures["session"].between(first, first + recipe["sessions"] - 1).all()


def test_the_pretext_images_are_rendered_with_those_captures(report_locations, municipalities):
    reference = report_locations.iloc[::50].reset_index(drop=True)
    geography = synthetic.build_geography(reference, municipalities)
    places = reference.iloc[:3][["lat", "lng"]] + 0.01
    recipe = {**RECIPE, "images_per_day": 2}  # three images over two days
    pictures = pretrain.render_pretext_images(places, geography, recipe)
    captures = pretrain.pretext_captures(3, recipe)
    features = synthetic.scene_features(places["lat"], places["lng"], geography, seed=recipe["world_seed"])
    for i in range(3):
        expected = synthetic.render_locations(
            places.iloc[[i]],
            features.iloc[[i]],
            captures["session"].to_numpy()[[i]],
            recipe["image_size"],
            day=int(captures["day"].iloc[i]),
            seed=recipe["world_seed"],
        )[0]
        assert np.array_equal(pictures[i], expected)


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
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*model.HF_FILES, "pretraining.json", safe_paths.CHECKSUMS_NAME]
    )
    loaded = model.build_backbone(config.get_profile("smoke"), preset=str(folder))
    pictures = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    assert np.allclose(np.asarray(loaded(pictures)), np.asarray(backbone(pictures)), atol=1e-5)
    assert loaded.layer_norm_epsilon == pytest.approx(backbone.layer_norm_epsilon)


def test_the_smoke_recipe_pretrains_and_writes_a_loadable_checkpoint(
    tmp_path, report_locations, municipalities, default_image_set
):
    reference = report_locations.iloc[::20].reset_index(drop=True)  # a lighter geography, same code
    geography = synthetic.build_geography(reference, municipalities)
    folder = tmp_path / "smoke-mae"
    record = pretrain.pretrain(
        RECIPE, folder, geography=geography, reference=reference, image_set=default_image_set, verbose=0
    )
    assert len(record["loss_per_epoch"]) == RECIPE["epochs"]
    # the record and the folder's README say where the data came from, with the rule's numbers
    held = record["held_out"]
    assert held["nearest_pretext_place_km"] >= held["floor_km"] > 0
    readme = (folder / "README.md").read_text()
    assert "around training places only" in readme and f"{held['floor_km']} km" in readme
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
    assert not (tmp_path / ".smoke-mae.run").exists()  # the run folder goes once the encoder is exported


def test_the_command_line_refuses_a_name_that_is_a_path(tmp_path, capsys):
    for name in ("../outside", "a/b", "", "Upper"):
        with pytest.raises(SystemExit):
            pretrain.main(["--smoke", "--name", name, "--output", str(tmp_path)])
        assert "--name" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_interrupted_pretraining_resumes_from_its_weights_only_backup(tmp_path):
    """The masked autoencoder (a subclassed model: no .keras checkpoint) trains through model.fit_run.

    Interrupted after its first epoch, the next call continues at the second from the
    backup's weights, and the run folder only resumes the recipe that wrote it.
    """
    recipe = {**RECIPE, "epochs": 3}
    pictures = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    run = pretrain.run_folder(tmp_path / "mae", recipe)
    assert run == tmp_path / ".mae.run" and json.loads((run / "recipe.json").read_text())["epochs"] == 3

    def autoencoder():
        keras.utils.set_random_seed(recipe["seed"])
        network = pretrain.MaskedAutoencoder(pretrain.new_backbone(recipe), recipe)
        pretrain.build_symbolically(network, recipe)
        network.compile(optimizer="adam", loss=lambda _, per_image: per_image)
        return network

    def fit(network, callback):
        data = pretrain._pretext_dataset(pictures, 32, recipe["seed"])
        return model.fit_run(
            run, network, data, epochs=3, checkpoints=False, verbose=0, extra_callbacks=[callback]
        )

    first = autoencoder()
    with pytest.raises(KeyboardInterrupt):
        fit(first, StopAfterEpoch(0))
    after_one_epoch = [np.array(w) for w in first.get_weights()]
    assert (run / "backup").exists() and list(pd.read_csv(run / "history.csv")["epoch"]) == [0]

    second = autoencoder()  # a new process: fresh weights, restored from the backup at fit's start
    started, restored = [], []

    def on_epoch_begin(epoch, logs):
        started.append(epoch)
        restored.append([np.array(w) for w in second.get_weights()])

    fitted = fit(second, keras.callbacks.LambdaCallback(on_epoch_begin=on_epoch_begin))
    assert started == [1, 2] and fitted["resumed_after"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(after_one_epoch, restored[0], strict=True))
    assert list(fitted["history"]["epoch"]) == [0, 1, 2] and np.isfinite(fitted["history"]["loss"]).all()
    assert not (run / "backup").exists()  # removed once training finished

    # a backup of another recipe is never resumed: its run folder is removed
    (run / "backup").mkdir()
    assert not (pretrain.run_folder(tmp_path / "mae", {**recipe, "epochs": 4}) / "backup").exists()


def test_a_pretraining_whose_loss_turns_nan_exports_nothing(
    tmp_path, report_locations, municipalities, default_image_set
):
    reference = report_locations.iloc[::20].reset_index(drop=True)
    geography = synthetic.build_geography(reference, municipalities)
    folder = tmp_path / "diverged"
    with pytest.raises(RuntimeError, match="nothing was exported"):
        pretrain.pretrain(
            {**RECIPE, "learning_rate": 1e30, "warmup_fraction": 0.0},
            folder,
            geography=geography,
            reference=reference,
            image_set=default_image_set,
            verbose=0,
        )
    assert not folder.exists()
