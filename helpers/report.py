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

from helpers import config, experiments, metrics
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


def _effect(build: dict, run: str, reference: str, expected: float):
    """The effect of ``run`` against ``reference`` over notebook 06's seeds, judged by the noise rule."""
    scores = seed_scores(build["results"], build["data"])
    label = f"{build['profile']['name']}: {build['data']}"
    counts = scores.groupby("run")["top1"].count()
    if counts.get(run, 0) < 2 or counts.get(reference, 0) < 2:
        have = f"{counts.get(reference, 0)} seed(s) of {reference}, {counts.get(run, 0)} of {run}"
        return "n/a", label, MISSING, f"needs at least two seeds of each run (notebook 06); found {have}"
    compared = experiments.compare_runs(
        scores[scores["run"].isin([run, reference])], reference, "top1", n_images=_val_images(build)
    )
    row, base = compared.loc[run], compared.loc[reference]
    number = (
        f"{reference} {_pct(base['mean'])} → {run} {_pct(row['mean'])}: {_points(row['difference'])} "
        f"± {_points(row['standard_error']).replace('+', '')} (mean of {int(row['count'])} seeds)"
    )
    verdict, why = noise_verdict(row["difference"], row["standard_error"], expected)
    return number, label, verdict, why


def noise_verdict(difference: float, standard_error: float, expected: float) -> tuple[str, str]:
    """:func:`experiments.effect_verdict`, with "within noise" counted as not reproduced."""
    verdict = experiments.effect_verdict(difference, standard_error, expected)
    if verdict == "reproduced":
        return REPRODUCED, "the claimed sign, beyond twice the standard error over seeds"
    if verdict == "not reproduced":
        return NOT_REPRODUCED, "beyond the seed noise, but with the opposite sign"
    if verdict == "within noise":
        return NOT_REPRODUCED, "inside twice the standard error over seeds: no effect beyond the noise"
    return MISSING, "no seed spread to judge the difference against"


def judge_overfitting(build: dict):
    """Claim 1: the base model overfits (its train-validation gap over seeds)."""
    scores = seed_scores(build["results"], build["data"])
    base = scores[scores["run"] == "baseline"].dropna(subset=["gap"])
    label = f"{build['profile']['name']}: {build['data']}"
    if len(base) < 2:
        return (
            "n/a",
            label,
            MISSING,
            f"needs the base model over two or more seeds (notebooks 05, 06); found {len(base)}",
        )
    gap, error = base["gap"].mean(), base["gap"].std() / math.sqrt(len(base))
    number = (
        f"train {_pct(base['train_top1'].mean())}, validation {_pct(base['top1'].mean())}: gap "
        f"{_points(gap)} ± {_points(error).replace('+', '')} ({len(base)} seeds)"
    )
    verdict, why = noise_verdict(gap, error, 1.0)
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


def _val_images(build: dict) -> int | None:
    """How many validation images every run was scored on (None if unknown)."""
    return build["sizes"].get("splits", {}).get("val")


def _margin(build: dict, spread: float, *accuracies: float) -> float:
    """Twice the standard error of a difference between two single runs: twice one run's seed
    variance, plus each accuracy's sampling noise on the validation images (notebook 06's rule)."""
    variance = 2 * spread**2
    n_images = _val_images(build)
    if n_images:
        variance += sum(p * (1 - p) for p in accuracies) / n_images
    return 2 * math.sqrt(variance)


def _final_reference(build: dict):
    """final_seed0's validation row and the seed spread (sd) of the final runs' top-1, or a reason."""
    scores = seed_scores(build["results"], build["data"])
    reference = _row(build["results"], "final_seed0", "val")
    spread = _spread(scores, "final")
    if reference is None or not np.isfinite(spread):
        return None, math.nan, "needs final_seed0 and two or more seeds of the final runs (notebook 06)"
    return reference, spread, ""


