"""Beyond the report (notebook 11): refinement, the hybrid head, GeoScore and the "guess where" page."""

import base64
import io
import json
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pyproj import Transformer
from shapely.geometry import box

from helpers import beyond, config, geo, guess, losses, metrics, model

# --- GeoScore ------------------------------------------------------------------------------


def test_geoscore_by_hand():
    points = beyond.geoscore([0.0, 1492.7, 2 * 1492.7])
    assert points == pytest.approx([5000.0, 5000 / np.e, 5000 / np.e**2])
    assert beyond.geoscore(10.0, scale_km=10.0) == pytest.approx(5000 / np.e)
    with pytest.raises(ValueError, match="0 or more"):
        beyond.geoscore([-1.0])
    with pytest.raises(ValueError, match="positive"):
        beyond.geoscore([1.0], scale_km=0)


def test_country_scale_shrinks_the_world_scale_by_the_largest_distance():
    # a 1-degree square (corners) with two points inside: the diagonal is the largest distance
    lat = np.array([55.0, 55.0, 56.0, 56.0, 55.5, 55.2])
    lng = np.array([10.0, 11.0, 10.0, 11.0, 10.5, 10.7])
    diagonal = max(geo.haversine_km(55.0, 10.0, 56.0, 11.0), geo.haversine_km(55.0, 11.0, 56.0, 10.0))
    assert beyond.largest_distance_km(lat, lng) == pytest.approx(diagonal)
    # half a great circle of the mean Earth (radius 6371.0088 km) is 20,015.1 km
    assert round(beyond.WORLD_MAX_KM, 1) == 20015.1
    assert beyond.country_scale_km(lat, lng) == pytest.approx(1492.7 * diagonal / 20015.1, rel=1e-5)
    with pytest.raises(ValueError, match="two points"):
        beyond.largest_distance_km([55.0], [10.0])


def test_method_scores_by_hand():
    scores = beyond.method_scores([0.0, 0.5, 30.0, 100.0], denmark_scale_km=30.0)
    assert scores["mean_km"] == pytest.approx(32.625) and scores["median_km"] == pytest.approx(15.25)
    assert scores["within_1km"] == 0.5 and scores["within_25km"] == 0.5
    expected = 5000 * np.mean(np.exp(-np.array([0.0, 0.5, 30.0, 100.0]) / 30.0))
    assert scores["denmark_score"] == pytest.approx(expected)


# --- retrieval refinement -------------------------------------------------------------------


def small_gallery():
    """Two cells; cell 0 holds training images at A and B, cell 1 one at C (EPSG:25832 km)."""
    return {
        "gallery_embeddings": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        "gallery_cells": np.array([0, 0, 1]),
        "gallery_xy_km": np.array([[500.0, 6200.0], [520.0, 6210.0], [600.0, 6100.0]]),
        "centroids_xy_km": np.array([[510.0, 6205.0], [600.0, 6100.0]]),
    }


def test_refinement_moves_the_guess_to_the_training_image_it_resembles():
    gallery = small_gallery()
    probabilities = np.array([[0.7, 0.3]])
    looks_like_b = np.array([[0.1, 1.0, 0.0]])
    guess_xy = beyond.refine(probabilities, looks_like_b, **gallery, k=1, neighbours=1, weight=10.0)
    assert guess_xy[0] == pytest.approx([520.0, 6210.0])  # B, not the centroid (510, 6205)
    # resembling C (in the second cell) moves it there when two cells are searched
    looks_like_c = np.array([[0.0, 0.0, 1.0]])
    guess_xy = beyond.refine(probabilities, looks_like_c, **gallery, k=2, neighbours=1, weight=10.0)
    assert guess_xy[0] == pytest.approx([600.0, 6100.0])
    # ... but not when only the top cell is searched
    guess_xy = beyond.refine(probabilities, looks_like_c, **gallery, k=1, neighbours=1, weight=10.0)
    assert guess_xy[0][0] in (500.0, 520.0)


