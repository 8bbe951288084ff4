"""The regenerated report: the scorecard's verdicts on hand-made builds, and both renderings
(HTML through the Jinja2 template, PDF through Typst)."""

import json
import re
import shutil
import subprocess
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest
import typst
from markupsafe import escape

from helpers import config, metrics, plots, report, report_html, report_typst

DATA = "synthetic images"  # experiments.data_label("smoke")


def record_runs(profile, name, top1, train_top1=None, mean_km=None, data=DATA):
    """Validation rows ``<name>_seed<k>`` (``name`` alone when it is notebook 05's "baseline", seed 0)."""
    for seed, value in enumerate(top1):
        experiment = "baseline" if name == "baseline" and seed == 0 else f"{name}_seed{seed}"
        metrics.record_result(
            profile,
            experiment,
            data=data,
            split="val",
            seed=seed,
            top1=value,
            train_top1=(train_top1 or top1)[seed],
            mean_km=(mean_km or [100.0] * len(top1))[seed],
        )


def write_summary(profile, name, **settings):
    folder = config.output_dir(profile, "runs") / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"name": name, **settings}))


@pytest.fixture
def complete_build(isolated_build):
    """A smoke build in which every claim has its rows, and each rule has a clear answer."""
    profile = "smoke"
    metrics.record_result(
        profile, "random cell", data="report locations", split="all", top1=1 / 129, mean_km=136.0
    )
    record_runs(profile, "baseline", [0.10, 0.11, 0.12], train_top1=[0.50, 0.52, 0.54])
    record_runs(profile, "augment", [0.20, 0.21, 0.22])  # +10 points: beyond the noise
    record_runs(profile, "betas", [0.10, 0.12, 0.11])
    record_runs(profile, "warmup", [0.11, 0.10, 0.12])
    record_runs(profile, "final", [0.21, 0.20, 0.22], mean_km=[80.0, 82.0, 84.0])  # = augment: no effect
    for loss, top1 in (("expected_distance_squared", 0.15), ("log_distance", 0.21)):
        metrics.record_result(profile, f"loss_{loss}", data=DATA, split="val", top1=top1, mean_km=90.0)
    metrics.record_result(profile, "best run (final_seed0)", data=DATA, split="test", top1=0.2, mean_km=81.0)
    metrics.record_result(
        profile,
        "best run (final_seed0), new capture day",
        data=DATA,
        split="test_new_day",
        top1=0.1,
        mean_km=95.0,
    )
    metrics.record_facts(
        profile,
        neighbour_error_share=0.4,
        neighbour_error_chance=0.05,
        test_errors=400,
        area_accuracy_spearman=-0.3,
        area_accuracy_p=0.001,
        cells_tested=129,
        sky_attention_share=0.5,
        sky_pixel_share=0.3,
        new_day_drop_leak_1=0.2,
        new_day_drop_leak_0=0.0,
    )
    return profile


def verdicts(profile):
    card = report.scorecard(profile)
    return dict(zip(card["claim"].str.split(".").str[0].astype(int), card["verdict"], strict=True))


def test_every_claim_gets_the_verdict_of_its_rule(complete_build):
    found = verdicts(complete_build)
    assert len(found) == len(report.CLAIMS) >= 13
    assert found[1] == "reproduced"  # gap about 40 points, a few points of noise
    assert found[2] == "reproduced"  # augment +10 points over baseline
    assert found[3] == "not reproduced"  # final = augment: inside the noise
    assert found[4] == "reproduced"  # final +10 points over baseline
    assert found[5] == "reproduced"  # the best loss (21 %) is within the noise of final_seed0 (21 %)
    assert found[6] == "not testable"  # no frozen run
    assert found[7] == found[8] == "not testable"  # absolute numbers on synthetic images
    assert found[9] == "reproduced"  # 81 km against 136 km, seed spread 2 km
    assert found[10] == found[11] == found[12] == found[13] == "reproduced"


