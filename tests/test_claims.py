"""Every claim of the scorecard, on hand-made builds: one where it must say "reproduced", one
where it must say "not reproduced", one where it must say "inconclusive", and "by design" where
the workbook built it so.

Each case starts from :func:`tests.report_builds.synthetic_build` (every rule reproduced), copied
from one built per session, changes one thing, and reads the verdict of one claim. Claims about
one absolute number (9 on photos, 10, 11) start from a mapillary build of real-photo rows.
Claim 16 has no "reproduced" case: every build that can test it renders its scenes, and there
the new day's skies are drawn afresh by construction ("by design").
"""

import os
import shutil

import numpy as np
import pytest

from helpers import metrics, report
from tests.report_builds import (
    add_frozen,
    add_loss,
    card_of,
    leak0_runs,
    photo_build,
    record_run,
    record_runs,
    synthetic_build,
    verdicts,
    write_sky_attention,
    write_summary,
)


@pytest.fixture(scope="session")
def synthetic_template(tmp_path_factory):
    """One synthetic build per test session (smoke and default profiles), copied by each test."""
    folder = tmp_path_factory.mktemp("report-template")
    before = os.environ.get("WORKBOOK_BUILD_DIR")
    os.environ["WORKBOOK_BUILD_DIR"] = str(folder)
    try:
        synthetic_build("smoke")
        synthetic_build("default")
    finally:
        if before is None:
            del os.environ["WORKBOOK_BUILD_DIR"]
        else:
            os.environ["WORKBOOK_BUILD_DIR"] = before
    return folder


@pytest.fixture
def synthetic(isolated_build, synthetic_template):
    """A fresh copy of the synthetic builds in this test's build folder."""
    shutil.copytree(synthetic_template, isolated_build, dirs_exist_ok=True)
    return "smoke"


def verdict_of(profile: str, claim: int):
    """(verdict, reason) of claim ``claim`` (1-16) on ``profile``'s build (that claim alone)."""
    build = report.load_build(profile)
    assert not build["damaged"], build["damaged"]
    found = report.CLAIMS[claim - 1].judge(build)
    return found.verdict, found.reason


def facts(**values):
    return lambda p: metrics.record_facts(p, **values)


def frozen_run(top1, budget=4, base_budget=4):
    return lambda p: add_frozen(p, top1, budget=budget, base_budget=base_budget)


def both(*changes):
    def apply(profile):
        for change in changes:
            change(profile)

    return apply


