"""When is a difference between training runs larger than the noise? One rule, written once.

Two things make a measured difference noisy:

* **the seeds**: training the same setting again with another seed (initial weights, batch
  order, augmentation draws) gives another score;
* **the images**: the validation images are a sample, and another sample would score
  differently.

Runs compared in this workbook are scored on the *same* validation images, so the image
noise of a difference is measured on per-image differences (a paired comparison): an
image that every run gets right, or every run gets wrong, adds no noise to a difference.
Adding the two runs' image noise as if they were independent samples, ``p (1 - p) / N``
each, overstates it; ignoring it, as a spread over two or three seeds alone does, can
call a one-point difference certain when the seeds happen to agree.

The rule (:func:`difference_test`): the difference of the means over seeds, with a
standard error that adds

* the seed variance of each side, ``s**2 / n`` (``s`` the standard deviation of the
  per-seed scores over its ``n`` seeds, ``n - 1`` degrees of freedom), or, for a side
  trained once, the variance of one run borrowed from a setting trained over several
  seeds (:func:`borrowed_seed_variance`), with that setting's degrees of freedom;
* the image variance of each block of images, ``var(d_i) / N`` over the ``N`` per-image
  values ``d_i`` (for two runs on the same images, ``d_i`` is the difference of the
  image's mean score over each side's seeds; ``N - 1`` degrees of freedom).

The degrees of freedom of the sum come from the Welch-Satterthwaite formula, and the
difference is larger than the noise when the two-sided 95 % Student-t interval
``difference ± t * standard_error`` leaves out zero. With two or three seeds and little
image data the t quantile is large (12.7 for one degree of freedom, 4.3 for two), which
is the point: two or three seeds say little about the seed noise. The per-image part
also holds some of the seed noise again (each image's score varies with the seed), so the
rule errs on the side of "not shown".

When *both* sides are single runs that borrow the same setting's seed variance, the two
borrowed terms are one estimate counted twice, not two independent ones: their sum,
``2 s**2``, keeps that setting's ``n - 1`` degrees of freedom (Welch-Satterthwaite would
double them and shrink the t quantile: 2.78 for 4 degrees of freedom where 4.30 for 2 is
right).

An interval that holds zero says the build cannot tell; :func:`settling_scale` says how
many times the seeds and images it would take for the interval's half-width to fall below
a given size (the report's effect, say).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # two-sided: the interval leaves 2.5 % on each side


def t_quantile(degrees_of_freedom: float, confidence: float | None = None) -> float:
    """The two-sided Student-t quantile for ``confidence`` (default :data:`CONFIDENCE`; 1.96 at 95 %
    for infinite degrees of freedom)."""
    confidence = confidence or CONFIDENCE
    if not degrees_of_freedom > 0:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, degrees_of_freedom))


def _variance_of_the_mean(values) -> tuple[float, float]:
    """(``var / N``, ``N - 1``) of the finite ``values``; NaN with fewer than two."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    return float(values.var(ddof=1) / len(values)), float(len(values) - 1)


def seed_component(per_seed_scores) -> tuple[float, float]:
    """(variance of the mean, degrees of freedom) of per-seed scores; NaN with fewer than two."""
    return _variance_of_the_mean(per_seed_scores)


def image_component(per_image_values) -> tuple[float, float]:
    """(variance of the mean, degrees of freedom) of ``N`` per-image values: ``var / N``, ``N - 1``."""
    return _variance_of_the_mean(per_image_values)


