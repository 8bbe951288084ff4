"""Run the notebooks on a free GPU: Colab and Kaggle badges, and a first cell that installs the workbook.

Every notebook starts with the same code cell (:func:`setup_cell`). On Colab or Kaggle it
clones the workbook from :data:`REPOSITORY_URL`, installs it with pip and fetches the data
(``python -m helpers.datasets``, as ``make data`` does); anywhere else it does nothing. The
cell cannot import ``helpers``, which does not exist on a fresh Colab machine until it has run.

Command line::

    python -m helpers.colab apply [NOTEBOOK ...]   # badges + setup cell, and the README's links
    python -m helpers.colab check                  # list notebooks without them (exit 1 if any)

Publishing: push the workbook to a public GitHub repository, set :data:`REPOSITORY_URL` to
its address (``https://github.com/<owner>/<name>``), run ``python -m helpers.colab apply``
and commit. Until then the address is None: the notebooks carry no badges, the README's
course table no links (no link that leads nowhere), and the setup cell says on Colab or
Kaggle that this copy is not published instead of failing in ``git clone``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from helpers import config

# SET ONCE, when the workbook is published (e.g. "https://github.com/<owner>/dk-geolocation-workbook"),
# then run `python -m helpers.colab apply`. Badges, the setup cell and the README read it.
REPOSITORY_URL: str | None = None
BRANCH = "main"
SETUP_TAG = "colab-setup"  # the setup cell's tag, so `apply` finds and refreshes it
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
KAGGLE_BADGE = "https://kaggle.com/static/images/open-in-kaggle.svg"
# paragraphs of the title cell that `apply` writes (and replaces): badges and the notes below them
_BADGE_PARAGRAPHS = ("[![Open in Colab]", "On Colab or Kaggle", "Opened alone,")
_UNPUBLISHED_CELL = "not yet published"  # the course table's "open in" cell until REPOSITORY_URL is set

# a row of the README's course table: "| 05 | `05_baseline_vit` | ... |"
_ROW = re.compile(r"^\| \d\d \| `(\d\d_\w+)` \|.*\|$", re.MULTILINE)

_SETUP = """\
# Colab and Kaggle only: install the workbook and fetch its data, once (a few minutes). Elsewhere: nothing.
import os
import subprocess
import sys

REPOSITORY = {url!r}  # set in helpers/colab.py
HOSTED = "COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if HOSTED and REPOSITORY is None:
    raise SystemExit("This copy of the workbook is not published: see README, 'Publishing the workbook'.")
SETUP = (
    f"test -d workbook || git clone --depth 1 {{REPOSITORY}} workbook"
    f" && {{sys.executable}} -m pip install --quiet -e ./workbook"
    f" && cd workbook && {{sys.executable}} -m helpers.datasets && touch .installed"
)
if HOSTED and not os.path.exists("workbook/.installed"):
    subprocess.run(SETUP, shell=True, check=True)
if HOSTED:
    sys.path.insert(0, os.path.abspath("workbook"))  # this kernel started before the install"""


def setup_cell() -> str:
    """The source of every notebook's first code cell, with :data:`REPOSITORY_URL` filled in."""
    return _SETUP.format(url=REPOSITORY_URL)


def is_published() -> bool:
    """Whether :data:`REPOSITORY_URL` is set, so that badges and links can point somewhere."""
    return bool(REPOSITORY_URL)


def _github_path(notebook: str | Path) -> str:
    if not is_published():
        raise ValueError(
            "The workbook is not published: set REPOSITORY_URL in helpers/colab.py, "
            "then run `python -m helpers.colab apply`."
        )
    owner_and_name = REPOSITORY_URL.removeprefix("https://github.com/").rstrip("/")
    return f"{owner_and_name}/blob/{BRANCH}/notebooks/{Path(notebook).name}"


def colab_url(notebook: str | Path) -> str:
    """The address that opens ``notebook`` (a file name in ``notebooks/``) in Google Colab."""
    return f"https://colab.research.google.com/github/{_github_path(notebook)}"


def kaggle_url(notebook: str | Path) -> str:
    """The address that imports ``notebook`` into a Kaggle notebook."""
    return f"https://kaggle.com/kernels/welcome?src=https://github.com/{_github_path(notebook)}"


def badges(notebook: str | Path) -> str:
    """The markdown line with the "Open in Colab" and "Open in Kaggle" badges of ``notebook``."""
    return (
        f"[![Open in Colab]({COLAB_BADGE})]({colab_url(notebook)}) "
        f"[![Open in Kaggle]({KAGGLE_BADGE})]({kaggle_url(notebook)})"
    )