# (claim, verdict it must give, what the hand-made build changes, why)
SYNTHETIC_CASES = [
    (1, "reproduced", None, "a 41-point gap over 3 seeds"),
    (
        1,
        "not reproduced",
        lambda p: record_runs(p, "baseline", [0.10, 0.11, 0.12], train_top1=[0.05, 0.06, 0.07]),
        "training accuracy below validation beyond the noise",
    ),
    (
        1,
        "inconclusive",
        lambda p: record_runs(p, "baseline", [0.10, 0.30, 0.50], train_top1=[0.20, 0.30, 0.40]),
        "a gap of 0 on average, 20 points apart between seeds",
    ),
    (
        1,
        "inconclusive",
        lambda p: record_runs(p, "baseline", [0.10, 0.10, 0.10], train_top1=[0.11, 0.11, 0.11]),
        "a 1-point gap identical over 3 seeds (issue 21: the old error, sd / sqrt(n), was 0)",
    ),
    (2, "reproduced", None, "+10 points against the report's +6"),
    (2, "not reproduced", lambda p: record_runs(p, "augment", [0.01, 0.02, 0.03]), "the opposite sign"),
    (
        2,
        "not reproduced",
        lambda p: record_runs(p, "augment", [0.13, 0.14, 0.15]),
        "+3 points beyond the noise, but short of the report's +6 beyond it",
    ),
    (
        2,
        "inconclusive",
        lambda p: record_runs(p, "augment", [0.05, 0.15, 0.25]),
        "+4 points with a 10-point seed spread: holds zero and the report's +6",
    ),
    (3, "reproduced", None, "+9 points against the report's +2"),
    (3, "not reproduced", lambda p: record_runs(p, "final", [0.10, 0.11, 0.12]), "final below augment"),
    (
        3,
        "inconclusive",
        lambda p: record_runs(p, "final", [0.21, 0.20, 0.23]),
        "final = augment within the noise, which also holds the report's +2 (issue 29: 'within noise' is not "
        "'not reproduced')",
    ),
    (4, "reproduced", None, "+19 points against the report's +8"),
    (4, "not reproduced", lambda p: record_runs(p, "final", [0.01, 0.02, 0.03]), "final below baseline"),
    (4, "inconclusive", lambda p: record_runs(p, "final", [0.05, 0.20, 0.35]), "a 15-point seed spread"),
    (5, "reproduced", None, "as accurate as cross-entropy, a 2-point gain ruled out"),
    (5, "not reproduced", lambda p: add_loss(p, "expected_distance_squared", 0.40), "10 points better"),
    (
        5,
        "inconclusive",
        both(
            lambda p: record_runs(p, "final", [0.10, 0.20, 0.30]),
            lambda p: add_loss(p, "expected_distance_squared", 0.22),
        ),
        "12 points above cross-entropy with a 10-point seed spread (issue 21: the old rule said reproduced)",
    ),
    (6, "reproduced", None, "20 km closer than cross-entropy"),
    (6, "not reproduced", lambda p: add_loss(p, "expected_distance_squared", 0.30, km=60.0), "20 km farther"),
    (
        6,
        "inconclusive",
        lambda p: record_runs(p, "final", [0.30, 0.3025, 0.305], centroid_km=[45.0, 60.0, 75.0]),
        "5 km closer against a 15 km seed spread in the distance",
    ),
    (7, "reproduced", None, "15 points above loss (1)"),
    (
        7,
        "not reproduced",
        lambda p: add_loss(p, "distance_plus_cross_entropy", 0.20),
        "10 points below loss (1)",
    ),
    (7, "inconclusive", lambda p: add_loss(p, "distance_plus_cross_entropy", 0.31), "1 point above loss (1)"),
    (8, "reproduced", None, "as accurate as cross-entropy"),
    (8, "not reproduced", lambda p: add_loss(p, "log_distance_plus_cross_entropy", 0.36), "6 points better"),
    (
        8,
        "inconclusive",
        both(
            lambda p: record_runs(p, "final", [0.10, 0.20, 0.30]),
            lambda p: add_loss(p, "log_distance_plus_cross_entropy", 0.22),
        ),
        "12 points above with a 10-point seed spread",
    ),
    (9, "reproduced", frozen_run(0.02), "frozen at 2 % against the fine-tuned 10-12 %"),
    (9, "not reproduced", frozen_run(0.30), "frozen above the fine-tuned model beyond the noise"),
    (
        9,
        "inconclusive",
        both(lambda p: record_runs(p, "final", [0.10, 0.20, 0.30]), frozen_run(0.08)),
        "frozen 3 points below, against a 10-point seed spread",
    ),
    (
        9,
        "missing",
        frozen_run(0.02, budget=1, base_budget=4),
        "the frozen run got 1 tuning run, the base model 4: not like with like (issue 29)",
    ),
    (12, "reproduced", None, "27 % of the random cell's error, the report 41 %"),
    (
        12,
        "not reproduced",
        lambda p: record_runs(p, "final", [0.30, 0.30, 0.31], centroid_km=[100.0, 101.0, 102.0]),
        "below a random cell, but at 67 % of it, not the report's 41 %",
    ),
    (
        12,
        "not reproduced",
        lambda p: record_runs(p, "final", [0.30, 0.30, 0.31], centroid_km=[150.0, 151.0, 152.0]),
        "no better than a random cell",
    ),
    (
        12,
        "inconclusive",
        lambda p: record_runs(p, "final", [0.30, 0.30, 0.31], centroid_km=[20.0, 80.0, 140.0]),
        "a 60 km seed spread holds both the random cell and the report's share",
    ),
    (13, "reproduced", None, "40 % of 400 errors to neighbours, 5 % by chance"),
    (
        13,
        "not reproduced",
        facts(neighbour_error_share=0.01, neighbour_error_chance=0.05, test_errors=1000),
        "1 % of 1,000 errors to neighbours: avoided, beyond chance",
    ),
    (
        13,
        "inconclusive",
        facts(neighbour_error_share=0.06, neighbour_error_chance=0.05, test_errors=400),
        "6 % against 5 % by chance over 400 errors",
    ),
    (14, "reproduced", None, "ρ = -0.3, p = 0.001"),
    (
        14,
        "not reproduced",
        facts(area_accuracy_spearman=0.4, area_accuracy_p=0.01),
        "larger cells more accurate",
    ),
    (14, "inconclusive", facts(area_accuracy_spearman=-0.1, area_accuracy_p=0.3), "no significant relation"),
    (15, "reproduced", None, "60 % of the attention on the sky against 30 % for the control and the pixels"),
    (
        15,
        "not reproduced",
        lambda p: write_sky_attention(p, shortcut=0.5, control=0.55),
        "more than the sky's pixel share, but less than the control (issue 21: circular)",
    ),
    (
        15,
        "not reproduced",
        both(lambda p: write_sky_attention(p, shortcut=0.5, control=0.3), facts(sky_pixel_share=0.7)),
        "more than the control, but below the sky's share of the pixels",
    ),
    (
        15,
        "not reproduced",
        lambda p: write_sky_attention(p, shortcut=0.6, control=0.3, pixels=0.7),
        "more than the control, but below each image's own share of sky pixels",
    ),
    (
        15,
        "inconclusive",
        lambda p: write_sky_attention(p, shortcut=0.31, control=0.30),
        "one point more than the control over 100 images",
    ),
    (16, "by design", None, "20 points lost on a new day: the renderer redraws the skies"),
    (16, "not reproduced", facts(new_day_drop_leak_1=-0.1), "the shortcut model loses less"),
    (16, "inconclusive", facts(new_day_drop_leak_1=0.005), "half a point, inside the seed noise"),
]