def judge_losses(build: dict):
    """Claim 5: no distance-aware loss beats cross-entropy (loss_* against final_seed0)."""
    results = build["results"]
    label = f"{build['profile']['name']}: {build['data']}"
    losses = results[
        (results["split"] == "val")
        & (results["data"] == build["data"])
        & results["experiment"].str.startswith("loss_")
    ]
    reference, spread, reason = _final_reference(build)
    if losses.empty:
        return "n/a", label, MISSING, "no loss_* runs (notebook 07)"
    if reference is None:
        return "n/a", label, MISSING, reason
    best = losses.sort_values("top1", ascending=False).iloc[0]
    margin = _margin(build, spread, float(best["top1"]), float(reference["top1"]))
    difference = float(best["top1"]) - float(reference["top1"])
    number = (
        f"best of {len(losses)} distance losses: {best['experiment']} {_pct(best['top1'])}; cross-entropy "
        f"(final_seed0) {_pct(reference['top1'])}; difference {_points(difference)}, noise margin "
        f"{_points(margin).replace('+', '')}"
    )
    if difference > margin:
        return number, label, NOT_REPRODUCED, f"{best['experiment']} beats cross-entropy beyond the noise"
    return number, label, REPRODUCED, "no distance loss beats cross-entropy beyond the noise"


def judge_frozen(build: dict):
    """Claim 6: a frozen pretrained backbone falls far behind fine-tuning."""
    label = f"{build['profile']['name']}: {build['data']}"
    frozen = [name for name, summary in build["runs"].items() if summary.get("freeze_backbone")]
    if not frozen:
        return (
            "no run with a frozen backbone",
            label,
            NOT_TESTABLE,
            "no run of this build has freeze_backbone set (notebook 10, exercise 3)",
        )
    name = frozen[0]
    if not build["runs"][name].get("pretrained"):
        return f"{name}", label, NOT_TESTABLE, "the backbone is not pretrained here: frozen, it is random"
    row = _row(build["results"], name, "val")
    reference, spread, reason = _final_reference(build)
    if row is None or reference is None:
        return name, label, MISSING, reason or f"no validation row for {name}"
    margin = _margin(build, spread, float(row["top1"]), float(reference["top1"]))
    difference = float(row["top1"]) - float(reference["top1"])
    number = f"{name} {_pct(row['top1'])} against fine-tuned final_seed0 {_pct(reference['top1'])}"
    if difference < -margin:
        return number, label, REPRODUCED, "freezing costs accuracy beyond the noise"
    return number, label, NOT_REPRODUCED, "freezing costs no accuracy beyond the noise"


def _absolute(build: dict, metric: str, key: str, better: str):
    """The best run's test ``metric`` against the report's published ``key``."""
    row = best_test_row(build["results"])
    random = _row(build["results"], "random cell", "all")
    label = f"{build['profile']['name']}: {build['data']}"
    if row is None:
        return "n/a", label, MISSING, "no test row of the best run (notebook 08)"
    show = _pct if metric == "top1" else _km
    number = f"{show(row[metric])} on the test split ({_best_name(row)})"
    if random is not None and _finite(random[metric]):
        number += f"; random cell {show(random[metric])}"
    if not build["real_photos"]:
        return (
            number,
            label,
            NOT_TESTABLE,
            "an absolute number depends on the images; these are not photographs",
        )
    spread = _spread(seed_scores(build["results"], build["data"]), "final", metric)
    if not np.isfinite(spread):
        return number, label, MISSING, "needs two or more seeds of the final runs (notebook 06) for the noise"
    target, value = published(key), float(row[metric])
    reached = value >= target - 2 * spread if better == "higher" else value <= target + 2 * spread
    why = f"within twice the final runs' seed spread ({show(spread)}) of the report's value, or better"
    return number, label, (REPRODUCED if reached else NOT_REPRODUCED), why if reached else "not " + why


def judge_final_accuracy(build: dict):
    """Claim 7: the final model's top-1 accuracy reaches the report's."""
    return _absolute(build, "top1", "final_top1", "higher")


def judge_final_distance(build: dict):
    """Claim 8: the final model's mean error is as low as the report's."""
    return _absolute(build, "mean_km", "final_mean_km", "lower")


