"""The regenerated report: the scorecard's verdicts on hand-made builds, and both renderings
(HTML through the Jinja2 template, PDF through Typst).

Every claim's rule is shown a hand-made build where it must say "reproduced" and one where it
must not (:data:`MUST_FAIL`), including the counterexamples of issue 21 that the old rules let
through.
"""

import json
import re
import shutil
import subprocess
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import typst
from markupsafe import escape

from helpers import config, experiments, metrics, plots, report, report_html, report_typst

DATA = "synthetic images"  # experiments.data_label("smoke")
PHOTOS = "mapillary images"  # experiments.data_label("mapillary")
N_IMAGES = 400  # validation images of every hand-made run


def write_predictions(profile, experiment, top1, centroid_km=80.0, train_top1=None, offset=0, n=N_IMAGES):
    """Per-image files of one run: ``round(top1 * n)`` validation images right (from ``offset`` on,
    so seeds differ in which images they get), wrong ones ``centroid_km`` apart on average."""
    folder = config.output_dir(profile, "runs") / experiment
    folder.mkdir(parents=True, exist_ok=True)
    right = np.zeros(n, dtype=int)
    right[(offset + np.arange(round(top1 * n))) % n] = 1
    wrong = n - right.sum()
    centroid = np.where(right == 1, 0.0, centroid_km * n / wrong if wrong else 0.0)
    val = pd.DataFrame(
        {
            "image_path": [f"val/{i}.png" for i in range(n)],
            "cell": 0,
            "predicted": 1 - right,
            "correct": right,
            "in_top3": right,
            "error_km": centroid + 5.0,
            "centroid_km": centroid,
            "random_centroid_km": 150.0,
        }
    )
    experiments.write_predictions(folder, "val", val)
    if train_top1 is not None:
        train_right = np.zeros(2 * n, dtype=int)
        train_right[(offset + np.arange(round(train_top1 * 2 * n))) % (2 * n)] = 1
        train = pd.DataFrame(
            {"image_path": [f"train/{i}.png" for i in range(2 * n)], "cell": 0, "predicted": 1 - train_right}
        ).assign(correct=train_right)
        experiments.write_predictions(folder, "train", train)
    return float(val["correct"].mean()), float(val["centroid_km"].mean())


def record_run(profile, experiment, top1, data=DATA, seed=0, centroid_km=80.0, train_top1=None, offset=0):
    """A validation row of the results table and the per-image files behind it."""
    top1, centroid = write_predictions(profile, experiment, top1, centroid_km, train_top1, offset)
    metrics.record_result(
        profile,
        experiment,
        data=data,
        split="val",
        seed=seed,
        top1=top1,
        train_top1=train_top1 if train_top1 is not None else top1,
        mean_km=centroid + 5.0,
        centroid_mean_km=centroid,
    )


def record_runs(profile, name, top1, train_top1=None, centroid_km=None, data=DATA):
    """Runs ``<name>_seed<k>`` (``name`` alone when it is notebook 05's "baseline", seed 0)."""
    for seed, value in enumerate(top1):
        experiment = "baseline" if name == "baseline" and seed == 0 else f"{name}_seed{seed}"
        record_run(
            profile,
            experiment,
            value,
            data=data,
            seed=seed,
            centroid_km=(centroid_km or [80.0] * len(top1))[seed],
            train_top1=(train_top1 or [None] * len(top1))[seed] if train_top1 else value,
            offset=7 * seed,
        )


def write_summary(profile, name, **settings):
    folder = config.output_dir(profile, "runs") / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"name": name, **settings}))