@pytest.mark.parametrize(
    ("claim", "verdict", "change", "case"),
    SYNTHETIC_CASES,
    ids=[f"{c}-{v}: {w[:50]}" for c, v, _, w in SYNTHETIC_CASES],
)
def test_each_claim_says_what_its_rule_must(synthetic, claim, verdict, change, case):
    if change is not None:
        change(synthetic)
    found, reason = verdict_of(synthetic, claim)
    assert found == verdict, f"{case}: {reason}"
    assert reason  # every verdict comes with its reason


def test_an_inconclusive_verdict_prints_the_smallest_effect_and_what_would_settle_it(synthetic):
    record_runs(synthetic, "final", [0.21, 0.20, 0.23])  # final = augment: claim 3
    card = card_of(synthetic)
    reason = card.loc[3, "reason"]
    assert card.loc[3, "verdict"] == "inconclusive"
    assert "holds zero" in reason and "smallest difference it could call beyond the noise is ±" in reason
    assert "the report's +2.0 points lies inside it" in reason
    assert "times the seeds" in reason  # what would settle it


def test_overfitting_is_by_design_where_the_profile_was_chosen_for_the_gap(synthetic):
    verdict, reason = verdict_of("default", 1)
    assert verdict == "by design"
    assert "learning_rate 0.003, images_per_cell 25, epochs 10" in reason and "helpers/config.py" in reason
    assert verdict_of("smoke", 1)[0] == "reproduced"  # the same rows, settings chosen for nothing


def test_the_frozen_run_is_judged_only_with_the_base_model_s_tuning_budget(synthetic):
    record_run(synthetic, "frozen", 0.02)
    write_summary(synthetic, "frozen", freeze_backbone=True, pretrained="workbook:street-mae-vit")
    verdict, reason = verdict_of(synthetic, 9)
    assert verdict == "missing" and "records no tuning" in reason  # untuned: not the report's experiment
    write_summary(synthetic, "frozen", pretrained=None)
    assert verdict_of(synthetic, 9)[0] == "not testable"  # frozen and random
    add_frozen(synthetic, 0.02, budget=4, base_budget=4)
    card = card_of(synthetic)
    assert card.loc[9, "verdict"] == "reproduced"
    assert (
        "2 runs" not in card.loc[9, "this build"]
        and "chose {'learning_rate': 0.003}" in card.loc[9, "this build"]
    )


