"""The regenerated report: the scorecard's table on hand-made builds, and both renderings
(HTML through the Jinja2 template, PDF through Typst), and the package's layout.

The verdict of every claim, case by case, is in ``tests/test_claims.py``.
"""

import ast
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import typst
from markupsafe import escape

from helpers import config, experiments, metrics, plots, report
from helpers.report import html as report_html
from helpers.report import typst as report_typst
from tests.report_builds import DATA, synthetic_build, verdicts


@pytest.fixture
def complete_build(isolated_build):
    return synthetic_build()


def test_every_claim_gets_the_verdict_of_its_rule(complete_build):
    found = verdicts(complete_build)
    assert len(found) == len(report.CLAIMS) == 16
    assert {n: v for n, v in found.items() if v != "reproduced"} == {
        9: "not testable",  # no run with a frozen backbone, and the profile's backbone is not pretrained
        10: "not testable",  # absolute numbers on synthetic images
        11: "not testable",
        16: "by design",  # the renderer draws a new day's skies afresh
    }


def test_every_row_names_its_two_quantities_its_reason_and_quotes_the_report(complete_build):
    card = report.scorecard(complete_build).replace("\u00a0", " ", regex=True)  # no-break spaces
    card = card.set_index(card["claim"].str.split(".").str[0].astype(int))
    assert list(card.columns) == [
        "claim",
        "report",
        "compares",
        "this build",
        "leak 0",
        "data",
        "verdict",
        "reason",
        "rule",
    ]
    assert set(card["verdict"]) <= set(report.VERDICTS)
    assert (card["data"].str.startswith("smoke: synthetic images")).all()
    assert all(" against " in text for text in card["compares"])  # two quantities, named
    measured = card.loc[card["verdict"].isin(["reproduced", "by design"]), "this build"]
    assert all(" against " in text for text in measured)  # and both measured
    assert all(reason for reason in card["reason"])
    assert all(re.search(r"“.+”", claim) for claim in card["claim"])  # the report's own words
    assert "29 % → 35 %" in card.loc[2, "report"] and "§3.2" in card.loc[2, "report"]
    assert "augment 21.0 % against baseline 11.0 %" in card.loc[2, "this build"]
    assert "loss_expected_distance_squared" in card.loc[5, "this build"]
    assert all(rule and "Rule" not in rule for rule in card["rule"])


def test_each_claim_s_rule_text_is_written_once_beside_its_judge():
    for claim in report.CLAIMS:
        assert claim.rule and claim.compares and claim.judge.__name__.startswith("judge_")
    texts = [claim.rule for claim in report.CLAIMS]
    assert len(set(texts)) == len(texts)
    modules = {claim.judge.__module__ for claim in report.CLAIMS}
    assert modules == {"helpers.report.claims_training", "helpers.report.claims_findings"}
    document = (Path(report.__file__).parent / "document.py").read_text()
    assert not any(claim.rule[:60] in document for claim in report.CLAIMS)  # not written a second time


def test_missing_rows_say_missing_and_untestable_claims_say_so(isolated_build):
    assert set(verdicts("smoke").values()) == {"missing", "not testable"}
    metrics.record_result("smoke", "baseline", data=DATA, split="val", top1=0.1, train_top1=0.9)
    found = verdicts("smoke")
    assert found[1] == "missing"  # one seed gives no noise to judge the gap against
    assert found[9] == "not testable"  # no run with a frozen backbone, and nothing pretrained to freeze
    metrics.record_facts("smoke", area_accuracy_spearman=float("nan"), area_accuracy_p=float("nan"))
    assert verdicts("smoke")[14] == "not testable"  # every cell equally accurate: nothing to rank


def test_runs_without_per_image_predictions_are_missing_not_judged(complete_build):
    for seed in range(3):
        experiments.predictions_path("smoke", f"augment_seed{seed}").unlink()
    card = report.scorecard("smoke")
    assert card.loc[1, "verdict"] == "missing" and "per-image" in card.loc[1, "reason"]


def test_the_report_counts_the_verdicts_in_its_summary(complete_build):
    blocks = report.document("smoke")
    abstract = " ".join(block[1] for block in blocks[:6] if block[0] == "paragraph")
    assert (
        "Of the report's 16 claims scored in Table 1: 12 reproduced, 1 by design, 3 not testable." in abstract
    )
    table = next(block[1] for block in blocks if block[0] == "table" and block[2].startswith("Table 1."))
    assert {"compares", "this build", "leak 0", "verdict", "reason"} <= set(table.columns)


def test_the_package_keeps_each_job_in_files_under_800_lines():
    folder = Path(report.__file__).parent
    for path in folder.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 800, path.name
    for gone in ("report.py", "report_html.py", "report_typst.py"):
        assert not (folder.parent / gone).exists()
    future = ast.parse((folder.parent / "future.py").read_text())
    imported = {
        alias.name for node in ast.walk(future) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert "report" not in imported and "experiments" in imported  # seed_scores lives in experiments
    assert report.seed_scores is experiments.seed_scores


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


def in_order(words: list[str], tokens: list[str]) -> bool:
    """Whether ``words`` appear among ``tokens`` in their order (other tokens between them allowed)."""
    remaining = iter(tokens)
    return all(any(token == word for token in remaining) for word in words)


needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils is not installed (apt-get install -y poppler-utils): pdftotext and pdftoppm read "
    "the PDF back",
)


def test_pdf_is_a4_typeset_by_typst_with_contents_figures_and_equations(illustrated_build):
    blocks = report.document("smoke")
    root = report_typst.image_root(blocks)
    source = report_typst.typst_source(blocks, *report.title(report.load_build("smoke")), root)
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
    # Table 1's cells in content order (-raw): the lines of a cell that wraps come in order, with the
    # lines of the cells beside it in between; soft hyphens and break chances joined again
    raw = subprocess.run(["pdftotext", "-raw", str(path), "-"], check=True, capture_output=True, text=True)
    text = re.sub(r"[\u200b\xad]\s*|(?<=-)\n", "", raw.stdout)  # a hard hyphen at a line end too
    table_1 = text[text.rindex("Table 1.") : text.index("3.2 Test accuracy", text.rindex("Table 1."))]
    for claim in report.scorecard("smoke").itertuples():
        assert re.sub(r"\s+", "", claim.claim.split(". ", 1)[1]) in joined
        assert in_order(claim.compares.split(), table_1.split()), claim.compares  # Table 1 names both
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
