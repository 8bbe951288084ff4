"""Claims 1-9 of the report: the training runs (notebooks 05-07), each written once.

Each claim's words, the two quantities it compares and its rule in words stand in the
decorator right above the judge that applies the rule (:func:`helpers.report.rules.registrar`).
The accuracy claims (1-4, 9) also have a *shortcut*: the same comparison on the runs trained
at ``session_leak`` 0 (one seed), so that a reader sees which verdicts rest on the
capture-session shortcut.
"""

from __future__ import annotations

from helpers import experiments, statistics
from helpers.report import words
from helpers.report.build import published, section, seed_runs
from helpers.report.rules import (
    BORROWED,
    NO_GAIN_POINTS,
    Claim,
    Judgement,
    better_words,
    compare,
    design_choice,
    effect_words,
    final_noise,
    gain_rule,
    has_run,
    leak0_pair,
    measured_on,
    registrar,
    single_runs,
)
from helpers.report.verdicts import BY_DESIGN, MISSING, NOT_TESTABLE, REPRODUCED, effect, level, no_gain

CLAIMS: list[Claim] = []
claim = registrar(CLAIMS)

# ---------------------------------------------------------------------------------------------
# Claims 1-4: the base model and notebook 06's configurations, over seeds


def _gap_shortcut(build: dict) -> str:
    if build["real_photos"] or build["profile"]["image_source"] != "synthetic":
        return "no leak to switch off: these images are not rendered"
    if not has_run(build, "baseline_leak0"):
        return "not run (baseline_leak0)"
    gaps = experiments.seed_scores(build["results"], build["data"])
    noise = statistics.borrowed_seed_variance(gaps.loc[gaps["run"] == "baseline", "gap"].to_numpy())
    result, reason = compare(build, ["baseline_leak0"], None, "gap", borrowed=noise)
    if result is None:
        return f"not judged: {reason}"
    verdict, _ = effect(result, 1.0, words.points)
    return (
        f"baseline_leak0 gap {words.interval(result, words.points)}, one seed at session_leak 0 (the base "
        f"model's seed noise): {effect_words(verdict)}"
    )


@claim(
    claim="“it is overfitting” (§3.2)",
    report="no number; Figures 3-4 (§3.2)",
    compares="base model: training top-1 (clean pass) against validation top-1, over seeds",
    rule="Reproduced when the 95 % interval of the train-minus-validation gap (seed noise plus the sampling "
    "noise of both image sets, Student-t) lies above zero; not reproduced below zero; inconclusive when it "
    "holds zero. By design where the profile's settings were chosen for the gap (the default profile's "
    "learning rate, images per cell and epochs)",
    shortcut=_gap_shortcut,
)
def judge_overfitting(build: dict) -> Judgement:
    label = measured_on(build, "training and validation splits")
    runs = seed_runs(build, "baseline")
    if len(runs) < 2:
        why = f"needs the base model over two or more seeds (notebooks 05, 06); found {len(runs)}"
        return Judgement("n/a", label, MISSING, why)
    result, reason = compare(build, runs, None, "gap")
    if result is None:
        return Judgement("n/a", label, MISSING, reason)
    scores = experiments.seed_scores(build["results"], build["data"])
    base = scores[scores["run"] == "baseline"]
    measured = (
        f"training top-1 {words.pct(base['train_top1'].mean())} against validation top-1 "
        f"{words.pct(base['top1'].mean())} ({len(runs)} seeds): gap {words.interval(result, words.points)}"
    )
    verdict, reason = effect(result, 1.0, words.points)
    choice = design_choice(build, "overfitting")
    if verdict == REPRODUCED and choice:
        return Judgement(measured, label, BY_DESIGN, f"{choice}; {reason}")
    return Judgement(measured, label, verdict, reason)


def _seeds_effect(build: dict, run: str, reference: str, size: float) -> Judgement:
    label = measured_on(build)
    runs, references = seed_runs(build, run), seed_runs(build, reference)
    if len(runs) < 2 or len(references) < 2:
        have = f"{len(references)} seed(s) of {reference}, {len(runs)} of {run}"
        return Judgement(
            "n/a", label, MISSING, f"needs at least two seeds of each run (notebook 06); found {have}"
        )
    result, reason = compare(build, runs, references, "top1")
    if result is None:
        return Judgement("n/a", label, MISSING, reason)
    measured = (
        f"validation top-1 of {run} {words.pct(result['mean_a'])} against {reference} "
        f"{words.pct(result['mean_b'])} (means of {len(runs)} and {len(references)} seeds): "
        f"{words.interval(result, words.points)}"
    )
    return Judgement(measured, label, *effect(result, 1.0, words.points, size=size))


