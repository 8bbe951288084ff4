"""The workbook's one noise rule (helpers.statistics), by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from helpers import statistics


def test_seed_noise_alone_is_a_t_test_with_welch_satterthwaite_degrees_of_freedom():
    a, b = [0.30, 0.32, 0.34], [0.40, 0.41, 0.42]
    result = statistics.difference_test(b, a)
    expected = stats.ttest_ind(b, a, equal_var=False)  # Welch's test: the same rule without images
    assert result["difference"] / result["standard_error"] == pytest.approx(expected.statistic)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    assert result["degrees_of_freedom"] == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 2))
    assert result["beyond_noise"] == (expected.pvalue < 0.05)


def test_two_seeds_give_the_t_quantile_of_one_degree_of_freedom():
    result = statistics.difference_test([0.30, 0.34], None, shift=0.0)
    assert result["t"] == pytest.approx(12.706, abs=1e-3)  # not 2
    assert result["margin"] == pytest.approx(12.706 * 0.02, abs=1e-4)
    assert result["beyond_noise"]  # 0.32 > 0.254
    # 22 points above 10 % from two seeds 4 points apart: a normal 2 x SE (4 points) would call it
    assert not statistics.difference_test([0.30, 0.34], None, shift=0.10)["beyond_noise"]


def test_paired_images_add_only_their_disagreements():
    same = np.r_[np.ones(50), np.zeros(150)]
    result = statistics.difference_test([0.25, 0.25], [0.25, 0.25], [same - same])
    assert result["standard_error"] == 0 and not result["beyond_noise"]  # nothing differs
    flipped = np.r_[np.ones(10), np.zeros(190)]  # 10 of 200 images right on one side only
    result = statistics.difference_test([0.30, 0.30], [0.25, 0.25], [flipped])
    assert result["standard_error"] == pytest.approx(math.sqrt(np.var(flipped, ddof=1) / 200))
    assert result["degrees_of_freedom"] == pytest.approx(199)


def test_a_single_run_needs_borrowed_seed_noise():
    assert math.isnan(statistics.difference_test([0.4], [0.3])["standard_error"])
    noise = statistics.borrowed_seed_variance([0.30, 0.32, 0.34])
    assert noise == pytest.approx((0.0004, 2))
    result = statistics.difference_test([0.4], [0.3], borrowed=noise)
    assert result["standard_error"] == pytest.approx(math.sqrt(2 * 0.0004))
    assert result["degrees_of_freedom"] == pytest.approx(2)  # one estimate, used twice


def test_two_sides_borrowing_one_run_s_seed_variance_keep_its_degrees_of_freedom():
    """Issue 29: Welch-Satterthwaite took the two borrowed terms for two independent estimates
    (4 degrees of freedom, t = 2.78) where they are one estimate counted twice (2, t = 4.30)."""
    noise = statistics.borrowed_seed_variance([0.30, 0.32, 0.34])  # s**2 with 2 degrees of freedom
    result = statistics.difference_test([0.40], [0.30], borrowed=noise)
    assert result["degrees_of_freedom"] == pytest.approx(2)
    assert result["t"] == pytest.approx(4.303, abs=1e-3)  # not 2.776
    assert result["margin"] == pytest.approx(4.303 * math.sqrt(2 * 0.0004), abs=1e-4)
    # with images too, the borrowed part counts its 2 degrees of freedom once in the sum
    images = np.r_[np.ones(30), np.zeros(170)]
    paired = statistics.difference_test([0.40], [0.30], [images], borrowed=noise)
    variance_images = np.var(images, ddof=1) / 200
    expected = (2 * 0.0004 + variance_images) ** 2 / ((2 * 0.0004) ** 2 / 2 + variance_images**2 / 199)
    assert paired["degrees_of_freedom"] == pytest.approx(expected)
    # one side trained over seeds, the other borrowing: two independent estimates, as before
    mixed = statistics.difference_test([0.40, 0.42, 0.44], [0.30], borrowed=noise)
    own = np.var([0.40, 0.42, 0.44], ddof=1) / 3
    assert mixed["degrees_of_freedom"] == pytest.approx((own + 0.0004) ** 2 / (own**2 / 2 + 0.0004**2 / 2))


def test_settling_scale_says_how_many_times_the_seeds_and_images_an_interval_needs():
    result = statistics.difference_test(
        [0.30, 0.32, 0.34], [0.29, 0.31, 0.33], [np.r_[np.ones(20), np.zeros(380)]]
    )
    assert result["low"] < 0 < result["high"]
    assert statistics.settling_scale(result, result["margin"] * 2) == 1.0  # already narrow enough
    factor = statistics.settling_scale(result, result["margin"] / 2)
    assert 1.0 < factor < 1000
    # scaling every component by the factor found does bring the half-width below the target
    scaled = statistics.difference_test(
        np.repeat([0.30, 0.32, 0.34], round(factor)),  # same spread, more seeds
        np.repeat([0.29, 0.31, 0.33], round(factor)),
        [np.tile(np.r_[np.ones(20), np.zeros(380)], round(factor))],
    )
    assert scaled["margin"] < result["margin"] / 2 * 1.1
    # seeds alone cannot beat the images' own noise
    assert math.isinf(statistics.settling_scale(result, 1e-4, seeds_only=True))
    assert math.isinf(statistics.settling_scale(result, 0.0))


def test_image_noise_alone_for_two_single_runs_on_the_same_images():
    differences = np.r_[np.full(30, 0.2), np.full(70, -0.1)]
    result = statistics.image_difference_test(differences)
    assert result["difference"] == pytest.approx(differences.mean())
    assert result["standard_error"] == pytest.approx(np.std(differences, ddof=1) / 10)
    assert result["degrees_of_freedom"] == 99
    assert statistics.image_difference_test(differences, shift=0.5)["difference"] == pytest.approx(-0.51)


def test_verdicts():
    assert statistics.effect_verdict(statistics.difference_test([0.5, 0.51], [0.1, 0.11]), 1) == "reproduced"
    assert (
        statistics.effect_verdict(statistics.difference_test([0.1, 0.11], [0.5, 0.51]), 1) == "not reproduced"
    )
    assert statistics.effect_verdict(statistics.difference_test([0.1, 0.3], [0.2, 0.21]), 1) == "inconclusive"
    assert statistics.effect_verdict(statistics.difference_test([0.1], [0.2]), 1) == "not testable"
