"""The report, regenerated: the original's structure, this build's numbers, and a scorecard of its claims.

Everything is read from ``build/<profile>/``: ``tables/results.csv``, ``tables/facts.json``,
``runs/*/summary.json`` and ``history.csv``, ``geocells/``, ``images/``, ``figures/`` and
``maps/``. Nothing is trained or evaluated again. The only numbers typed in this module are
the original report's own published ones (:data:`PUBLISHED`, each with the section of the
report it is printed in); the text always labels them as the report's.

One document, two renderings: :func:`document` returns a list of blocks (headings,
paragraphs, tables, figures, links, equations); :func:`write_html` renders them through a
Jinja2 template as one self-contained HTML file (figures embedded, maps linked relatively;
``helpers.report_html``) and :func:`write_pdf` as an A4 PDF typeset by Typst, with a
contents page (``helpers.report_typst``).

The scorecard (:func:`scorecard`) gives each claim of the report a verdict by a rule written
down in :data:`CLAIMS`: "reproduced", "not reproduced", "not testable" (these data cannot
test it) or "missing" (the build lacks the rows; a notebook has not run).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config, experiments, metrics, statistics
from helpers.report_html import render_html
from helpers.report_typst import render_pdf

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, MISSING = "reproduced", "not reproduced", "not testable", "missing"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, MISSING)

# The original report's published numbers (Csizmadia and Głowaczewski, 2023) and where it prints
# them. Measured on its Street View photos and its validation split; shown only as the report's.
PUBLISHED = {
    "addresses_sampled": (42_570, "3.1 Dataset"),
    "per_cell": (330, "3.1 Dataset"),
    "n_cells": (129, "3.1 Dataset"),
    "image_px": (224, "3.1 Dataset"),
    "epochs": (20, "3.2 Model"),
    "batch_size": (32, "3.2 Model"),
    "learning_rate": (6e-5, "3.2 Model"),
    "weight_decay": (0.1, "3.2 Model"),
    "randaugment_ops": (2, "3.2 Model"),
    "randaugment_magnitude": (0.15, "3.2 Model"),
    "baseline_top1": (0.29, "3.2 Model"),
    "augment_top1": (0.35, "3.2 Model"),
    "schedule_gain": (0.02, "3.2 Model"),
    "frozen_top1": (0.10, "3.2 Model"),
    "final_gain": (0.08, "4 Results"),
    "final_top1": (0.37, "4 Results"),
    "final_mean_km": (62.0, "4 Results"),
    "random_mean_km": (150.0, "4 Results"),
}

SEED_CONFIGURATIONS = ("baseline", "augment", "betas", "warmup", "final")  # notebook 06's runs


def published(key: str) -> float:
    """The original report's number ``key`` of :data:`PUBLISHED` (fractions, km, counts)."""
    return PUBLISHED[key][0]


# ---------------------------------------------------------------------------------------------
# Reading a build


def load_build(profile: str | dict) -> dict:
    """Everything the report reads from ``build/<profile>/``, as one dictionary.

    Keys: ``profile`` (settings), ``root`` (folder), ``results`` (results table), ``facts``,
    ``runs`` (run name -> its ``summary.json``), ``data`` (this build's training image set,
    :func:`experiments.data_label`), ``real_photos`` (False for synthetic scenes, also when
    served by the loopback stand-in), ``sizes`` (counts of locations, cells and images). No
    file is required: whatever is missing reads as empty, and the report says so.
    """
    settings = config.get_profile(profile)
    root = config.build_dir(settings)
    runs = {}
    for path in sorted((root / "runs").glob("*/summary.json")):
        runs[path.parent.name] = json.loads(path.read_text())
    return {
        "profile": settings,
        "root": root,
        "results": metrics.load_results(settings),
        "facts": metrics.load_facts(settings),
        "runs": runs,
        "data": experiments.data_label(settings),
        "real_photos": settings["image_source"] != "synthetic" and settings["streetview_api"] != "standin",
        "sizes": build_sizes(root),
    }


def build_sizes(root: Path) -> dict:
    """Counts of a build folder: locations, municipalities, cells (with their sizes) and images.

    Read from ``geocells/locations.csv``, ``geocells/geocells.geojson``, ``images/dataset.csv``
    and ``images/dataset_new_day.csv``; a count whose file is absent is left out.
    """
    sizes: dict = {}
    locations = root / "geocells" / "locations.csv"
    if locations.exists():
        table = pd.read_csv(locations, usecols=lambda c: c in {"lat", "municipality"})
        sizes["locations"] = len(table)
        if "municipality" in table:
            sizes["municipalities"] = int(table["municipality"].nunique())
    cells = root / "geocells" / "geocells.geojson"
    if cells.exists():
        properties = pd.DataFrame([f["properties"] for f in json.loads(cells.read_text())["features"]])
        sizes["cells"] = len(properties)
        for column in ("n_points", "area_km2"):
            if column in properties:
                sizes[column] = properties[column].describe()[["min", "50%", "max"]].to_dict()
    images = root / "images" / "dataset.csv"
    if images.exists():
        table = pd.read_csv(images, usecols=["cell", "split"])
        sizes["images"] = len(table)
        sizes["splits"] = table["split"].value_counts().to_dict()
        sizes["images_per_cell"] = table.groupby("cell").size().describe()[["min", "50%", "max"]].to_dict()
    new_day = root / "images" / "dataset_new_day.csv"
    if new_day.exists():
        sizes["new_day_images"] = len(pd.read_csv(new_day, usecols=["cell"]))
    return sizes


def seed_scores(results: pd.DataFrame, data: str) -> pd.DataFrame:
    """Notebook 06's runs, one row per (run, seed): run, seed, experiment, top1, train_top1, gap, mean_km.

    Read from the validation rows of ``results`` measured on ``data``. Seed 0 of the base
    model is notebook 05's run "baseline"; the others are named ``<run>_seed<k>``.
    """
    columns = ["run", "seed", "experiment", "top1", "train_top1", "gap", "mean_km"]
    rows = results[(results["split"] == "val") & (results["data"] == data)]
    named = re.compile(rf"^({'|'.join(SEED_CONFIGURATIONS)})_seed(\d+)$")
    found = []
    for record in rows.itertuples():
        match = named.match(str(record.experiment))
        if record.experiment == "baseline":
            run, seed = "baseline", 0
        elif match:
            run, seed = match.group(1), int(match.group(2))
        else:
            continue
        top1, train = float(record.top1), float(record.train_top1)
        found.append([run, seed, record.experiment, top1, train, train - top1, float(record.mean_km)])
    table = pd.DataFrame(found, columns=columns)
    # notebook 06 retrains seed 0 as "baseline_seed0" when notebook 05's run differs: that one counts
    table = table.sort_values("experiment", key=lambda names: names == "baseline", kind="stable")
    return table.drop_duplicates(["run", "seed"]).sort_index().reset_index(drop=True)


def _spread(scores: pd.DataFrame, run: str, metric: str = "top1") -> float:
    """Standard deviation of ``metric`` over the seeds of ``run`` (NaN with fewer than two)."""
    values = scores.loc[scores["run"] == run, metric].dropna()
    return float(values.std()) if len(values) >= 2 else math.nan


def _row(results: pd.DataFrame, experiment: str, split: str):
    rows = results[(results["experiment"] == experiment) & (results["split"] == split)]
    return None if rows.empty else rows.iloc[0]


def best_test_row(results: pd.DataFrame):
    """Notebook 08's test row of the best run ("best run (<name>)"), or None."""
    rows = results[(results["split"] == "test") & results["experiment"].str.match(r"^best run \([^)]*\)$")]
    return None if rows.empty else rows.iloc[0]


def _best_name(row) -> str:
    return re.match(r"^best run \((.*)\)$", row["experiment"]).group(1)


# ---------------------------------------------------------------------------------------------
# Formatting numbers: fractions as percent, km, signed points


def _pct(value, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.{digits}f}\u00a0%"


def _points(value, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:+.{digits}f}\u00a0points"


def _km(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:,.0f}\u00a0km"


