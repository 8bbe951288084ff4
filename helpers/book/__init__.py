"""The course as a book: one static website of a build's executed notebooks, for reading.

A student without a working setup can read every result, pan the maps, click through the
explorer and catch up on a missed class. Command line (``make book``)::

    python -m helpers.book --profile default

It reads what a build made (``make all PROFILE=...``), and never runs a notebook (myst-nb's
execution is off):

* ``<build>/<profile>/notebooks/NN_name.ipynb``, the executed copies: one page each, in the
  course's order (:func:`helpers.notebooks.numbered_notebooks`), with links to download the
  notebook, to open it in Colab and Kaggle (once the workbook is published, as the README's
  links: ``helpers.colab.REPOSITORY_URL``), and the time it takes in ``default`` (from the
  notebook's header);
* ``<build>/<profile>/maps/`` (the folium pages), ``report.html`` and ``report.pdf``;
* the README's course guide (the landing page), ``docs/teaching.md`` and ``solutions/``
  (a page per chapter, each answer folded in a ``<details>`` element, closed until clicked).

It writes the Sphinx source (Sphinx, MyST-NB, sphinx-book-theme) into the scratch folder
``<build>/<profile>/book-source/`` (Sphinx's own scratch: ``book-sphinx/``) and the site into
``<build>/<profile>/site/`` (open ``index.html``, or serve the folder). ``<build>`` is
``build/`` or ``WORKBOOK_BUILD_DIR``.

Nothing a page shows is loaded from a CDN (``helpers.book.vendor``): Leaflet and the other
libraries of the maps, and MathJax, are shipped in ``_static/vendor/``. Map tiles are the one
exception, said on every page with a map; without them the maps still show their borders,
cells and markers. The explorer of notebooks 08 and 11 is shown as the standalone page the
notebook saved (plain Leaflet and a script, every click works without a kernel) in place of
its Jupyter widget, whose clicks need the Python kernel.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import colab, config
from helpers.book import vendor

HERE = Path(__file__).resolve().parent
SOURCE_FOLDER = "book-source"  # scratch: the generated Sphinx source, under build/<profile>/
# scratch: Sphinx's output, doctrees and MyST-NB's extracted outputs (it writes jupyter_execute/
# beside the output folder), under build/<profile>/
SPHINX_FOLDER = "book-sphinx"
SITE_FOLDER = "site"
VENDOR_CACHE = ".book-vendor"  # under the build folder's parent (shared by the profiles)
CHAPTERS = "chapters"
SOLUTIONS = "solutions"
REPORT_FILES = "report-files"
TITLE = "Where in Denmark?"
COURSE_HEADING = "## The course: twelve notebooks"
TIME_PROFILE = "default"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# The header paragraph every notebook has: "**Time and memory** (profile `default`): about 20 s and ..."
_TIME = re.compile(
    r"\*\*Time and memory\*\* \(profile `default`\):\s*(about [\d.,]+\s*(?:s|min|minutes|h|hours)\b)"
)
_ANSWER = re.compile(r"^\*\*(\d+)\.\s*(.*?)\*\*")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


class BookInputsMissing(RuntimeError):
    """The build lacks an executed notebook or the report; the message says which and how to make them."""


@dataclass
class Book:
    """What :func:`build_book` made: the site folder, its size in bytes, its pages and the build time in s."""

    site: Path
    size_bytes: int
    pages: int
    seconds: float


def missing_inputs(profile: str, notebooks: list[Path]) -> list[str]:
    """What the build of ``profile`` lacks for the book: executed notebooks and the report, by path.

    An executed copy exists only after its run finished (the runner renames it into place
    last), so its presence is the test; a failed run leaves ``<name>.failed.ipynb`` instead.
    """
    folder = config.build_dir(profile)
    wanted = [folder / "notebooks" / Path(notebook).name for notebook in notebooks]
    wanted.append(folder / "report.html")
    return [str(path) for path in wanted if not path.is_file()]


def chapter_time(notebook: dict) -> str | None:
    """The time the notebook's header gives for profile ``default`` ("about 20 s"), or None."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            found = _TIME.search(" ".join("".join(cell["source"]).split()))
            if found:
                return found.group(1)
    return None