def synthetic_build(profile="smoke"):
    """A smoke build in which every claim has its rows, and each rule says "reproduced"."""
    metrics.record_result(
        profile, "random cell", data="report locations", split="all", top1=1 / 129, mean_km=136.0
    )
    record_runs(profile, "baseline", [0.10, 0.11, 0.12], train_top1=[0.50, 0.52, 0.54])
    record_runs(profile, "augment", [0.20, 0.21, 0.22])  # +10 points
    record_runs(profile, "betas", [0.10, 0.12, 0.11])
    record_runs(profile, "warmup", [0.11, 0.10, 0.12])
    record_runs(profile, "final", [0.30, 0.3025, 0.305], centroid_km=[40.0, 41.0, 42.0])  # +9 over augment
    # one seed each: loss (1) as accurate as cross-entropy and closer; loss (2) more accurate than (1)
    for loss, top1, km in (
        ("expected_distance_squared", 0.30, 20.0),
        ("distance_plus_cross_entropy", 0.45, 40.0),
        ("log_distance", 0.30, 40.0),
    ):
        record_run(profile, f"loss_{loss}", top1, centroid_km=km)
        write_summary(profile, f"loss_{loss}", loss=loss)
    metrics.record_result(profile, "best run (final_seed0)", data=DATA, split="test", top1=0.3, mean_km=45.0)
    metrics.record_facts(
        profile,
        neighbour_error_share=0.4,
        neighbour_error_chance=0.05,
        test_errors=400,
        neighbour_pairs=100,
        neighbour_pairs_higher=80,
        area_accuracy_spearman=-0.3,
        area_accuracy_p=0.001,
        cells_tested=129,
        sky_attention_share=0.5,
        sky_pixel_share=0.3,
        sky_attention_leak_0=0.3,
        sky_attention_leak_1=0.6,
        new_day_drop_leak_1=0.2,
        new_day_drop_leak_0=0.0,
    )
    return profile


def photo_build(final=(0.37, 0.37, 0.38), centroid_km=(60.0, 61.0, 62.0), frozen=0.10):
    """A mapillary build (real photos) for the claims about one absolute number."""
    record_runs("mapillary", "final", list(final), centroid_km=list(centroid_km), data=PHOTOS)
    record_run("mapillary", "frozen", frozen, data=PHOTOS)
    write_summary("mapillary", "frozen", freeze_backbone=True, pretrained="hf://google/vit-base-patch16-224")
    return "mapillary"


@pytest.fixture
def complete_build(isolated_build):
    return synthetic_build()


def verdicts(profile):
    card = report.scorecard(profile)
    return dict(zip(card["claim"].str.split(".").str[0].astype(int), card["verdict"], strict=True))


def test_every_claim_gets_the_verdict_of_its_rule(complete_build):
    found = verdicts(complete_build)
    assert len(found) == len(report.CLAIMS) == 16
    assert {n: v for n, v in found.items() if v != "reproduced"} == {
        9: "not testable",  # no run with a frozen backbone
        10: "not testable",  # absolute numbers on synthetic images
        11: "not testable",
    }


def test_every_row_names_its_two_quantities_and_quotes_the_report(complete_build):
    card = report.scorecard(complete_build).replace("\u00a0", " ", regex=True)  # no-break spaces
    card = card.set_index(card["claim"].str.split(".").str[0].astype(int))
    assert set(card["verdict"]) <= set(report.VERDICTS)
    assert (card["data"].str.startswith("smoke: synthetic images")).all()
    assert all(" against " in text for text in card["compares"])  # two quantities, named
    measured = card.loc[card["verdict"] == "reproduced", "this build"]
    assert all(" against " in text for text in measured)  # and both measured
    assert all(re.search(r"“.+”", claim) for claim in card["claim"])  # the report's own words
    assert "29 % → 35 %" in card.loc[2, "report"] and "§3.2" in card.loc[2, "report"]
    assert "augment 21.0 % against baseline 11.0 %" in card.loc[2, "this build"]
    assert "loss_expected_distance_squared" in card.loc[5, "this build"]
    assert "41 km against 150 km for a random cell" in card.loc[12, "this build"]
    assert all(rule and "Rule" not in rule for rule in card["rule"])


def add_loss(profile, loss, top1, km=40.0):
    record_run(profile, f"loss_{loss}", top1, centroid_km=km)


