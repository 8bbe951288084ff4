"""Claims 10-16 of the report: the final model's numbers and what the best model confuses and
looks at (notebooks 06, 08 and 09), each written once, its rule text above its judge.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from helpers import experiments, statistics
from helpers.report import words
from helpers.report.build import predictions, published, section, seed_runs
from helpers.report.rules import (
    KM_TOLERANCE,
    NO_GAIN_POINTS,
    Claim,
    Judgement,
    compare,
    damaged_error,
    final_noise,
    measured_on,
    registrar,
)
from helpers.report.verdicts import (
    BY_DESIGN,
    INCONCLUSIVE,
    MISSING,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    effect,
    level,
    settle_text,
)

CLAIMS: list[Claim] = []
claim = registrar(CLAIMS)

# ---------------------------------------------------------------------------------------------
# Claims 10-12: the final model's numbers


def _split_words(build: dict) -> str:
    """Which validation split this build's numbers come from, against the report's."""
    if build["profile"]["image_source"] == "synthetic":
        return "validation split, random (as the report's)"
    return "validation split, whole 1 km squares and capture groups (the report's: random)"


def _final_level(build: dict, metric: str, key: str, good_side: float, tolerance: float, show, delta):
    label = measured_on(build, _split_words(build))
    what = "top-1" if metric == "top1" else "centroid-to-centroid mean error"
    if not build["real_photos"]:
        why = (
            f"an absolute {'accuracy' if metric == 'top1' else 'distance'} depends on the images; these are "
        )
        return None, Judgement(
            "n/a", label, NOT_TESTABLE, why + "not photographs (it needs real street photos)"
        )
    runs = seed_runs(build, "final")
    if len(runs) < 2:
        return None, Judgement(
            "n/a", label, MISSING, f"needs two or more seeds (notebook 06); found {len(runs)}"
        )
    result, reason = compare(build, runs, None, metric, shift=published(key))
    if result is None:
        return None, Judgement("n/a", label, MISSING, reason)
    number = f"the report's {show(published(key))}"
    measured = (
        f"validation {what} of the final runs {show(result['mean_a'])} ({len(runs)} seeds) against {number}"
    )
    return result, Judgement(measured, label, *level(result, good_side, tolerance, delta, number))


@claim(
    claim="“the final accuracy was 37%” (§4)",
    report=f"{words.pct(published('final_top1'), 0)} top-1, validation ({section('final_top1')})",
    compares="validation top-1 of the final runs, mean over seeds, against the report's 37 %",
    rule="Not testable on synthetic images; on photos, reproduced when the final runs' validation top-1 is "
    "above 37 % beyond the noise, or holds 37 % in a 95 % interval no wider than "
    f"±{words.points(NO_GAIN_POINTS, 0)[1:]} (the smallest difference the report counts); not reproduced "
    "below it beyond the noise; inconclusive when the interval holds 37 % but is wider. The photo profiles "
    "split whole 1 km squares, the report split at random: the data column says so",
)
def judge_final_accuracy(build: dict) -> Judgement:
    return _final_level(build, "top1", "final_top1", 1.0, NO_GAIN_POINTS, words.pct, words.points)[1]


@claim(
    claim="“our model (best: 62km)” (§4)",
    report=f"{words.km(published('final_mean_km'))}, centroid to centroid ({section('final_mean_km')})",
    compares="validation mean distance from the predicted cell's centroid to the true cell's centroid (0 "
    "when right; the authors' best_distance), final runs, against the report's 62 km",
    rule="Not testable on synthetic images; on photos, reproduced when that distance is below 62 km beyond "
    f"the noise, or holds 62 km in a 95 % interval no wider than ±{words.km(KM_TOLERANCE)} (a tenth of it); "
    "not reproduced above it beyond the noise; inconclusive when the interval holds 62 km but is wider. The "
    "distance to the photo's own location is shown beside it",
)
def judge_final_distance(build: dict) -> Judgement:
    result, found = _final_level(
        build, "centroid_mean_km", "final_mean_km", -1.0, KM_TOLERANCE, words.km, words.signed_km
    )
    if result is not None:
        photo, _ = compare(build, seed_runs(build, "final"), None, "mean_km")
        if photo:
            found = Judgement(
                f"{found.measured}; to the photo's own location {words.km(photo['mean_a'])}",
                found.data,
                found.verdict,
                found.reason,
            )
    return found


RANDOM_RATIO = published("final_mean_km") / published("random_mean_km")


@claim(
    claim="“our starting mean km error was 150 km when randomly choosing predicted cells” (§4)",
    report=f"{words.km(published('final_mean_km'))} against {words.km(published('random_mean_km'))} "
    f"({section('random_mean_km')})",
    compares="validation centroid-to-centroid mean error of the final runs against this build's own random "
    "cell on the same images and the same basis (the report's 150 km beside it)",
    rule="Reproduced when the final runs' error is below the random cell's beyond the noise and not above "
    f"{words.ratio(RANDOM_RATIO)} of it (the report's 62 km against 150 km) beyond the noise (95 % "
    "intervals, paired on the images); not reproduced when it is above the random cell's, or above that "
    "share, beyond the noise; inconclusive when the interval holds the random cell's error and the report's "
    "share",
)
def judge_against_random(build: dict) -> Judgement:
    label = measured_on(build)
    runs = seed_runs(build, "final")
    if len(runs) < 2:
        why = f"needs two or more seeds of the final runs (notebook 06); found {len(runs)}"
        return Judgement("n/a", label, MISSING, why)
    try:
        model_km = experiments.per_image_values(build["profile"], runs, "val", "centroid_km")
        random_km = experiments.per_image_values(build["profile"], runs, "val", "random_centroid_km").mean(
            axis=1
        )
    except (LookupError, ValueError) as error:
        if isinstance(error, damaged_error()):
            raise
        return Judgement("n/a", label, MISSING, str(error))
    tests = {}
    for name, factor in (("below", 1.0), ("ratio", RANDOM_RATIO)):
        per_seed = model_km.mean() - factor * random_km.mean()
        tests[name] = statistics.difference_test(
            per_seed.to_numpy(), None, [(model_km.mean(axis=1) - factor * random_km).to_numpy()]
        )
    model_mean, random_mean = float(model_km.mean().mean()), float(random_km.mean())
    measured = (
        f"centroid-to-centroid mean error of the final runs {words.km(model_mean)} against "
        f"{words.km(random_mean)} for a random cell here (the report's random cell: "
        f"{words.km(published('random_mean_km'))}), {words.ratio(model_mean / random_mean)} of it (the "
        f"report {words.ratio(RANDOM_RATIO)}): {words.interval(tests['below'], words.signed_km)}"
    )
    below, ratio = tests["below"], tests["ratio"]
    share = words.ratio(RANDOM_RATIO)
    span = words.span(below, words.signed_km)
    if below["low"] > 0:
        return Judgement(measured, label, NOT_REPRODUCED, f"{span} lies above zero: worse than a random cell")
    if ratio["low"] > 0:
        where = (
            "below the random cell" if below["high"] < 0 else "no better than a random cell beyond the noise"
        )
        why = (
            f"{where}, and above {share} of it beyond the noise "
            f"({words.span(ratio, words.signed_km)} for its excess over {share} of it): not as far below"
        )
        return Judgement(measured, label, NOT_REPRODUCED, why)
    if below["high"] < 0:
        return Judgement(
            measured,
            measured_on,
            REPRODUCED,
            f"{span} lies below zero, and at or under {share} of it within the noise",
        )
    target = (1 - RANDOM_RATIO) * random_mean
    why = (
        f"{span} holds zero: this build cannot tell its error from a random cell's. The smallest difference "
        f"it could call beyond the noise is ±{words.signed_km(below['margin'])[1:]}; "
        + settle_text(below, target, words.signed_km)
    )
    return Judgement(measured, label, INCONCLUSIVE, why)


# ---------------------------------------------------------------------------------------------
# Claims 13-16: what the best model confuses and looks at (notebooks 08 and 09)


@claim(
    claim="“Classes that were neighbouring each other often had higher confusion” (§4)",
    report="no number; Figure 8 (§4)",
    compares="the share of the best run's wrong test answers that go to a cell bordering the true one, "
    "against its chance share (a wrong answer drawn uniformly from the other cells)",
    rule="Reproduced when the 95 % interval of the neighbour share (exact binomial, Clopper-Pearson) lies "
    "above the chance share; not reproduced when below it; inconclusive when it holds it (the reason gives "
    "the smallest share this number of errors could tell from chance). The chance share is the mean of each "
    "error's own; a binomial with that mean errs towards not shown (Hoeffding)",
)
def judge_neighbours(build: dict) -> Judgement:
    facts, label = build["facts"], measured_on(build, "test split")
    errors, share, chance = (
        facts.get(k) for k in ("test_errors", "neighbour_error_share", "neighbour_error_chance")
    )
    if not words.finite(errors, share, chance):
        why = (
            "needs test_errors, neighbour_error_share and neighbour_error_chance in facts.json (notebook 08)"
        )
        return Judgement("n/a", label, MISSING, why)
    errors = int(errors)
    if errors == 0:
        return Judgement(
            "no wrong answers", label, NOT_TESTABLE, "no wrong test answers to place (needs errors)"
        )
    to_neighbours = round(share * errors)
    test = stats.binomtest(to_neighbours, errors, chance, alternative="greater")
    low, high = stats.binomtest(to_neighbours, errors, chance).proportion_ci(statistics.CONFIDENCE, "exact")
    measured = (
        f"{words.share(share)} of {words.count(errors)} wrong test answers go to a neighbouring cell against "
        f"{words.share(chance)} by chance (95 % interval {words.share(low)} to {words.share(high)}, "
        f"one-sided binomial p = {test.pvalue:.2g})"
    )
    pairs, higher = facts.get("neighbour_pairs"), facts.get("neighbour_pairs_higher")
    if words.finite(pairs, higher) and pairs:
        measured += (
            f"; {words.count(higher)} of {words.count(pairs)} neighbouring pairs confused more than "
            "non-neighbours"
        )
    if low > chance:
        return Judgement(
            measured, label, REPRODUCED, "the interval of the neighbour share lies above its chance share"
        )
    if high < chance:
        return Judgement(
            measured, label, NOT_REPRODUCED, "the interval lies below the chance share: neighbours avoided"
        )
    smallest = next(
        (
            k
            for k in range(to_neighbours, errors + 1)
            if stats.binomtest(k, errors, chance).proportion_ci(statistics.CONFIDENCE, "exact").low > chance
        ),
        errors,
    )
    z = stats.norm.ppf(0.5 + statistics.CONFIDENCE / 2)
    settle = (
        "at the share measured, about "
        f"{words.count(math.ceil(z**2 * share * (1 - share) / (share - chance) ** 2))} errors (more test "
        "images per cell) would show it"
        if share > chance
        else "the share measured is not above chance: more errors would more likely confirm that"
    )
    why = (
        f"the interval holds the chance share: with {words.count(errors)} errors, a share below "
        f"{words.share(smallest / errors)} cannot be told from chance; {settle}"
    )
    return Judgement(measured, label, INCONCLUSIVE, why)


@claim(
    claim="“the smaller the class, the better the accuracy” (§4)",
    report="no number; Figure 8 (§4)",
    compares="cell area against per-cell test top-1 (rank correlation)",
    rule="Reproduced when Spearman's correlation of cell area and per-cell test accuracy is negative with "
    "p < 0.05; not reproduced when positive with p < 0.05; inconclusive otherwise (the reason gives the "
    "smallest |ρ| these cells could show); not testable when every cell is equally accurate",
)
def judge_smaller_cells(build: dict) -> Judgement:
    facts, label = build["facts"], measured_on(build, "test split")
    if "area_accuracy_spearman" not in facts:
        return Judgement("n/a", label, MISSING, "no area_accuracy_spearman in facts.json (notebook 08)")
    rho, p = (
        math.nan if facts.get(k) is None else facts[k] for k in ("area_accuracy_spearman", "area_accuracy_p")
    )
    cells = facts.get("cells_tested")
    if not words.finite(rho, p):
        why = "the accuracy is the same in every cell: nothing to rank (needs a model that tells cells apart)"
        return Judgement("ρ undefined", label, NOT_TESTABLE, why)
    measured = f"cell area against per-cell test top-1: Spearman ρ = {rho:.2f}, p = {p:.2g}" + (
        f" over {words.count(cells)} cells" if words.finite(cells) else ""
    )
    if p < 1 - statistics.CONFIDENCE:
        if rho < 0:
            return Judgement(
                measured, label, REPRODUCED, "negative and significant: smaller cells are more accurate"
            )
        return Judgement(
            measured, label, NOT_REPRODUCED, "significant the other way: larger cells are more accurate"
        )
    smallest = ""
    if words.finite(cells) and cells > 3:
        t = statistics.t_quantile(cells - 2)
        smallest = (
            f"; over {words.count(cells)} cells only |ρ| above {t / math.sqrt(cells - 2 + t**2):.2f} "
            "reaches it"
        )
    why = (
        f"no significant relation (p ≥ 0.05){smallest}; more test images per cell make each cell's "
        "accuracy less noisy"
    )
    return Judgement(measured, label, INCONCLUSIVE, why)


def _paired_test_rows(build: dict, runs: tuple[str, str]):
    """The two runs' per-image test predictions, checked to hold the same places in the same order."""
    tables = [predictions(build, run, "test") for run in runs]
    for run, table in zip(runs, tables, strict=True):
        if table is None or "sky_attention" not in table:
            return None, (
                f"needs run {run}'s per-image test predictions with each image's share of attention on the "
                f"sky (runs/{run}/predictions_test.csv, column sky_attention; notebook 09)"
            )
    first, second = tables
    same = len(first) == len(second) and (first["cell"].to_numpy() == second["cell"].to_numpy()).all()
    for key in ("location_id", "lat", "lng"):  # the places themselves, where the files record them
        if same and key in first and key in second:
            same = np.allclose(first[key].to_numpy(dtype=float), second[key].to_numpy(dtype=float))
    if not same:
        return None, f"runs {runs[0]} and {runs[1]} were not scored on the same test places in the same order"
    return tables, ""