def _rewrite_links(text: str, chapter_names: set[str], to_root: str) -> str:
    """Point the repository's relative links at the book's pages; others at GitHub, or plain text.

    ``to_root`` is the page's relative path to the site's root ("" or "../").
    """

    def link(match: re.Match) -> str:
        label, target = match.groups()
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)
        path = target.lstrip("./")  # "./x" and "../x" name the same repository file here
        stem = Path(path).stem
        if path == "docs/teaching.md":
            return f"[{label}]({to_root}teaching.md)"
        if path.startswith("solutions/") and stem in chapter_names:
            return f"[{label}]({to_root}{SOLUTIONS}/{stem}.md)"
        if path.startswith("notebooks/") and stem in chapter_names:
            return f"[{label}]({to_root}{CHAPTERS}/{stem}.ipynb)"
        if colab.is_published():
            return f"[{label}]({colab.REPOSITORY_URL.rstrip('/')}/blob/{colab.BRANCH}/{path})"
        return label  # no link that leads nowhere: the repository is not published yet

    return _LINK.sub(link, text)


def landing_page(readme: str, chapter_names: list[str], profile: str) -> str:
    """The landing page: the README's title and opening, its course guide, and the book's contents.

    In the course table, each notebook's name links to its chapter.
    """
    lines = readme.splitlines()
    first_section = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    try:
        start = lines.index(COURSE_HEADING)
    except ValueError:
        raise ValueError(
            f"README.md has no '{COURSE_HEADING}' section: the book's landing page is made from it."
        ) from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    names = set(chapter_names)

    def with_chapter_link(match: re.Match) -> str:
        stem = match.group(2)
        if stem not in names:
            return match.group(0)
        return f"| {match.group(1)} | [`{stem}`]({CHAPTERS}/{stem}.ipynb) |"

    course = re.sub(
        r"^\| (\d\d) \| `(\d\d_\w+)` \|", with_chapter_link, "\n".join(lines[start:end]), flags=re.M
    )
    about = (
        f"**This book** shows every notebook as it ran in the `{profile}` profile, with its figures, tables, "
        "maps and the explorer, the regenerated report, the lecturer's kit and the worked solutions "
        "(each answer folded until you open it). Nothing here needs Python: to run a notebook yourself, "
        "download it from its chapter or open it in Colab or Kaggle. The maps load their background "
        "tiles from OpenStreetMap, the one thing this site takes from elsewhere; offline, their borders, "
        "cells and markers still show."
    )
    contents = [
        "```{toctree}\n:caption: Chapters\n:maxdepth: 1\n\n"
        + "\n".join(f"{CHAPTERS}/{name}" for name in chapter_names)
        + "\n```",
        f"```{{toctree}}\n:caption: For the course\n:maxdepth: 1\n\nreport\nteaching\n{SOLUTIONS}/index\n```",
    ]
    parts = ["\n".join(lines[:first_section]).rstrip(), about, course.rstrip(), *contents]
    return _rewrite_links("\n\n".join(parts), names, "") + "\n"


def solutions_page(text: str, chapter_name: str) -> str:
    """A solutions file with each answer folded in a closed ``<details>`` element.

    Answers start with a bold number (``**1. Title.**`` under the exercises, ``**1.**`` under
    the questions) and run to the next answer or heading; a "Your turn" section is folded
    whole under its heading. The opening (the code that recreates the notebook's state) stays
    open. Fenced code is never split.
    """
    lines = text.splitlines()
    blocks: list[tuple[str, list[str]]] = [("open", [])]
    in_fence, section = False, ""
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            section = line.lstrip("#").strip()
            blocks.append(("heading", [line]))
            kind = "your turn" if section.lower().startswith("your turn") else "open"
            blocks.append((kind, []))
            continue
        elif not in_fence and _ANSWER.match(line):
            number, title = _ANSWER.match(line).groups()
            what = "question" if section.lower().startswith("question") else "exercise"
            label = f"Answer to {what} {number}" + (f": {title.strip().rstrip('.')}" if title.strip() else "")
            blocks.append((label, []))
        blocks[-1][1].append(line)
    out = []
    for kind, body in blocks:
        content = "\n".join(body).strip("\n")
        if kind in ("open", "heading"):
            if content:
                out.append(content)
            if kind == "heading" and body[0].startswith("# "):
                out.append(
                    "Each answer is folded: try the exercise in "
                    f"[the chapter](../{CHAPTERS}/{chapter_name}.ipynb) first, then open it."
                )
            continue
        if not content:
            continue
        summary = "The worked answer" if kind == "your turn" else kind
        out.append(
            f'<details class="book-solution">\n<summary>{html.escape(summary)}</summary>\n\n'
            f"{content}\n\n</details>"
        )
    return "\n\n".join(out) + "\n"