def borrowed_seed_variance(per_seed_scores) -> tuple[float, float]:
    """The variance of *one* run's score, estimated from a setting trained over several seeds.

    For a setting trained once (a loss of notebook 07, a frozen backbone), its seed noise is
    taken to be that of a setting trained over seeds: ``s**2`` with ``n - 1`` degrees of
    freedom. NaN with fewer than two seeds.
    """
    values = np.asarray(per_seed_scores, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    return float(values.var(ddof=1)), float(len(values) - 1)


def difference_test(
    scores_a,
    scores_b=None,
    image_values=(),
    *,
    borrowed: tuple[float, float] | None = None,
    shift: float = 0.0,
    confidence: float | None = None,
) -> dict:
    """The workbook's noise rule for ``mean(scores_a) - mean(scores_b) - shift``.

    ``scores_a`` and ``scores_b`` are per-seed scores of two settings (``scores_b`` None:
    one setting against ``shift``, e.g. a train-validation gap against 0). A side with one
    score needs ``borrowed`` (:func:`borrowed_seed_variance`) for its seed noise; when both
    sides borrow it, it counts twice in the variance and once in the degrees of freedom
    (one estimate, not two independent ones). ``image_values`` is a list of per-image
    arrays, one per independent block of images (:func:`image_component`). Returns
    ``difference``, ``standard_error``, ``degrees_of_freedom``, ``t``, ``margin`` (t times
    the standard error: the interval's half-width, the smallest difference this rule can
    call beyond the noise), ``low`` and ``high`` (the interval), ``beyond_noise`` (the
    interval leaves out 0), ``confidence`` and ``components`` (each part of the variance:
    kind "seeds", "borrowed" or "images", its variance, degrees of freedom and count, for
    :func:`settling_scale`). The error is NaN when a side's seed noise is unknown.
    """
    components = []  # (kind, variance of the mean, degrees of freedom, values behind it)
    difference = -shift
    borrowing_sides = 0
    for scores, sign in ((scores_a, 1.0), (scores_b, -1.0)):
        if scores is None:
            continue
        values = np.asarray(scores, dtype=float).reshape(-1)
        difference += sign * float(np.mean(values)) if len(values) else math.nan
        if len(values) >= 2:
            variance, df = seed_component(values)
            components.append(("seeds", variance, df, len(values)))
        elif borrowed is not None:
            borrowing_sides += 1
        else:
            components.append(("seeds", math.nan, math.nan, len(values)))
    if borrowing_sides:
        # one borrowed estimate, used by one side or by both: its degrees of freedom once
        variance, df = borrowed
        components.append(("borrowed", borrowing_sides * variance, df, 1))
    for values in image_values:
        variance, df = image_component(values)
        components.append(("images", variance, df, len(np.asarray(values).reshape(-1))))
    return _interval(difference, components, confidence)


def image_difference_test(per_image_values, *, shift: float = 0.0, confidence: float | None = None) -> dict:
    """The rule for a mean over images alone, ``mean(per_image_values) - shift``: image noise only.

    For two runs trained once each, paired on the same images (``per_image_values`` the
    per-image differences), when no seed noise of the measured quantity is known; the
    interval then says nothing about another seed, and the text that uses it must say so.
    """
    values = np.asarray(per_image_values, dtype=float).reshape(-1)
    values = values[np.isfinite(values)]
    difference = (float(values.mean()) if len(values) else math.nan) - shift
    variance, df = image_component(values)
    return _interval(difference, [("images", variance, df, len(values))], confidence)


def _interval(difference: float, components: list[tuple], confidence: float | None) -> dict:
    """The Student-t interval of ``difference`` whose variance is the sum of ``components``."""
    variance = sum(v for _, v, _, _ in components)
    if not components or not np.isfinite(variance) or not np.isfinite(difference):
        error, df = math.nan, math.nan
    elif variance == 0:
        error, df = 0.0, math.inf
    else:
        error = math.sqrt(variance)
        df = _satterthwaite([(v, d) for _, v, d, _ in components])
    t = t_quantile(df, confidence) if np.isfinite(error) else math.nan
    margin = t * error if np.isfinite(error) else math.nan
    return {
        "difference": difference,
        "standard_error": error,
        "degrees_of_freedom": df,
        "t": t,
        "margin": margin,
        "low": difference - margin,
        "high": difference + margin,
        "beyond_noise": bool(np.isfinite(margin) and abs(difference) > margin),
        "confidence": confidence or CONFIDENCE,
        "components": [
            {"kind": kind, "variance": v, "degrees_of_freedom": d, "count": n} for kind, v, d, n in components
        ],
    }


def _satterthwaite(components: list[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent (variance, df) estimates."""
    variance = sum(v for v, _ in components)
    return variance**2 / sum(v**2 / d for v, d in components if v > 0)


def settling_scale(
    result: dict, target: float, *, seeds_only: bool = False, largest: float = 1000.0
) -> float:
    """How many times the seeds and images (or the seeds alone) a :func:`difference_test` needs
    for its interval's half-width to fall below ``target`` (same units as the difference).

    Each component's variance shrinks with the factor and its degrees of freedom grow with it
    (``count * factor - 1``), so the t quantile shrinks too. Returns the smallest factor,
    1 when the half-width is already below ``target``, and infinity when no factor up to
    ``largest`` does it (e.g. seeds alone, when the images' noise alone is wider than
    ``target``, or a ``target`` of zero).
    """
    components = result.get("components") or []
    if not components or not target > 0 or not np.isfinite(result["margin"]):
        return math.inf
    if result["margin"] < target:
        return 1.0

    def half_width(factor: float) -> float:
        scaled = []
        for part in components:
            grows = part["kind"] != "images" or not seeds_only
            share = factor if grows else 1.0
            count = part["count"] if part["kind"] != "borrowed" else part["degrees_of_freedom"] + 1
            df = max(count * share - 1, part["degrees_of_freedom"]) if grows else part["degrees_of_freedom"]
            scaled.append((part["variance"] / share, df))
        variance = sum(v for v, _ in scaled)
        if variance == 0:
            return 0.0
        return t_quantile(_satterthwaite(scaled), result.get("confidence")) * math.sqrt(variance)

    if half_width(largest) >= target:
        return math.inf
    low, high = 1.0, largest
    while high / low > 1.01:  # bisection on a log scale: the half-width falls as the factor grows
        middle = math.sqrt(low * high)
        low, high = (low, middle) if half_width(middle) < target else (middle, high)
    return high


def effect_verdict(result: dict, expected: float) -> str:
    """Does a measured difference (:func:`difference_test`) show an effect of the sign of ``expected``?

    "reproduced" when the interval lies on the side of ``expected``; "not reproduced" when it
    lies on the other side; "inconclusive" when it holds 0 (the build cannot tell); "not
    testable" without an error.
    """
    if not np.isfinite(result["margin"]):
        return "not testable"
    if not result["beyond_noise"]:
        return "inconclusive"
    return "reproduced" if np.sign(result["difference"]) == np.sign(expected) else "not reproduced"