# (claim, what the hand-made build changes, why the rule must not say "reproduced")
MUST_FAIL = [
    (
        1,
        lambda p: record_runs(p, "baseline", [0.10, 0.10, 0.10], train_top1=[0.11, 0.11, 0.11]),
        "a 1-point gap identical over 3 seeds (issue 21: the old error, sd / sqrt(n), was 0)",
    ),
    (
        1,
        lambda p: record_runs(p, "baseline", [0.10, 0.30, 0.50], train_top1=[0.20, 0.30, 0.40]),
        "a gap of 0 on average",
    ),
    (2, lambda p: record_runs(p, "augment", [0.12, 0.13, 0.14]), "+2 points against seeds and 400 images"),
    (2, lambda p: record_runs(p, "augment", [0.01, 0.02, 0.03]), "the opposite sign"),
    (3, lambda p: record_runs(p, "final", [0.21, 0.20, 0.22]), "final = augment"),
    (4, lambda p: record_runs(p, "final", [0.10, 0.12, 0.11]), "final = baseline"),
    (
        5,
        lambda p: (
            record_runs(p, "final", [0.10, 0.20, 0.30]),
            add_loss(p, "expected_distance_squared", 0.22),
        ),
        "12 points above cross-entropy with a 10-point seed spread (issue 21: the old rule said reproduced)",
    ),
    (5, lambda p: add_loss(p, "expected_distance_squared", 0.40), "10 points better, beyond the noise"),
    (6, lambda p: add_loss(p, "expected_distance_squared", 0.30, km=40.0), "no closer than cross-entropy"),
    (7, lambda p: add_loss(p, "distance_plus_cross_entropy", 0.30), "no more accurate than loss (1)"),
    (
        8,
        lambda p: (record_runs(p, "final", [0.10, 0.20, 0.30]), add_loss(p, "log_distance", 0.22)),
        "12 points above with a 10-point seed spread",
    ),
    (8, lambda p: add_loss(p, "log_distance", 0.36), "6 points better, beyond the noise"),
    (
        12,
        lambda p: record_runs(p, "final", [0.30, 0.30, 0.31], centroid_km=[100.0, 101.0, 102.0]),
        "below a random cell, but at 67 % of it, not the report's 41 %",
    ),
    (
        12,
        lambda p: record_runs(p, "final", [0.30, 0.30, 0.31], centroid_km=[150.0, 151.0, 152.0]),
        "no better than a random cell",
    ),
    (
        13,
        lambda p: metrics.record_facts(
            p,
            neighbour_error_share=0.067,
            neighbour_error_chance=0.03,
            neighbour_pairs=100,
            neighbour_pairs_higher=20,
        ),
        "6.7 % of errors to neighbours, twice chance, but few pairs confused more (issue 21)",
    ),
    (
        13,
        lambda p: metrics.record_facts(p, neighbour_pairs=100, neighbour_pairs_higher=58),
        "more than half the pairs, but within chance (sign test)",
    ),
    (
        14,
        lambda p: metrics.record_facts(p, area_accuracy_spearman=0.4, area_accuracy_p=0.01),
        "larger cells more accurate",
    ),
    (
        14,
        lambda p: metrics.record_facts(p, area_accuracy_spearman=-0.1, area_accuracy_p=0.3),
        "no significant relation",
    ),
    (
        15,
        lambda p: metrics.record_facts(
            p, sky_attention_share=0.5, sky_pixel_share=0.3, sky_attention_leak_0=0.55
        ),
        "more than the sky's pixel share, but less than the control (issue 21: circular)",
    ),
    (16, lambda p: metrics.record_facts(p, new_day_drop_leak_1=0.005), "half a point, inside the seed noise"),
]


@pytest.mark.parametrize(("claim", "change", "case"), MUST_FAIL, ids=[f"{c}: {w}" for c, _, w in MUST_FAIL])
def test_each_rule_fails_when_it_should(isolated_build, claim, change, case):
    profile = synthetic_build()
    assert verdicts(profile)[claim] == "reproduced"  # the same build, before the change
    change(profile)
    assert verdicts(profile)[claim] == "not reproduced", case


# the claims about one absolute number, on real photos (mapillary)
PHOTO_CASES = [
    (9, {}, "reproduced"),
    (9, {"frozen": 0.30}, "not reproduced"),  # far from 10 %
    (10, {}, "reproduced"),
    (10, {"final": (0.20, 0.21, 0.22)}, "not reproduced"),  # below 37 % beyond the noise
    # the report's 62 km is centroid to centroid: a run 60 km from centroids and 65 km from the photos
    # reproduces it (issue 21: the old rule compared the photo distance, whose floor is above 0)
    (11, {}, "reproduced"),
    (11, {"centroid_km": (120.0, 121.0, 122.0)}, "not reproduced"),
]


