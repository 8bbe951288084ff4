"""The course book as a reader sees it: every page in headless Chromium, served on 127.0.0.1.

Plain functions, called by tests: :func:`check_site` checks a built site, and
:func:`check_smoke_book` builds the smoke build's book first (the end of the smoke series in
``tests/test_notebooks.py``). Both skip, saying why, where Chromium or Playwright is missing.

A page passes when it loads with no script error (console errors and uncaught exceptions),
asks no host but the site's for anything (map tiles aside: they are recorded, refused, and
the maps must still draw their borders and markers), and shows what it should: its images,
its equations typeset, each map a Leaflet container with something drawn on it, the explorer
answering a click, the solutions folded. The landing page's sidebar lists the chapters in the
course's order, and Sphinx's search page finds each chapter by a word of its title.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from helpers.book.vendor import TILE_HOSTS

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PAGE_TIMEOUT_MS = 60_000
MAP_TIMEOUT_MS = 15_000
# what a Leaflet map draws without tiles: vector paths (SVG), canvas layers (heat map), markers
DRAWN = ".leaflet-overlay-pane path, .leaflet-overlay-pane canvas, .leaflet-marker-pane > *"


def skip_without_browser() -> None:
    """Skip the calling test, with the reason, where Chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"No Chromium at {CHROMIUM}: the book's browser checks need it (apt install chromium).")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip(
            "Playwright is not installed: the book's browser checks need it (pip install playwright)."
        )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test's output is the problems, not every request
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # the browser drops connections it no longer needs (a page left before its last
        # file arrived): that is no problem of the site's
        pass


@contextmanager
def serve(site: Path):
    """Serve ``site`` on 127.0.0.1 (a free port) from a thread; yield its base address."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _is_tile(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return any(host == tiles or host.endswith("." + tiles) for tiles in TILE_HOSTS)


def _pages(site: Path) -> list[str]:
    """The site's own pages, relative to its root. The maps' standalone copies and the report
    are the same pages the chapters and the report page show in frames, and are checked there."""
    return sorted(
        str(path.relative_to(site))
        for path in site.rglob("*.html")
        if path.relative_to(site).parts[0] not in ("_static", "maps", "report-files")
    )


def _search_word(title: str) -> str:
    """The longest word of a chapter's title: a word the search must find that chapter by."""
    words = re.findall(r"[A-Za-z]{4,}", title)
    if not words:
        raise AssertionError(f"The chapter title {title!r} has no word to search for.")
    return max(words, key=len)


def _check_maps(page, where: str, problems: list[str]) -> int:
    """Check every map iframe of ``page``: a Leaflet container with something drawn; return how many."""
    frames = page.locator("iframe[srcdoc*='leaflet'], iframe.book-explorer")
    for index in range(frames.count()):
        frame = frames.nth(index).content_frame
        try:
            frame.locator(".leaflet-container").first.wait_for(timeout=MAP_TIMEOUT_MS)
            frame.locator(DRAWN).first.wait_for(state="attached", timeout=MAP_TIMEOUT_MS)
        except Exception as error:  # a Playwright timeout: say which map
            problems.append(
                f"{where}: map {index + 1} shows no Leaflet map with borders or markers ({error})"
            )
    return frames.count()


def _check_explorer(page, where: str, problems: list[str]) -> int:
    """Click a cell in each explorer of ``page``; its detail panel must describe the cell."""
    explorers = page.locator("iframe.book-explorer")
    for index in range(explorers.count()):
        frame = explorers.nth(index).content_frame
        try:
            frame.locator("#ex-panel").wait_for(timeout=MAP_TIMEOUT_MS)
            frame.locator(".leaflet-overlay-pane path.leaflet-interactive").first.dispatch_event("click")
            frame.locator("#ex-detail").filter(has_text="top-1 accuracy").or_(
                frame.locator("#ex-detail").filter(has_text="no test photos")
            ).wait_for(timeout=MAP_TIMEOUT_MS)
        except Exception as error:
            problems.append(f"{where}: explorer {index + 1} does not answer a click on a cell ({error})")
    return explorers.count()


def _check_content(page, where: str, problems: list[str]) -> None:
    """Images loaded; equations typeset where the page has some; solutions folded."""
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    broken = [source for source in broken if not _is_tile(source)]  # tiles are refused on purpose
    if broken:
        problems.append(f"{where}: images that did not load: {broken[:5]}")
    if page.locator(".math").count():
        try:
            # attached, not visible: an equation may sit in a folded answer
            page.locator("mjx-container").first.wait_for(state="attached", timeout=MAP_TIMEOUT_MS)
        except Exception:
            problems.append(f"{where}: has equations, and MathJax typeset none of them")
    reports = page.locator("iframe.book-report")
    for index in range(reports.count()):
        try:
            reports.nth(index).content_frame.locator("h1").first.wait_for(timeout=MAP_TIMEOUT_MS)
        except Exception:
            problems.append(f"{where}: the report's frame shows no report (no heading)")
    if where.startswith("solutions/") and not where.endswith("index.html"):
        answers = page.locator("details.book-solution")
        if answers.count() == 0:
            problems.append(f"{where}: no folded answers")
        elif page.locator("details.book-solution[open]").count():
            shown = page.locator("details.book-solution[open]").count()
            problems.append(f"{where}: {shown} answers are shown open")
        else:
            inside = answers.first.locator(":scope > :not(summary)").first
            if inside.count() and inside.is_visible():
                problems.append(f"{where}: the first answer's text is visible before it is opened")