def test_claim_8_is_equation_3_with_cross_entropy_and_shows_equation_3_alone(synthetic):
    add_loss(synthetic, "log_distance", 0.45)  # pure equation (3) helps: not what ran in the report
    card = card_of(synthetic)
    assert card.loc[8, "verdict"] == "reproduced"
    assert "loss_log_distance_plus_cross_entropy" in card.loc[8, "this build"]
    assert "equation (3) alone (loss_log_distance) 45.0 %" in card.loc[8, "this build"]


def test_claim_7_states_its_reading_and_shows_cross_entropy_too(synthetic):
    card = card_of(synthetic)
    assert "The reading: “better results” than loss (1)" in card.loc[7, "rule"]
    assert "against cross-entropy (final_seed0) 30.0 %" in card.loc[7, "this build"]
    assert "better beyond the noise" in card.loc[7, "this build"]


def test_claim_12_puts_the_report_s_150_km_beside_the_build_s_own_random_cell(synthetic):
    measured = card_of(synthetic).loc[12, "this build"]
    assert "41 km against 150 km for a random cell here" in measured
    assert "the report's random cell: 150 km" in measured


def test_the_accuracy_claims_show_the_same_comparison_at_leak_0(synthetic):
    card = card_of(synthetic)
    assert set(card.loc[[1, 2, 3, 4, 9], "leak 0"].str[:7]) == {"not run"}  # named, never guessed
    assert set(card.drop([1, 2, 3, 4, 9])["leak 0"]) == {"—"}
    leak0_runs(synthetic, baseline=0.10, augment=0.10, final=0.30, frozen=0.02)
    card = card_of(synthetic)
    assert "augment_leak0 10.0 % against baseline_leak0 10.0 %" in card.loc[2, "leak 0"]
    assert "one seed each at session_leak 0" in card.loc[2, "leak 0"]
    assert card.loc[2, "leak 0"].endswith("not as the report")  # the gain is gone without the shortcut
    assert card.loc[3, "leak 0"].endswith("as the report")
    assert "baseline_leak0 gap" in card.loc[1, "leak 0"]
    assert "frozen_leak0 2.0 % against baseline_leak0 10.0 %" in card.loc[9, "leak 0"]
    assert card.loc[2, "verdict"] == "reproduced"  # the verdict itself is the build's own leak's


def test_photos_have_no_leak_to_switch_off(isolated_build):
    card = card_of(photo_build())
    assert card.loc[2, "leak 0"].startswith("no leak to switch off")


# the claims about one absolute number, on real photos (mapillary)
PHOTO_CASES = [
    (9, "reproduced", {}, "frozen at 10 %, pinned within 2 points"),
    (9, "reproduced", {"frozen": 0.05}, "frozen below 10 % beyond the noise"),
    (9, "not reproduced", {"frozen": 0.30}, "far above 10 %"),
    (9, "inconclusive", {"final": (0.27, 0.37, 0.47), "frozen": 0.11}, "a 10-point seed spread"),
    (10, "reproduced", {}, "37 % within 2 points"),
    (10, "not reproduced", {"final": (0.20, 0.21, 0.22)}, "below 37 % beyond the noise"),
    (10, "inconclusive", {"final": (0.30, 0.37, 0.44)}, "holds 37 %, but 7 points apart between seeds"),
    # the report's 62 km is centroid to centroid: a run 61 km from centroids and 66 km from the photos
    # reproduces it (issue 21: the old rule compared the photo distance, whose floor is above 0)
    (11, "reproduced", {}, "61 km within a tenth of 62 km"),
    (11, "not reproduced", {"centroid_km": (120.0, 121.0, 122.0)}, "twice the report's distance"),
    (11, "inconclusive", {"centroid_km": (40.0, 62.0, 84.0)}, "22 km apart between seeds"),
]


@pytest.mark.parametrize(("claim", "verdict", "change", "case"), PHOTO_CASES, ids=[c[3] for c in PHOTO_CASES])
def test_claims_about_one_number_on_photos(isolated_build, claim, verdict, change, case):
    profile = photo_build(**change)
    card = card_of(profile)
    assert card.loc[claim, "verdict"] == verdict, f"{case}: {card.loc[claim, 'reason']}"
    if claim == 11:
        assert "to the photo's own location" in card.loc[11, "this build"]  # both distances shown
    if claim == 10:
        assert "1 km squares" in card.loc[10, "data"]  # the split differs from the report's, and says so


