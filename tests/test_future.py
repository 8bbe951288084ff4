import geopandas as gpd
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy import stats
from shapely.geometry import box

from helpers import config, datasets, experiments, future, metrics, model, synthetic

PROFILE = config.get_profile("smoke")

# Four cells: 0 and 1 in municipality "a" of region R1; 2 and 3 in municipalities "b", "c" of R2.
TREE = pd.DataFrame(
    {
        "cell": [0, 1, 2, 3],
        "municipality_index": [0, 0, 1, 2],
        "region_index": [0, 0, 1, 1],
    }
)


def test_summed_hierarchy_picks_the_cell_in_the_likelier_region():
    # Flat arg-max is cell 0 (0.35), but region R2 holds 0.60 of the probability, R1 only 0.40.
    # Products by hand: cell 0: 0.35 * 0.40 (municipality a) * 0.40 (R1) = 0.056;
    # cell 2: 0.31 * 0.31 * 0.60 = 0.0577; cell 3: 0.29 * 0.29 * 0.60 = 0.0505; cell 1: 0.0032.
    flat = np.array([[0.35, 0.05, 0.31, 0.29]])
    product = future.summed_hierarchy(flat, TREE)
    assert flat.argmax() == 0 and product.argmax() == 2
    unnormalised = np.array([0.35 * 0.40 * 0.40, 0.05 * 0.40 * 0.40, 0.31 * 0.31 * 0.60, 0.29 * 0.29 * 0.60])
    np.testing.assert_allclose(product[0], unnormalised / unnormalised.sum())


def test_trained_heads_multiply_down_the_hierarchy():
    cells = np.array([[0.4, 0.1, 0.3, 0.2]])
    region = np.array([[0.2, 0.8]])  # a region head that is sure of R2
    municipality = np.array([[0.2, 0.3, 0.5]])
    levels = [(municipality, future.parents(TREE, "municipality")), (region, future.parents(TREE, "region"))]
    product = future.hierarchical_probabilities(cells, levels)
    # cell 0: 0.4 * 0.2 * 0.2 = 0.016; cell 2: 0.3 * 0.3 * 0.8 = 0.072; cell 3: 0.2 * 0.5 * 0.8 = 0.08
    assert product.argmax() == 3
    assert product.sum() == pytest.approx(1.0)