def test_the_scorecard_names_numbers_data_and_rules(complete_build):
    card = report.scorecard(complete_build).replace("\u00a0", " ", regex=True)  # no-break spaces
    card = card.set_index(card["claim"].str[:2])
    assert set(card["verdict"]) <= set(report.VERDICTS)
    assert (card["data"].str.startswith("smoke: synthetic images")).all()
    assert "29 % → 35 %" in card.loc["2.", "report"] and "§3.2" in card.loc["2.", "report"]
    assert "+10.0 points" in card.loc["2.", "this build"]
    assert "loss_log_distance" in card.loc["5.", "this build"]
    assert "81 km against 136 km" in card.loc["9.", "this build"]
    assert all(rule and "Rule" not in rule for rule in card["rule"])


def test_effects_inside_the_noise_or_reversed_are_not_reproduced(isolated_build):
    record_runs("smoke", "baseline", [0.10, 0.20, 0.30])
    record_runs("smoke", "augment", [0.12, 0.22, 0.32])  # +2 points, noise about 8
    record_runs("smoke", "final", [0.01, 0.02, 0.03])  # far below augment: the opposite sign
    card = report.scorecard("smoke")
    assert verdicts("smoke")[2] == "not reproduced" and "inside" in card.loc[1, "why"]
    assert verdicts("smoke")[3] == "not reproduced" and "opposite sign" in card.loc[2, "why"]


def test_a_distance_loss_that_beats_cross_entropy_contradicts_the_report(isolated_build):
    record_runs("smoke", "final", [0.20, 0.21, 0.22])
    metrics.record_result("smoke", "loss_haversine_smoothing", data=DATA, split="val", top1=0.40)
    assert verdicts("smoke")[5] == "not reproduced"


def test_missing_rows_say_missing_and_untestable_claims_say_so(isolated_build):
    assert set(verdicts("smoke").values()) == {"missing", "not testable"}
    metrics.record_result("smoke", "baseline", data=DATA, split="val", top1=0.1, train_top1=0.9)
    found = verdicts("smoke")
    assert found[1] == "missing"  # one seed gives no noise to judge the gap against
    assert found[6] == "not testable"  # no run with a frozen backbone
    metrics.record_facts("smoke", area_accuracy_spearman=float("nan"), area_accuracy_p=float("nan"))
    assert verdicts("smoke")[11] == "not testable"  # every cell equally accurate: nothing to rank


def test_rules_for_one_number(complete_build):
    metrics.record_facts(
        "smoke", neighbour_error_share=0.09, area_accuracy_spearman=0.4, area_accuracy_p=0.01
    )
    metrics.record_facts("smoke", sky_attention_share=0.2, new_day_drop_leak_1=0.01)
    found = verdicts("smoke")
    assert found[10] == "not reproduced"  # 0.09 is not more than twice the chance of 0.05
    assert found[11] == "not reproduced"  # larger cells more accurate
    assert found[12] == "not reproduced"  # less attention on the sky than its share of pixels
    assert found[13] == "not reproduced"  # a drop of 1 point is inside the margin


def test_a_frozen_backbone_is_testable_only_when_pretrained(complete_build):
    metrics.record_result("smoke", "frozen", data=DATA, split="val", top1=0.05)
    write_summary("smoke", "frozen", freeze_backbone=True, pretrained=None)
    assert verdicts("smoke")[6] == "not testable"  # a frozen random backbone is not the report's experiment
    write_summary("smoke", "frozen", freeze_backbone=True, pretrained="hf://google/vit-base-patch16-224")
    assert verdicts("smoke")[6] == "reproduced"  # 5 % against 21 %: freezing costs accuracy


def test_absolute_numbers_are_judged_on_real_photos(isolated_build):
    data = "mapillary images"  # experiments.data_label("mapillary")
    record_runs("mapillary", "final", [0.36, 0.38, 0.40], mean_km=[60.0, 70.0, 80.0], data=data)
    metrics.record_result(
        "mapillary", "best run (final_seed2)", data=data, split="test", top1=0.36, mean_km=100.0
    )
    found = verdicts("mapillary")
    assert found[7] == "reproduced"  # 36 % is within twice the seed spread (2 points) of 37 %
    assert found[8] == "not reproduced"  # 100 km is beyond 62 km + 2 x 10 km
    assert found[12] == found[13] == "not testable"  # photos carry no sky masks and no second capture day


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
    for claim in report.scorecard("smoke")["claim"]:
        assert re.sub(r"\s+", "", claim.split(". ", 1)[1]) in joined
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
