"""Comparing runs over seeds, and the rule that says when a difference is larger than the noise."""

import numpy as np
import pandas as pd
import pytest

from helpers import config, experiments


def scores(values: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [{"run": run, "seed": seed, "top1": v} for run, vs in values.items() for seed, v in enumerate(vs)]
    )


def test_compare_runs_by_hand():
    table = experiments.compare_runs(
        scores({"baseline": [0.30, 0.32, 0.34], "big": [0.40, 0.41, 0.42], "small": [0.31, 0.33, 0.35]}),
        "baseline",
    )
    assert table.loc["big", "difference"] == pytest.approx(0.09)
    # standard error: sqrt(0.02**2 / 3 + 0.01**2 / 3)
    assert table.loc["big", "standard_error"] == pytest.approx(np.sqrt(0.0004 / 3 + 0.0001 / 3))
    assert table.loc["big", "beyond_noise"] and not table.loc["small", "beyond_noise"]
    assert not table.loc["baseline", "beyond_noise"] and table.loc["baseline", "difference"] == 0


def test_the_validation_images_add_their_sampling_noise():
    runs = scores({"baseline": [0.30, 0.30], "other": [0.34, 0.34]})  # no spread over seeds at all
    seeds_only = experiments.compare_runs(runs, "baseline")
    assert seeds_only.loc["other", "standard_error"] == 0 and seeds_only.loc["other", "beyond_noise"]
    with_images = experiments.compare_runs(runs, "baseline", n_images=500)
    expected = np.sqrt((0.34 * 0.66 + 0.30 * 0.70) / 500)  # 0.0295: 4 points are not beyond 2 x 0.0295
    assert with_images.loc["other", "standard_error"] == pytest.approx(expected)
    assert not with_images.loc["other", "beyond_noise"]
    assert experiments.compare_runs(runs, "baseline", n_images=5000).loc["other", "beyond_noise"]


@pytest.mark.parametrize(
    ("difference", "error", "claimed", "verdict"),
    [
        (0.06, 0.01, 0.06, "reproduced"),  # same sign, 6 standard errors
        (-0.05, 0.01, 0.06, "not reproduced"),  # opposite sign, beyond noise
        (0.015, 0.01, 0.06, "within noise"),  # right sign but under 2 standard errors
        (-0.015, 0.01, 0.06, "within noise"),
        (0.02, 0.01, 0.02, "within noise"),  # exactly 2 standard errors is not enough
        (float("nan"), 0.01, 0.06, "not testable"),
    ],
)
def test_effect_verdict_on_hand_made_cases(difference, error, claimed, verdict):
    assert experiments.effect_verdict(difference, error, claimed) == verdict


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
