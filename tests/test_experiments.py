"""Comparing runs over seeds, and the rule that says when a difference is larger than the noise."""

import numpy as np
import pandas as pd
import pytest

from helpers import config, experiments, metrics


def record(profile, run, correct, train_correct=None):
    """A run's per-image files, from 0/1 correctness per validation (and training) image."""
    folder = config.output_dir(profile, "runs") / run
    correct = np.asarray(correct)
    val = pd.DataFrame({"image_path": [f"v{i}" for i in range(len(correct))], "correct": correct})
    experiments.write_predictions(folder, "val", val.assign(centroid_km=(1 - correct) * 50.0))
    if train_correct is not None:
        train = pd.DataFrame(
            {"image_path": [f"t{i}" for i in range(len(train_correct))], "correct": train_correct}
        )
        experiments.write_predictions(folder, "train", train)
    return run


def hits(n_right, n=200, offset=0):
    right = np.zeros(n, dtype=int)
    right[(offset + np.arange(n_right)) % n] = 1
    return right


def test_compare_runs_pairs_the_images_and_uses_a_t_quantile(isolated_build):
    rows = []
    for seed in range(3):
        rows.append(
            {"run": "baseline", "seed": seed, "experiment": record("smoke", f"b{seed}", hits(60 + seed))}
        )
        rows.append({"run": "big", "seed": seed, "experiment": record("smoke", f"g{seed}", hits(80 + seed))})
        rows.append(
            {"run": "small", "seed": seed, "experiment": record("smoke", f"s{seed}", hits(62 + seed))}
        )
    table = experiments.compare_runs("smoke", pd.DataFrame(rows), "baseline")
    assert table.loc["big", "difference"] == pytest.approx(0.10)
    # seeds: per-seed scores 0.30, 0.305, 0.31 on both sides; images: the per-image difference of
    # the share of seeds that got each image right
    seeds = 2 * np.var([0.30, 0.305, 0.31], ddof=1) / 3
    share = lambda base: np.mean([hits(base + seed) for seed in range(3)], axis=0)  # noqa: E731
    images = np.var(share(80) - share(60), ddof=1) / 200
    assert table.loc["big", "standard_error"] == pytest.approx(np.sqrt(seeds + images))
    assert table.loc["big", "beyond_noise"] and not table.loc["small", "beyond_noise"]
    assert not table.loc["baseline", "beyond_noise"] and table.loc["baseline", "difference"] == 0


def test_a_run_of_one_seed_borrows_its_seed_noise_or_has_no_interval(isolated_build):
    rows = [
        {"run": "baseline", "seed": k, "experiment": record("smoke", f"b{k}", hits(60 + k))} for k in range(3)
    ]
    rows.append({"run": "once", "seed": 0, "experiment": record("smoke", "once", hits(90))})
    scores = pd.DataFrame(rows)
    alone = experiments.compare_runs("smoke", scores, "baseline")
    assert np.isnan(alone.loc["once", "standard_error"]) and not alone.loc["once", "beyond_noise"]
    quiet = experiments.compare_runs("smoke", scores, "baseline", borrowed=(1e-6, 2))
    noisy = experiments.compare_runs("smoke", scores, "baseline", borrowed=(0.01, 2))
    assert quiet.loc["once", "difference"] == pytest.approx(0.45 - 0.305)
    assert quiet.loc["once", "beyond_noise"]  # 29 of 200 images, with little seed noise: real
    assert not noisy.loc["once", "beyond_noise"]  # the same difference with a seed sd of 10 points
    assert noisy.loc["once", "standard_error"] > quiet.loc["once", "standard_error"]


def test_identical_seeds_do_not_make_a_small_difference_certain(isolated_build):
    """Two seeds that agree exactly: the old rule's error was 0 and any difference counted."""
    rows = [
        {"run": run, "seed": seed, "experiment": record("smoke", f"{run}{seed}", hits(n_right, offset=0))}
        for run, n_right in (("baseline", 60), ("other", 62))
        for seed in range(2)
    ]
    table = experiments.compare_runs("smoke", pd.DataFrame(rows), "baseline")
    assert table.loc["other", "standard_error"] > 0  # the images' noise remains
    assert not table.loc["other", "beyond_noise"]  # 2 of 200 images is not a finding


def test_the_gap_compares_training_and_validation_images(isolated_build):
    runs = [
        record("smoke", f"r{seed}", hits(60, offset=seed), train_correct=hits(62, offset=seed))
        for seed in range(3)
    ]
    gap = experiments.compare_experiments("smoke", runs, None, "gap")
    assert gap["difference"] == pytest.approx(0.01)  # a 1-point gap, identical over seeds
    assert gap["standard_error"] > 0.03 and not gap["beyond_noise"]
    with pytest.raises(LookupError, match="per-image predictions"):
        experiments.compare_experiments("smoke", ["never_trained"], None, "top1")