@pytest.mark.parametrize(("claim", "change", "verdict"), PHOTO_CASES)
def test_claims_about_one_number_on_photos(isolated_build, claim, change, verdict):
    profile = photo_build(**change)
    assert verdicts(profile)[claim] == verdict
    card = report.scorecard(profile).replace("\u00a0", " ", regex=True)
    if claim == 11:
        assert "to the photo's own location" in card.loc[10, "this build"]  # both distances shown
    if claim == 10:
        assert "1 km squares" in card.loc[9, "data"]  # the split differs from the report's, and says so


def test_missing_rows_say_missing_and_untestable_claims_say_so(isolated_build):
    assert set(verdicts("smoke").values()) == {"missing", "not testable"}
    metrics.record_result("smoke", "baseline", data=DATA, split="val", top1=0.1, train_top1=0.9)
    found = verdicts("smoke")
    assert found[1] == "missing"  # one seed gives no noise to judge the gap against
    assert found[9] == "not testable"  # no run with a frozen backbone
    metrics.record_facts("smoke", area_accuracy_spearman=float("nan"), area_accuracy_p=float("nan"))
    assert verdicts("smoke")[14] == "not testable"  # every cell equally accurate: nothing to rank


def test_runs_without_per_image_predictions_are_missing_not_judged(complete_build):
    for seed in range(3):
        experiments.predictions_path("smoke", f"augment_seed{seed}").unlink()
    card = report.scorecard("smoke")
    assert card.loc[1, "verdict"] == "missing" and "per-image" in card.loc[1, "why"]


def test_a_frozen_backbone_on_synthetic_images_is_judged_against_fine_tuning(complete_build):
    record_run("smoke", "frozen", 0.02)
    write_summary("smoke", "frozen", freeze_backbone=True, pretrained=None)
    assert verdicts("smoke")[9] == "not testable"  # a frozen random backbone is not the report's experiment
    write_summary("smoke", "frozen", freeze_backbone=True, pretrained="workbook:street-mae-vit")
    card = report.scorecard("smoke").replace("\u00a0", " ", regex=True)
    assert card.loc[8, "verdict"] == "reproduced"  # 2 % against the base model's 10-12 %
    assert "against the fine-tuned base model" in card.loc[8, "this build"]
    record_run("smoke", "frozen", 0.11)  # as accurate as fine-tuning: the report's contrast is gone
    assert verdicts("smoke")[9] == "not reproduced"


def test_photos_carry_no_sky_masks_and_no_second_day(isolated_build):
    found = verdicts(photo_build())
    assert found[15] == found[16] == "not testable"


def fake_figure(profile, name, size=(8, 3)):
    fig, ax = plt.subplots(figsize=size)
    ax.plot([0, 1], [0, 1])
    plots.save_figure(fig, config.output_dir(profile, "figures") / name)
    plt.close(fig)


LONG_NAME = "loss_expected_distance_squared"


@pytest.fixture
def illustrated_build(complete_build):
    """The complete build with figures (one wide, one tall), a map and a row beyond the report."""
    for name, size in (
        ("fig01_locations_per_municipality.png", (8, 3)),
        ("fig02_geocells_voronoi.png", (5, 6)),
        ("fig08_confusion.png", (7, 6)),
        ("fig08b_accuracy_vs_area.png", (12, 3)),
        ("fig11a_retrieval.png", (8, 3)),
    ):
        fake_figure(complete_build, name, size)
    (config.output_dir(complete_build, "maps") / "08_predictions.html").write_text("<html></html>")
    metrics.record_result(
        complete_build, "beyond: nearest neighbour", data=DATA, split="test", top1=0.3, notes="beyond"
    )
    return complete_build


def figure_labels(blocks):
    return [block[2] for block in blocks if block[0] == "figure"]