def _badge_text(notebook: Path) -> str:
    """The badges (once published), and for a notebook after 01 that it builds its inputs alone."""
    number = int(Path(notebook).name[:2])
    paragraphs = []
    if is_published():
        paragraphs.append(badges(notebook))
        paragraphs.append("On Colab or Kaggle (internet on), the first code cell installs the workbook.")
    if number > 1:
        earlier = "notebook 01" if number == 2 else f"01-{number - 1:02d}"
        paragraphs.append(
            f"Opened alone, on a fresh machine, this notebook first runs the notebooks it reads ({earlier}) "
            "in the same profile, with a progress bar and the expected time; where they have run, it "
            "goes straight on."
        )
    return "\n\n".join(paragraphs)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def apply(notebook: Path) -> bool:
    """Put the badges under the title and the setup cell first in ``notebook``; True if it changed.

    Run again after changing :data:`REPOSITORY_URL`: the old badges and cell are replaced.
    """
    notebook = Path(notebook)
    text = notebook.read_text(encoding="utf-8")
    data = json.loads(text)
    cells = data["cells"]
    title = next(cell for cell in cells if cell["cell_type"] == "markdown")
    first, _, rest = "".join(title["source"]).partition("\n")
    # keep every paragraph but an earlier badge line and its note, then put the current ones first
    kept = [p for p in rest.lstrip("\n").split("\n\n") if not p.startswith(_BADGE_PARAGRAPHS)]
    title["source"] = _lines("\n\n".join([first, *filter(None, [_badge_text(notebook)]), *kept]))
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    setup = next((c for c in code if SETUP_TAG in c.get("metadata", {}).get("tags", [])), None)
    if setup is None:
        setup = {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": [SETUP_TAG]},
            "outputs": [],
        }
        cells.insert(cells.index(code[0]) if code else len(cells), setup)
    setup["source"] = _lines(setup_cell())
    cleaned = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if cleaned == text:
        return False
    with config.atomic_target(notebook) as temporary:
        temporary.write_text(cleaned, encoding="utf-8")
    return True


def problems(notebook: Path) -> list[str]:
    """What is missing or stale in ``notebook``'s badges and setup cell, as sentences."""
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    code = [cell for cell in data["cells"] if cell["cell_type"] == "code"]
    markdown = "".join(next(c for c in data["cells"] if c["cell_type"] == "markdown")["source"])
    fix = "(run `python -m helpers.colab apply`)"
    found = []
    if _badge_text(Path(notebook)) not in markdown:  # the badges, and the note for a fresh machine
        found.append(f"the title cell lacks current Colab and Kaggle badges {fix}")
    if not code or "".join(code[0]["source"]) != setup_cell():
        found.append(f"the first code cell is not the current Colab/Kaggle setup cell {fix}")
    return found


def open_in_cell(notebook: str | Path) -> str:
    """The README course table's "open in" cell of ``notebook``: links once published, else a note."""
    if not is_published():
        return _UNPUBLISHED_CELL
    return f"[Colab]({colab_url(notebook)}) · [Kaggle]({kaggle_url(notebook)})"


def update_readme(readme: Path = config.REPO_ROOT / "README.md") -> bool:
    """Write each course table row's "open in" cell from :data:`REPOSITORY_URL`; True if it changed.

    Rows are ``| NN | `NN_name` | ... |``; the last cell is replaced (links, or until the
    workbook is published a note, so the README has no links that lead nowhere). A row
    without that cell gets it appended.
    """
    text = readme.read_text(encoding="utf-8")

    def with_cell(match: re.Match) -> str:
        row, stem = match.group(0), match.group(1)
        cell = open_in_cell(f"{stem}.ipynb")
        last = row.rstrip("|").rpartition("|")[2].strip()
        if "colab.research.google.com" in last or last == _UNPUBLISHED_CELL:
            return f"{row.rstrip('|').rpartition('|')[0]}| {cell} |"
        return f"{row} {cell} |"

    updated = _ROW.sub(with_cell, text)
    if updated == text:
        return False
    with config.atomic_target(readme) as temporary:
        temporary.write_text(updated, encoding="utf-8")
    return True


def every_notebook(folder: Path = config.REPO_ROOT / "notebooks") -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``folder``, in teaching order.

    The same list as ``helpers.notebooks.numbered_notebooks``, read here because that module
    imports this one (its house rules check the setup cell), so this one may not import it.
    """
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.colab", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("apply", help="add or refresh badges and the setup cell; update the README")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: every numbered notebook")
    commands.add_parser("check", help="list the notebooks without current badges and setup cell")
    args = parser.parse_args(argv)
    if args.command == "apply":
        for path in args.notebooks or every_notebook():
            print(f"{'updated' if apply(path) else 'current'}  {path}")
        print(f"{'updated' if update_readme() else 'current'}  README.md")
        return 0
    missing = {path: problems(path) for path in every_notebook()}
    for path, found in missing.items():
        for problem in found:
            print(f"{path.name}: {problem}")
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
