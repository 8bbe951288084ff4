"""What every claim's judge shares: the judgement, the claim record, the registry, and the
comparisons of runs that several claims make.

A claim is registered by the decorator :func:`registrar` returns, placed on its judge, so
that the claim's words and rule text stand right above the code that applies them
(:mod:`helpers.report.claims_training`, :mod:`helpers.report.claims_findings`).

Every comparison of runs uses one noise rule, :func:`helpers.statistics.difference_test`
(paired on the same images, Student-t, Welch-Satterthwaite degrees of freedom), through
:func:`helpers.experiments.compare_experiments`. A setting trained once borrows the seed
noise of one run from notebook 06's final runs (the same configuration over seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from helpers import experiments, metrics, statistics
from helpers.report import words
from helpers.report.build import notebook_of_run, published, row, seed_runs
from helpers.report.verdicts import DAMAGED, MISSING, NOT_REPRODUCED, REPRODUCED, effect

NO_GAIN_POINTS = published("schedule_gain")
# a distance level is pinned when its interval is no wider than a tenth of the report's 62 km
KM_TOLERANCE = 0.1 * published("final_mean_km")
NOT_AN_ACCURACY_CLAIM = "—"


@dataclass(frozen=True)
class Judgement:
    """What a judge found: ``measured`` (both quantities, as measured here), ``data`` (profile,
    image set, split), ``verdict`` and ``reason``."""

    measured: str
    data: str
    verdict: str
    reason: str


@dataclass(frozen=True)
class Claim:
    """One claim of the report: ``claim`` (its words, quoted exactly, with the section),
    ``report`` (its number), ``compares`` (the two quantities), ``rule`` (in words),
    ``judge`` (the code of the rule) and ``shortcut`` (the leak-0 comparison, or None)."""

    claim: str
    report: str
    compares: str
    rule: str
    judge: Callable[[dict], Judgement]
    shortcut: Callable[[dict], str] | None = None


def registrar(claims: list[Claim]) -> Callable:
    """A decorator factory: ``@claim(claim=..., rule=...)`` on a judge appends its :class:`Claim`
    to ``claims`` (in the order the judges are written)."""

    def claim(*, shortcut=None, **fields) -> Callable:
        def register(judge):
            claims.append(Claim(judge=judge, shortcut=shortcut, **fields))
            return judge

        return register

    return claim


def guarded(function, build: dict):
    """``function(build)``; a file found damaged while judging gives a "damaged" judgement."""
    try:
        return function(build)
    except ValueError as error:  # metrics.DamagedBuild, or pandas' own reading errors
        return Judgement("not judged", measured_on(build), DAMAGED, str(error))


def measured_on(build: dict, split: str = "validation split") -> str:
    """The data column: "<profile>: <image set>, <split>"."""
    return f"{build['profile']['name']}: {build['data']}, {split}"


def damaged_error():
    """The error class of a damaged table (``metrics.DamagedBuild``), or () before it exists."""
    return getattr(metrics, "DamagedBuild", ())


def compare(build: dict, runs_a, runs_b, metric: str, **options):
    """:func:`experiments.compare_experiments` on this build: (result, "") or (None, why not)."""
    try:
        return experiments.compare_experiments(build["profile"], runs_a, runs_b, metric, **options), ""
    except (LookupError, ValueError) as error:
        if isinstance(error, damaged_error()):
            raise
        return None, str(error)


def final_noise(build: dict, metric: str = "top1"):
    """The seed noise of one run (variance, degrees of freedom) from the final runs' per-seed
    ``metric``: (noise, "") or (None, why not)."""
    runs = seed_runs(build, "final")
    if len(runs) < 2:
        return None, f"needs two or more seeds of the final runs (notebook 06); found {len(runs)}"
    try:
        values = experiments.per_image_values(build["profile"], runs, "val", experiments.PER_IMAGE[metric])
    except (LookupError, ValueError) as error:
        if isinstance(error, damaged_error()):
            raise
        return None, str(error)
    return statistics.borrowed_seed_variance(values.mean().to_numpy()), ""


def has_run(build: dict, run: str) -> bool:
    """Whether the build holds run ``run`` (a summary.json or a validation row)."""
    return run in build["runs"] or row(build["results"], run, "val") is not None


def effect_words(verdict: str) -> str:
    """A verdict of a comparison shown beside the judged one, in words."""
    return {REPRODUCED: "as the report", NOT_REPRODUCED: "not as the report"}.get(verdict, verdict)


def better_words(verdict: str) -> str:
    """A verdict of an effect expected to be a gain, as better or worse."""
    return {REPRODUCED: "better beyond the noise", NOT_REPRODUCED: "worse beyond the noise"}.get(
        verdict, "within the noise"
    )


def single_runs(build: dict, run: str, reference: str, metric: str, direction: float, size=None, show=None):
    """Two runs trained once each, paired on the same images, each with the final runs' seed
    noise: (result, verdict, reason) or (None, MISSING, why not)."""
    for name in (run, reference):
        if not has_run(build, name):
            return None, MISSING, f"no run {name} (notebook {notebook_of_run(name)})"
    noise, reason = final_noise(build, metric)
    if noise is None:
        return None, MISSING, reason
    result, reason = compare(build, [run], [reference], metric, borrowed=noise)
    if result is None:
        return None, MISSING, reason
    return result, *effect(result, direction, show or words.points, size=size)


def leak0_pair(build: dict, run: str, reference: str, direction: float, size=None) -> str:
    """The leak-0 column of an effect: ``run``_leak0 against ``reference``_leak0, one seed each."""
    if build["real_photos"] or build["profile"]["image_source"] != "synthetic":
        return "no leak to switch off: these images are not rendered"
    names = (f"{run}_leak0", f"{reference}_leak0")
    if not all(has_run(build, name) for name in names):
        return f"not run ({' and '.join(n for n in names if not has_run(build, n))})"
    result, verdict, reason = single_runs(build, *names, "top1", direction, size)
    if result is None:
        return f"not judged: {reason}"
    return (
        f"{names[0]} {words.pct(result['mean_a'])} against {names[1]} {words.pct(result['mean_b'])}: "
        f"{words.interval(result, words.points)}, one seed each at session_leak 0 (the final runs' seed "
        f"noise): {effect_words(verdict)}"
    )


def gain_rule(compared: str, size_words: str) -> str:
    """The rule text of a gain the report measured (claims 2-4)."""
    return (
        f"{compared}, paired on the same validation images over seeds (Student-t, helpers.statistics): "
        f"reproduced when the 95 % interval of the difference lies above zero and reaches {size_words}; "
        "not reproduced when it lies below zero, or stops short of that size; inconclusive when it holds "
        "zero and the report's size (the reason gives the smallest difference the build could see)"
    )


BORROWED = (
    "one run each, paired on the same validation images, each with the seed noise of one final run of "
    "notebook 06 (one estimate used twice: its degrees of freedom count once)"
)

# Settings a profile chose so that a claim would hold: its verdict is then "by design" (the setting
# names of config.PROFILES, and why they were chosen)
DESIGN_CHOICES = {
    "overfitting": {
        "default": (
            ("learning_rate", "images_per_cell", "epochs"),
            "chosen, before any claim was judged, for the largest train-validation gap of the fine-tuned "
            "base model (helpers/config.py)",
        )
    }
}


def design_choice(build: dict, key: str) -> str:
    """Why ``build``'s profile holds claim ``key`` by construction, or "" when it does not."""
    settings = build["profile"]
    choice = DESIGN_CHOICES.get(key, {}).get(settings["name"])
    if not choice or set(choice[0]) & set(settings.get("overrides") or {}):
        return ""
    values = ", ".join(f"{name} {settings[name]:g}" for name in choice[0])
    return f"the {settings['name']} profile's {values} were {choice[1]}"