def test_html_is_one_file_with_the_report_s_sections(illustrated_build):
    html = report.write_html("smoke").read_text(encoding="utf-8")
    text = html.replace("<wbr>", "")  # the break chances after _ and /
    for heading in ("Abstract", "1 Data", "2 Method", "3 Results", "4 Discussion", "5 Beyond the report"):
        assert f">{heading}</h2>" in text and f">{heading}</a></li>" in text  # a section, in the contents
    for label in figure_labels(report.document("smoke")):
        assert f"<b>{label}.</b>" in text
    assert "Figure 1" in text and "Figure 8" in text and "Figure C1" in text and "Unlike the original" in text
    assert "Figures 3-4 (fig05b_baseline_curves.png)" in text  # a missing figure is named, not hidden
    # self-contained: every image is embedded (figures PNG, equations SVG); maps are linked next to the file
    sources = re.findall(r'<img src="([^"]*)"', text)
    assert sources and all(
        src.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for src in sources
    )
    assert sum(src.startswith("data:image/svg") for src in sources) == len(report.LOSS_EQUATIONS)
    assert 'href="maps/08_predictions.html"' in text
    assert "table-layout:fixed" in text and "overflow-wrap:anywhere" in text
    assert "loss_<wbr>expected_<wbr>distance_<wbr>squared" in html  # full names, with break chances
    assert "beyond: nearest neighbour" in text and '<td class="v-not-testable">not testable</td>' in text
    for claim in report.scorecard("smoke")["claim"]:
        assert escape(claim.split(". ", 1)[1]) in text


def test_every_claim_row_of_table_1_names_the_two_quantities_it_compares(complete_build):
    html = report.write_html("smoke").read_text(encoding="utf-8").replace("<wbr>", "")
    table = re.search(r"<caption><b>Table 1\.</b>.*?</table>", html, re.S).group(0)
    header = re.findall(r"<th>(.*?)</th>", table)
    assert {"claim", "compares", "this build", "verdict"} <= set(header)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    card = report.scorecard("smoke")
    assert len(rows) == len(card) == len(report.CLAIMS)
    for row, claim in zip(rows, card.itertuples(), strict=True):
        cells = dict(zip(header, re.findall(r"<td[^>]*>(.*?)</td>", row, re.S), strict=True))
        assert cells["claim"] == escape(claim.claim)
        assert cells["compares"] == escape(claim.compares) and " against " in cells["compares"]


def test_html_escapes_what_the_build_writes():
    blocks = [
        ("heading", 1, "A <b>heading</b>"),
        ("paragraph", 'a_b <script>alert(1)</script> & "quotes"'),
        ("links", [("a <map>", "maps/x.html?a=1&b=2")]),
    ]
    html = report_html.render_html(blocks, "Title <i>", "sub & title")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/<wbr>script&gt;" in html
    assert "a_<wbr>b" in html and "Title &lt;i&gt;" in html and 'href="maps/x.html?a=1&amp;b=2"' in html
    with pytest.raises(ValueError, match="Unknown block kind 'poem'"):
        report_html.render_html([("poem", "x")], "t", "s")


def pdf_text(path, first=None, last=None) -> list[str]:
    """The text of each page of a PDF, by poppler's pdftotext (zero-width spaces removed)."""
    pages = []
    command = ["pdftotext", "-layout"] + (["-f", str(first), "-l", str(last)] if first else [])
    text = subprocess.run([*command, str(path), "-"], check=True, capture_output=True, text=True).stdout
    for page in text.split("\f"):
        pages.append(page.replace("\u200b", ""))
    return pages[:-1] if pages and not pages[-1].strip() else pages


needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils is not installed (apt-get install -y poppler-utils): pdftotext and pdftoppm read "
    "the PDF back",
)


def test_pdf_is_a4_typeset_by_typst_with_contents_figures_and_equations(illustrated_build):
    blocks = report.document("smoke")
    root = report_typst.image_root(blocks)
    source = report_typst.typst_source(blocks, *report._title(report.load_build("smoke")), root)
    expected = [block[2] for block in blocks if block[0] == "heading"]
    outline = json.loads(typst.query(source.encode(), "heading.where(outlined: true)", root=str(root)))
    assert [entry["body"]["text"] for entry in outline] == expected  # every section is in the contents
    figures = json.loads(typst.query(source.encode(), "figure.where(kind: image)", root=str(root)))
    assert len(figures) == len(figure_labels(blocks)) >= 5
    tables = json.loads(typst.query(source.encode(), "figure.where(kind: table)", root=str(root)))
    assert len(tables) == sum(block[0] == "table" for block in blocks) >= 4
    equations = json.loads(typst.query(source.encode(), "math.equation.where(block: true)", root=str(root)))
    assert len(equations) == len(report.LOSS_EQUATIONS) == 5

    started = time.perf_counter()
    path = report.write_pdf("smoke")
    print(f"report.pdf compiled in {time.perf_counter() - started:.2f} s")
    content = path.read_bytes()
    assert content[:5] == b"%PDF-"
    media_box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", content)
    width, height = (float(v) for v in media_box.groups())
    assert np.allclose([width, height], [595.28, 841.89], atol=1)  # A4 in points
    assert 12 <= report_typst.page_count(content) <= 40


