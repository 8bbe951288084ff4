"""Slides for a lecturer: one PDF deck per notebook, made offline from the notebook itself.

Command line (``make slides`` runs it)::

    python -m helpers.slides --profile default     # build/default/slides/NN_name.pdf

A deck holds the notebook's title, its "What you will learn" points, one slide per
figure it saved (from ``build/<profile>/figures/``, with the heading of the section that
drew it), its summary, and its questions. Nothing is typed twice: change the notebook, or
rebuild it, and the deck follows. Figures exist once the notebook has run in that
profile; a deck made before that says which figures are missing.

The decks are compiled by Typst (the ``typst`` package on PyPI, a self-contained compiler
with its own fonts), so no browser, LaTeX or network is needed: reveal.js slides from
nbconvert would load reveal.js from a CDN when opened.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from helpers import config, notebooks

_FIGURE = re.compile(r"""figures\s*/\s*["'](fig\d\d\w*\.png)["']""")
_SPAN = re.compile(r"(`[^`]+`|\$[^$]+\$)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_TYPST_SPECIAL = re.compile(r"([\\#*_`$@<>\[\]~=+/-])")


def _inline(text: str) -> str:
    """One line of notebook Markdown as Typst markup: code and maths as raw text, the rest escaped."""
    text = _LINK.sub(r"\1", text).replace("**", "")
    parts = []
    for piece in _SPAN.split(text):
        if not piece:
            continue
        if piece[0] in "`$" and piece[-1] == piece[0] and len(piece) > 1:
            parts.append("#raw(" + json.dumps(piece[1:-1]) + ")")
        else:
            parts.append(_TYPST_SPECIAL.sub(r"\\\1", piece))
    return "".join(parts)


def _items(markdown: str) -> list[str]:
    """The first Markdown list in ``markdown`` ("- ..." or "1. ..."), continuation lines joined."""
    items: list[str] = []
    for line in markdown.splitlines():
        start = re.match(r"^\s*(?:[-*]|\d+\.)\s+(.*)", line)
        if start:
            items.append(start.group(1).strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        elif items and line.strip():
            break  # the list has ended
    return items


def _section(markdown_cells: list[str], heading: str) -> str:
    """The text after the first heading or bold line that starts with ``heading``, to the next heading."""
    text = "\n".join(markdown_cells)
    pattern = rf"^(?:#+ |\*\*){re.escape(heading)}[^\n]*\n(.*?)(?=^#+ |\Z)"
    match = re.search(pattern, text, re.MULTILINE | re.DOTALL | re.IGNORECASE)
    return match.group(1) if match else ""


def key_points(notebook: Path) -> dict:
    """What a notebook's deck shows: title, learn, figures [(section, file)], summary, questions."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    title = markdown[0].splitlines()[0].lstrip("# ").strip()
    figures, section = [], title
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            headings = re.findall(r"^## (.+)$", source, re.MULTILINE)
            section = headings[-1].strip() if headings else section
        else:
            figures += [
                (section, name) for name in _FIGURE.findall(source) if name not in {f for _, f in figures}
            ]
    return {
        "title": title,
        "learn": _items(_section(markdown, "What you will learn")),
        "figures": figures,
        "summary": _items(_section(markdown, "Summary")),
        "questions": _items(_section(markdown, "Questions")),
    }


def deck_source(points: dict, figure_dir: Path, relative_to: Path) -> tuple[str, list[str]]:
    """(Typst source of the deck, names of figures not built yet)."""
    missing = []
    lines = [
        '#set page(paper: "presentation-16-9", margin: 1.6cm)',
        "#set text(size: 20pt)",
        "#show heading: set text(size: 26pt)",
        "",
        '#align(center + horizon)[#text(size: 32pt, weight: "bold")[' + _inline(points["title"]) + "]]",
    ]

    def slide(heading: str, bullets: list[str], size: int = 18) -> None:
        if bullets:
            lines.extend(["#pagebreak()", f"= {_inline(heading)}", f"#set text(size: {size}pt)"])
            lines.extend(f"- {_inline(item)}" for item in bullets)
            lines.append("#set text(size: 20pt)")

    slide("What you will learn", points["learn"])
    for section, name in points["figures"]:
        path = figure_dir / name
        lines.extend(["#pagebreak()", f"= {_inline(section)}"])
        if path.exists():
            relative = Path("/") / path.resolve().relative_to(relative_to.resolve())
            lines.append(f"#align(center)[#image({json.dumps(str(relative))}, height: 80%)]")
        else:
            missing.append(name)
            lines.append(f"_{_inline(name)}: not built yet; run the notebook in this profile._")
    slide("Summary", points["summary"], size=17)
    slide("Questions", points["questions"][:8], size=16)
    return "\n".join(lines) + "\n", missing


def make_deck(notebook: Path, profile: str) -> tuple[Path, list[str]]:
    """Write ``build/<profile>/slides/<notebook>.pdf``; return (the PDF, figures not built yet)."""
    import typst  # imported here: only `make slides` needs the compiler

    build = config.build_dir(profile)
    folder = config.output_dir(profile, "slides")
    source, missing = deck_source(key_points(notebook), config.output_dir(profile, "figures"), build)
    typ = folder / f"{Path(notebook).stem}.typ"
    typ.write_text(source, encoding="utf-8")
    pdf = typ.with_suffix(".pdf")
    with config.atomic_target(pdf) as temporary:
        typst.compile(str(typ), output=str(temporary), root=str(build), format="pdf")
    return pdf, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile", default="default", help="whose build's figures to show (default: default)"
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: all numbered ones)")
    args = parser.parse_args(argv)
    config.get_profile(args.profile)  # a clear error for an unknown profile, before anything is written
    for notebook in args.notebooks or notebooks.numbered_notebooks():
        pdf, missing = make_deck(notebook, args.profile)
        note = f" ({len(missing)} figures not built yet: run the notebook first)" if missing else ""
        print(f"{pdf}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