def _plural(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def _count(value) -> str:
    return f"{int(value):,}"


def _finite(*values) -> bool:
    return all(v is not None and isinstance(v, (int, float, np.number)) and np.isfinite(v) for v in values)


# ---------------------------------------------------------------------------------------------
# The claims and their rules. Each judge returns (this build's number, data, verdict, why).
#
# Every comparison of runs uses one noise rule, helpers.statistics.difference_test (a paired
# comparison on the same validation images across seeds, Student-t with Welch-Satterthwaite
# degrees of freedom), through experiments.compare_experiments. A setting trained once (the
# losses of notebook 07, a frozen backbone) borrows the seed noise of one run from the final
# runs of notebook 06 (the same configuration, several seeds).

# The smallest gain the report counts as help: "This only helped 2 percentage points" (§3.2).
# A claim that something did not help is reproduced only when the data rule out a gain this size.
NO_GAIN_POINTS = published("schedule_gain")


def _label(build: dict, split: str = "validation split") -> str:
    return f"{build['profile']['name']}: {build['data']}, {split}"


def _seed_runs(build: dict, run: str) -> list[str]:
    """The experiments holding notebook 06's run ``run``, one per seed."""
    scores = seed_scores(build["results"], build["data"])
    return list(scores.loc[scores["run"] == run, "experiment"])


def _interval(result: dict, show) -> str:
    """'difference (95 % interval low to high, t df)' with ``show`` formatting the numbers."""
    return (
        f"{show(result['difference'])} (95 % interval {show(result['low'])} to {show(result['high'])}, "
        f"{result['degrees_of_freedom']:.3g} df)"
    )


def _compare(build: dict, runs_a, runs_b, metric: str, **options):
    """:func:`experiments.compare_experiments` on this build, or the reason it cannot run."""
    try:
        return experiments.compare_experiments(build["profile"], runs_a, runs_b, metric, **options), ""
    except (LookupError, ValueError) as error:
        return None, str(error)


def _final_noise(build: dict, metric: str = "top1"):
    """The seed noise of one run (variance, degrees of freedom), from the final runs' per-seed scores."""
    runs = _seed_runs(build, "final")
    result, reason = _compare(build, runs, None, metric) if len(runs) >= 2 else (None, "")
    if result is None:
        return None, reason or f"needs two or more seeds of the final runs (notebook 06); found {len(runs)}"
    values = [
        experiments.load_predictions(build["profile"], run)[experiments.PER_IMAGE[metric]].mean()
        for run in runs
    ]
    return statistics.borrowed_seed_variance(values), ""


def _effect(build: dict, run: str, reference: str, expected: float):
    """Notebook 06's run ``run`` against ``reference`` over seeds: validation top-1, paired."""
    label = _label(build)
    runs, references = _seed_runs(build, run), _seed_runs(build, reference)
    if len(runs) < 2 or len(references) < 2:
        have = f"{len(references)} seed(s) of {reference}, {len(runs)} of {run}"
        return "n/a", label, MISSING, f"needs at least two seeds of each run (notebook 06); found {have}"
    result, reason = _compare(build, runs, references, "top1")
    if result is None:
        return "n/a", label, MISSING, reason
    number = (
        f"validation top-1 of {run} {_pct(result['mean_a'])} against {reference} {_pct(result['mean_b'])} "
        f"(means of {len(runs)} and {len(references)} seeds): {_interval(result, _points)}"
    )
    verdict, why = noise_verdict(result, expected)
    return number, label, verdict, why


def noise_verdict(result: dict, expected: float) -> tuple[str, str]:
    """The rule of :mod:`helpers.statistics` as a scorecard verdict; "within noise" is not reproduced."""
    verdict = statistics.effect_verdict(result, expected)
    if verdict == "reproduced":
        return REPRODUCED, "the 95 % interval of the difference lies on the report's side of zero"
    if verdict == "not reproduced":
        return NOT_REPRODUCED, "the 95 % interval of the difference lies on the other side of zero"
    if verdict == "within noise":
        return NOT_REPRODUCED, "the 95 % interval of the difference holds zero: no effect beyond the noise"
    return MISSING, "no seed noise to judge the difference against"


def judge_overfitting(build: dict):
    """Claim 1: the base model overfits (its train-validation gap over seeds)."""
    label = _label(build, "training and validation splits")
    runs = _seed_runs(build, "baseline")
    if len(runs) < 2:
        return (
            "n/a",
            label,
            MISSING,
            f"needs the base model over two or more seeds (notebooks 05, 06); found {len(runs)}",
        )
    result, reason = _compare(build, runs, None, "gap")
    if result is None:
        return "n/a", label, MISSING, reason
    scores = seed_scores(build["results"], build["data"])
    base = scores[scores["run"] == "baseline"]
    number = (
        f"training top-1 {_pct(base['train_top1'].mean())} against validation top-1 "
        f"{_pct(base['top1'].mean())} "
        f"({len(runs)} seeds): gap {_interval(result, _points)}"
    )
    verdict, why = noise_verdict(result, 1.0)
    return number, label, verdict, why


def judge_augmentation(build: dict):
    """Claim 2: RandAugment raises accuracy (augment against baseline over seeds)."""
    return _effect(build, "augment", "baseline", published("augment_top1") - published("baseline_top1"))


def judge_schedule(build: dict):
    """Claim 3: the schedule and betas add accuracy (final against augment over seeds)."""
    return _effect(build, "final", "augment", published("schedule_gain"))


def judge_total_gain(build: dict):
    """Claim 4: the final configuration beats the base model (final against baseline)."""
    return _effect(build, "final", "baseline", published("final_gain"))


def _loss_against(build: dict, loss: str, reference: str, metric: str):
    """Run ``loss_<loss>`` (one seed) against ``reference`` (one run) on ``metric``, paired, with
    the final runs' seed noise for each; (result, number) or (None, reason)."""
    names = {"final_seed0": "cross-entropy (final_seed0)"}
    run = f"loss_{loss}"
    if run not in build["runs"] and _row(build["results"], run, "val") is None:
        return None, f"no run {run} (notebook 07)"
    noise, reason = _final_noise(build, metric)
    if noise is None:
        return None, reason
    result, reason = _compare(build, [run], [reference], metric, borrowed=noise)
    if result is None:
        return None, reason
    show = _pct if metric == "top1" else _km
    what = "validation top-1" if metric == "top1" else "validation centroid-to-centroid mean error"
    delta = _points if metric == "top1" else (lambda v: f"{v:+,.1f}\u00a0km" if np.isfinite(v) else "n/a")
    number = (
        f"{what} of {run} {show(result['mean_a'])} against {names.get(reference, reference)} "
        f"{show(result['mean_b'])}: {_interval(result, delta)}"
    )
    return result, number


def _no_gain(build: dict, loss: str):
    """A loss that "did not help": reproduced when its accuracy gain over cross-entropy is ruled out."""
    label = _label(build)
    result, number = _loss_against(build, loss, "final_seed0", "top1")
    if result is None:
        return "n/a", label, MISSING, number
    bound = _points(NO_GAIN_POINTS, 0)
    if result["high"] < NO_GAIN_POINTS:
        return number, label, REPRODUCED, f"the interval rules out a gain of {bound} or more"
    if result["low"] > 0:
        return number, label, NOT_REPRODUCED, "better than cross-entropy beyond the noise"
    return number, label, NOT_REPRODUCED, f"too noisy to rule out a gain of {bound}: the interval reaches it"


def judge_loss1_accuracy(build: dict):
    """Claim 5: loss (1) did not give a better accuracy than cross-entropy."""
    return _no_gain(build, "expected_distance_squared")


def judge_loss1_distance(build: dict):
    """Claim 6: loss (1) did improve the distance between predicted and true cells."""
    label = _label(build)
    result, number = _loss_against(build, "expected_distance_squared", "final_seed0", "centroid_mean_km")
    if result is None:
        return "n/a", label, MISSING, number
    verdict, why = noise_verdict(result, -1.0)
    return number, label, verdict, why


def judge_loss2(build: dict):
    """Claim 7: loss (2), (1) plus cross-entropy, did better than (1) alone."""
    label = _label(build)
    if "loss_expected_distance_squared" not in build["runs"]:
        return "n/a", label, MISSING, "no run loss_expected_distance_squared (notebook 07)"
    result, number = _loss_against(
        build, "distance_plus_cross_entropy", "loss_expected_distance_squared", "top1"
    )
    if result is None:
        return "n/a", label, MISSING, number
    verdict, why = noise_verdict(result, 1.0)
    return number, label, verdict, why


def judge_loss3(build: dict):
    """Claim 8: loss (3) did not help much either."""
    return _no_gain(build, "log_distance")


def _split_words(build: dict) -> str:
    """Which validation split this build's numbers come from, against the report's."""
    if build["profile"]["image_source"] == "synthetic":
        return "validation split, random (as the report's)"
    return "validation split, whole 1 km squares and capture groups (the report's: random)"


def _against_number(build: dict, runs: list[str], metric: str, target: float):
    """Mean of ``metric`` over ``runs`` (validation) minus the report's ``target``: (result, reason)."""
    if len(runs) < 2:
        return None, f"needs two or more seeds (notebook 06); found {len(runs)}"
    return _compare(build, runs, None, metric, shift=target)


def judge_frozen(build: dict):
    """Claim 9: a frozen pretrained backbone stays near 10 % top-1."""
    label = _label(build)
    frozen = [name for name, summary in build["runs"].items() if summary.get("freeze_backbone")]
    if not frozen:
        return (
            "no run with a frozen backbone",
            label,
            NOT_TESTABLE,
            "no run of this build has freeze_backbone set (notebook 05 trains one where the backbone "
            "is pretrained)",
        )
    name = frozen[0]
    if not build["runs"][name].get("pretrained"):
        return name, label, NOT_TESTABLE, "the backbone is not pretrained here: frozen, it is random"
    noise, reason = _final_noise(build)
    if noise is None:
        return name, label, MISSING, reason
    if not build["real_photos"]:
        # 10 % is a level on Street View photos; what carries over to other images is the
        # report's comparison: frozen, the pretrained backbone fell far short of fine-tuning it
        # (10 % against the base model's 29 %). The run trains with the base model's settings.
        fine_tuned = _seed_runs(build, "baseline")
        if not fine_tuned:
            return name, label, MISSING, "needs the base model's runs (notebooks 05 and 06)"
        result, reason = _compare(build, [name], fine_tuned, "top1", borrowed=noise)
        if result is None:
            return name, label, MISSING, reason
        number = (
            f"validation top-1 of {name} {_pct(result['mean_a'])} against the fine-tuned base model "
            f"{_pct(result['mean_b'])} ({len(fine_tuned)} seeds): {_interval(result, _points)}; the report "
            f"{_pct(published('frozen_top1'), 0)} against {_pct(published('baseline_top1'), 0)}"
        )
        if result["high"] < 0:
            return number, label, REPRODUCED, "below fine-tuned beyond the noise, as in the report"
        return number, label, NOT_REPRODUCED, "the 95 % interval does not lie below zero"
    result, reason = _compare(build, [name], None, "top1", borrowed=noise, shift=published("frozen_top1"))
    if result is None:
        return name, label, MISSING, reason
    number = (
        f"validation top-1 of {name} {_pct(result['mean_a'])} against the report's "
        f"{_pct(published('frozen_top1'), 0)}: {_interval(result, _points)}"
    )
    if result["low"] <= 0 <= result["high"]:
        return number, label, REPRODUCED, "the report's 10 % lies inside the 95 % interval"
    return number, label, NOT_REPRODUCED, "the report's 10 % lies outside the 95 % interval"


def judge_final_accuracy(build: dict):
    """Claim 10: the final model's top-1 accuracy reaches the report's 37 % (validation split)."""
    label = _label(build, _split_words(build))
    runs = _seed_runs(build, "final")
    if not build["real_photos"]:
        return (
            "n/a",
            label,
            NOT_TESTABLE,
            "an absolute accuracy depends on the images; these are not photographs",
        )
    result, reason = _against_number(build, runs, "top1", published("final_top1"))
    if result is None:
        return "n/a", label, MISSING, reason
    number = (
        f"validation top-1 of the final runs {_pct(result['mean_a'])} ({len(runs)} seeds) against the "
        "report's "
        f"{_pct(published('final_top1'), 0)}: {_interval(result, _points)}"
    )
    if result["high"] >= 0:
        return number, label, REPRODUCED, "not below the report's 37 % beyond the noise"
    return number, label, NOT_REPRODUCED, "below the report's 37 % beyond the noise"


def judge_final_distance(build: dict):
    """Claim 11: the final model's centroid-to-centroid mean error is as low as the report's 62 km."""
    label = _label(build, _split_words(build))
    runs = _seed_runs(build, "final")
    if not build["real_photos"]:
        return (
            "n/a",
            label,
            NOT_TESTABLE,
            "an absolute distance depends on the images; these are not photographs",
        )
    result, reason = _against_number(build, runs, "centroid_mean_km", published("final_mean_km"))
    if result is None:
        return "n/a", label, MISSING, reason
    photo, _ = _compare(build, runs, None, "mean_km")
    to_photo = f"; to the photo's own location {_km(photo['mean_a'])}" if photo else ""
    number = (
        f"centroid-to-centroid mean error of the final runs {_km(result['mean_a'])} ({len(runs)} seeds) "
        f"against the report's {_km(published('final_mean_km'))}{to_photo}"
    )
    if result["low"] <= 0:
        return number, label, REPRODUCED, "not above the report's 62 km beyond the noise"
    return number, label, NOT_REPRODUCED, "above the report's 62 km beyond the noise"


def judge_against_random(build: dict):
    """Claim 12: far below a random cell: the report's 62 km against 150 km, 41 % of it."""
    label = _label(build)
    runs = _seed_runs(build, "final")
    if len(runs) < 2:
        return (
            "n/a",
            label,
            MISSING,
            f"needs two or more seeds of the final runs (notebook 06); found {len(runs)}",
        )
    ratio = published("final_mean_km") / published("random_mean_km")
    try:
        model_km = experiments.per_image_values(build["profile"], runs, "val", "centroid_km")
        random_km = experiments.per_image_values(build["profile"], runs, "val", "random_centroid_km").mean(
            axis=1
        )
    except (LookupError, ValueError) as error:
        return "n/a", label, MISSING, str(error)
    tests = {}
    for name, factor in (("below random", 1.0), ("at the report's ratio", ratio)):
        per_seed = model_km.mean() - factor * random_km.mean()
        tests[name] = statistics.difference_test(
            per_seed.to_numpy(), None, [(model_km.mean(axis=1) - factor * random_km).to_numpy()]
        )
    model_mean, random_mean = float(model_km.mean().mean()), float(random_km.mean())
    number = (
        f"centroid-to-centroid mean error of the final runs {_km(model_mean)} against {_km(random_mean)} "
        "for a "
        f"random cell, {model_mean / random_mean:.0%} of it (the report {ratio:.0%})"
    )
    below, ratio_test = tests["below random"], tests["at the report's ratio"]
    if below["high"] >= 0:
        return number, label, NOT_REPRODUCED, "not below the random cell beyond the noise"
    if ratio_test["low"] > 0:
        return (
            number,
            label,
            NOT_REPRODUCED,
            (f"below the random cell, but above {ratio:.0%} of it beyond the noise: not as far below"),
        )
    return number, label, REPRODUCED, f"below the random cell, at or under {ratio:.0%} of it within the noise"


def judge_neighbours(build: dict):
    """Claim 13: neighbouring cells are confused more often (notebook 08's facts)."""
    facts = build["facts"]
    label = _label(build, "test split")
    pairs, higher = facts.get("neighbour_pairs"), facts.get("neighbour_pairs_higher")
    if not _finite(pairs, higher):
        return "n/a", label, MISSING, "no neighbour_pairs in facts.json (notebook 08)"
    share, chance = facts.get("neighbour_error_share"), facts.get("neighbour_error_chance")
    number = (
        "confusion of a cell with each neighbour against its mean confusion with its non-neighbours: "
        f"higher in {_count(higher)} of {_count(pairs)} neighbouring pairs"
    )
    if _finite(share, chance):
        number += f"; {_pct(share)} of wrong answers go to a neighbour, chance {_pct(chance)}"
    if pairs == 0:
        return number, label, NOT_TESTABLE, "no neighbouring pairs with test images"
    from scipy.stats import binomtest

    p_value = binomtest(int(higher), int(pairs), 0.5).pvalue
    if higher / pairs > 0.5 and p_value < 1 - statistics.CONFIDENCE:
        return (
            number,
            label,
            REPRODUCED,
            f"more than half of the pairs, beyond chance (sign test p = {p_value:.2g})",
        )
    return (
        number,
        label,
        NOT_REPRODUCED,
        f"not more than half of the pairs beyond chance (sign test p = {p_value:.2g})",
    )


def judge_smaller_cells(build: dict):
    """Claim 14: smaller cells are recognised better (notebook 08's facts)."""
    facts = build["facts"]
    label = _label(build, "test split")
    rho, p = facts.get("area_accuracy_spearman"), facts.get("area_accuracy_p")
    if "area_accuracy_spearman" not in facts:
        return "n/a", label, MISSING, "no area_accuracy_spearman in facts.json (notebook 08)"
    rho, p = (math.nan if v is None else v for v in (rho, p))  # recorded, but undefined
    cells = facts.get("cells_tested")
    if not _finite(rho, p):
        return "ρ undefined", label, NOT_TESTABLE, "the accuracy is the same in every cell (nothing to rank)"
    number = f"cell area against per-cell test top-1: Spearman ρ = {rho:.2f}, p = {p:.2g}" + (
        f" over {_count(cells)} cells" if _finite(cells) else ""
    )
    if rho < 0 and p < 0.05:
        return number, label, REPRODUCED, "negative and significant: smaller cells are more accurate"
    if p < 0.05:
        return number, label, NOT_REPRODUCED, "significant the other way: larger cells are more accurate"
    return number, label, NOT_REPRODUCED, "no significant relation (p ≥ 0.05)"


def judge_sky(build: dict):
    """Claim 15: attention rests on the sky, against a model for which the sky says nothing (09)."""
    facts = build["facts"]
    label = _label(build, "test split")
    share, control = facts.get("sky_attention_share"), facts.get("sky_attention_leak_0")
    if build["profile"]["image_source"] != "synthetic":
        return "n/a", label, NOT_TESTABLE, "these images carry no sky mask to measure attention against"
    if not _finite(share, control):
        return (
            "n/a",
            label,
            MISSING,
            "needs sky_attention_share and sky_attention_leak_0 in facts.json (notebook 09)",
        )
    number = (
        f"share of attention on the sky: best run {_pct(share)} against {_pct(control)} for the control "
        "trained where the sky says nothing about the place (session_leak 0)"
    )
    if share > control:
        return number, label, REPRODUCED, "more attention on the sky than the control gives it"
    return number, label, NOT_REPRODUCED, "no more attention on the sky than the control gives it"


def judge_new_day(build: dict):
    """Claim 16: a model with a sky shortcut fails on a new capture day (notebook 09's facts)."""
    facts = build["facts"]
    label = f"{build['profile']['name']}: synthetic images, session_leak 0 and 1, test split"
    drop1, drop0 = facts.get("new_day_drop_leak_1"), facts.get("new_day_drop_leak_0")
    if build["profile"]["image_source"] != "synthetic":
        return (
            "n/a",
            _label(build),
            NOT_TESTABLE,
            "only synthetic scenes can be re-captured on another day here",
        )
    if not _finite(drop1, drop0):
        return "n/a", label, MISSING, "no new_day_drop_leak_1 in facts.json (notebook 09)"
    noise, reason = _final_noise(build)
    if noise is None:
        return "n/a", label, MISSING, reason
    result = statistics.difference_test([drop1], [drop0], borrowed=noise)
    number = (
        f"top-1 lost on a new day: {_points(drop1)} with the sky shortcut (session_leak 1) against "
        f"{_points(drop0)} without (session_leak 0): {_interval(result, _points)}"
    )
    if result["low"] > 0 and drop1 > 0:
        return number, label, REPRODUCED, "the shortcut loses more on a new day, beyond the seed noise"
    return number, label, NOT_REPRODUCED, "no larger drop beyond the seed noise"


def _report_claim(key: str, text: str) -> str:
    return f"{text} (§{PUBLISHED[key][1].split()[0]})"


def _noise_rule(compared: str) -> str:
    return (
        f"{compared}: reproduced when the 95 % interval of the difference of their mean validation top-1 "
        "over seeds (paired on the same images, Student-t, helpers.statistics) lies on the report's side "
        "of zero"
    )


_BORROWED = (
    "one run each; each run's seed noise is that of one final run of notebook 06, and the images are "
    "paired (helpers.statistics)"
)

# One row per claim of the original report: its words (quoted exactly, with the section), its own
# number, the two quantities the rule compares, the rule, and the function that applies the rule.
CLAIMS = [
    {
        "claim": "“it is overfitting” (§3.2)",
        "report": "no number; Figures 3-4 (§3.2)",
        "compares": "base model: training top-1 (clean pass) against validation top-1, over seeds",
        "rule": "Reproduced when the 95 % interval of the train-minus-validation gap (seed noise plus the "
        "sampling noise of both image sets, Student-t) lies above zero",
        "judge": judge_overfitting,
    },
    {
        "claim": "“Data augmentation improved our accuracy from 29% to 35%.” (§3.2)",
        "report": _report_claim(
            "augment_top1", f"{_pct(published('baseline_top1'), 0)} → {_pct(published('augment_top1'), 0)}"
        ),
        "compares": "validation top-1: augment against baseline, means over seeds",
        "rule": _noise_rule("augment against baseline"),
        "judge": judge_augmentation,
    },
    {
        "claim": "“This only helped 2 percentage points.” (§3.2, Adam's betas; here with warm-up)",
        "report": _report_claim("schedule_gain", _points(published("schedule_gain"), 0)),
        "compares": "validation top-1: final (augmentation, warm-up, betas) against augment, means over "
        "seeds",
        "rule": _noise_rule("final against augment"),
        "judge": judge_schedule,
    },
    {
        "claim": "“We improved our accuracy by 8 percentage points compared to the base model.” (§4)",
        "report": _report_claim("final_gain", _points(published("final_gain"), 0)),
        "compares": "validation top-1: final against baseline, means over seeds",
        "rule": _noise_rule("final against baseline"),
        "judge": judge_total_gain,
    },
    {
        "claim": "Loss (1): “Sadly this did not result in a better accuracy” (§3.3)",
        "report": "no number (§3.3)",
        "compares": "validation top-1: loss_expected_distance_squared against cross-entropy (final_seed0)",
        "rule": f"Reproduced when the 95 % interval of the difference ({_BORROWED}) lies below "
        f"{_points(NO_GAIN_POINTS, 0)}, the smallest gain the report counts as help (§3.2); a difference "
        "inside the noise that could still be that large is not reproduced",
        "judge": judge_loss1_accuracy,
    },
    {
        "claim": "Loss (1): “it did improve the average distance between predicted and true geocells” (§3.3)",
        "report": "no number (§3.3)",
        "compares": "validation centroid-to-centroid mean error: loss_expected_distance_squared against "
        "cross-entropy (final_seed0)",
        "rule": f"Reproduced when the 95 % interval of the difference ({_BORROWED}) lies below zero",
        "judge": judge_loss1_distance,
    },
    {
        "claim": "Loss (2), (1) + cross-entropy: “This led to better results” (§3.3)",
        "report": "no number (§3.3)",
        "compares": "validation top-1: loss_distance_plus_cross_entropy against loss (1) alone, the run it "
        "was built to improve (“To keep a good accuracy”)",
        "rule": f"Reproduced when the 95 % interval of the difference ({_BORROWED}) lies above zero",
        "judge": judge_loss2,
    },
    {
        "claim": "Loss (3): “Truthfully, this did not help much either.” (§3.3)",
        "report": "no number (§3.3)",
        "compares": "validation top-1: loss_log_distance against cross-entropy (final_seed0)",
        "rule": f"As claim 5: reproduced when the 95 % interval of the difference ({_BORROWED}) lies below "
        f"{_points(NO_GAIN_POINTS, 0)}",
        "judge": judge_loss3,
    },
    {
        "claim": "Frozen ViT: “it achieved 10% accuracy even after tuning hyperparameters” (§3.2)",
        "report": _report_claim("frozen_top1", _pct(published("frozen_top1"), 0)),
        "compares": "validation top-1 of a run with a frozen pretrained backbone: on photos against the "
        "report's 10 %; on other images against the fine-tuned base model (the report: 10 % against 29 %)",
        "rule": "Not testable without a run whose summary.json says freeze_backbone, or when the backbone is "
        "not pretrained (frozen, it is random). On photos reproduced when 10 % lies inside the 95 % "
        "interval of that run's top-1; on other images when the 95 % interval of its difference from the "
        "base model's seeds lies below zero (the final runs' seed noise for the one run, and the images')",
        "judge": judge_frozen,
    },
    {
        "claim": "“the final accuracy was 37%” (§4)",
        "report": _report_claim("final_top1", f"{_pct(published('final_top1'), 0)} top-1 (validation)"),
        "compares": "validation top-1 of the final runs, mean over seeds, against the report's 37 %",
        "rule": "Not testable on synthetic images; on photos, reproduced when the final runs' validation "
        "top-1 "
        "is not below 37 % beyond the noise (the upper end of its 95 % interval reaches 37 %). The "
        "photo profiles split whole 1 km squares, the report split at random: the data column says so",
        "judge": judge_final_accuracy,
    },
    {
        "claim": "“our model (best: 62km)” (§4)",
        "report": _report_claim("final_mean_km", f"{_km(published('final_mean_km'))}, centroid to centroid"),
        "compares": "validation mean distance from the predicted cell's centroid to the true cell's centroid "
        "(0 when right; the authors' best_distance), final runs, against the report's 62 km",
        "rule": "Not testable on synthetic images; on photos, reproduced when that distance is not above "
        "62 km beyond the noise (the lower end of its 95 % interval is at most 62 km); the distance to the "
        "photo's own location is shown beside it",
        "judge": judge_final_distance,
    },
    {
        "claim": "“our starting mean km error was 150 km when randomly choosing predicted cells” (§4)",
        "report": _report_claim(
            "random_mean_km", f"{_km(published('final_mean_km'))} against {_km(published('random_mean_km'))}"
        ),
        "compares": "validation centroid-to-centroid mean error of the final runs against a random cell's, "
        "on "
        "the same images and the same basis",
        "rule": "Reproduced when the final runs' error is below the random cell's beyond the noise and not "
        f"above {published('final_mean_km') / published('random_mean_km'):.0%} of it (the report's ratio) "
        "beyond the noise (95 % intervals, paired on the images)",
        "judge": judge_against_random,
    },
    {
        "claim": "“Classes that were neighbouring each other often had higher confusion” (§4)",
        "report": "no number; Figure 8 (§4)",
        "compares": "for each pair of neighbouring cells: test images of one put into the other, against "
        "the true cell's mean confusion with its non-neighbours",
        "rule": "Reproduced when more than half of the neighbouring pairs (“often”) are confused more than "
        "the true cell's non-neighbours, beyond chance (two-sided sign test, p < 0.05)",
        "judge": judge_neighbours,
    },
    {
        "claim": "“the smaller the class, the better the accuracy” (§4)",
        "report": "no number; Figure 8 (§4)",
        "compares": "cell area against per-cell test top-1 (rank correlation)",
        "rule": "Reproduced when Spearman's correlation of cell area and per-cell test accuracy is negative "
        "with p < 0.05; not testable when every cell is equally accurate",
        "judge": judge_smaller_cells,
    },
    {
        "claim": "“it specifically focuses on the sky, the shape of the clouds” (§4)",
        "report": "no number; Figure 9 (§4)",
        "compares": "share of attention rollout on sky pixels: the best run against the control model of "
        "notebook 09 trained where the sky says nothing about the place (session_leak 0)",
        "rule": "Reproduced when the best run puts a larger share of its attention on the sky than the "
        "control does; not testable on images without sky masks (photographs, the stand-in's downloads)",
        "judge": judge_sky,
    },
    {
        "claim": "“it will not be able to generalize to new StreetView imagery if Google decides to update "
        "its photos” (§4)",
        "report": "no number; a conjecture (§4, §5.1)",
        "compares": "top-1 lost on a new capture day: a model trained with the sky shortcut (session_leak 1) "
        "against one without (session_leak 0)",
        "rule": "Reproduced when the shortcut model loses more, beyond the seed noise of two single runs "
        "(the "
        "final runs' seed variance, Student-t); not testable without re-captured images",
        "judge": judge_new_day,
    },
]


def scorecard(profile: str | dict) -> pd.DataFrame:
    """One row per claim of the original report, judged on this build.

    Columns: claim (the report's words), report (its number and section), compares (the two
    quantities the rule compares), this build (both of them, measured here), data (profile,
    image set and split), verdict (one of :data:`VERDICTS`), why (what decided it), rule
    (the written rule). ``profile`` is a profile name or dict, or a :func:`load_build`
    dictionary.
    """
    build = profile if isinstance(profile, dict) and "results" in profile else load_build(profile)
    rows = []
    for number, claim in enumerate(CLAIMS, start=1):
        measured, data, verdict, why = claim["judge"](build)
        rows.append(
            {
                "claim": f"{number}. {claim['claim']}",
                "report": claim["report"],
                "compares": claim["compares"],
                "this build": measured,
                "data": data,
                "verdict": verdict,
                "why": why,
                "rule": claim["rule"],
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The document: a list of blocks, rendered by write_html and write_pdf
#   ("heading", level, text)  ("paragraph", text)  ("bullets", [text, ...])
#   ("table", DataFrame of strings, caption)  ("figure", path, label, caption)
#   ("links", [(text, relative path), ...])  ("equations", [{"typst": maths, "text", "explanation"}, ...])
# A table's or figure's caption starts with its label ("Table 2.", "Figure B1"): the renderings
# number them with it.

# The original's figures, with the file of this build that stands for each, what to read in it,
# and how it differs from the original ({model}, {data}, {epochs} are this build's).
FIGURES = [
    (
        "1",
        "fig01_locations_per_municipality.png",
        "Locations per municipality. Read: a few municipalities hold many times the mean number of "
        "locations; those are the ones split into several geocells.",
        "Unlike the original, which drew the locations on a map, this is a bar chart of the same sample.",
    ),
    (
        "2",
        "fig02_geocells_voronoi.png",
        "The geocells, each the merged Voronoi regions of its locations. Read: small cells in the "
        "cities, large ones in the countryside.",
        "Unlike the original's, these cells are recomputed by the workbook's K-means from the report's "
        "locations; outlines differ where K-means settled differently (notebook 02, fig02c).",
    ),
    (
        "3-4",
        "fig05b_baseline_curves.png",
        "The base model per epoch: accuracy (left) and loss (right), training dashed, validation solid. "
        "Read: the space between the accuracy curves is the overfitting of claim 1.",
        "Unlike the original (ViT-B/16 fine-tuned for {report_epochs} epochs on Street View photos): "
        "{model}, {epochs} on {data}.",
    ),
    (
        "5-6",
        "fig10_last_model_curves.png",
        "The final configuration ({run}) per epoch: accuracy and loss, training dashed, validation solid. "
        "Read: compare the gap with Figures 3-4; augmentation should narrow it.",
        "Drawn by this report from {run}'s history.csv. Unlike the original (its last model, "
        "{report_epochs} epochs on Street View photos): {model}, {epochs} on {data}.",
    ),
    (
        "7",
        "fig07a_distance_curves.png",
        "Distance between the predicted and the true cell's centroids per epoch, for each loss. Read: "
        "lower is better; the distance losses against cross-entropy.",
        "Unlike the original, which showed its last model only: every loss of notebook 07, on {data}.",
    ),
    (
        "8",
        "fig08_confusion.png",
        "Confusion matrix of the test split, cells ordered by region, logarithmic colours. Read: blocks "
        "along the diagonal are confusions between nearby cells (claim 10).",
        "Unlike the original (unordered, linear colours): ordered by region, on the test split of {data}.",
    ),
    (
        "9",
        "fig09_attention_heads.png",
        "The class token's attention in each head of the last layer, over one test image (the most "
        "confident right answer, if any). Read: bright patches are where the model looks; sky or street?",
        "Unlike the original (a Street View photo under ViT-B/16): {model} on {data}.",
    ),
]

# Figures of this build that the original does not have, numbered B1, B2, ... in this order.
EXTRA_FIGURES = [
    ("fig02a_splitting_steps.png", "The K-means splitting of the large municipalities, step by step (02)."),
    ("fig02c_differences_from_report.png", "Where this build's cells differ from the report's (02)."),
    ("fig03c_places_and_sessions.png", "Places and capture sessions of the images (03)."),
    ("fig03d_training_sample.png", "A sample of training images (03)."),
    ("fig04_distance_matrix.png", "Distances between cell centroids, ordered by region (04)."),
    ("fig04b_baseline_errors.png", "Errors of the baselines that need no model (04)."),
    ("fig06a_randaugment.png", "RandAugment as the authors ran it: each row one image, augmented anew (06)."),
    (
        "fig06c_runs_compared.png",
        "Validation top-1 and train-minus-validation gap of each configuration over seeds: seeds grey, "
        "mean ± sd blue (06). The noise behind claims 1-4.",
    ),
    ("fig07b_accuracy_vs_distance.png", "Accuracy against mean distance for each loss (07). Claim 5."),
    ("fig08b_accuracy_vs_area.png", "Per-cell test accuracy against cell area (08). Claim 11."),
    (
        "fig08c_choose_k.png",
        "Continuous prediction: the error of the weighted top-k centroids against k (08).",
    ),
    ("fig09b_rollout.png", "Attention rollout on right and wrong answers (09)."),
    (
        "fig09c_new_capture_day.png",
        "Same day against a new capture day, with and without a sky shortcut (09). Claim 13.",
    ),
]


def _model_text(settings: dict) -> str:
    shape = (
        f"{_plural(settings['vit_layers'], 'layer')} of width {settings['vit_width']} with "
        f"{settings['vit_heads']} heads, {settings['patch_size']} px patches of {settings['image_size']} px "
        "images"
    )
    if settings.get("pretrained"):
        return f"a ViT loaded from {settings['pretrained']} ({shape}) and fine-tuned"
    return f"a small ViT trained from scratch ({shape})"


def _short_model(settings: dict) -> str:
    kind = "pretrained" if settings.get("pretrained") else "from scratch"
    return f"a {settings['vit_layers']}-layer ViT ({kind}, {settings['image_size']} px)"


def _shown(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``table`` as text: fractions as percent, km rounded, blanks for missing."""

    def text(column, value):
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return ""
        if column in {"top1", "top3", "train_top1"} or column.startswith("within_"):
            return _pct(float(value))
        if column.endswith("_km"):
            return f"{float(value):,.1f}"
        if column == "seed":
            return str(int(float(value)))
        return str(value)

    present = [c for c in columns if c in table]
    return pd.DataFrame({c: [text(c, v) for v in table[c]] for c in present})


def _history_figure(build: dict) -> tuple[Path | None, str | None]:
    """Figures 5-6 of the original (the last model's curves), drawn from a run's history.csv."""
    import matplotlib.pyplot as plt

    from helpers import plots

    candidates = ["final_seed0"]
    best = best_test_row(build["results"])
    if best is not None:
        candidates.append(_best_name(best))
    for run in candidates:
        history_path = build["root"] / "runs" / run / "history.csv"
        if history_path.exists():
            history = pd.read_csv(history_path)
            if not {"epoch", "accuracy", "val_accuracy", "loss", "val_loss"} <= set(history):
                continue
            fig, axes = plt.subplots(1, 2, figsize=(13, 4))
            plots.history_curves(
                {run: history}, "accuracy", "top-1 accuracy", "Figure 5 · Accuracy", ax=axes[0]
            )
            plots.history_curves({run: history}, "loss", "loss", "Figure 6 · Loss", ax=axes[1])
            path = config.output_dir(build["profile"], "figures") / "fig10_last_model_curves.png"
            plots.save_figure(fig, path)
            plt.close(fig)
            return path, run
    return None, None


def _h(level: int, text: str) -> tuple:
    return ("heading", level, text)


def _p(text: str) -> tuple:
    return ("paragraph", text)


def _t(table: pd.DataFrame, caption: str) -> tuple:
    return ("table", table, caption)


def document(profile: str | dict) -> list[tuple]:
    """The report of ``build/<profile>/`` as a list of blocks (see the comment above :data:`FIGURES`)."""
    build = profile if isinstance(profile, dict) and "results" in profile else load_build(profile)
    card = scorecard(build)
    return [
        *_abstract(build, card),
        *_data_section(build),
        *_method_section(build),
        *_results_section(build, card),
        _h(1, "4 Discussion"),
        *(_p(text) for text in _discussion(card, build)),
        *_beyond_section(build),
        *_appendix(build),
    ]


def _abstract(build: dict, card: pd.DataFrame) -> list[tuple]:
    settings, results = build["profile"], build["results"]
    best, random = best_test_row(results), _row(results, "random cell", "all")
    blocks = [
        _h(1, "Abstract"),
        _p(
            f"The original report (Csizmadia and Głowaczewski, Aarhus University, 2023) fine-tuned a "
            f"pretrained Vision Transformer to tell which of {published('n_cells')} Danish geocells a Street "
            f"View photo was taken in, and reported {_pct(published('final_top1'), 0)} top-1 accuracy and "
            f"a mean error of {_km(published('final_mean_km'))} between the predicted and the true cell's "
            f"centroids. This document repeats its pipeline in the "
            f"workbook's {settings['name']} profile ({settings['description']}): "
            f"{_sizes_sentence(build['sizes'], build['data'])} The model is {_model_text(settings)}."
        ),
    ]
    if best is None:
        blocks.append(
            _p("The best run's test accuracy is not in this build's tables (notebook 08 has not run).")
        )
    else:
        against = f" against {_km(random['mean_km'])} for a random cell" if random is not None else ""
        centroid = best.get("centroid_mean_km")
        between = (
            f"{_km(centroid)} between the predicted and the true cell's centroids (the report's measure) and "
            if _finite(centroid)
            else ""
        )
        blocks.append(
            _p(
                f"The best run ({_best_name(best)}) placed {_pct(best['top1'])} of the test images in the "
                f"right cell, with a mean error of {between}{_km(best['mean_km'])} to where the photos were "
                f"taken{against}."
            )
        )
    counts = card["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    return [*blocks, _p(f"Of the report's {len(card)} claims scored in Table 1: {tally}.")]


def _data_section(build: dict) -> list[tuple]:
    sizes, settings = build["sizes"], build["profile"]
    locations = sizes.get("locations")
    if locations:
        found = (
            f"reads {_count(locations)} locations in {_count(sizes.get('municipalities', 0))} municipalities "
            "(geocells/locations.csv)."
        )
    else:
        found = "has no geocells/locations.csv: the number of locations is missing (run notebooks 01-02)."
    blocks = [
        _h(1, "1 Data"),
        _h(2, "1.1 Locations"),
        _p(
            f"The report sampled {_count(published('addresses_sampled'))} addresses from OpenAddresses, "
            f"{published('per_cell')} per geocell, in proportion to where people live (its §3.1). This build "
            f"{found} Figure 1 counts them per municipality."
        ),
        _h(2, "1.2 Geocells"),
    ]
    if sizes.get("cells"):
        points, area = sizes.get("n_points", {}), sizes.get("area_km2", {})
        text = (
            f"Large municipalities are split by K-means until there are {sizes['cells']} cells (the report: "
            f"{published('n_cells')})."
        )
        if points:
            text += (
                f" A cell holds between {points['min']:,.0f} and {points['max']:,.0f} locations (median "
                f"{points['50%']:,.0f})"
            )
        if area:
            text += (
                f"{',' if points else ' A cell'} covers between {area['min']:,.1f} and "
                f"{area['max']:,.0f} km² (median {area['50%']:,.0f} km²)"
            )
        blocks.append(_p(text + " (geocells/geocells.geojson). Figure 2 shows them."))
    else:
        blocks.append(
            _p("The number of geocells is missing: no geocells/geocells.geojson (run notebook 02).")
        )
    blocks += [
        _h(2, "1.3 Images"),
        _p(
            f"The report downloaded Street View images and cropped them to {published('image_px')} px. "
            + _images_sentence(sizes, build["data"], settings)
        ),
    ]
    if not build["real_photos"]:
        blocks.append(
            _p(
                "The images are synthetic scenes drawn by the workbook from each location's geography "
                "(notebook 03): buildings, vegetation and colours vary with the place, the sky with the "
                "capture session. They hold cues to learn, as photos do, but they are not photographs, so "
                "absolute accuracies cannot be compared with the report's."
            )
        )
    return blocks


def _method_section(build: dict) -> list[tuple]:
    return [
        _h(1, "2 Method"),
        _h(2, "2.1 Model"),
        _p(
            "The report fine-tuned google/vit-base-patch16-224 with a softmax classifier over the geocells. "
            f"This build uses {_model_text(build['profile'])}, with one softmax output per geocell."
        ),
        _h(2, "2.2 Training"),
        _p(_training_sentence(build)),
        _h(2, "2.3 Experiments"),
        _p("Each group of runs changes one thing against the base model; Table 0 lists this build's runs."),
        _t(_experiments_table(build), "Table 0. The runs of this build, by notebook."),
        _h(2, "2.4 How the claims are scored"),
        _p(
            "An effect between two training configurations counts as reproduced when the 95 % Student-t "
            "interval of the difference of their mean validation top-1 over seeds lies on the report's side "
            "of zero. The interval is paired on the same validation images: its standard error adds each "
            "setting's seed variance over its seeds and the variance of the per-image differences, with "
            "Welch-Satterthwaite degrees of freedom (helpers/statistics.py, notebook 06). A setting trained "
            "once borrows the seed noise of one run from the final runs. A difference inside that noise, or "
            "beyond it with the opposite sign, counts as not reproduced; a claim that something did not help "
            "needs an interval that rules out the smallest gain the report calls help. Claims about one "
            "number use the rules listed with Table 1. A claim is not testable when these data "
            "cannot test it, and missing when the build lacks the rows it needs."
        ),
        *_losses_section(build),
    ]


# The report's losses of its §3.3 as Typst maths, in its order (its equations 1-3), then the loss of
# the authors' notebook and PIGEON's (notebook 07 trains each; helpers/losses.py implements them).
LOSS_EQUATIONS = [
    {
        "typst": 'cal(L)_"dist" = (sum_(i=1)^n p_i thin d(i, t))^2',
        "text": "L_dist = (sum_i p_i d(i, t))^2",
        "explanation": "The report's equation (1): the expected distance to the true cell, squared "
        "(expected_distance_squared).",
    },
    {
        "typst": 'cal(L) = cal(L)_"dist" + lambda thin cal(L)_"CE", quad cal(L)_"CE" = -log p_t',
        "text": "L = L_dist + lambda L_CE, L_CE = -log p_t",
        "explanation": "The report's equation (2): equation (1) plus cross-entropy, weighted by lambda "
        "(distance_plus_cross_entropy).",
    },
    {
        "typst": 'cal(L)_"dist" = sum_(i=1)^n -log(1 - p_i) thin d(i, t)',
        "text": "L_dist = sum_i -log(1 - p_i) d(i, t)",
        "explanation": "The report's equation (3): confident probability on a far cell costs most, the true "
        "cell nothing (log_distance; with cross-entropy added, log_distance_plus_cross_entropy).",
    },
    {
        "typst": 'cal(L) = (sum_(i=1)^n p_i thin d(i, t) + 1)^2 + lambda thin cal(L)_"CE"',
        "text": "L = (sum_i p_i d(i, t) + 1)^2 + lambda L_CE",
        "explanation": "The loss of the authors' notebook (authors_code): unlike equation (1), the expected "
        "distance also enters linearly, so its gradient does not vanish as the distance gets small.",
    },
    {
        "typst": "cal(L) = -sum_(i=1)^n q_i log p_i, quad q_i = exp(-(D(g_i, x) - min_j D(g_j, x)) / tau)",
        "text": "L = -sum_i q_i log p_i, q_i = exp(-(D(g_i, x) - min_j D(g_j, x)) / tau)",
        "explanation": "Beyond the report: PIGEON's haversine smoothing (haversine_smoothing), with x the "
        "image's own location, g_i the centroid of cell i and D the haversine distance in km.",
    },
]


def _losses_section(build: dict) -> list[tuple]:
    """§2.5: the distance-aware losses of the report's §3.3 as equations, with this build's settings."""
    runs = build["runs"]
    trained = sorted(name for name in runs if name.startswith("loss_"))
    weights = sorted({runs[name].get("ce_weight") for name in trained} - {None})
    tau = next((runs[name]["tau_km"] for name in trained if runs[name].get("tau_km")), None)
    settings = []
    if weights:
        settings.append("lambda = " + ", ".join(f"{w:g}" for w in weights))
    if tau:
        settings.append(f"tau = {tau:g} km")
    here = (
        f"This build trained {_plural(len(trained), 'run')} with them ({', '.join(trained)}; "
        + ("; ".join(settings) or "settings not recorded")
        + "), listed in Table 4."
        if trained
        else "This build has no runs with them (notebook 07 has not run)."
    )
    return [
        _h(2, "2.5 The distance-aware losses"),
        _p(
            "The report's §3.3 puts the distance between cells into the loss. Below, p_i is the model's "
            "probability of cell i among the n cells, t the true cell, and d(i, t) the distance between the "
            "centroids of cells i and t, divided by the largest such distance (the authors' notebook does so "
            "before training; the report's equations leave the scale open). Cross-entropy is weighted by "
            f"lambda, 1 in the report. {here}"
        ),
        ("equations", LOSS_EQUATIONS),
    ]


def _results_section(build: dict, card: pd.DataFrame) -> list[tuple]:
    results, settings = build["results"], build["profile"]
    blocks = [
        _h(1, "3 Results"),
        _h(2, "3.1 The scorecard"),
        _t(
            card[["claim", "report", "compares", "this build", "data", "verdict", "why"]],
            "Table 1. Each claim of the original report: its number there, the two quantities its rule "
            "compares, this build's numbers, the verdict.",
        ),
        _p("The rules, claim by claim:"),
        ("bullets", [f"{row.claim.split('.')[0]}. {row.rule}" for row in card.itertuples()]),
        _h(2, "3.2 Test accuracy and distance"),
    ]
    tested = results[results["split"].isin(["all", "test", "test_new_day"])]
    if tested.empty:
        blocks.append(_p("No baselines or test rows in this build's results table (notebooks 04 and 08)."))
    else:
        columns = ["experiment", "data", "split", "top1", "top3", "mean_km", "median_km", "within_25km"]
        blocks += [
            _p("The baselines need no model (notebook 04); the best run is scored once on the test split."),
            _t(_shown(tested, [*columns, "within_200km"]), "Table 2. Baselines and test results."),
        ]
    blocks.append(_h(2, "3.3 Training runs"))
    seeds = seed_scores(results, build["data"])
    if seeds.empty:
        blocks.append(_p("No seed runs of notebook 06 in this build."))
    else:
        caption = "Table 3. Notebook 06's configurations over seeds, validation split: mean ± sd."
        blocks.append(_t(_seed_table(seeds), caption))
    others = results[(results["split"] == "val") & results["experiment"].str.match(r"^(loss_|leak_)")]
    if not others.empty:
        columns = ["experiment", "data", "top1", "top3", "mean_km", "median_km", "train_top1"]
        caption = (
            "Table 4. Distance losses (notebook 07) and sky-shortcut runs (notebook 09), validation split."
        )
        blocks.append(_t(_shown(others, columns), caption))
    blocks.append(_h(2, "3.4 Figures 1-9 of the original, regenerated"))
    history_path, history_run = _history_figure(build)
    figures = build["root"] / "figures"
    words = {
        "model": _short_model(settings),
        "data": build["data"],
        "epochs": _plural(settings["epochs"], "epoch"),
        "run": history_run,
        "report_epochs": published("epochs"),
    }
    missing = []
    for number, file, caption, difference in FIGURES:
        path = history_path if number == "5-6" else figures / file
        label = f"Figure{'s' if '-' in number else ''} {number}"
        if path is None or not path.exists():
            missing.append(f"{label} ({file})")
            continue
        text = f"{caption.format(**words)} {difference.format(**words)}"
        blocks.append(("figure", path, label, text))
    if missing:
        blocks.append(
            _p("Not in this build (the notebook that draws it has not run): " + "; ".join(missing) + ".")
        )
    maps = sorted((build["root"] / "maps").glob("*.html"))
    if maps:
        blocks += [
            _h(2, "3.5 Interactive maps"),
            _p("Maps to open in a browser; they sit next to this file, in maps/:"),
            ("links", [(path.stem.replace("_", " "), f"maps/{path.name}") for path in maps]),
        ]
    return blocks


def _beyond_section(build: dict) -> list[tuple]:
    results, figures = build["results"], build["root"] / "figures"
    blocks = [_h(1, "5 Beyond the report"), _h(2, "5.1 Further figures of this build")]
    extra = [(file, caption) for file, caption in EXTRA_FIGURES if (figures / file).exists()]
    for letter, (file, caption) in enumerate(extra, start=1):
        blocks.append(("figure", figures / file, f"Figure B{letter}", caption))
    if not extra:
        blocks.append(_p("None in this build."))
    blocks.append(_h(2, "5.2 Future work (notebooks 11 and 12)"))
    future = results[results["experiment"].str.match(r"^(beyond|future): ")]
    future_figures = sorted(figures.glob("fig11*.png")) + sorted(figures.glob("fig12*.png"))
    if future.empty and not future_figures:
        blocks.append(_p("No results of notebooks 11 or 12 in this build."))
    if not future.empty:
        columns = ["experiment", "data", "split", "top1", "top3", "mean_km", "median_km", "notes"]
        caption = "Table 5. The report's future-work ideas, tried: the rows named beyond: and future:."
        blocks.append(_t(_shown(future, columns), caption))
    for number, path in enumerate(future_figures, start=1):
        topic = path.stem.split("_", 1)[-1].replace("_", " ")
        blocks.append(("figure", path, f"Figure C{number}", f"Notebook {path.stem[3:5]}: {topic}."))
    return blocks


def _appendix(build: dict) -> list[tuple]:
    results, facts = build["results"], build["facts"]
    blocks = [_h(1, "Appendix: the results table")]
    if results.empty:
        return [*blocks, _p("The results table of this build is empty.")]
    accuracy = ["experiment", "data", "split", "seed", "top1", "top3", "train_top1", "notes"]
    distance = [
        "experiment",
        "split",
        "mean_km",
        "median_km",
        *[f"within_{t}km" for t in metrics.THRESHOLDS_KM],
    ]
    blocks += [
        _t(_shown(results, accuracy), "Table A1. Every row of tables/results.csv: accuracies."),
        _t(_shown(results, distance), "Table A2. The same rows: distances (km) and the shares within them."),
    ]
    if facts:
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in facts.values()]
        blocks.append(
            _t(pd.DataFrame({"fact": list(facts), "value": values}), "Table A3. tables/facts.json.")
        )
    return blocks


def _sizes_sentence(sizes: dict, data: str) -> str:
    parts = []
    if sizes.get("cells"):
        parts.append(f"{sizes['cells']} geocells")
    if sizes.get("locations"):
        parts.append(f"from {_count(sizes['locations'])} locations")
    if sizes.get("images"):
        parts.append(f"and {_count(sizes['images'])} {data}")
    if not parts:
        return "the sizes of its data are missing (notebooks 01-03 have not run)."
    return " ".join(parts) + "."


def _images_sentence(sizes: dict, data: str, settings: dict) -> str:
    if not sizes.get("images"):
        return "This build's image table is missing (images/dataset.csv; run notebook 03)."
    splits = sizes.get("splits", {})
    per_cell = sizes.get("images_per_cell", {})
    text = (
        f"This build uses {_count(sizes['images'])} {data} of {settings['image_size']} px"
        + (f", {per_cell['50%']:,.0f} per cell (median)" if per_cell else "")
        + ": "
        + ", ".join(f"{_count(splits.get(s, 0))} {s}" for s in ("train", "val", "test"))
        + " (images/dataset.csv)."
    )
    if sizes.get("new_day_images"):
        text += (
            f" The {_count(sizes['new_day_images'])} test places were also rendered on a second capture day "
            "(images/dataset_new_day.csv)."
        )
    return text


def _training_sentence(build: dict) -> str:
    settings, runs = build["profile"], build["runs"]
    base, final = runs.get("baseline"), runs.get("final_seed0")
    epochs = (base or final or {}).get("epochs", settings["epochs"])
    text = (
        f"The report trained for {published('epochs')} epochs, batch {published('batch_size')}, learning "
        f"rate {published('learning_rate'):g} and weight decay {published('weight_decay'):g}. This build: "
        f"{_plural(epochs, 'epoch')}, batch {settings['batch_size']}, peak learning rate "
        f"{settings['learning_rate']:g}, weight decay {settings['weight_decay']:g}, AdamW with linear decay. "
    )
    if base:
        text += (
            f"The base model (notebook 05) has no augmentation and no warm-up, betas "
            f"{'/'.join(f'{b:g}' for b in base['betas'])}. "
        )
    else:
        text += "The base model's settings are missing (runs/baseline/summary.json; notebook 05). "
    if final:
        text += (
            f"The final configuration adds RandAugment ({settings['randaugment_ops']} operations at "
            f"magnitude {settings['randaugment_factor']:g}; the report {published('randaugment_ops')} at "
            f"{published('randaugment_magnitude'):g}), warm-up and betas "
            f"{'/'.join(f'{b:g}' for b in final['betas'])}. "
        )
    else:
        text += (
            "The final configuration's settings are missing (runs/final_seed0/summary.json; notebook 06). "
        )
    return text + (
        "Every run keeps the epoch with the best validation top-1 accuracy, and its training accuracy is "
        "measured on a clean pass over the training images."
    )


def _experiments_table(build: dict) -> pd.DataFrame:
    results = build["results"]
    val = results[results["split"] == "val"]
    groups = [
        ("04", "baselines without a model", results[results["split"] == "all"]),
        ("05", "the base model", val[val["experiment"] == "baseline"]),
        (
            "06",
            "baseline, augment, betas, warmup, final over seeds",
            val[val["experiment"].str.contains(r"_seed\d+$")],
        ),
        ("07", "distance-aware losses", val[val["experiment"].str.startswith("loss_")]),
        ("08", "the best run on the test split", results[results["experiment"].str.startswith("best run")]),
        ("09", "sky-shortcut runs (session_leak)", val[val["experiment"].str.startswith("leak_")]),
        (
            "11-12",
            "beyond the report, future work",
            results[results["experiment"].str.match(r"^(beyond|future): ")],
        ),
    ]
    return pd.DataFrame(
        [
            {
                "notebook": notebook,
                "what": what,
                "rows": str(len(rows)),
                "experiments": ", ".join(rows["experiment"].astype(str)) or "none in this build",
            }
            for notebook, what, rows in groups
        ]
    )


def _seed_table(seeds: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for run in [r for r in SEED_CONFIGURATIONS if r in set(seeds["run"])]:
        part = seeds[seeds["run"] == run]

        def spread(column, part=part):
            sd = part[column].std() if len(part) > 1 else math.nan
            return _pct(part[column].mean()) + (f" ± {100 * sd:.1f}" if np.isfinite(sd) else "")

        rows.append(
            {
                "configuration": run,
                "seeds": ", ".join(str(s) for s in sorted(part["seed"])),
                "validation top-1": spread("top1"),
                "train top-1": spread("train_top1"),
                "gap": spread("gap"),
                "mean km": f"{part['mean_km'].mean():,.1f}",
            }
        )
    return pd.DataFrame(rows)


def _discussion(card: pd.DataFrame, build: dict) -> list[str]:
    settings = build["profile"]
    paragraphs = []
    for verdict, opening in (
        (REPRODUCED, "Reproduced on this build"),
        (NOT_REPRODUCED, "Not reproduced"),
        (NOT_TESTABLE, "Not testable on these data"),
        (MISSING, "Missing from this build"),
    ):
        claims = card.loc[card["verdict"] == verdict, "claim"]
        if len(claims):
            paragraphs.append(f"{opening}: " + "; ".join(claims) + ".")
    if build["real_photos"]:
        paragraphs.append(
            f"These verdicts were measured on {build['data']} with {_short_model(settings)}, so they bear on "
            "the report directly, within the limits of this profile's size and training time."
        )
    else:
        paragraphs.append(
            f"These verdicts are about the workbook's synthetic world and {_short_model(settings)}, not "
            "about Street View. An effect that needs a large pretrained model overfitting on real photos "
            "(augmentation, the schedule) may fail here for reasons that say nothing about the report; the "
            "full profile is where the report's own numbers can be put to the test. What does transfer is "
            "the method: several seeds, a noise rule, and a baseline next to every number."
        )
    if settings["epochs"] <= 1:
        paragraphs.append(
            f"This profile trains for {settings['epochs']} epoch: it checks that the pipeline runs end to "
            "end, and a model this short-trained is not expected to learn; read its verdicts as a dry run."
        )
    return paragraphs


# ---------------------------------------------------------------------------------------------
# Rendering: HTML through the Jinja2 template (helpers.report_html), PDF through Typst (helpers.report_typst)


def _title(build: dict) -> tuple[str, str]:
    settings = build["profile"]
    return (
        "Image geolocation in Denmark with Vision Transformers, regenerated",
        f"A reproduction of Csizmadia and Głowaczewski (2023) by the workbook. Profile {settings['name']}: "
        f"{settings['description']}. Built {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    )


def write_html(profile: str | dict) -> Path:
    """Write ``build/<profile>/report.html`` (one self-contained file) and return its path."""
    build = load_build(profile)
    text = render_html(document(build), *_title(build))
    path = build["root"] / "report.html"
    with config.atomic_target(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def write_pdf(profile: str | dict) -> Path:
    """Write ``build/<profile>/report.pdf`` (A4, typeset by Typst, a contents page) and return its path."""
    build = load_build(profile)
    path = build["root"] / "report.pdf"
    with config.atomic_target(path) as temporary:
        render_pdf(document(build), *_title(build), temporary)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.report --profile NAME``: write the report of a build again.

    ``make all`` calls it after the last notebook, so the report also holds the results of
    the notebooks after 10 (beyond the report, future work).
    """
    import argparse

    parser = argparse.ArgumentParser(description="Write build/<profile>/report.html and report.pdf.")
    parser.add_argument("--profile", default="default")
    profile = parser.parse_args(argv).profile
    for path in (write_html(profile), write_pdf(profile)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