def _chapter_links(page) -> list[str]:
    """The sidebar's entries under the caption "Chapters", as their addresses, in order."""
    return page.evaluate(
        """() => {
          const caption = Array.from(document.querySelectorAll('.bd-sidebar-primary p.caption'))
            .find(p => p.textContent.trim() === 'Chapters');
          if (!caption) return [];
          let list = caption.nextElementSibling;
          while (list && list.tagName !== 'UL') list = list.nextElementSibling;
          if (!list) return [];
          return Array.from(list.querySelectorAll(':scope > li > a')).map(a => a.getAttribute('href'));
        }"""
    )


def check_site(site: Path, chapters: list[str] | None = None) -> dict:
    """Open every page of the built book ``site`` in headless Chromium; raise AssertionError listing
    every problem found. ``chapters`` are the chapter names in the course's order (default: the
    numbered notebooks of ``notebooks/``). Returns counts: pages, maps, explorers, tile requests, seconds.
    """
    skip_without_browser()
    from playwright.sync_api import sync_playwright

    from helpers.notebooks import numbered_notebooks

    site = Path(site)
    if not (site / "index.html").is_file():
        raise AssertionError(
            f"{site} holds no built book (no index.html): run `python -m helpers.book` first."
        )
    chapters = chapters if chapters is not None else [path.stem for path in numbered_notebooks()]
    started = time.perf_counter()
    problems: list[str] = []
    outside: list[str] = []
    tiles: list[str] = []
    counts = {"pages": 0, "maps": 0, "explorers": 0}
    with serve(site) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def route(request_route):
            url = request_route.request.url
            if url.startswith(base):
                return request_route.continue_()
            (tiles if _is_tile(url) else outside).append(url)
            return request_route.abort()

        context.route("**/*", route)
        page = context.new_page()
        where = {"now": ""}
        page.on("pageerror", lambda error: problems.append(f"{where['now']}: script error: {error}"))

        def console(message):
            if message.type == "error" and not _is_tile(message.location.get("url", "")):
                problems.append(f"{where['now']}: console error: {message.text}")

        page.on("console", console)
        titles = {}
        for relative in _pages(site):
            where["now"] = relative
            page.goto(base + quote(relative), wait_until="load", timeout=PAGE_TIMEOUT_MS)
            counts["pages"] += 1
            counts["maps"] += _check_maps(page, relative, problems)
            counts["explorers"] += _check_explorer(page, relative, problems)
            _check_content(page, relative, problems)
            if relative.startswith("chapters/"):
                titles[Path(relative).stem] = page.locator("main h1").first.inner_text()
            if relative == "index.html":
                listed = [Path(href).stem for href in _chapter_links(page)]
                if listed != chapters:
                    problems.append(
                        f"index.html: the sidebar lists the chapters {listed}, expected {chapters}"
                    )
        missing = [name for name in chapters if name not in titles]
        if missing:
            problems.append(f"no chapter page for {missing}")
        for name, title in titles.items():
            word = _search_word(title)
            where["now"] = f"search.html?q={word}"
            page.goto(f"{base}search.html?q={quote(word)}", wait_until="load", timeout=PAGE_TIMEOUT_MS)
            try:
                page.locator(f"#search-results a[href*='chapters/{name}']").first.wait_for(
                    timeout=MAP_TIMEOUT_MS
                )
            except Exception:
                problems.append(f"search for {word!r} (from the title of {name}) does not list that chapter")
        browser.close()
    if outside:
        problems.append(f"requests to hosts outside the site: {sorted(set(outside))[:10]}")
    if problems:
        raise AssertionError(f"{len(problems)} problems in the book at {site}:\n" + "\n".join(problems))
    return {**counts, "tile_requests": len(tiles), "seconds": round(time.perf_counter() - started, 1)}


def check_smoke_book(build_root: Path) -> dict:
    """Build the book of the smoke build under ``build_root`` (the WORKBOOK_BUILD_DIR folder that
    holds ``smoke/``) with helpers.book, then run :func:`check_site` on it; return its counts."""
    skip_without_browser()
    if shutil.which("npm") is None:
        pytest.skip("npm is missing: the book installs the libraries it ships with npm (install Node.js).")
    from helpers.book import build_book

    previous = os.environ.get("WORKBOOK_BUILD_DIR")
    os.environ["WORKBOOK_BUILD_DIR"] = str(build_root)
    try:
        book = build_book("smoke")
    finally:
        if previous is None:
            os.environ.pop("WORKBOOK_BUILD_DIR")
        else:
            os.environ["WORKBOOK_BUILD_DIR"] = previous
    return check_site(book.site)