def judge_against_random(build: dict):
    """Claim 9: the best run's mean error is far below a random cell's."""
    row, random = best_test_row(build["results"]), _row(build["results"], "random cell", "all")
    label = f"{build['profile']['name']}: {build['data']}"
    if row is None or random is None:
        return "n/a", label, MISSING, "needs the best run's test row (08) and the random-cell baseline (04)"
    spread = _spread(seed_scores(build["results"], build["data"]), "final", "mean_km")
    ratio = float(row["mean_km"]) / float(random["mean_km"])
    number = (
        f"{_km(row['mean_km'])} against {_km(random['mean_km'])} for a random cell ({ratio:.0%} of it; "
        f"the report {published('final_mean_km') / published('random_mean_km'):.0%})"
    )
    if not np.isfinite(spread):
        return number, label, MISSING, "needs two or more seeds of the final runs (notebook 06) for the noise"
    gain = float(random["mean_km"]) - float(row["mean_km"])
    if gain > 2 * spread:
        return (
            number,
            label,
            REPRODUCED,
            f"below the random cell by more than twice the seed spread ({_km(spread)})",
        )
    return (
        number,
        label,
        NOT_REPRODUCED,
        f"not below the random cell by twice the seed spread ({_km(spread)})",
    )


def judge_neighbours(build: dict):
    """Claim 10: wrong answers go to neighbouring cells (notebook 08's facts)."""
    facts = build["facts"]
    label = f"{build['profile']['name']}: {build['data']}, test split"
    share, chance = facts.get("neighbour_error_share"), facts.get("neighbour_error_chance")
    if not _finite(share, chance):
        return "n/a", label, MISSING, "no neighbour_error_share in facts.json (notebook 08)"
    errors = facts.get("test_errors")
    how_many = _count(errors) if _finite(errors) else "the"
    number = f"{_pct(share)} of {how_many} wrong answers; chance {_pct(chance)}"
    if errors == 0:
        return number, label, NOT_TESTABLE, "the model made no mistakes on the test split"
    if share > 2 * chance:
        return number, label, REPRODUCED, f"{share / chance:.1f} times chance, more than twice"
    return number, label, NOT_REPRODUCED, f"{share / chance:.1f} times chance, not more than twice"


def judge_smaller_cells(build: dict):
    """Claim 11: smaller cells are recognised better (notebook 08's facts)."""
    facts = build["facts"]
    label = f"{build['profile']['name']}: {build['data']}, test split"
    rho, p = facts.get("area_accuracy_spearman"), facts.get("area_accuracy_p")
    if "area_accuracy_spearman" not in facts:
        return "n/a", label, MISSING, "no area_accuracy_spearman in facts.json (notebook 08)"
    rho, p = (math.nan if v is None else v for v in (rho, p))  # recorded, but undefined
    cells = facts.get("cells_tested")
    if not _finite(rho, p):
        return "ρ undefined", label, NOT_TESTABLE, "the accuracy is the same in every cell (nothing to rank)"
    number = f"Spearman ρ = {rho:.2f}, p = {p:.2g}" + (
        f" over {_count(cells)} cells" if _finite(cells) else ""
    )
    if rho < 0 and p < 0.05:
        return number, label, REPRODUCED, "negative and significant: smaller cells are more accurate"
    if p < 0.05:
        return number, label, NOT_REPRODUCED, "significant the other way: larger cells are more accurate"
    return number, label, NOT_REPRODUCED, "no significant relation (p ≥ 0.05)"


def judge_sky(build: dict):
    """Claim 12: attention rests on the sky (notebook 09's facts)."""
    facts = build["facts"]
    label = f"{build['profile']['name']}: {build['data']}, test split"
    share, pixels = facts.get("sky_attention_share"), facts.get("sky_pixel_share")
    if build["profile"]["image_source"] != "synthetic":
        return "n/a", label, NOT_TESTABLE, "these images carry no sky mask to measure attention against"
    if not _finite(share, pixels):
        return "n/a", label, MISSING, "no sky_attention_share in facts.json (notebook 09)"
    number = f"{_pct(share)} of the attention on the sky, which is {_pct(pixels)} of the pixels"
    if share > pixels:
        return number, label, REPRODUCED, "more attention on the sky than its share of the image"
    return number, label, NOT_REPRODUCED, "no more attention on the sky than its share of the image"