@claim(
    claim="“it specifically focuses on the sky, the shape of the clouds” (§4)",
    report="no number; Figure 9 (§4)",
    compares="share of attention rollout on sky pixels, per test image: the sky-shortcut run (leak_1.0) "
    "against the same configuration trained where the sky says nothing (leak_0.0), on the same test places; "
    "the sky's share of the pixels as a floor",
    rule="Reproduced when the 95 % interval of the paired per-image difference in attention on the sky "
    "(leak_1.0 minus leak_0.0) lies above zero and leak_1.0's attention on the sky is above the sky's pixel "
    "share beyond the noise (one seed each: the images' noise only); not reproduced when either lies below "
    "zero; inconclusive otherwise; not testable on images without sky masks (photographs)",
)
def judge_sky(build: dict) -> Judgement:
    label = measured_on(build, "test split")
    if build["profile"]["image_source"] != "synthetic":
        why = "these images carry no sky mask to measure attention against (needs rendered scenes)"
        return Judgement("n/a", label, NOT_TESTABLE, why)
    tables, reason = _paired_test_rows(build, ("leak_1.0", "leak_0.0"))
    if tables is None:
        return Judgement("n/a", label, MISSING, reason)
    # the floor: each image's own share of sky pixels where recorded, else the test images' mean share
    floor = tables[0]["sky_pixels"].to_numpy(dtype=float) if "sky_pixels" in tables[0] else None
    if floor is None:
        floor = build["facts"].get("sky_pixel_share")
        if not words.finite(floor):
            why = "no sky_pixels per image nor sky_pixel_share in facts.json (notebook 09)"
            return Judgement("n/a", label, MISSING, why)
    shortcut, control = (table["sky_attention"].to_numpy(dtype=float) for table in tables)
    versus = statistics.image_difference_test(shortcut - control)
    above_floor = statistics.image_difference_test(shortcut - floor)
    floor = float(np.mean(floor))
    measured = (
        f"attention on the sky: leak_1.0 {words.share(shortcut.mean())} against leak_0.0 "
        f"{words.share(control.mean())} on the same {words.count(len(shortcut))} test places: "
        f"{words.interval(versus, words.signed_share)}; the sky covers {words.share(floor)} of the pixels"
    )
    verdict, reason = effect(versus, 1.0, words.signed_share)
    floor_verdict, floor_reason = effect(above_floor, 1.0, words.signed_share)
    floor_words = f"leak_1.0's attention on the sky minus the sky's pixel share: {floor_reason}"
    if floor_verdict == NOT_REPRODUCED and verdict != NOT_REPRODUCED:
        verdict, reason = NOT_REPRODUCED, f"{floor_words}; against leak_0.0, {reason}"
    elif verdict == REPRODUCED and floor_verdict != REPRODUCED:
        verdict, reason = INCONCLUSIVE, f"against leak_0.0, {reason}; but {floor_words}"
    elif verdict == REPRODUCED:
        reason += f"; and {floor_words}"
    return Judgement(measured, label, verdict, f"{reason} (one seed each: the images' noise only)")


