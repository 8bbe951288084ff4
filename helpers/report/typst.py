"""The report as a Typst document, compiled to an A4 PDF with the ``typst`` package.

:func:`typst_source` turns the blocks of :func:`helpers.report.document.document` into Typst
markup
after the page style in ``helpers/templates/report.typ`` (a contents page listing the sections,
figures and tables; numbered figures, tables and equations; table headers repeated on every
page a table runs over). :func:`render_pdf` compiles it; Typst does the typesetting, no TeX
or system library is involved, and only the fonts inside the ``typst`` wheel are used, so
the PDF looks the same on every machine.

Text from the build always enters the document as a Typst *string* (``#"..."``), never as
markup: an underscore, a dollar sign or a hash in a run name is printed as it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from helpers import config
from helpers.report.build import load_build
from helpers.report.document import document, title

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "report.typ"  # helpers/templates
ZERO_WIDTH_SPACE = "\u200b"
VERDICT_COLUMN = "verdict"


def string(text) -> str:
    """``text`` as a Typst string literal (quotes, backslashes and line breaks escaped)."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'"{escaped}"'


def breakable(text) -> str:
    """``text`` with a break opportunity after each ``_`` and ``/``, so long run names and paths
    wrap at their joints inside a narrow table column instead of running into the next one."""
    return re.sub(r"([_/])", rf"\1{ZERO_WIDTH_SPACE}", str(text))


def _text(text, wrap: bool = False) -> str:
    return f"#{string(breakable(text) if wrap else text)}"


def split_label(caption: str) -> tuple[str, str, str]:
    """("Table", "A1", "Every row ...") from "Table A1. Every row ...": supplement, number, text."""
    found = re.match(r"^(Figures?|Table)\s+([0-9A-Z][0-9A-Za-z-]*)\.\s*(.*)$", caption, re.S)
    if not found:
        raise ValueError(
            "A caption must start with its label, as in 'Table 2. ...' or 'Figure B1. ...'; "
            f"got {caption[:40]!r}."
        )
    return found.group(1), found.group(2), found.group(3)


def _first_sentence(text: str) -> str:
    found = re.match(r"^(.+?)\.(\s|$)", text, re.S)
    return found.group(1) if found else text


def _numbered(kind: str, supplement: str, number: str, caption: str, body: str) -> str:
    """A Typst figure of ``kind`` (image or table) with the report's own number: the original's
    figures keep their numbers (3-4, B1), so Typst's counter is shown as that label."""
    short, long = _first_sentence(caption), caption
    return (
        f"#figure(kind: {kind}, supplement: [{_text(supplement)}], numbering: (..n) => {string(number)},\n"
        f"  caption: caption-of({string(long)}, {string(short)}),\n{body})\n"
    )


def _column_widths(table) -> str:
    """Typst column widths from each column's contents: long text gets a larger fraction, no column
    is narrower than twice its longest word, and the verdicts take the width of the longest one."""
    weights = []
    for column in table.columns:
        if column == VERDICT_COLUMN:  # as wide as its longest verdict, on one line
            weights.append("auto")
            continue
        texts = [str(column), *map(str, table[column])]
        longest_word = max(len(word) for text in texts for word in re.split(r"[\s_/]+", text))
        weights.append(f"{max(6, min(max(map(len, texts)), 60), 2 * min(longest_word, 15))}fr")
    return "(" + ", ".join(weights) + ",)"


def _table(table, caption: str) -> str:
    supplement, number, text = split_label(caption)
    header = ", ".join(f"[{_text(c, wrap=True)}]" for c in table.columns)
    rows = []
    for record in table.itertuples(index=False):
        cells = []
        for column, value in zip(table.columns, record, strict=True):
            if column == VERDICT_COLUMN:
                fill = f"verdict-fill.at({string(value)}, default: none)"
                cells.append(f"table.cell(fill: {fill})[#text(hyphenate: false)[{_text(value)}]]")
            else:
                cells.append(f"[{_text(value, wrap=True)}]")
        rows.append("    " + ", ".join(cells) + ",")
    body = (
        f"  table(columns: {_column_widths(table)}, align: left,\n"
        f"    table.header(repeat: true, {header}),\n" + "\n".join(rows) + "\n  ),"
    )
    return _numbered("table", supplement, number, text, body)


