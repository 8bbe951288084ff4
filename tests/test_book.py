"""The course book (helpers/book): the Pages workflow, the site of a small build, refusals.

The full check, every page of the smoke build's book in Chromium, runs at the end of the smoke
series (``tests/book_pages.py``, ``check_smoke_book``). Here a build of two tiny executed
notebooks, written in the test, goes through the real generator: npm (the shipped libraries),
Sphinx with MyST-NB, and for the browser test Chromium.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import folium
import geopandas as gpd
import nbformat
import pandas as pd
import pytest
import shapely
import yaml
from PIL import Image

from helpers import colab, config, explorer, maps
from helpers.book import BookInputsMissing, build_book, chapter_notebook, chapter_time, solutions_page, vendor
from helpers.notebooks import numbered_notebooks
from tests import book_pages

WORKFLOW = config.REPO_ROOT / ".github" / "workflows" / "pages.yml"
CDN_HOSTS = ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "code.jquery.com", "bootstrapcdn.com", "unpkg.com")

README = """# A tiny course

Its opening paragraph.

## Two commands

Not on the landing page.

## The course: twelve notebooks

| # | notebook | you learn | time | open in |
|---|---|---|---|---|
| 01 | `01_first` | the first thing | about 12 s | not yet published |
| 02 | `02_second` | the second thing | about 3 min | not yet published |

The lecturer's kit is [docs/teaching.md](docs/teaching.md); the code is in [helpers](helpers/geo.py).

## Profiles: how big a run is

Not on the landing page either.
"""

SOLUTIONS = """# 01 · First: solutions

In a fresh kernel, first recreate what the notebook computed:

```python
x = 1
```

**1. Count the cells.**

```python
# a comment, not a heading
print(x)
```

**2. Draw a map.** Plot it.

## Questions

**1.** Because the answer is $x^2$.

## Your turn: the splitting rule

```python
# Your turn: check_split_rule
y = 2
```
"""


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _write_explorer(photo_folder: Path, page: Path) -> None:
    """A real explorer page (helpers.explorer) of two square cells and two test photos."""
    photo_folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16), (40, 120, 200)).save(photo_folder / name)
    squares = [shapely.box(9.0, 55.5, 10.0, 56.5), shapely.box(10.0, 55.5, 11.0, 56.5)]  # (lng, lat) degrees
    cells = gpd.GeoDataFrame(
        {"cell": [0, 1], "name": ["west", "east"], "lat": [56.0, 56.0], "lng": [9.5, 10.5]},
        geometry=squares, crs="EPSG:4326",
    )  # fmt: skip
    rows = pd.DataFrame(
        {"image_path": ["a.png", "b.png"], "cell": [0, 1], "lat": [56.1, 55.9], "lng": [9.4, 10.6]}
    )
    data = explorer.explorer_data(
        rows, [[0.8, 0.2], [0.7, 0.3]], cells, [[56.0, 9.6], [56.0, 9.9]], photo_folder
    )
    maps.save_map(explorer.explorer_map(data, cells), page)


def _notebook(number: str, name: str, minutes: str, outputs: list) -> nbformat.NotebookNode:
    """A small notebook as the runner leaves it: title, header with its time, a code cell's outputs."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell(
            f"# {number} · {name.title()}: a chapter about lighthouses\n\n**Time and memory** (profile "
            f"`default`): {minutes} and 0.1 GB of memory on a 2-core CPU.\n\nThe area is $\\pi r^2$."
        ),
        nbformat.v4.new_code_cell("# Colab and Kaggle only", metadata={"tags": [colab.SETUP_TAG]}),
        # a cell that would fail if anything ran it again: the book shows its stored output
        nbformat.v4.new_code_cell("1 / 0", outputs=outputs),
        nbformat.v4.new_markdown_cell("## Exercises\n\n1. Count the cells.\n\n## Questions\n\n1. Why?"),
    ]
    return notebook


@pytest.fixture(scope="module")
def vendor_cache(tmp_path_factory) -> Path:
    """One npm install of the shipped libraries for the module's builds."""
    if shutil.which("npm") is None:
        pytest.skip("npm is missing: the book installs the libraries it ships with npm (install Node.js).")
    return tmp_path_factory.mktemp("book-vendor")


