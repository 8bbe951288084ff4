"""The scorecard's verdicts and the rules every claim shares, each verdict with its reason.

Seven verdicts, in the order the report counts them:

* **reproduced**: the build's 95 % interval lies on the report's side of zero and, where the
  report gives a size, does not stop short of it;
* **not reproduced**: the interval lies on the other side of zero, or stops short of the
  report's size (the build could have seen an effect that large and did not);
* **inconclusive**: the interval holds zero (and the report's size, if any): the build cannot
  tell. The reason prints the smallest difference this build could have called beyond the
  noise (the interval's half-width) and what would settle it (how many times the seeds and
  images);
* **by design**: the rule holds, but because the workbook chose a setting or built its world
  so that it would; the reason names the choice;
* **not testable**: these data cannot test the claim; the reason says what data it needs;
* **missing**: the build lacks the rows or files the rule reads (a notebook has not run);
* **damaged**: a table the rule would read cannot be trusted; the reason names the file and
  how to rebuild it, and nothing is judged.
"""

from __future__ import annotations

import math

from helpers import statistics
from helpers.report import words

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
BY_DESIGN, NOT_TESTABLE, MISSING, DAMAGED = "by design", "not testable", "missing", "damaged"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, BY_DESIGN, NOT_TESTABLE, MISSING, DAMAGED)


def settle_text(result: dict, target: float, show, what: str = "seeds and images") -> str:
    """What would settle an inconclusive interval: a half-width below ``target`` (> 0), in how
    many times the seeds alone, or the seeds and images together."""
    if not target > 0:
        return (
            "the difference measured is not on the report's side, so no amount of data is sure to show the "
            "report's effect; more seeds and images narrow the interval (half its width takes about four "
            "times as many)"
        )
    by_seeds = statistics.settling_scale(result, target, seeds_only=True)
    by_both = statistics.settling_scale(result, target)
    goal = f"a half-width below {show(target).lstrip('+')}"
    if math.isfinite(by_seeds):
        return f"{goal} needs about {by_seeds:.1f} times the seeds"
    if math.isfinite(by_both):
        return f"{goal} needs about {by_both:.1f} times the {what} (the images' noise alone is too wide)"
    return f"{goal} is out of reach of 1000 times the {what}"


def effect(result: dict, direction: float, show, *, size: float | None = None, size_words: str = "") -> tuple:
    """(verdict, reason) of an effect claim: the report's effect has sign ``direction`` (+1: the
    difference should be above zero) and, if given, the size ``size`` (same sign).

    ``show`` formats a difference ("+2.0 points"). ``result`` is a :func:`statistics.difference_test`.
    """
    if not words.finite(result["margin"]):
        return MISSING, "no seed noise to judge the difference against"
    sign = 1.0 if direction > 0 else -1.0
    low, high = sorted((sign * result["low"], sign * result["high"]))
    span = words.span(result, show)
    size_text = f"the report's {size_words or show(size)}" if size is not None else ""
    short_of_size = size is not None and high < sign * size
    if low > 0 and not short_of_size:
        reached = f", and reaches {size_text}" if size is not None else ""
        return REPRODUCED, f"{span} lies on the report's side of zero{reached}"
    if low > 0:
        return NOT_REPRODUCED, f"{span} lies on the report's side of zero but stops short of {size_text}"
    if high < 0:
        return NOT_REPRODUCED, f"{span} lies on the other side of zero: the opposite of the report's"
    if short_of_size:
        return NOT_REPRODUCED, (
            f"{span} holds zero and stops short of {size_text}: an effect that large would have shown"
        )
    target = abs(size) if size is not None else sign * result["difference"]
    smallest = show(result["margin"]).lstrip("+")
    against = f"; {size_text} lies inside it" if size is not None else ""
    return INCONCLUSIVE, (
        f"{span} holds zero: this build cannot tell. The smallest difference it could call beyond the "
        f"noise is ±{smallest}{against}; {settle_text(result, target, show)}"
    )


def no_gain(result: dict, bound: float, show, bound_words: str) -> tuple:
    """(verdict, reason) of a claim that something did *not* help: reproduced when the interval
    rules out a gain of ``bound`` (> 0) or more; not reproduced when it shows a gain beyond the
    noise; inconclusive when it holds zero and reaches the bound."""
    if not words.finite(result["margin"]):
        return MISSING, "no seed noise to judge the difference against"
    span = words.span(result, show)
    if result["high"] < bound:
        return REPRODUCED, f"{span} rules out a gain of {bound_words} or more"
    if result["low"] > 0:
        return NOT_REPRODUCED, f"{span} lies above zero: better beyond the noise"
    room = bound - result["difference"]
    return INCONCLUSIVE, (
        f"{span} holds zero and reaches {bound_words}: neither a gain nor its absence is shown. The "
        f"smallest difference this build could call beyond the noise is "
        f"±{show(result['margin']).lstrip('+')}; "
        + (
            settle_text(result, room, show)
            if room > 0
            else "the measured gain is already that large: more seeds and images would more likely show it"
        )
    )


def level(result: dict, good_side: float, tolerance: float, show, number_words: str) -> tuple:
    """(verdict, reason) of a claim about one number (the report's level, ``result`` is this
    build's number minus it): reproduced when this build is on the ``good_side`` of it beyond
    the noise (+1: above, as an accuracy) or matches it within an interval no wider than
    ± ``tolerance``; not reproduced when on the other side beyond the noise; inconclusive when
    the interval holds the report's number but is too wide to pin it."""
    if not words.finite(result["margin"]):
        return MISSING, "no seed noise to judge the number against"
    span = words.span(result, show) + " of the difference"
    sign = 1.0 if good_side > 0 else -1.0
    low, high = sorted((sign * result["low"], sign * result["high"]))
    claimed, other = ("above", "below") if sign > 0 else ("below", "above")
    if low > 0:
        return REPRODUCED, f"{span}: {claimed} {number_words} beyond the noise, as the claim has it"
    if high < 0:
        return NOT_REPRODUCED, f"{span}: {other} {number_words} beyond the noise"
    if result["margin"] <= tolerance:
        return REPRODUCED, f"{span} holds {number_words} within ±{show(tolerance).lstrip('+')}"
    return INCONCLUSIVE, (
        f"{span} holds {number_words}, but is wider than ±{show(tolerance).lstrip('+')}: the smallest "
        "difference "
        f"this build could see is ±{show(result['margin']).lstrip('+')}; "
        f"{settle_text(result, tolerance, show)}"
    )