def test_runs_on_different_images_cannot_be_paired(isolated_build):
    record("smoke", "a", hits(60))
    folder = config.output_dir("smoke", "runs") / "b"
    other = pd.DataFrame({"image_path": [f"w{i}" for i in range(200)], "correct": hits(60)})
    experiments.write_predictions(folder, "val", other)
    with pytest.raises(ValueError, match="same val images"):
        experiments.compare_experiments("smoke", ["a"], ["b"], "top1", borrowed=(0.0001, 2))


@pytest.mark.parametrize(
    ("difference", "error", "claimed", "df", "verdict"),
    [
        (0.06, 0.01, 0.06, 10, "reproduced"),  # same sign, 6 standard errors
        (-0.05, 0.01, 0.06, 10, "not reproduced"),  # opposite sign, beyond noise
        (0.015, 0.01, 0.06, 10, "inconclusive"),  # right sign but under t(10) = 2.23 standard errors
        (0.04, 0.01, 0.06, 2, "inconclusive"),  # 4 standard errors, but t(2) = 4.30 (old rule: reproduced)
        (0.045, 0.01, 0.06, 2, "reproduced"),
        (float("nan"), 0.01, 0.06, 10, "not testable"),
    ],
)
def test_effect_verdict_on_hand_made_cases(difference, error, claimed, df, verdict):
    assert experiments.effect_verdict(difference, error, claimed, df) == verdict


def test_final_configuration_runs_take_the_final_batch_size():
    full = config.get_profile("full")
    final = {"augment": True, "warmup": True, "betas": None}
    assert experiments.batch_size_of(full, **final) == 16  # the authors' final and loss runs
    assert experiments.batch_size_of(full, augment=False, warmup=False, betas=(0.9, 0.999)) == 32
    assert experiments.batch_size_of(full, **{**final, "betas": (0.9, 0.999)}) == 32
    default = config.get_profile("default")
    assert experiments.batch_size_of(default, **final) == default["batch_size"]  # one batch size


def test_data_label_names_the_source():
    assert experiments.data_label("default") == "synthetic images"
    assert experiments.data_label("full") == "streetview images"
    assert experiments.data_label(config.get_profile("rehearsal")) == "streetview images (loopback stand-in)"
    assert experiments.data_label("mapillary") == "mapillary images"


def test_facts_merge_and_stay_strict_json(isolated_build):
    from helpers import metrics

    metrics.record_facts("smoke", share=np.float64(0.25), rho=float("nan"), cells=np.int64(129))
    facts = metrics.record_facts("smoke", share=0.5)
    assert facts == {"share": 0.5, "rho": None, "cells": 129}
    assert "NaN" not in metrics.facts_path("smoke").read_text()


def test_best_run_is_a_run_that_kept_a_checkpoint(isolated_build):
    # notebook 12 scores its methods like runs ("future: <method>") but keeps no best.keras; the
    # best run is loaded by name, so a better-scoring row without a checkpoint must not win
    data = experiments.data_label("smoke")
    for name, top1 in (("baseline", 0.20), ("final_seed0", 0.30), ("future: CNN", 0.50)):
        metrics.record_result("smoke", name, data, "val", top1=top1, mean_km=50.0)
    for name in ("baseline", "final_seed0"):
        (config.output_dir("smoke", "runs") / name / "best.keras").parent.mkdir(parents=True)
        (config.output_dir("smoke", "runs") / name / "best.keras").write_bytes(b"kept")
    assert experiments.best_run("smoke") == "final_seed0"
    (config.output_dir("smoke", "runs") / "final_seed0" / "best.keras").unlink()
    assert experiments.best_run("smoke") == "baseline"


def test_evaluate_with_the_hierarchy_scores_the_municipality_and_the_region():
    """The one evaluate: notebook 12's hierarchy is an option, not a second function."""
    cells = pd.DataFrame(
        {"cell": [0, 1, 2, 3], "lat": [55.0, 55.5, 56.0, 56.5], "lng": [9.0, 10.0, 11.0, 12.0]}
    )
    # cells 0 and 1 in municipality 0 (region 0); cell 2 in municipality 1, cell 3 in 2 (both region 1)
    tree = pd.DataFrame(
        {"cell": [0, 1, 2, 3], "municipality_index": [0, 0, 1, 2], "region_index": [0, 0, 1, 1]}
    )
    table = pd.DataFrame({"cell": [0, 2, 3], "lat": [55.0, 56.0, 56.5], "lng": [9.0, 11.0, 12.0]})
    # guesses: cell 1 (wrong cell, right municipality), cell 3 (wrong municipality, right region), cell 0
    probabilities = np.array([[0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.2, 0.6], [0.7, 0.1, 0.1, 0.1]])
    scores = experiments.evaluate(probabilities, table, cells, tree)
    assert scores["top1"] == 0.0
    assert scores["municipality_accuracy"] == pytest.approx(1 / 3)
    assert scores["region_accuracy"] == pytest.approx(2 / 3)
    flat = experiments.evaluate(probabilities, table, cells)
    assert "region_accuracy" not in flat and flat == {k: v for k, v in scores.items() if k in flat}