def judge_new_day(build: dict):
    """Claim 13: a model with a sky shortcut fails on a new capture day (notebook 09's facts)."""
    facts = build["facts"]
    label = f"{build['profile']['name']}: synthetic images, session_leak 0 and 1"
    drop1, drop0 = facts.get("new_day_drop_leak_1"), facts.get("new_day_drop_leak_0")
    if build["profile"]["image_source"] != "synthetic":
        label = f"{build['profile']['name']}: {build['data']}"
        return "n/a", label, NOT_TESTABLE, "only synthetic scenes can be re-captured on another day here"
    if not _finite(drop1, drop0):
        return "n/a", label, MISSING, "no new_day_drop_leak_1 in facts.json (notebook 09)"
    number = f"drop on a new day: {_points(drop1)} with the sky shortcut, {_points(drop0)} without"
    best = best_test_row(build["results"])
    if best is not None:
        new = _row(build["results"], f"{best['experiment']}, new capture day", "test_new_day")
        if new is not None:
            number += f"; best run {_pct(best['top1'])} → {_pct(new['top1'])}"
    _, spread, reason = _final_reference(build)
    if not np.isfinite(spread):
        return number, label, MISSING, reason
    margin = 2 * math.sqrt(2) * spread
    if drop1 - drop0 > margin and drop1 > 0:
        return (
            number,
            label,
            REPRODUCED,
            f"the shortcut costs more on a new day, beyond the margin {_points(margin)}",
        )
    return number, label, NOT_REPRODUCED, f"no larger drop beyond the margin {_points(margin)}"


def _report_claim(key: str, text: str) -> str:
    return f"{text} (§{PUBLISHED[key][1].split()[0]})"


def _noise_rule(compared: str) -> str:
    return (
        f"Notebook 06's noise rule, {compared}: reproduced when the difference of the mean validation "
        "top-1 over seeds has the report's sign and exceeds twice its standard error"
    )


_MARGIN_RULE = (
    "the standard error of a difference of two runs: sqrt(2) times the standard deviation of the final "
    "runs' top-1 over seeds, combined with each accuracy's sampling noise on the validation images"
)