def test_refinement_weights_candidates_by_probability_times_similarity():
    gallery = small_gallery()
    # similarity 1 to A and 0 to B, same cell: weights e^w : 1 = 3 : 1 with w = ln 3
    looks_like_a = np.array([[1.0, 0.0, 0.0]])
    guess_xy = beyond.refine(
        np.array([[0.9, 0.1]]), looks_like_a, **gallery, k=1, neighbours=2, weight=np.log(3)
    )
    assert guess_xy[0] == pytest.approx(0.75 * np.array([500.0, 6200.0]) + 0.25 * np.array([520.0, 6210.0]))
    # weight 0: the cell probabilities alone; the two images of cell 0 count equally
    guess_xy = beyond.refine(np.array([[0.9, 0.1]]), looks_like_a, **gallery, k=1, neighbours=2, weight=0.0)
    assert guess_xy[0] == pytest.approx([510.0, 6205.0])


def test_refinement_keeps_the_centroid_when_the_top_cells_hold_no_training_image():
    gallery = small_gallery()
    gallery["centroids_xy_km"] = np.array([[510.0, 6205.0], [600.0, 6100.0], [700.0, 6000.0]])
    probabilities = np.array([[0.1, 0.1, 0.8]])  # cell 2 has no training image
    guess_xy = beyond.refine(probabilities, np.array([[1.0, 0.0, 0.0]]), **gallery, k=1, neighbours=3)
    assert guess_xy[0] == pytest.approx([700.0, 6000.0])
    with pytest.raises(ValueError, match="k >= 1"):
        beyond.refine(probabilities, np.array([[1.0, 0.0, 0.0]]), **gallery, k=0)


def test_choose_refinement_tries_every_setting_on_the_given_split():
    gallery = small_gallery()
    truth = beyond.latlng_from_xy_km([[520.0, 6210.0]])
    table = pd.DataFrame({"lat": truth[:, 0], "lng": truth[:, 1]})
    grid = beyond.choose_refinement(
        np.array([[0.7, 0.3]]),
        np.array([[0.0, 1.0, 0.0]]),
        table,
        gallery,
        ks=(1, 2),
        neighbours=(1, 2),
        weights=(0.0, 10.0),
    )
    assert len(grid) == 8
    best = grid.loc[grid["mean_km"].idxmin()]
    assert best["neighbours"] == 1 and best["weight"] == 10.0 and best["mean_km"] < 1e-6


# --- the hybrid head -------------------------------------------------------------------------


def test_metric_projection_round_trip():
    lat, lng = np.array([55.68, 57.05, 55.10]), np.array([12.57, 9.92, 14.70])
    back = beyond.latlng_from_xy_km(geo.metric_xy_km(lat, lng))
    assert back == pytest.approx(np.column_stack([lat, lng]), abs=1e-8)


def test_hybrid_offset_adds_to_the_predicted_centroid_in_epsg25832_km():
    centroids_latlng = np.array([[56.0, 9.0], [55.5, 12.0]])
    centroids_xy = geo.metric_xy_km(centroids_latlng[:, 0], centroids_latlng[:, 1])
    probabilities = np.array([[0.2, 0.8]])
    offsets = np.array([[[50.0, 50.0], [3.0, -4.0]]])  # cell 0's offset must be ignored
    guess_xy = beyond.hybrid_guess_xy_km(probabilities, offsets, centroids_xy)
    assert guess_xy[0] == pytest.approx(centroids_xy[1] + [3.0, -4.0])
    # by hand with pyproj: 3 km east and 4 km south of the centroid on the EPSG:25832 grid
    to_metric = Transformer.from_crs("EPSG:4326", "EPSG:25832", always_xy=True)
    x, y = to_metric.transform(12.0, 55.5)
    lng, lat = Transformer.from_crs("EPSG:25832", "EPSG:4326", always_xy=True).transform(x + 3000, y - 4000)
    assert beyond.latlng_from_xy_km(guess_xy)[0] == pytest.approx([lat, lng], abs=1e-9)
    # 5 km on the grid is 5 km on the ground within UTM's scale error (under 0.1 % here)
    assert geo.haversine_km(55.5, 12.0, lat, lng) == pytest.approx(5.0, rel=2e-3)
    with pytest.raises(ValueError, match="n_cells, 2"):
        beyond.hybrid_guess_xy_km(probabilities, offsets[:, :1], centroids_xy)