def test_photos_carry_no_sky_masks_and_no_second_day(isolated_build):
    found = verdicts(photo_build())
    assert found[15] == found[16] == "not testable"
    assert found[9] == "reproduced"  # the frozen run of photo_build, tuned as the base model


def neighbour_simulation(seed: int, to_neighbours: float) -> dict:
    """Notebook 08's facts for a simulated test split: 129 cells on a ring (each bordering the four
    nearest), 4 test images per cell, 30 % right; of the wrong answers, ``to_neighbours`` go to a
    bordering cell, the rest to any other cell uniformly (``to_neighbours`` None: all uniformly)."""
    rng = np.random.default_rng(seed)
    n_cells = 129
    adjacency = np.zeros((n_cells, n_cells), dtype=bool)
    for step in (1, 2):
        adjacency[np.arange(n_cells), (np.arange(n_cells) + step) % n_cells] = True
    adjacency |= adjacency.T
    true = np.repeat(np.arange(n_cells), 4)
    predicted = true.copy()
    wrong = rng.random(len(true)) >= 0.3
    for image in np.flatnonzero(wrong):
        cell = true[image]
        if to_neighbours is not None and rng.random() < to_neighbours:
            predicted[image] = rng.choice(np.flatnonzero(adjacency[cell]))
        else:
            predicted[image] = rng.choice(np.delete(np.arange(n_cells), cell))
    found = metrics.neighbour_error_share(true, predicted, adjacency)
    return {
        "neighbour_error_share": found["to_neighbours"],
        "neighbour_error_chance": found["chance"],
        "test_errors": found["errors"],
        "neighbour_pairs": found["neighbour_pairs"],
        "neighbour_pairs_higher": found["neighbour_pairs_higher"],
    }


def test_claim_13_passes_with_90_percent_neighbour_errors_and_fails_uniform_ones(synthetic):
    """Issue 29: at about 4 test images per cell, a build whose errors go to neighbouring cells 90 %
    of the time (about 29 times chance) still got "not reproduced" in every draw from the old rule
    (neighbouring pairs confused more than non-neighbours, by a sign test). The share of errors
    against its chance share, by a binomial test, sees it; errors spread uniformly never pass."""
    for seed in range(5):
        metrics.record_facts(synthetic, **neighbour_simulation(seed, 0.9))
        assert verdict_of(synthetic, 13)[0] == "reproduced", seed
        metrics.record_facts(synthetic, **neighbour_simulation(seed, None))
        verdict, reason = verdict_of(synthetic, 13)
        assert verdict in {"inconclusive", "not reproduced"}, (seed, reason)


def test_a_row_cut_inside_a_column_is_named_not_judged(synthetic):
    """Issue 30: a per-image table cut inside its ``correct`` column crashed the whole scorecard."""
    assert report.load_build(synthetic)["damaged"] == []
    table = metrics.results_path(synthetic).parents[1] / "runs" / "augment_seed1" / "predictions_val.csv"
    lines = table.read_text().splitlines()
    header, row = lines[0].split(","), lines[len(lines) // 2]
    inside = len(",".join(row.split(",")[: header.index("correct")])) + 1  # where its "correct" starts
    table.write_text("\n".join(lines[: len(lines) // 2]) + "\n" + row[:inside])  # a kill -9 mid-row
    card = card_of(synthetic)
    assert set(card["verdict"]) == {"damaged"}
    assert all(str(table) in reason and "notebook 06" in reason for reason in card["reason"])
    assert set(card["this build"]) == {"not judged"}
    blocks = report.document(synthetic)
    assert blocks[0][0] == "paragraph" and blocks[0][1].startswith("This build is damaged")
    assert any(str(table) in item for item in blocks[1][1])


def test_a_truncated_summary_is_named_with_how_to_rebuild_it(synthetic):
    """Issue 30: a truncated summary.json raised a JSONDecodeError naming no file."""
    summary = metrics.results_path(synthetic).parents[1] / "runs" / "final_seed1" / "summary.json"
    summary.write_text(summary.read_text()[:20])
    card = card_of(synthetic)
    assert set(card["verdict"]) == {"damaged"}
    assert all(str(summary) in reason for reason in card["reason"])