def test_level_probabilities_sum_cells():
    cells = np.array([[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(
        future.level_probabilities(cells, future.parents(TREE, "region")), [[0.3, 0.7]]
    )
    with pytest.raises(ValueError, match="one index per cell"):
        future.level_probabilities(cells, np.array([0, 1]))


def test_hierarchy_nests_cells_in_their_regions(data_files):
    # two cells of Copenhagen municipality and one of Aarhus, as small boxes around real places
    cells = gpd.GeoDataFrame(
        {
            "cell": [0, 1, 2],
            "municipality": ["København", "København", "Aarhus"],
            "municipality_code": ["0101", "0101", "0751"],
        },
        geometry=[
            box(12.55, 55.67, 12.57, 55.69),
            box(12.50, 55.70, 12.52, 55.71),
            box(10.19, 56.14, 10.22, 56.16),
        ],
        crs=4326,
    )
    tree = future.hierarchy(cells, datasets.load_regions())
    assert list(tree["region"]) == ["Region Hovedstaden", "Region Hovedstaden", "Region Midtjylland"]
    assert list(tree["municipality_index"]) == [0, 0, 1]
    assert list(tree["region_index"]) == [0, 0, 1]  # in order of name: Hovedstaden before Midtjylland


def test_auxiliary_labels_of_known_places(report_locations, municipalities):
    geography = synthetic.build_geography(report_locations, municipalities)
    # Copenhagen's city hall square is about 0.8 km from the harbour; Ikast, in central
    # Jutland, over 40 km from any fjord or sea; a field west of Ikast has no town nearby.
    places = pd.DataFrame(
        {"lat": [55.6759, 56.1388, 56.10], "lng": [12.5691, 9.1576, 9.05]},
        index=["Copenhagen city hall", "Ikast", "field near Ikast"],
    )
    labels = future.auxiliary_labels(places["lat"], places["lng"], geography).set_index(places.index)
    assert 0.2 < labels.loc["Copenhagen city hall", "coast_km"] < 2.0
    assert 30 < labels.loc["Ikast", "coast_km"] < 60
    assert labels.loc["Copenhagen city hall", "urbanity"] > 0.9
    assert labels.loc["field near Ikast", "urbanity"] < 0.2


def test_multitask_targets_follow_each_image():
    places = pd.DataFrame(
        {"lat": [55.6759, 56.1388, 55.6759], "lng": [12.5691, 9.1576, 12.5691], "coast": [0.5, -1.0, 0.5]}
    ).assign(urbanity=[1.0, 0.25, 1.0])
    rows = pd.DataFrame({"cell": [3, 1, 2], "lat": places["lat"], "lng": places["lng"]})
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((3, 2, 2, 3), "float32"), model.labels_of(rows))
    ).batch(3)
    _, targets = next(iter(future.multitask_targets(data, TREE, places)))
    np.testing.assert_allclose(targets["coast"][:, 0], [0.5, -1.0, 0.5])
    np.testing.assert_allclose(targets["urbanity"][:, 0], [1.0, 0.25, 1.0])
    assert list(np.asarray(targets["region"])) == [1, 0, 1]
    assert list(np.asarray(targets["municipality"])) == [2, 0, 1]


def test_cnn_output_shape_and_size_match_the_vit():
    cnn = model.build_cnn(7, PROFILE)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(cnn(pixels))
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    vit = model.build_classifier(7, PROFILE).count_params()
    assert abs(cnn.count_params() - vit) / vit < 0.15
    for width in (3, 8):  # the count by hand is Keras' count
        assert model.cnn_parameters(width, 7) == model.build_cnn(7, PROFILE, width=width).count_params()


def test_one_learning_step_lowers_the_cnn_loss():
    keras.utils.set_random_seed(0)
    cnn = model.build_cnn(5, PROFILE, width=4)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 5, 8).astype("float32")
    loss = keras.losses.SparseCategoricalCrossentropy()

    def current():  # training mode: batch norm uses this batch's statistics, before and after
        return float(loss(labels, cnn(pixels, training=True)))

    before = current()
    cnn.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss=loss)
    cnn.train_on_batch(pixels, labels)  # one step of gradient descent
    assert current() < before