def _figure(path: Path, label: str, caption: str, root: Path) -> str:
    supplement, number = label.split(" ", 1)
    relative = "/" + Path(os.path.relpath(Path(path).resolve(), root)).as_posix()
    body = f'  image({string(relative)}, width: 100%, height: 9.5cm, fit: "contain"),'
    return _numbered("image", supplement, number, caption, body)


def _equations(equations: list[dict]) -> str:
    """Display equations, numbered (1), (2), ... in the order given, each with its explanation."""
    parts = []
    for equation in equations:
        parts.append(f"$ {equation['typst']} $\n")
        if equation.get("explanation"):
            parts.append(f"#block(inset: (left: 1em))[#text(9pt)[{_text(equation['explanation'])}]]\n")
    return "\n".join(parts)


def image_root(blocks: list[tuple]) -> Path:
    """The folder that holds every figure of ``blocks``: Typst reads images below its root only."""
    folders = [str(Path(block[1]).resolve().parent) for block in blocks if block[0] == "figure"]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def typst_source(blocks: list[tuple], title: str, subtitle: str, root: Path) -> str:
    """The whole Typst document of ``blocks``; figure paths are written relative to ``root``."""
    body = [
        f"#let report-title = {string(title)}\n#let report-subtitle = {string(subtitle)}\n",
        TEMPLATE.read_text(encoding="utf-8"),
    ]
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            _, level, text = block
            body.append(f"#heading(level: {int(level)}, {string(text)})\n")
        elif kind == "paragraph":
            body.append(f"{_text(block[1])}\n")
        elif kind == "bullets":
            body.append("".join(f"- {_text(item, wrap=True)}\n" for item in block[1]))
        elif kind == "table":
            body.append(_table(block[1], block[2]))
        elif kind == "figure":
            body.append(_figure(block[1], block[2], block[3], root))
        elif kind == "links":
            body.append(
                "".join(f"- #link({string(href)})[{_text(text)}]: {_text(href)}\n" for text, href in block[1])
            )
        elif kind == "equations":
            body.append(_equations(block[1]))
        else:
            raise ValueError(
                f"Unknown block kind {kind!r}; known: heading, paragraph, bullets, table, figure, links, "
                "equations."
            )
    return "\n".join(body)


def compile_pdf(source: str, root: Path) -> bytes:
    """The PDF of Typst ``source`` (images read below ``root``), with the fonts of the typst wheel only.

    A Typst error names the line of the generated source it stopped at.
    """
    import typst

    try:
        return typst.compile(source.encode("utf-8"), root=str(root), ignore_system_fonts=True, format="pdf")
    except typst.TypstError as error:
        message = f"Typst could not compile the report: {error.message}\n{error.diagnostic}"
        raise RuntimeError(message) from None


def page_count(pdf: bytes) -> int:
    """The number of pages of a PDF written by Typst (its page objects are not compressed)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def render_pdf(blocks: list[tuple], title: str, subtitle: str, path: Path) -> int:
    """Write ``blocks`` (:func:`helpers.report.document.document`) to ``path`` as an A4 PDF; return
    its pages."""
    root = image_root(blocks)
    pdf = compile_pdf(typst_source(blocks, title, subtitle, root), root)
    Path(path).write_bytes(pdf)
    return page_count(pdf)


def equation_svg(typst_math: str) -> str:
    """One display equation typeset by Typst as an SVG image (for the HTML report), without number."""
    import typst

    source = f"#set page(width: auto, height: auto, margin: 3pt)\n#set text(size: 12pt)\n$ {typst_math} $"
    return typst.compile(source.encode("utf-8"), format="svg", ignore_system_fonts=True).decode("utf-8")


def write_pdf(profile: str | dict) -> Path:
    """Write ``build/<profile>/report.pdf`` (A4, typeset by Typst, a contents page) and return its path."""
    build = load_build(profile)
    path = build["root"] / "report.pdf"
    with config.atomic_target(path) as temporary:
        render_pdf(document(build), *title(build), temporary)
    return path