@needs_poppler
def test_the_pdf_s_pages_hold_every_section_figure_and_claim(illustrated_build, tmp_path):
    path = report.write_pdf("smoke")
    pages = pdf_text(path)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"^Pages:\s+{len(pages)}$", info, re.M)
    assert len(pages) == report_typst.page_count(path.read_bytes())
    front = pages[0]
    assert "Contents" in front and "Figures" in pages[0] + pages[1]
    blocks = report.document("smoke")
    # the contents give each section with the page it is on
    for block in blocks:
        if block[0] == "heading":
            entry = re.search(rf"{re.escape(block[2])}[ .\u2060]*(\d+)\s*$", "\n".join(pages[:2]), re.M)
            assert entry, block[2]
            assert block[2] in pages[int(entry.group(1)) - 1]
    everything = re.sub(r"\s+", " ", " ".join(pages))
    for label in figure_labels(blocks):
        assert f"{label}." in everything
    joined = re.sub(r"\s+", "", everything)  # table cells wrap names over lines
    # Table 1's cells in reading order (-raw; -layout interleaves wrapped columns), soft hyphens dropped
    raw = subprocess.run(["pdftotext", "-raw", str(path), "-"], check=True, capture_output=True, text=True)
    cells = re.sub(r"\s+", "", raw.stdout.replace("\u200b", "").replace("\xad", ""))
    for claim in report.scorecard("smoke").itertuples():
        assert re.sub(r"\s+", "", claim.claim.split(". ", 1)[1]) in joined
        assert re.sub(r"\s+", "", claim.compares) in cells  # Table 1 names the two quantities
    assert LONG_NAME in joined  # whole, wrapped in its column, never cut
    # a table that runs over pages repeats its header on each of them
    spanning = [page for page in pages if "Table A1" in page or "best run (final_seed0)" in page]
    assert spanning
    # first pages as PNG, to look at (kept under the test's folder)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "4", str(path), str(tmp_path / "page")], check=True
    )
    assert len(list(tmp_path.glob("page-*.png"))) == 4


@needs_poppler
def test_table_headers_repeat_on_every_page_a_long_table_runs_over(isolated_build):
    for number in range(150):
        metrics.record_result("smoke", f"run_{number:03d}", data=DATA, split="val", top1=0.1, mean_km=10.0)
    path = report.write_pdf("smoke")
    pages = pdf_text(path)
    with_rows = [page for page in pages if re.search(r"\brun_\d{3}\b", page)]
    assert len(with_rows) >= 3
    for page in with_rows:
        # Table A1's header (experiment, data, split, ...) or Table A2's (experiment, split, mean_km, ...)
        assert re.search(r"^\s*experiment\s+(data\s+)?split\s", page, re.M), page[:400]


@needs_poppler
def test_text_from_the_build_is_printed_as_written_never_read_as_markup(tmp_path):
    odd = 'run_$x$ #set page(width: 1cm) "quoted" back\\slash *not bold* @ref <label> = not a heading'
    blocks = [("heading", 1, "1 Odd #names"), ("paragraph", odd), ("bullets", ["a_b_c", "]["])]
    pages = report_typst.render_pdf(blocks, "Title with $ and #", 'sub "x"', tmp_path / "odd.pdf")
    text = re.sub(r"\s+", " ", " ".join(pdf_text(tmp_path / "odd.pdf")))
    assert pages == 2 and odd in text and "1 Odd #names" in text and "Title with $ and #" in text
    with pytest.raises(ValueError, match="Unknown block kind 'poem'"):
        report_typst.typst_source([("poem", "x")], "t", "s", tmp_path)
    with pytest.raises(ValueError, match="must start with its label"):
        report_typst.split_label("A table without a number")
