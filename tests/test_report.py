import matplotlib.pyplot as plt

from helpers import config, metrics, plots, report


def test_report_keeps_published_numbers_apart(isolated_build):
    metrics.record_result("smoke", "random cell", data="report locations", split="all", mean_km=136.0)
    metrics.record_result("smoke", "baseline", data="synthetic images", split="val", top1=0.3)
    metrics.record_result("smoke", "best run (baseline)", data="synthetic images", split="test", top1=0.31)
    table = report.results_with_published("smoke").set_index("experiment")
    assert (
        table.loc["random cell", "mean_km"] == 136.0 and table.loc["random cell", "report_mean_km"] == 150.0
    )
    assert table.loc["baseline", "top1"] == 0.3 and table.loc["baseline", "report_top1"] == 0.29
    assert table.loc["best run (baseline)", "report_top1"] == 0.37


def test_html_and_pdf_embed_the_figures(isolated_build):
    metrics.record_result("smoke", "baseline", data="synthetic images", split="val", top1=0.3)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plots.save_figure(fig, config.output_dir("smoke", "figures") / "fig01_locations_per_municipality.png")
    html = report.write_html("smoke").read_text(encoding="utf-8")
    assert "<b>Figure 1.</b>" in html and "data:image/png;base64," in html
    assert "Not built yet: fig02_geocells_voronoi.png" in html  # missing figures are named, not hidden
    assert "report_top1" in html and "synthetic images" in html
    pdf = report.write_pdf("smoke")
    assert pdf.read_bytes()[:5] == b"%PDF-"