def _explorer_page(cell: dict, number: str, maps: list[str]) -> str | None:
    """The standalone explorer page a cell saved: the name it prints or passes, else NN_explorer.html."""
    text = "".join(cell["source"]) + json.dumps(cell.get("outputs", []))
    for name in re.findall(r"(\d\d_[\w-]*explorer[\w-]*\.html)", text):
        if name in maps:
            return name
    default = f"{number}_explorer.html"
    return default if default in maps else None


def _links_cell(notebook_file: str, time_text: str | None, maps: list[str], profile: str) -> dict:
    """The chapter's first lines: download, Colab, Kaggle, its time on ``default``, solutions, maps."""
    stem = Path(notebook_file).stem
    links = [f'<a href="../notebooks/{notebook_file}" download>Download the notebook</a>']
    if colab.is_published():
        links.append(f'<a href="{html.escape(colab.colab_url(notebook_file))}">Open in Colab</a>')
        links.append(f'<a href="{html.escape(colab.kaggle_url(notebook_file))}">Open in Kaggle</a>')
    if time_text:
        links.append(f"Time on <code>{TIME_PROFILE}</code>: {html.escape(time_text)} (on 2 CPU cores)")
    lines = [
        '<div class="book-chapter-links">\n' + " · ".join(links) + "\n</div>",
        f"The outputs below come from the `{profile}` profile's build. Worked solutions: "
        f"[the answers to this chapter](../{SOLUTIONS}/{stem}.md), each folded until you open it.",
    ]
    if maps:
        pages = ", ".join(f'<a href="../maps/{name}">{html.escape(name)}</a>' for name in maps)
        lines.append(
            '<p class="book-tiles-note">The maps load their background tiles from OpenStreetMap, the one '
            "thing this site takes from elsewhere; offline, their borders, cells and markers still show. "
            f"Each map on its own page: {pages}.</p>"
        )
    return {"cell_type": "markdown", "id": "book-chapter-links", "metadata": {}, "source": "\n\n".join(lines)}


def chapter_notebook(executed: dict, notebook_file: str, maps: list[str], profile: str) -> dict:
    """The executed notebook as the book shows it (a changed copy; ``executed`` is left alone).

    Its maps load the book's copies of their libraries; its Jupyter explorer widget is replaced
    by the explorer page it saved (its widget state is dropped, so no widget script is loaded);
    the Colab setup cell, which does nothing outside Colab, is hidden; a cell of links follows
    the title, and the exercise and question headings link to the solutions.
    """
    notebook = json.loads(json.dumps(executed))
    stem, number = Path(notebook_file).stem, notebook_file[:2]
    notebook["metadata"].pop("widgets", None)
    for position, cell in enumerate(notebook["cells"]):
        if colab.SETUP_TAG in cell.get("metadata", {}).get("tags", []):
            cell["metadata"]["tags"] = [*cell["metadata"]["tags"], "remove-cell"]
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            cell["source"] = re.sub(
                r"^(## (?:Exercises|Questions))\s*$",
                rf"\1\n\nWorked answers: [solutions to {number}](../{SOLUTIONS}/{stem}.md) (folded).",
                source,
                flags=re.M,
            )
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                page = _explorer_page(cell, number, maps)
                if page is None:
                    raise BookInputsMissing(
                        f"{notebook_file}, cell {position}: a Jupyter widget, and no explorer page "
                        f"({number}_*explorer*.html) in the build's maps/ to show instead."
                    )
                output["data"] = {
                    "text/html": (
                        f'<iframe class="book-explorer" src="../maps/{page}" title="The explorer"></iframe>\n'
                        f'<p><a href="../maps/{page}">The explorer on its own page</a>: '
                        "click a cell, then a photo.</p>"
                    ),
                    "text/plain": "The explorer",
                }
            elif "text/html" in data:
                page = "".join(data["text/html"])
                data["text/html"] = vendor.localise(
                    page, "../_static/vendor/", f"{notebook_file}, cell {position}"
                )
    title_cell = next(i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "markdown")
    notebook["cells"].insert(
        title_cell + 1, _links_cell(notebook_file, chapter_time(executed), maps, profile)
    )
    return notebook