AUGMENT_GAIN = published("augment_top1") - published("baseline_top1")


@claim(
    claim="“Data augmentation improved our accuracy from 29% to 35%.” (§3.2)",
    report=f"{words.pct(published('baseline_top1'), 0)} → {words.pct(published('augment_top1'), 0)} "
    f"({section('augment_top1')})",
    compares="validation top-1: augment against baseline, means over seeds",
    rule=gain_rule("augment against baseline", f"the report's {words.points(AUGMENT_GAIN, 0)}"),
    shortcut=lambda build: leak0_pair(build, "augment", "baseline", 1.0, AUGMENT_GAIN),
)
def judge_augmentation(build: dict) -> Judgement:
    return _seeds_effect(build, "augment", "baseline", AUGMENT_GAIN)


@claim(
    claim="“This only helped 2 percentage points.” (§3.2, Adam's betas; here with warm-up)",
    report=f"{words.points(published('schedule_gain'), 0)} ({section('schedule_gain')})",
    compares="validation top-1: final (augmentation, warm-up, betas) against augment, means over seeds",
    rule=gain_rule("final against augment", f"the report's {words.points(published('schedule_gain'), 0)}"),
    shortcut=lambda build: leak0_pair(build, "final", "augment", 1.0, published("schedule_gain")),
)
def judge_schedule(build: dict) -> Judgement:
    return _seeds_effect(build, "final", "augment", published("schedule_gain"))


@claim(
    claim="“We improved our accuracy by 8 percentage points compared to the base model.” (§4)",
    report=f"{words.points(published('final_gain'), 0)} ({section('final_gain')})",
    compares="validation top-1: final against baseline, means over seeds",
    rule=gain_rule("final against baseline", f"the report's {words.points(published('final_gain'), 0)}"),
    shortcut=lambda build: leak0_pair(build, "final", "baseline", 1.0, published("final_gain")),
)
def judge_total_gain(build: dict) -> Judgement:
    return _seeds_effect(build, "final", "baseline", published("final_gain"))


# ---------------------------------------------------------------------------------------------
# Claims 5-8: the distance losses of notebook 07, one run each, against cross-entropy (final_seed0)

CROSS_ENTROPY = "final_seed0"  # notebook 06's final configuration, seed 0: cross-entropy


def _loss_measured(result: dict, run: str, reference: str, metric: str) -> str:
    show, delta = (words.pct, words.points) if metric == "top1" else (words.km, words.signed_km)
    what = "validation top-1" if metric == "top1" else "validation centroid-to-centroid mean error"
    names = {CROSS_ENTROPY: f"cross-entropy ({CROSS_ENTROPY})"}
    return (
        f"{what} of {run} {show(result['mean_a'])} against {names.get(reference, reference)} "
        f"{show(result['mean_b'])}: {words.interval(result, delta)}"
    )


def _no_gain_loss(build: dict, run: str, extra: str = "") -> Judgement:
    label = measured_on(build)
    result, verdict, reason = single_runs(build, run, CROSS_ENTROPY, "top1", 1.0)
    if result is None:
        return Judgement("n/a", label, verdict, reason)
    measured = _loss_measured(result, run, CROSS_ENTROPY, "top1") + extra
    bound = words.points(NO_GAIN_POINTS, 0)
    return Judgement(measured, label, *no_gain(result, NO_GAIN_POINTS, words.points, bound))


@claim(
    claim="Loss (1): “Sadly this did not result in a better accuracy” (§3.3)",
    report="no number (§3.3)",
    compares=f"validation top-1: loss_expected_distance_squared against cross-entropy ({CROSS_ENTROPY})",
    rule=f"Reproduced when the 95 % interval of the difference ({BORROWED}) lies below "
    f"{words.points(NO_GAIN_POINTS, 0)}, the smallest gain the report counts as help (§3.2); not reproduced "
    "when it lies above zero; inconclusive when it holds zero and reaches that gain",
)
def judge_loss1_accuracy(build: dict) -> Judgement:
    return _no_gain_loss(build, "loss_expected_distance_squared")