@claim(
    claim="“it will not be able to generalize to new StreetView imagery if Google decides to update its "
    "photos” (§4)",
    report="no number; a conjecture (§4, §5.1)",
    compares="top-1 lost on a new capture day: a model trained with the sky shortcut (session_leak 1) "
    "against one without (session_leak 0)",
    rule="Reproduced when the shortcut model loses more, beyond the seed noise of two single runs (the final "
    "runs' seed variance, one estimate for both, Student-t); not reproduced when it loses less; inconclusive "
    "when the interval holds zero. By design on rendered scenes: the renderer draws a new day's capture "
    "sessions afresh. Not testable without re-captured images",
)
def judge_new_day(build: dict) -> Judgement:
    facts = build["facts"]
    label = f"{build['profile']['name']}: synthetic images, session_leak 0 and 1, test split"
    if build["profile"]["image_source"] != "synthetic":
        why = (
            "only rendered scenes can be re-captured on another day here (needs the same places "
            "photographed again)"
        )
        return Judgement("n/a", measured_on(build), NOT_TESTABLE, why)
    drop1, drop0 = facts.get("new_day_drop_leak_1"), facts.get("new_day_drop_leak_0")
    if not words.finite(drop1, drop0):
        return Judgement(
            "n/a", label, MISSING, "no new_day_drop_leak_1 and _leak_0 in facts.json (notebook 09)"
        )
    noise, reason = final_noise(build)
    if noise is None:
        return Judgement("n/a", label, MISSING, reason)
    result = statistics.difference_test([drop1], [drop0], borrowed=noise)
    measured = (
        f"top-1 lost on a new day: {words.points(drop1)} with the sky shortcut (session_leak 1) against "
        f"{words.points(drop0)} without (session_leak 0): {words.interval(result, words.points)}"
    )
    verdict, reason = effect(result, 1.0, words.points)
    if verdict == REPRODUCED:
        choice = (
            "the synthetic world draws every capture day's sessions afresh (helpers/synthetic.py, "
            "assign_sessions), so at session_leak 1 a cell's sky on the new day is another session's: a "
            "model that learnt the sky loses it by construction"
        )
        return Judgement(measured, label, BY_DESIGN, f"{choice}; {reason}")
    return Judgement(measured, label, verdict, reason)