_CONF = """\
# Written by helpers/book (python -m helpers.book): the book's Sphinx settings.
# Edit that module, not this file.
project = {title!r}
html_title = {title!r}
extensions = ["myst_nb"]
exclude_patterns = ["_build", "_doctrees"]
# the notebooks ran in the build; the book only shows them
nb_execution_mode = "off"
nb_merge_streams = True
# stderr holds the libraries' logging (TensorFlow, progress bars), not what a notebook prints
nb_output_stderr = "remove"
# no widget scripts from a CDN: the explorer's widget is replaced by its standalone page
nb_ipywidgets_js = {{}}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# MathJax 3 from npm, shipped with the site (helpers/book/vendor.py)
mathjax_path = {mathjax!r}
html_theme = "sphinx_book_theme"
html_theme_options = {theme!r}
# light, so that the maps and the report (white pages in frames) match; without it the theme
# logs an error on a reader's first visit ("invalid theme mode")
html_context = {{"default_mode": "light"}}
html_static_path = ["_static"]
html_extra_path = ["_extra"]
html_css_files = ["book.css"]
html_copy_source = False
html_show_sourcelink = False
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]
"""


def _conf(profile: str) -> str:
    theme = {
        "home_page_in_toc": True,
        "show_navbar_depth": 1,
        "show_toc_level": 2,
        "use_download_button": False,
        "navigation_with_keys": False,
        "extra_footer": f"Built by helpers/book from the <code>{profile}</code> build's notebooks.",
    }
    if colab.is_published():
        theme.update(
            repository_url=colab.REPOSITORY_URL, repository_branch=colab.BRANCH, use_repository_button=True
        )
    return _CONF.format(title=TITLE, mathjax=vendor.MATHJAX, theme=theme)


def _report_page(has_pdf: bool, profile: str) -> str:
    pdf = (
        f'<a href="{REPORT_FILES}/report.pdf">Download the PDF</a> (A4) or '
        if has_pdf
        else "This build has no PDF; "
    )
    return (
        "# The report\n\n"
        f"The report as notebook 10 regenerated it from the `{profile}` build's results, in the original's "
        f"structure, with a scorecard of its claims.\n\n"
        f'<p>{pdf}<a href="{REPORT_FILES}/report.html">open it on its own page</a>.</p>\n\n'
        f'<iframe class="book-report" src="{REPORT_FILES}/report.html" title="The report"></iframe>\n'
    )


