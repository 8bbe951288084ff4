"""The report as one self-contained HTML page, from the Jinja2 template ``templates/report.html.j2``.

:func:`render_html` prepares the blocks of :func:`helpers.report.document.document` for the
template:
figures embedded as base64 PNG, equations typeset by Typst as SVG (the same maths as the
PDF), maps linked relatively (they sit next to the report, in ``maps/``), and a break
opportunity (``<wbr>``) after each ``_`` and ``/`` so long run names wrap in narrow columns.
The template escapes every text from the build.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from helpers import config
from helpers.report import typst as report_typst
from helpers.report.build import load_build
from helpers.report.document import document, title

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"  # helpers/templates


def breakable(text) -> Markup:
    """``text`` escaped for HTML, with ``<wbr>`` after each ``_`` and ``/``."""
    return Markup(str(escape(str(text))).replace("_", "_<wbr>").replace("/", "/<wbr>"))


def anchor(text: str) -> str:
    """An id for a heading: ``s-`` and its words in lower case joined by hyphens."""
    return "s-" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def column_shares(table) -> list[float]:
    """Relative column widths from their contents: long free text gets more, and no column is
    narrower than twice its longest word, so that short words (the verdicts) are not split."""
    weights = []
    for column in table.columns:
        texts = [str(column), *map(str, table[column])]
        longest_word = max(len(word) for text in texts for word in re.split(r"[\s_/]+", text))
        factor = 3 if column == "verdict" else 2  # a verdict's word must never be split
        weights.append(max(6, min(max(map(len, texts)), 60), factor * min(longest_word, 15)))
    return [w / sum(weights) for w in weights]


def _data_uri(kind: str, content: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(content).decode()}"


def template_blocks(blocks: list[tuple]) -> tuple[list[dict], list[tuple]]:
    """(the blocks as dictionaries for the template, contents entries (level, text, anchor))."""
    prepared, contents, equations_before = [], [], 0
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            _, level, text = block
            contents.append((level, text, anchor(text)))
            prepared.append({"kind": kind, "level": level, "text": text, "anchor": anchor(text)})
        elif kind == "paragraph":
            prepared.append({"kind": kind, "text": block[1]})
        elif kind == "bullets":
            prepared.append({"kind": kind, "items": list(block[1])})
        elif kind == "table":
            _, table, caption = block
            supplement, number, text = report_typst.split_label(caption)
            prepared.append(
                {
                    "kind": kind,
                    "label": f"{supplement} {number}",
                    "caption": text,
                    "columns": [str(c) for c in table.columns],
                    "shares": column_shares(table),
                    "rows": [
                        list(zip(table.columns, map(str, record), strict=True))
                        for record in table.itertuples(index=False)
                    ],
                }
            )
        elif kind == "figure":
            _, path, label, caption = block
            src = _data_uri("image/png", Path(path).read_bytes())
            prepared.append({"kind": kind, "src": src, "label": label, "caption": caption})
        elif kind == "links":
            prepared.append({"kind": kind, "links": list(block[1])})
        elif kind == "equations":
            equations = [
                {
                    "src": _data_uri("image/svg+xml", report_typst.equation_svg(e["typst"]).encode()),
                    "text": e["text"],
                    "explanation": e.get("explanation", ""),
                }
                for e in block[1]
            ]
            prepared.append({"kind": kind, "equations": equations, "first": equations_before + 1})
            equations_before += len(equations)
        else:
            raise ValueError(
                f"Unknown block kind {kind!r}; known: heading, paragraph, bullets, table, figure, links, "
                "equations."
            )
    return prepared, contents


def render_html(blocks: list[tuple], title: str, subtitle: str) -> str:
    """The blocks of :func:`helpers.report.document.document` as one HTML page (nothing to fetch but
    the maps)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )
    environment.filters["breakable"] = breakable
    prepared, contents = template_blocks(blocks)
    template = environment.get_template("report.html.j2")
    return template.render(title=title, subtitle=subtitle, blocks=prepared, contents=contents)


def write_html(profile: str | dict) -> Path:
    """Write ``build/<profile>/report.html`` (one self-contained file) and return its path."""
    build = load_build(profile)
    text = render_html(document(build), *title(build))
    path = build["root"] / "report.html"
    with config.atomic_target(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
