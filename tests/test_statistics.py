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
    assert result["degrees_of_freedom"] == pytest.approx(4)


def test_verdicts():
    assert statistics.effect_verdict(statistics.difference_test([0.5, 0.51], [0.1, 0.11]), 1) == "reproduced"
    assert (
        statistics.effect_verdict(statistics.difference_test([0.1, 0.11], [0.5, 0.51]), 1) == "not reproduced"
    )
    assert statistics.effect_verdict(statistics.difference_test([0.1, 0.3], [0.2, 0.21]), 1) == "within noise"
    assert statistics.effect_verdict(statistics.difference_test([0.1], [0.2]), 1) == "not testable"
