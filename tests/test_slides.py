"""make slides: a PDF deck per notebook from its own key points and built figures, offline."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import pytest

from helpers import config, notebooks, slides


def small_notebook(path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                "# 99 · A test: #hash, $x^2$ and [a link](https://example.org)\n\n**What you will learn**\n\n"
                "- the first point, with `code[0]` and\n  a continuation line;\n- the second point.\n\n"
                "**Time and memory**: seconds."
            ),
            nbformat.v4.new_code_cell('PROFILE = "default"', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_markdown_cell("## 1. A figure\n\nText."),
            nbformat.v4.new_code_cell('plots.save_figure(fig, figures / "fig99a_curve.png")'),
            nbformat.v4.new_markdown_cell("## 2. Another\n\nText."),
            nbformat.v4.new_code_cell('plots.save_figure(fig, figures / "fig99b_missing.png")'),
            nbformat.v4.new_markdown_cell(
                "## Summary\n\n- one thing_with_underscores * stars\n\n## Exercises\n\n1. Do it.\n\n"
                "## Questions\n\n1. Why?\n2. How $\\sqrt{d}$?"
            ),
        ]
    )
    nbformat.write(nb, path)
    return path


def test_key_points_come_from_the_notebook(tmp_path):
    points = slides.key_points(small_notebook(tmp_path / "99_test.ipynb"))
    assert points["title"].startswith("99 · A test")
    first = "the first point, with `code[0]` and a continuation line;"
    assert points["learn"] == [first, "the second point."]
    assert points["figures"] == [("1. A figure", "fig99a_curve.png"), ("2. Another", "fig99b_missing.png")]
    assert points["summary"] == ["one thing_with_underscores * stars"]
    assert points["questions"] == ["Why?", "How $\\sqrt{d}$?"]


@pytest.mark.parametrize("path", notebooks.numbered_notebooks(), ids=lambda p: p.stem)
def test_every_notebook_has_points_for_its_deck(path):
    points = slides.key_points(path)
    assert points["learn"] and points["summary"] and points["questions"], path.name


def test_a_deck_is_a_pdf_with_the_built_figures_and_names_the_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(config.output_dir("smoke", "figures") / "fig99a_curve.png")
    plt.close(fig)
    pdf, missing = slides.make_deck(small_notebook(tmp_path / "99_test.ipynb"), "smoke")
    assert pdf == config.build_dir("smoke") / "slides" / "99_test.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and b"/Image" in data  # the built figure is in it
    assert missing == ["fig99b_missing.png"]
    import typst

    root = str(config.build_dir("smoke"))
    pages = typst.compile(str(pdf.with_suffix(".typ")), root=root, format="png", ppi=10)
    assert len(pages) == 6  # title, what you will learn, two figures, summary, questions


def test_typst_special_characters_are_text():
    escaped = slides._inline("a #b $x$ `c` *d* [e](f) @g <h>")
    assert '#raw("x")' in escaped and '#raw("c")' in escaped
    assert "\\#b" in escaped and "\\*d\\*" in escaped and "\\@g" in escaped and "(f)" not in escaped


def test_an_unknown_profile_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))
    with pytest.raises(Exception, match="nope"):
        slides.main(["--profile", "nope"])
    assert not (tmp_path / "build").exists()