@claim(
    claim="Loss (1): “it did improve the average distance between predicted and true geocells” (§3.3)",
    report="no number (§3.3)",
    compares="validation centroid-to-centroid mean error: loss_expected_distance_squared against "
    f"cross-entropy ({CROSS_ENTROPY})",
    rule=f"Reproduced when the 95 % interval of the difference ({BORROWED}) lies below zero; not reproduced "
    "above zero; inconclusive when it holds zero",
)
def judge_loss1_distance(build: dict) -> Judgement:
    label, run = measured_on(build), "loss_expected_distance_squared"
    result, verdict, reason = single_runs(
        build, run, CROSS_ENTROPY, "centroid_mean_km", -1.0, show=words.signed_km
    )
    if result is None:
        return Judgement("n/a", label, verdict, reason)
    return Judgement(_loss_measured(result, run, CROSS_ENTROPY, "centroid_mean_km"), label, verdict, reason)


@claim(
    claim="Loss (2), (1) + cross-entropy: “This led to better results” (§3.3)",
    report="no number (§3.3)",
    compares="validation top-1: loss_distance_plus_cross_entropy against loss (1) alone "
    "(loss_expected_distance_squared); beside it, against cross-entropy",
    rule="The reading: “better results” than loss (1), the run the report added cross-entropy to (“To keep a "
    "good accuracy”), in accuracy. Reproduced when the 95 % interval of the difference "
    f"({BORROWED}) lies above zero; not reproduced below zero; inconclusive when it holds zero. The same "
    "comparison with cross-entropy is shown, not judged",
)
def judge_loss2(build: dict) -> Judgement:
    label, run = measured_on(build), "loss_distance_plus_cross_entropy"
    result, verdict, reason = single_runs(build, run, "loss_expected_distance_squared", "top1", 1.0)
    if result is None:
        return Judgement("n/a", label, verdict, reason)
    measured = _loss_measured(result, run, "loss_expected_distance_squared", "top1")
    beside, beside_verdict, _ = single_runs(build, run, CROSS_ENTROPY, "top1", 1.0)
    if beside is not None:
        measured += (
            f"; against cross-entropy ({CROSS_ENTROPY}) {words.pct(beside['mean_b'])}: "
            f"{words.interval(beside, words.points)}, {better_words(beside_verdict)}"
        )
    return Judgement(measured, label, verdict, reason)


@claim(
    claim="Loss (3): “Truthfully, this did not help much either.” (§3.3)",
    report="no number (§3.3)",
    compares="validation top-1: loss_log_distance_plus_cross_entropy (equation (3) + cross-entropy, what "
    f"notebook 07 says ran) against cross-entropy ({CROSS_ENTROPY}); equation (3) alone beside it",
    rule=f"As claim 5: reproduced when the 95 % interval of the difference ({BORROWED}) lies below "
    f"{words.points(NO_GAIN_POINTS, 0)}; not reproduced above zero; inconclusive when it holds zero and "
    "reaches that gain",
)
def judge_loss3(build: dict) -> Judgement:
    extra = ""
    alone, _, _ = single_runs(build, "loss_log_distance", CROSS_ENTROPY, "top1", 1.0)
    if alone is not None:
        extra = f"; equation (3) alone (loss_log_distance) {words.pct(alone['mean_a'])}: " + words.interval(
            alone, words.points
        )
    return _no_gain_loss(build, "loss_log_distance_plus_cross_entropy", extra)


# ---------------------------------------------------------------------------------------------
# Claim 9: a frozen pretrained backbone, tuned as much as the fine-tuned base model


def _frozen_shortcut(build: dict) -> str:
    if has_run(build, "frozen_leak0") and not build["runs"].get("frozen_leak0", {}).get("pretrained"):
        return "not testable: frozen_leak0's backbone is not pretrained (frozen, it is random)"
    return leak0_pair(build, "frozen", "baseline", -1.0)


def _tuning_problem(build: dict, name: str) -> tuple[str, str]:
    """(what the frozen run's tuning was, why it cannot be judged or "")."""
    tuning = build["runs"][name].get("tuning")
    base = build["facts"].get("base_model_tuning_runs")
    if not isinstance(tuning, dict) or not words.finite(tuning.get("budget_runs")):
        return "", (
            f"run {name} records no tuning (summary.json key 'tuning'); the report tuned its frozen model "
            "(“even after tuning hyperparameters”): notebook 05 must tune it with the base model's budget"
        )
    told = (
        f"tuned over {tuning.get('grid', {})} ({words.plural(int(tuning['budget_runs']), 'run')}), "
        f"chose {tuning.get('chosen', {})}"
    )
    if not words.finite(base):
        return told, "no base_model_tuning_runs in facts.json (notebook 05): the budgets cannot be compared"
    if tuning["budget_runs"] < base:
        return told, (
            f"the frozen run got {words.plural(int(tuning['budget_runs']), 'tuning run')}, the fine-tuned "
            f"base model {int(base)}: not like with like; notebook 05 must tune it as much"
        )
    return f"{told}; the base model {words.plural(int(base), 'run')}", ""