def test_offset_targets_and_the_offset_loss_by_hand():
    centroids_xy = np.array([[500.0, 6200.0], [600.0, 6100.0]])
    place = beyond.latlng_from_xy_km([[603.0, 6096.0]])
    table = pd.DataFrame({"cell": [1], "lat": place[:, 0], "lng": place[:, 1]})
    assert beyond.offset_targets_km(table, centroids_xy)[0] == pytest.approx([3.0, -4.0], abs=1e-6)

    reach = np.array([[10.0, 10.0], [5.0, 8.0]])  # cell 1 reaches 5 km east-west, 8 km north-south
    loss = losses.offset_loss(centroids_xy, reach)
    y_true = np.array([[1.0, 603.0, 6096.0]], dtype="float32")
    right = np.array([[[0.9, 0.9], [0.6, -0.5]]], dtype="float32")  # (3, -4) km / (5, 8) km
    assert float(np.asarray(loss(y_true, right))[0]) == pytest.approx(0.0, abs=1e-6)
    a_reach_off = np.array([[[0.0, 0.0], [-0.4, -0.5]]], dtype="float32")
    assert float(np.asarray(loss(y_true, a_reach_off))[0]) == pytest.approx(1.0, abs=1e-5)


def test_cell_reach_is_the_largest_offset_per_axis():
    centroids_xy = np.array([[500.0, 6200.0], [600.0, 6100.0], [700.0, 6000.0]])
    places = beyond.latlng_from_xy_km([[503.0, 6196.0], [498.0, 6201.0], [600.0, 6100.0]])
    table = pd.DataFrame({"cell": [0, 0, 1], "lat": places[:, 0], "lng": places[:, 1]})
    reach = beyond.cell_extents_km(table, centroids_xy, floor_km=1.0)
    assert reach == pytest.approx(np.array([[3.0, 4.0], [1.0, 1.0], [1.0, 1.0]]), abs=1e-6)


def test_the_hybrid_model_has_a_cell_head_and_one_offset_per_cell(smoke_profile):
    hybrid = model.build_hybrid(5, smoke_profile)
    size = smoke_profile["image_size"]
    out = hybrid(np.zeros((2, size, size, 3), dtype="float32"))
    assert tuple(out["cells"].shape) == (2, 5) and tuple(out["offsets"].shape) == (2, 5, 2)
    assert np.asarray(out["cells"]).sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert np.abs(np.asarray(out["offsets"])).max() < 1  # fractions of each cell's reach


# --- the results -----------------------------------------------------------------------------


def test_comparison_goes_to_results_facts_and_its_own_table(isolated_build):
    table = beyond.comparison_table({"arg-max centroid": [10.0, 30.0], "hybrid": [0.5, 20.0]}, 30.0)
    assert list(table.columns) == [
        "mean_km",
        "median_km",
        "within_1km",
        "within_25km",
        "geoscore",
        "denmark_score",
    ]
    beyond.record_comparison("smoke", table, {"hybrid": {"top1": 0.5}}, {"hybrid": "own cells"})
    results = metrics.load_results("smoke").set_index("experiment")
    assert results.loc["beyond: hybrid", "split"] == "test" and results.loc["beyond: hybrid", "top1"] == 0.5
    assert results.loc["beyond: arg-max centroid", "within_1km"] == 0.0
    assert results.loc["beyond: hybrid", "mean_km"] == pytest.approx(10.25)
    facts = metrics.load_facts("smoke")
    assert facts["beyond_hybrid_denmark_score"] == pytest.approx(
        5000 * (np.exp(-0.5 / 30) + np.exp(-20 / 30)) / 2
    )
    assert facts["beyond_arg_max_centroid_geoscore"] == pytest.approx(
        table.loc["arg-max centroid", "geoscore"]
    )
    written = pd.read_csv(config.build_dir("smoke") / "tables" / "beyond.csv", index_col="method")
    assert written.loc["hybrid", "within_1km"] == 0.5


