"""Numbers as the report prints them: fractions as percent, signed points, km, counts.

Every function prints "n/a" for a number that is missing or not finite, so a sentence built
from a build with holes still reads.
"""

from __future__ import annotations

import numpy as np

NBSP = "\u00a0"  # between a number and its unit, so that a line never breaks there


def finite(*values) -> bool:
    """Whether every value is a real, finite number (not None, NaN, infinite or text)."""
    return all(
        v is not None
        and not isinstance(v, bool)
        and isinstance(v, (int, float, np.number))
        and np.isfinite(v)
        for v in values
    )


def pct(value, digits: int = 1) -> str:
    """A fraction as percent: 0.291 -> "29.1 %"."""
    return f"{100 * value:.{digits}f}{NBSP}%" if finite(value) else "n/a"


def points(value, digits: int = 1) -> str:
    """A difference of fractions in signed percentage points: 0.02 -> "+2.0 points"."""
    return f"{100 * value:+.{digits}f}{NBSP}points" if finite(value) else "n/a"


def km(value) -> str:
    """A distance in km, rounded to the km: 61.7 -> "62 km"."""
    return f"{value:,.0f}{NBSP}km" if finite(value) else "n/a"


def signed_km(value) -> str:
    """A difference of distances in km, signed, to a tenth: -3.26 -> "-3.3 km"."""
    return f"{value:+,.1f}{NBSP}km" if finite(value) else "n/a"


def share(value, digits: int = 1) -> str:
    """A share (of attention, of errors) as percent, like :func:`pct`."""
    return pct(value, digits)


def signed_share(value, digits: int = 1) -> str:
    """A difference of shares in signed percentage points, like :func:`points`."""
    return points(value, digits)


def ratio(value) -> str:
    """A ratio as a whole percent: 0.413 -> "41 %"."""
    return f"{100 * value:.0f}{NBSP}%" if finite(value) else "n/a"


def plural(number: int, word: str) -> str:
    """ "1 seed", "3 seeds"."""
    return f"{number} {word}{'' if number == 1 else 's'}"


def count(value) -> str:
    """A count with thousands separators: 42570 -> "42,570"."""
    return f"{int(value):,}"


def interval(result: dict, show) -> str:
    """'difference (95 % interval low to high, df)' of a :func:`helpers.statistics.difference_test`,
    with ``show`` formatting each number."""
    confidence = round(100 * result.get("confidence", 0.95))
    return (
        f"{show(result['difference'])} ({confidence}{NBSP}% interval {show(result['low'])} to "
        f"{show(result['high'])}, {result['degrees_of_freedom']:.3g} df)"
    )


def span(result: dict, show) -> str:
    """ "the 95 % interval low to high" of a :func:`helpers.statistics.difference_test`."""
    confidence = round(100 * result.get("confidence", 0.95))
    return f"the {confidence}{NBSP}% interval {show(result['low'])} to {show(result['high'])}"