@claim(
    claim="Frozen ViT: “it achieved 10% accuracy even after tuning hyperparameters” (§3.2)",
    report=f"{words.pct(published('frozen_top1'), 0)} ({section('frozen_top1')})",
    compares="validation top-1 of a run with a frozen pretrained backbone, tuned with the base model's "
    "budget: on photos against the report's 10 %; on other images against the fine-tuned base model (the "
    "report: 10 % against 29 %)",
    rule="Judged only when the frozen run (summary.json: freeze_backbone, pretrained) got at least the "
    "tuning runs the base model got (its 'tuning' against the fact base_model_tuning_runs); not testable "
    "when the backbone is not pretrained (frozen, it is random). On photos: reproduced when its top-1 is "
    "below 10 % beyond the noise or holds it in an interval no wider than "
    f"±{words.points(NO_GAIN_POINTS, 0)[1:]}, not reproduced when above it beyond the noise, inconclusive "
    "otherwise. On other images: reproduced when the 95 % interval of its difference from the base model's "
    "seeds lies below zero (the final runs' seed noise for the one run), not reproduced above zero, "
    "inconclusive when it holds zero",
    shortcut=_frozen_shortcut,
)
def judge_frozen(build: dict) -> Judgement:
    label = measured_on(build)
    frozen = sorted(name for name, summary in build["runs"].items() if summary.get("freeze_backbone"))
    frozen = ["frozen"] if "frozen" in frozen else [n for n in frozen if not n.endswith("_leak0")]
    if not frozen:
        if build["profile"].get("pretrained"):
            return Judgement(
                "no run with a frozen backbone", label, MISSING, "no run frozen (notebook 05 trains it)"
            )
        why = "the profile's backbone is not pretrained: frozen, it would be random (notebook 05)"
        return Judgement("no run with a frozen backbone", label, NOT_TESTABLE, why)
    name = frozen[0]
    if not build["runs"][name].get("pretrained"):
        return Judgement(
            name, label, NOT_TESTABLE, "the backbone is not pretrained here: frozen, it is random"
        )
    tuning, problem = _tuning_problem(build, name)
    if problem:
        return Judgement(f"{name} {tuning}".strip(), label, MISSING, problem)
    noise, reason = final_noise(build)
    if noise is None:
        return Judgement(name, label, MISSING, reason)
    if build["real_photos"]:
        result, reason = compare(build, [name], None, "top1", borrowed=noise, shift=published("frozen_top1"))
        if result is None:
            return Judgement(name, label, MISSING, reason)
        measured = (
            f"validation top-1 of {name} {words.pct(result['mean_a'])} ({tuning}) against the report's "
            f"{words.pct(published('frozen_top1'), 0)}: {words.interval(result, words.points)}"
        )
        verdict = level(
            result,
            -1.0,
            NO_GAIN_POINTS,
            words.points,
            f"the report's {words.pct(published('frozen_top1'), 0)}",
        )
        return Judgement(measured, label, *verdict)
    # 10 % is a level on Street View photos; what carries over to other images is the report's
    # contrast: frozen, the pretrained backbone fell far short of fine-tuning it (10 % against 29 %)
    fine_tuned = seed_runs(build, "baseline")
    if not fine_tuned:
        return Judgement(name, label, MISSING, "needs the base model's runs (notebooks 05 and 06)")
    result, reason = compare(build, [name], fine_tuned, "top1", borrowed=noise)
    if result is None:
        return Judgement(name, label, MISSING, reason)
    measured = (
        f"validation top-1 of {name} {words.pct(result['mean_a'])} ({tuning}) against the fine-tuned base "
        f"model {words.pct(result['mean_b'])} ({len(fine_tuned)} seeds): "
        f"{words.interval(result, words.points)}; the report {words.pct(published('frozen_top1'), 0)} "
        f"against {words.pct(published('baseline_top1'), 0)}"
    )
    return Judgement(measured, label, *effect(result, -1.0, words.points))