# --- the "guess where" page ------------------------------------------------------------------


def two_cells():
    return gpd.GeoDataFrame(
        {"cell": [0, 1], "name": ["Vest", "Øst"], "lat": [56.0, 55.5], "lng": [9.5, 12.0]},
        geometry=[box(9.0, 55.5, 10.0, 56.5), box(11.5, 55.0, 12.5, 56.0)],
        crs="EPSG:4326",
    )


def page_rounds(path):
    text = path.read_text(encoding="utf-8")
    found = re.search(r"rounds = (\[.*?\]), SCALE", text, re.S)
    return text, json.loads(found.group(1).replace("<\\/", "</"))


def test_the_page_holds_the_chosen_photos_and_the_models_points(tmp_path, isolated_build):
    photos = []
    for name, colour in [("red", (220, 20, 20)), ("blue", (20, 20, 220))]:
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{name}.png")
        photos.append(tmp_path / f"{name}.png")
    table = pd.DataFrame({"name": ["red.png", "blue.png"], "lat": [56.0, 55.5], "lng": [9.5, 12.0]})
    probabilities = np.array([[0.9, 0.1], [0.25, 0.75]])
    guesses = np.array([[56.0, 9.5], [55.6, 12.0]])  # exact; then 0.1 degree of latitude north
    scale_km = 30.0
    path, fmap = guess.write_guess_where(
        "smoke", table, probabilities, guesses, photos, two_cells(), scale_km
    )
    assert path == config.build_dir("smoke") / "maps" / "11_guess_where.html"
    text, rounds = page_rounds(path)
    assert [r["name"] for r in rounds] == ["red.png", "blue.png"]
    for r, colour in zip(rounds, [(220, 20, 20), (20, 20, 220)], strict=True):
        encoded = r["image"].split(",", 1)[1]
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert picture.size == (guess.DISPLAY_SIDE, guess.DISPLAY_SIDE)
        assert np.asarray(picture).reshape(-1, 3).mean(axis=0) == pytest.approx(colour, abs=6)
    assert rounds[0]["model_km"] == 0 and rounds[0]["model_points"] == 5000
    distance = geo.haversine_km(55.5, 12.0, 55.6, 12.0)  # 11.1 km
    assert rounds[1]["model_km"] == pytest.approx(distance, abs=0.01)
    assert rounds[1]["model_points"] == round(5000 * np.exp(-distance / scale_km))
    assert rounds[1]["top"][0] == ["Øst", 0.75]
    assert "Reveal" in text and "SCALE = 30" in text and fmap.get_name() in text


def test_your_own_photo_is_resized_to_the_model_input(tmp_path):
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "mine.jpg")
    batch = guess.photo_batch(tmp_path / "mine.jpg", 32)
    assert batch.shape == (1, 32, 32, 3) and batch.dtype == np.float32
    assert batch[0].reshape(-1, 3).mean(axis=0) == pytest.approx([10, 200, 30], abs=4)
    seen = []

    def locate(images):  # a stand-in model: always cell 1, guess at its centroid
        seen.append(images.shape)
        return np.array([[0.3, 0.7]]), np.array([[55.5, 12.0]])

    fmap = guess.guess_photo(tmp_path / "mine.jpg", locate, 32, two_cells(), 30.0, true_latlng=(55.5, 12.0))
    html = fmap.get_root().render()
    assert seen == [(1, 32, 32, 3)] and '"model_points": 5000' in html
    without_truth = guess.guess_photo((tmp_path / "mine.jpg").read_bytes(), locate, 32, two_cells(), 30.0)
    assert '"truth": null' in without_truth.get_root().render()
    with pytest.raises(FileNotFoundError, match="No photo"):
        guess.photo_batch(tmp_path / "missing.jpg", 32)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="JPEG or PNG"):
        guess.photo_batch(tmp_path / "broken.jpg", 32)