@pytest.fixture(scope="module")
def small_book(tmp_path_factory, vendor_cache):
    """The book of a build with two tiny executed notebooks, a map, an explorer widget and a report."""
    root = tmp_path_factory.mktemp("small-book")
    repo = root / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "solutions").mkdir()
    (repo / "README.md").write_text(README, encoding="utf-8")
    (repo / "docs" / "teaching.md").write_text("# Teaching it\n\nThe kit.\n", encoding="utf-8")
    (repo / "solutions" / "01_first.md").write_text(SOLUTIONS, encoding="utf-8")
    (repo / "solutions" / "02_second.md").write_text(
        "# 02 · Second: solutions\n\n**1.** Yes.\n", encoding="utf-8"
    )
    build = root / "build" / "smoke"
    (build / "notebooks").mkdir(parents=True)
    (build / "maps").mkdir()
    lighthouse_map = folium.Map(location=(56.0, 10.8), zoom_start=7)
    folium.CircleMarker((57.7, 10.6), radius=6, tooltip="Skagen").add_to(lighthouse_map)
    maps.save_map(lighthouse_map, build / "maps" / "01_lighthouses.html")
    _write_explorer(root / "photos", build / "maps" / "02_explorer.html")
    first = _notebook("01", "first", "about 12 s", [
        nbformat.v4.new_output("display_data", {"image/png": _png(), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("execute_result",
                               {"text/html": lighthouse_map._repr_html_(), "text/plain": "map"},
                               execution_count=1),
        nbformat.v4.new_output("stream", name="stdout", text="stored output, never recomputed\n"),
    ])  # fmt: skip
    second = _notebook("02", "second", "about 3 min", [
        nbformat.v4.new_output("stream", name="stdout", text="saved: maps/02_explorer.html\n"),
        nbformat.v4.new_output("display_data", {
            "application/vnd.jupyter.widget-view+json":
                {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "Explorer(...)"}),
    ])  # fmt: skip
    second.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}
    }
    for notebook, name in ((first, "01_first.ipynb"), (second, "02_second.ipynb")):
        nbformat.write(notebook, repo / "notebooks" / name)
        nbformat.write(notebook, build / "notebooks" / name)
    (build / "report.html").write_text("<html><body><h1>The report</h1></body></html>", encoding="utf-8")
    (build / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    notebooks = [repo / "notebooks" / "01_first.ipynb", repo / "notebooks" / "02_second.ipynb"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBOOK_BUILD_DIR", str(root / "build"))
        book = build_book("smoke", notebooks, repo_root=repo, vendor_cache=vendor_cache)
    return book


def test_the_pages_workflow_is_a_valid_github_workflow():
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build_steps = workflow["jobs"]["build"]["steps"]
    commands = " ; ".join(step.get("run", "") for step in build_steps)
    assert commands.index("make all") < commands.index("make book")
    upload = next(
        step for step in build_steps if step.get("uses", "").startswith("actions/upload-pages-artifact")
    )
    assert upload["with"]["path"] == "build/default/site"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert any(step.get("uses", "").startswith("actions/deploy-pages") for step in deploy["steps"])


def test_a_chapter_time_comes_from_the_notebook_header():
    assert chapter_time(_notebook("01", "first", "about 3.7 min", [])) == "about 3.7 min"
    assert chapter_time({"cells": [{"cell_type": "markdown", "source": "# No time here"}]}) is None


def test_chapter_links_follow_the_repository_address(monkeypatch):
    executed = _notebook("01", "first", "about 12 s", [])
    monkeypatch.setattr(colab, "REPOSITORY_URL", None)
    links = "".join(chapter_notebook(executed, "01_first.ipynb", [], "smoke")["cells"][1]["source"])
    assert "Download the notebook" in links and "about 12 s" in links and "colab" not in links.lower()
    monkeypatch.setattr(colab, "REPOSITORY_URL", "https://github.com/someone/workbook")
    links = "".join(chapter_notebook(executed, "01_first.ipynb", [], "smoke")["cells"][1]["source"])
    assert colab.colab_url("01_first.ipynb") in links and colab.kaggle_url("01_first.ipynb") in links


def test_every_answer_is_folded_and_code_is_never_split():
    page = solutions_page(SOLUTIONS, "01_first")
    # two exercises, one question, the "Your turn" section
    assert page.count('<details class="book-solution">') == 4
    assert page.count("</details>") == 4 and "<details open" not in page
    assert "<summary>Answer to exercise 1: Count the cells</summary>" in page
    assert "<summary>Answer to question 1</summary>" in page
    # the code of exercise 1, comment included, sits inside its fold
    fold = page.split("<summary>Answer to exercise 1")[1].split("</details>")[0]
    assert "# a comment, not a heading" in fold and "print(x)" in fold
    # the opening code, which recreates the notebook's state, stays open
    assert page.index("x = 1") < page.index("<details")


def test_a_page_that_loads_an_unknown_cdn_stops_the_build():
    page = '<script src="https://cdn.example.org/lib.js"></script><script src="https://code.jquery.com/jquery-3.7.1.min.js">'
    with pytest.raises(vendor.VendorError, match="cdn.example.org/lib.js"):
        vendor.localise(page, "../_static/vendor/", "chapter 1")
    known = vendor.localise(page.split("</script>")[1], "../_static/vendor/", "chapter 1")
    assert known == '<script src="../_static/vendor/jquery/jquery.min.js">'


def test_the_site_of_a_small_build(small_book):
    site = small_book.site
    assert small_book.size_bytes > 0 and small_book.pages == 2 * 2 + 4
    for page in ("index.html", "teaching.html", "report.html", "chapters/01_first.html",
                 "chapters/02_second.html",
                 "solutions/index.html", "solutions/01_first.html", "search.html"):  # fmt: skip
        assert (site / page).is_file(), page
    # nothing a page shows comes from a CDN: every script and style sheet is the site's own
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert vendor.external_loads(text) == [], page
        assert not any(host in text for host in CDN_HOSTS), page
    assert (site / "_static/vendor/leaflet/leaflet.js").is_file()
    assert (site / "_static/vendor/mathjax/tex-mml-chtml.js").is_file()
    first = (site / "chapters/01_first.html").read_text(encoding="utf-8")
    # stored outputs, never re-executed (the cell is 1 / 0)
    assert "stored output, never recomputed" in first and "ZeroDivisionError" not in first
    assert "../_static/vendor/leaflet/leaflet.js" in first
    assert 'href="../notebooks/01_first.ipynb" download' in first
    assert (site / "notebooks/01_first.ipynb").is_file()
    assert "about 12 s" in first
    assert ("Open in Colab" in first) == colab.is_published()
    assert "# Colab and Kaggle only" not in first  # the setup cell is hidden
    assert "solutions/01_first.html" in first
    # the explorer widget became its saved page, and no widget script is loaded
    second = (site / "chapters/02_second.html").read_text(encoding="utf-8")
    assert 'src="../maps/02_explorer.html"' in second and "embed-amd" not in second
    assert "../_static/vendor/leaflet/leaflet.js" in (site / "maps/02_explorer.html").read_text(
        encoding="utf-8"
    )
    # the landing page: the README's opening and course guide, chapters linked; not its other sections
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Its opening paragraph" in index and "the first thing" in index
    assert "Not on the landing page" not in index
    assert 'href="chapters/01_first.html"' in index and 'href="teaching.html"' in index
    assert 'href="helpers/geo.py"' not in index  # unpublished: the repository link is plain text
    report = (site / "report.html").read_text(encoding="utf-8")
    assert 'src="report-files/report.html"' in report and (site / "report-files/report.pdf").is_file()
    answers = (site / "solutions/01_first.html").read_text(encoding="utf-8")
    assert answers.count('<details class="book-solution">') == 4
    assert not re.search(r'<details class="book-solution"[^>]*open', answers)


def test_the_small_book_in_a_browser(small_book):
    counts = book_pages.check_site(small_book.site, chapters=["01_first", "02_second"])
    assert counts["maps"] >= 2 and counts["explorers"] == 1


def test_a_build_without_a_notebook_is_refused_and_nothing_is_written(tmp_path):
    build = tmp_path / "build" / "smoke"
    (build / "notebooks").mkdir(parents=True)
    nbformat.write(_notebook("01", "first", "about 12 s", []), build / "notebooks" / "01_locations.ipynb")
    before = sorted(tmp_path.rglob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "helpers.book", "--profile", "smoke"],
        capture_output=True, text=True, cwd=config.REPO_ROOT,
        env={**os.environ, "WORKBOOK_BUILD_DIR": str(tmp_path / "build")},
    )  # fmt: skip
    assert done.returncode == 1
    assert "make all PROFILE=smoke" in done.stderr
    # every notebook but the one that ran is named, and the report
    named = re.findall(r"notebooks/(\d\d_\w+)\.ipynb", done.stderr)
    assert named == [path.stem for path in numbered_notebooks()][1:]
    assert "report.html" in done.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_no_notebooks_at_all_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path))
    with pytest.raises(BookInputsMissing, match="at least one"):
        build_book("smoke", [])
    assert list(tmp_path.iterdir()) == []