def _solutions_index(chapter_names: list[str]) -> str:
    return (
        "# Worked solutions\n\n"
        "One page per chapter: the code for each exercise and the answers to the questions, each folded "
        "until you open it. Try the exercise first.\n\n"
        "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(chapter_names) + "\n```\n"
    )


def write_source(
    profile: str, notebooks: list[Path], repo_root: Path, source: Path, vendor_cache: Path
) -> int:
    """Write the Sphinx source of the book into ``source`` (emptied first); return the page count."""
    folder = config.build_dir(profile)
    if source.exists():
        shutil.rmtree(source)
    for part in (CHAPTERS, SOLUTIONS, "_static", "_extra/notebooks", "_extra/maps", f"_extra/{REPORT_FILES}"):
        (source / part).mkdir(parents=True, exist_ok=True)
    vendor.copy_into(source / "_static", vendor_cache)
    shutil.copyfile(HERE / "static" / "book.css", source / "_static" / "book.css")
    maps = (
        sorted(path.name for path in (folder / "maps").glob("*.html")) if (folder / "maps").is_dir() else []
    )
    for name in maps:
        page = (folder / "maps" / name).read_text(encoding="utf-8")
        (source / "_extra/maps" / name).write_text(
            vendor.localise(page, "../_static/vendor/", f"maps/{name}"), encoding="utf-8"
        )
    names = [Path(notebook).stem for notebook in notebooks]
    for notebook in notebooks:
        notebook = Path(notebook)
        executed = json.loads((folder / "notebooks" / notebook.name).read_text(encoding="utf-8"))
        own_maps = [name for name in maps if name[:2] == notebook.name[:2]]
        shown = chapter_notebook(executed, notebook.name, own_maps, profile)
        (source / CHAPTERS / notebook.name).write_text(
            json.dumps(shown, ensure_ascii=False), encoding="utf-8"
        )
        shutil.copyfile(notebook, source / "_extra/notebooks" / notebook.name)  # the clean source, to run
        answers = repo_root / "solutions" / f"{notebook.stem}.md"
        text = answers.read_text(encoding="utf-8") if answers.is_file() else f"# {notebook.stem}: solutions\n"
        text = _rewrite_links(text, set(names), "../")
        (source / SOLUTIONS / f"{notebook.stem}.md").write_text(
            solutions_page(text, notebook.stem), encoding="utf-8"
        )
    (source / SOLUTIONS / "index.md").write_text(_solutions_index(names), encoding="utf-8")
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    (source / "index.md").write_text(landing_page(readme, names, profile), encoding="utf-8")
    teaching = (repo_root / "docs" / "teaching.md").read_text(encoding="utf-8")
    (source / "teaching.md").write_text(_rewrite_links(teaching, set(names), ""), encoding="utf-8")
    shutil.copyfile(folder / "report.html", source / "_extra" / REPORT_FILES / "report.html")
    has_pdf = (folder / "report.pdf").is_file()
    if has_pdf:
        shutil.copyfile(folder / "report.pdf", source / "_extra" / REPORT_FILES / "report.pdf")
    (source / "report.md").write_text(_report_page(has_pdf, profile), encoding="utf-8")
    (source / "conf.py").write_text(_conf(profile), encoding="utf-8")
    return 2 * len(notebooks) + 4  # chapters, solutions, their index, landing, teaching, report


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build_book(
    profile: str,
    notebooks: list[Path] | None = None,
    repo_root: Path = config.REPO_ROOT,
    vendor_cache: Path | None = None,
) -> Book:
    """Build the site of ``profile``'s executed notebooks into ``<build>/<profile>/site/``.

    ``notebooks`` are the source notebooks in the course's order (default: every numbered one
    in ``notebooks/``); ``repo_root`` holds README.md, docs/teaching.md and solutions/.
    ``vendor_cache`` is where npm installs the shipped libraries (default
    ``<build>/.book-vendor/``). Raises :class:`BookInputsMissing`, before writing anything,
    when the build lacks a notebook or the report.
    """
    from helpers import notebooks as runner

    name = config.profile_name(profile)
    notebooks = [Path(path) for path in (notebooks if notebooks is not None else runner.numbered_notebooks())]
    if not notebooks:
        raise BookInputsMissing("No notebooks given: the book needs at least one.")
    missing = missing_inputs(name, notebooks)
    if missing:
        raise BookInputsMissing(
            f"The {name} build lacks what the book shows: {', '.join(missing)}. "
            f"Run `make all PROFILE={name}` (or `python -m helpers.notebooks run --profile {name}` "
            f"and `python -m helpers.report --profile {name}`) "
            "first; the book never runs a notebook itself."
        )
    started = time.perf_counter()
    folder = config.build_dir(name)
    source = folder / SOURCE_FOLDER
    cache = Path(vendor_cache) if vendor_cache is not None else folder.parent / VENDOR_CACHE
    pages = write_source(name, notebooks, Path(repo_root), source, cache)
    output = folder / SPHINX_FOLDER / "html"
    if output.exists():
        shutil.rmtree(output)
    doctrees = folder / SPHINX_FOLDER / "doctrees"
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(doctrees)]
    command += [str(source), str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Sphinx failed (exit {done.returncode}):\n{done.stderr.strip()[-4000:]}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    site = folder / SITE_FOLDER
    if site.exists():
        shutil.rmtree(site)
    output.rename(site)  # readers of site/ never see a half-built book
    return Book(site=site, size_bytes=_folder_bytes(site), pages=pages, seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.book", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default", help="the build to show (default: default)")
    args = parser.parse_args(argv)
    try:
        book = build_book(args.profile)
    except (BookInputsMissing, vendor.VendorError, ValueError) as error:  # ValueError: an unknown profile
        print(f"helpers.book: {error}", file=sys.stderr)
        return 1
    print(
        f"The book: {book.site}/index.html ({book.pages} pages, {book.size_bytes / 1e6:.1f} MB) "
        f"in {book.seconds:.0f} s. Serve it with `python -m http.server -d {book.site}`, or open index.html."
    )
    return 0