# One row per claim of the original report: what it says, its own number (from PUBLISHED, with the
# section), the rule that decides the verdict here, and the function that applies the rule.
CLAIMS = [
    {
        "claim": "The base model overfits: training accuracy far above validation",
        "report": "no number; Figures 3-4 (§3.2)",
        "rule": "Reproduced when the base model's train-minus-validation top-1 gap, averaged over its seeds, "
        "is positive and exceeds twice its standard error",
        "judge": judge_overfitting,
    },
    {
        "claim": "Data augmentation (RandAugment) raises accuracy",
        "report": _report_claim(
            "augment_top1", f"{_pct(published('baseline_top1'), 0)} → {_pct(published('augment_top1'), 0)}"
        ),
        "rule": _noise_rule("augment against baseline"),
        "judge": judge_augmentation,
    },
    {
        "claim": f"The schedule and Adam betas add about {100 * published('schedule_gain'):.0f} points",
        "report": _report_claim("schedule_gain", _points(published("schedule_gain"), 0)),
        "rule": _noise_rule("final (augmentation, warm-up, betas) against augment (augmentation only)"),
        "judge": judge_schedule,
    },
    {
        "claim": f"The final configuration is {100 * published('final_gain'):.0f} points above the base one",
        "report": _report_claim("final_gain", _points(published("final_gain"), 0)),
        "rule": _noise_rule("final against baseline"),
        "judge": judge_total_gain,
    },
    {
        "claim": "Distance-aware losses do not beat cross-entropy on accuracy",
        "report": "no number; “did not help much” (§3.3, §5)",
        "rule": "Reproduced when no loss_* run's validation top-1 exceeds final_seed0's (cross-entropy) by "
        f"more than twice the standard error of a difference of two single runs, {_MARGIN_RULE}",
        "judge": judge_losses,
    },
    {
        "claim": f"A frozen pretrained backbone stays near {_pct(published('frozen_top1'), 0)}",
        "report": _report_claim("frozen_top1", _pct(published("frozen_top1"), 0)),
        "rule": "Not testable without a run whose summary.json says freeze_backbone, or when the backbone is "
        "not pretrained (frozen, it is random); otherwise reproduced when that run's top-1 is below "
        "final_seed0's by more than the margin of claim 5",
        "judge": judge_frozen,
    },
    {
        "claim": f"Final accuracy {_pct(published('final_top1'), 0)}",
        "report": _report_claim("final_top1", f"{_pct(published('final_top1'), 0)} top-1 (validation)"),
        "rule": "Not testable on synthetic images; on photos, reproduced when the best run's test top-1 is "
        f"at least {_pct(published('final_top1'), 0)} minus twice the final runs' seed spread",
        "judge": judge_final_accuracy,
    },
    {
        "claim": f"Final mean error {_km(published('final_mean_km'))}",
        "report": _report_claim("final_mean_km", _km(published("final_mean_km"))),
        "rule": "Not testable on synthetic images; on photos, reproduced when the best run's test mean error "
        f"is at most {_km(published('final_mean_km'))} plus twice the final runs' seed spread of it",
        "judge": judge_final_distance,
    },
    {
        "claim": "The mean error is far below a random cell's",
        "report": _report_claim(
            "random_mean_km", f"{_km(published('final_mean_km'))} against {_km(published('random_mean_km'))}"
        ),
        "rule": "Reproduced when the best run's test mean error is below the random-cell baseline's by more "
        "than twice the final runs' seed spread of the mean error",
        "judge": judge_against_random,
    },
    {
        "claim": "Most errors go to neighbouring cells",
        "report": "no number; Figure 8 (§4)",
        "rule": "Reproduced when the share of wrong test answers that land in a cell bordering the true one "
        "is more than twice the share a random wrong answer would have",
        "judge": judge_neighbours,
    },
    {
        "claim": "Smaller cells are recognised better",
        "report": "no number; Figure 8 (§4)",
        "rule": "Reproduced when Spearman's correlation of cell area and per-cell test accuracy is negative "
        "with p < 0.05; not testable when every cell is equally accurate",
        "judge": judge_smaller_cells,
    },
    {
        "claim": "Attention rests on the sky and the clouds",
        "report": "no number; Figure 9 (§4)",
        "rule": "Reproduced when the share of attention rollout on sky pixels exceeds the share of the image "
        "that is sky; not testable on images without sky masks (photographs, the stand-in's downloads)",
        "judge": judge_sky,
    },
    {
        "claim": "A sky-watching model may fail on imagery of another day",
        "report": "no number; a conjecture (§4, §5.1)",
        "rule": "Reproduced when a model trained where the sky gives away the capture day (session_leak 1) "
        "loses more top-1 on a new capture day than one without that shortcut (session_leak 0), by more "
        "than the margin of claim 5; not testable without re-captured images",
        "judge": judge_new_day,
    },
]


def scorecard(profile: str | dict) -> pd.DataFrame:
    """One row per claim of the original report, judged on this build.

    Columns: claim, report (its number and section), this build (the number measured here),
    data (profile and image set), verdict (one of :data:`VERDICTS`), why (what decided it),
    rule (the written rule). ``profile`` is a profile name or dict, or a :func:`load_build`
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
            f"a mean error of {_km(published('final_mean_km'))}. This document repeats its pipeline in the "
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
        blocks.append(
            _p(
                f"The best run ({_best_name(best)}) placed {_pct(best['top1'])} of the test images in the "
                f"right cell, with a mean error of {_km(best['mean_km'])}{against}."
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
            "An effect between two training configurations counts as reproduced when the difference of their "
            "mean validation top-1 over seeds has the report's sign and exceeds twice its standard error, "
            "sqrt(s_a²/n_a + s_b²/n_b) with s the standard deviation over seeds (notebook 06). A difference "
            "inside that noise, or beyond it with the opposite sign, counts as not reproduced. Claims about "
            "one number use the thresholds listed with Table 1. A claim is not testable when these data "
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
        "typst": "cal(L) = -sum_(i=1)^n q_i log p_i, quad "
        "q_i = exp(-(D(g_i, x) - min_j D(g_j, x)) / tau)",
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
            card[["claim", "report", "this build", "data", "verdict", "why"]],
            "Table 1. Each claim of the original report: its number there, this build's number, the verdict.",
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