def test_multitask_heads_and_pretrained_cnn_setting():
    network = model.build_multitask(7, 3, 2, PROFILE)
    outputs = network(np.zeros((2, 32, 32, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "cells": (2, 7),
        "municipality": (2, 3),
        "region": (2, 2),
        "coast": (2, 1),
        "urbanity": (2, 1),
    }
    assert set(model.build_multitask(7, 3, 2, PROFILE, auxiliary=("coast",)).output) == {"cells", "coast"}
    with pytest.raises(ValueError, match="Unknown heads"):
        model.build_multitask(7, 3, 2, PROFILE, auxiliary=("sky",))
    # the ResNet-50 checkpoint is one setting away in the profiles with a pretrained ViT
    assert model.cnn_preset(config.get_profile("full")) == model.RESNET50_PRESET
    assert model.cnn_preset(config.get_profile("mapillary")) == model.RESNET50_PRESET
    assert model.cnn_preset(PROFILE) is None and model.cnn_preset(config.get_profile("rehearsal")) is None


# --- the noise rule for methods trained once: helpers.statistics, paired on the same images ---

N_VAL = 200  # validation images of the hand-made runs, 50 per cell of TREE
CELLS = pd.DataFrame({"cell": [0, 1, 2, 3], "lat": [55.0, 55.5, 56.0, 56.5], "lng": [9.0, 10.0, 11.0, 12.0]})


def validation_run(name):
    """What future.train_network returns, as far as future.record reads it: N_VAL validation
    images, each taken at its cell's centroid."""
    cell = np.arange(N_VAL) % 4
    rows = pd.DataFrame(
        {
            "image_path": [f"val/{i}.png" for i in range(N_VAL)],
            "cell": cell,
            "lat": CELLS["lat"].to_numpy()[cell],
            "lng": CELLS["lng"].to_numpy()[cell],
        }
    )
    return {"name": name, "rows": rows, "parameters": 1000, "epochs": 1, "seconds": 1.0}


def right_on_first(n_right):
    """Cell probabilities that pick the true cell for the first ``n_right`` images, the next cell after."""
    cell = np.arange(N_VAL) % 4
    guess = np.where(np.arange(N_VAL) < n_right, cell, (cell + 1) % 4)
    probabilities = np.full((N_VAL, 4), 0.1)
    probabilities[np.arange(N_VAL), guess] = 0.7
    return probabilities


def methods_table(right):
    """Record each method's hand-made validation probabilities as notebook 12 does; its table."""
    run = validation_run("future_flat_vit")
    for method, n_right in right.items():
        future.record("smoke", method, right_on_first(n_right), run, CELLS, TREE)
    return future.load_table("smoke")


def test_seed_noise_is_borrowed_from_the_base_model_over_seeds(isolated_build):
    data = experiments.data_label("smoke")
    assert future.seed_noise("smoke") is None  # notebook 06 has not run
    for seed, (experiment, top1) in enumerate((("baseline", 0.30), ("baseline_seed1", 0.32))):
        metrics.record_result(
            "smoke", experiment, data=data, split="val", seed=seed, top1=top1, train_top1=0.5, mean_km=60.0
        )
    noise = future.seed_noise("smoke")
    assert noise["borrowed"] == (pytest.approx(0.0002), 1.0) and noise["seeds"] == 2
    metrics.record_result(
        "smoke", "baseline_seed2", data=data, split="val", seed=2, top1=0.34, train_top1=0.5, mean_km=60.0
    )
    assert future.seed_noise("smoke")["borrowed"] == (pytest.approx(0.0004), 2.0)  # s**2 of one run
    assert future.seed_noise("smoke")["top1_std"] == pytest.approx(0.02)


def test_a_small_gain_is_within_the_noise_when_the_seeds_happen_to_agree(isolated_build):
    """The old rule, 1.96 * sqrt(2) * sd = 0.3 points here, called 1.5 points "better"."""
    compared = future.comparison("smoke", methods_table({"flat ViT": 60, "CNN": 63}), {"borrowed": (1e-6, 2)})
    assert compared.loc["CNN", "top1_vs_flat"] == pytest.approx(0.015)
    assert compared.loc["CNN", "verdict_top1"] == "inconclusive"
    assert compared.loc["flat ViT", "verdict_top1"] == "reference"
    # the interval by hand: the seed noise of two single runs and the per-image differences
    # (3 images right only with the CNN), Student-t with Welch-Satterthwaite degrees of freedom
    differences = np.zeros(N_VAL)
    differences[60:63] = 1
    seed, images = 1e-6, differences.var(ddof=1) / N_VAL
    error = np.sqrt(2 * seed + images)
    # both runs borrow one run's seed variance: one estimate (2 degrees of freedom), counted once
    freedom = error**4 / ((2 * seed) ** 2 / 2 + images**2 / (N_VAL - 1))
    half_width = stats.t.ppf(0.975, freedom) * error
    assert compared.loc["CNN", "top1_low"] == pytest.approx(0.015 - half_width)
    assert compared.loc["CNN", "top1_high"] == pytest.approx(0.015 + half_width)
    assert (
        experiments.load_predictions("smoke", future.predictions_run("CNN"))["correct"]
        == differences + (np.arange(N_VAL) < 60)
    ).all()


def test_large_differences_are_beyond_the_noise_unless_the_seeds_disagree(isolated_build):
    table = methods_table({"flat ViT": 60, "auxiliary heads": 90, "image-distance loss": 30})
    compared = future.comparison("smoke", table, {"borrowed": (1e-4, 2)})  # seeds 1 point apart
    assert compared.loc["auxiliary heads", "verdict_top1"] == "better"
    assert compared.loc["image-distance loss", "verdict_top1"] == "worse"
    assert compared.loc["auxiliary heads", "top1_low"] > 0 > compared.loc["image-distance loss", "top1_high"]
    # seeds 10 points apart with two degrees of freedom: 15 points show nothing
    noisy = future.comparison("smoke", table, {"borrowed": (0.01, 2)})
    assert set(noisy["verdict_top1"]) == {"reference", "inconclusive"}
    assert "verdict_top1" not in future.comparison("smoke", table, None)  # no seeds yet: no verdict


def test_each_method_keeps_its_per_image_scores_in_a_folder_of_its_own():
    assert future.predictions_run("flat ViT") == "future_flat_vit"  # the training run's own folder
    assert future.predictions_run("hierarchy, summed cells") == "future_hierarchy_summed"
    assert future.predictions_run("../my method") == "future_my_method"  # never outside runs/
    with pytest.raises(ValueError, match="letters or digits"):
        future.predictions_run("//")