# --- training the hybrid head ----------------------------------------------------------------


def tiny_build(profile, root):
    """Three geocells 30 km apart, their distance table, and eight 32 px images per cell."""
    centres = np.array([[55.7, 10.0], [55.7, 10.5], [56.0, 10.25]])
    cells = gpd.GeoDataFrame(
        {"cell": [0, 1, 2], "lat": centres[:, 0], "lng": centres[:, 1]},
        geometry=[box(lng - 0.2, lat - 0.1, lng + 0.2, lat + 0.1) for lat, lng in centres],
        crs=4326,
    )
    folder = config.output_dir(profile, "geocells")
    cells.to_file(folder / "geocells.geojson", driver="GeoJSON")
    rows, rng = [], np.random.default_rng(0)
    for cell, (lat, lng) in enumerate(centres):
        for i in range(8):
            path = root / f"{cell}/{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour = np.array([90 * cell, 200 - 60 * cell, 120])
            Image.fromarray(np.full((32, 32, 3), colour, dtype=np.uint8)).save(path)
            rows.append(
                {
                    "image_path": f"{cell}/{i}.png",
                    "cell": cell,
                    "lat": lat + rng.normal(0, 0.02),
                    "lng": lng + rng.normal(0, 0.02),
                    "split": "train" if i < 6 else "val",
                }
            )
    dataset = pd.DataFrame(rows)
    dataset[["lat", "lng", "cell"]].to_csv(folder / "locations.csv", index=False)
    distances = geo.pairwise_haversine_km(centres, centres)
    pd.DataFrame(distances).to_csv(config.output_dir(profile, "tables") / "cell_distances_km.csv")
    return dataset


def test_each_head_gets_its_own_targets(isolated_build, tmp_path, smoke_profile):
    dataset = tiny_build("smoke", tmp_path)
    rows = dataset[dataset["split"] == "train"].reset_index(drop=True)
    data = beyond._hybrid_data(rows, tmp_path, smoke_profile, training=True, batch=5)
    xy = geo.metric_xy_km(rows["lat"], rows["lng"])
    seen = 0
    for _, targets in data:
        cells, offsets = np.asarray(targets["cells"]), np.asarray(targets["offsets"])
        for cell_row, offset_row in zip(cells, offsets, strict=True):
            # the shuffled batch still pairs each image's cell with its own coordinates
            match = np.flatnonzero(
                np.isclose(rows["lat"], cell_row[1]) & np.isclose(rows["lng"], cell_row[2])
            )
            assert len(match) == 1 and rows.loc[match[0], "cell"] == cell_row[0] == offset_row[0]
            assert offset_row[1:] == pytest.approx(xy[match[0]], abs=1e-3)  # km, not degrees
            seen += 1
    assert seen == 15  # three full batches of 5 from 18 images


def test_train_hybrid_runs_with_pigeon_smoothing(isolated_build, tmp_path):
    dataset = tiny_build("smoke", tmp_path)
    like = {
        "name": "loss_haversine_smoothing",
        "loss": "haversine_smoothing",
        "tau_km": 75.0,
        "augment": False,
        "warmup": True,
        "epochs": 2,
        "batch_size": 6,
        "overrides": {},
    }
    trained = beyond.train_hybrid("smoke", "hybrid_pigeon", dataset, tmp_path, like=like, verbose=0)
    history = trained["history"]
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    summary = json.loads((config.output_dir("smoke", "runs") / "hybrid_pigeon" / "summary.json").read_text())
    assert summary["loss"] == "haversine_smoothing" and summary["batch_size"] == 6
    assert summary["best_epoch"] == int(history["val_cells_accuracy"].idxmax())
