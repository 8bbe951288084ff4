"""No typed results: every number in the prose of solutions/*.md and of the notebooks' markdown
cells is printed from a build (so it is not in the prose at all), one of the student report's
(tests/report_numbers.py, with the report's words), or structural (ALLOWED, each with its
reason). Code blocks, inline code and formulas are not prose. Exercise costs are typed, and
test_exercise_costs_follow_the_header checks their minutes against the notebook's header."""

from __future__ import annotations

import json
import re

import pytest

from helpers import config
from tests.report_numbers import REPORT_NUMBERS

SOLUTIONS = sorted((config.REPO_ROOT / "solutions").glob("[0-9][0-9]_*.md"))
NOTEBOOKS = sorted((config.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPORT = config.REPO_ROOT.parent / "shared" / "seed" / "report.md"

# What is not prose: removed before numbers are looked for.
_NOT_PROSE = [
    re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL),  # code blocks
    re.compile(r"`(?:[^`\n]|\n(?!\s*\n))*`"),  # inline code, which may wrap a line
    re.compile(r"\$\$.*?\$\$", re.DOTALL),  # display formulas
    re.compile(r"\$[^$\n]+\$"),  # inline formulas
    re.compile(r"\]\([^)\s]*\)"),  # link targets
]

# Spans where numbers are structural, each with its reason. A number inside a span is allowed.
_REFERENCE = (
    r"(?:notebooks?|sections?|exercises?|questions?|equations?|loss(?:es)?|claims?|figures?|tables?|"
    r"steps?|tiers?|rows?)"
)
_ID = r"\(?\d+(?:\.\d+)*[a-z]?\)?"
ALLOWED: list[tuple[str, str]] = [
    (
        rf"(?i)\b{_REFERENCE}\s*{_ID}(?:\s*(?:-|–|,|and|or|to)\s*{_ID})*",
        "names a notebook, section, "
        "exercise, question, equation, loss, claim, figure or step of the workbook or the report",
    ),
    (r"\((?:\d)\)", "an equation's number, as the report numbers them: (1), (2), (3)"),
    (r"§\s*\d+(?:\.\d+)*", "a section of the report"),
    (r"\b(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-2])\b", "a range of the workbook's notebooks, 01-12"),
    (r"\b(?:Keras|Python|TensorFlow|NumPy|pandas) \d+(?:\.\d+)*", "a software version"),
    (r"\bCC BY(?:-SA|-NC|-ND)* \d\.\d\b", "a Creative Commons licence, whose version is part of its name"),
    (r"\b\w+ training runs?(?: of \d+ epochs)?, about [\d.]+ min", "an exercise's cost in runs and minutes"),
    (r"(?m)^#+ .*$", "a heading's section number"),
    (r"(?m)^\s*\d+\. ", "the number of a list item (exercise, question)"),
    (r"\*\*\d+\.", "the number of the exercise or question a solution answers"),
    (
        r"\*\*Time and memory\*\* \(profile[^)]*\)[^\n]*",
        "the header's measured time and memory: "
        "the runner measures them, tests/test_notebooks.py keeps them equal to the README",
    ),
    (
        r"\*(?:Change a setting|Write it) \([^)]*\)",
        "an exercise's cost: the student's time is the "
        "course's estimate, the computer's follows the header (test_exercise_costs_follow_the_header)",
    ),
    (r"\b(?:19[5-9]\d|20[0-3]\d)\b", "a year: of a citation, a release or the report"),
    (
        r"(?<![\d.,])\b[01]\b(?![.,]\d)",
        "0 and 1: the ends of a probability, a score or a flag, and one thing",
    ),
    (r"\b95 %", "the 95 % interval: the level of the workbook's one rule (helpers/statistics.py)"),
    (
        r"\b(?:12\.7|4\.3|1\.96)\b",
        "the 95 % quantiles of Student's t with one and two degrees of "
        "freedom and of the normal: constants of the distributions",
    ),
    (r"\b6,?371(?:\.0088)? km|\b6,?371(?:\.0088)?\b", "the Earth's mean radius (IUGG), a physical constant"),
    (r"\b111(?:\.\d+)? km\b", "km per degree of latitude on that sphere: geometry"),
    (
        r"\b224 ?(?:px|pixels)|\b224\s*[x×]\s*224|\b16 ?(?:px|pixels)|\b16\s*[x×]\s*16",
        "the image and patch size of ViT-B/16, the report's model (google/vit-base-patch16-224)",
    ),
]
_ALLOWED = [(re.compile(pattern), why) for pattern, why in ALLOWED]
# a number standing alone: not part of a name such as ViT-B/16, float32, T4 or 01_locations
_NUMBER = re.compile(r"(?<![\w.,/-])\d+(?:[.,]\d+)*(?![\w/]|\.\d)")


def prose(text: str) -> str:
    """``text`` (Markdown) without code blocks, inline code, formulas and link targets."""
    for pattern in _NOT_PROSE:
        text = pattern.sub(" ", text)
    return text


def typed_numbers(text: str) -> list[tuple[str, str]]:
    """(number, the words around it) for every number in the prose of ``text`` that is neither
    allowed (ALLOWED) nor one of the report's (REPORT_NUMBERS)."""
    text = prose(text)
    masked = list(text)
    for pattern, _ in _ALLOWED:
        for found in pattern.finditer(text):
            masked[found.start() : found.end()] = " " * (found.end() - found.start())
    masked = "".join(masked)
    offenders = []
    for found in _NUMBER.finditer(masked):
        number = found.group()
        if number in REPORT_NUMBERS:
            continue
        around = text[max(0, found.start() - 40) : found.end() + 30].replace("\n", " ")
        offenders.append((number, around.strip()))
    return offenders


def notebook_markdown(path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def offenders_of(path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8") if path.suffix == ".md" else notebook_markdown(path)
    return typed_numbers(text)


# every solutions file and every notebook's markdown
CLEAN = [*SOLUTIONS, *NOTEBOOKS]


@pytest.mark.parametrize("path", CLEAN, ids=[f"{p.parent.name}/{p.stem}" for p in CLEAN])
def test_no_typed_numbers(path):
    found = offenders_of(path)
    assert not found, f"{path.name} types numbers; print them from the build: " + " | ".join(
        f"{n} in '…{w}…'" for n, w in found
    )


def test_the_scanner_finds_a_typed_result_and_spares_what_is_structural():
    text = """## 3. Results

The model reached 41.2 % top-1 and a mean error of 87 km (notebook 06, section 4).
With the report's 129 cells, equation (1) and the 95 % interval; see `top1 = 0.412` and
$e^2 + 1$. ViT-B/16 at 224 px, Haas et al., 2024. Mapillary's photos are CC BY-SA 4.0.

```python
print(0.5)
```

1. *Change a setting (10 min; two training runs, about 1.5 min).* Train 3 more seeds.
"""
    found = [number for number, _ in typed_numbers(text)]
    assert found == ["41.2", "87", "3"]


def test_the_report_numbers_quote_the_report():
    if not REPORT.exists():
        pytest.skip(f"the report is not in {REPORT} on this machine")
    report = " ".join(REPORT.read_text(encoding="utf-8").split())
    for number, words in REPORT_NUMBERS.items():
        assert " ".join(words.split()) in report, f"the report does not say {words!r}"
        assert number in words or number.replace(",", "") in words, f"{words!r} does not hold {number}"


# ---- exercise costs against the header ----
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "fourteen": 14, "twenty": 20}
_COST = re.compile(r"^(\d+)\. \*(?:Change a setting|Write it) \((\d+) min; ([^)]*)\)", re.MULTILINE)


def exercise_cost_problems(markdown: str, epochs: int) -> list[str]:
    """Exercise costs of a notebook that its header does not bear out: the minutes of K training
    runs (of E epochs) must be K x E / ``epochs`` x the header's seconds per run, within half a
    minute or a quarter; "under a minute" must be under one."""
    header = re.search(r"\*\*Time and memory\*\*[^\n]*?\((\d+) s\)[^\n]*?\b(\w+) training runs", markdown)
    if not header:
        return ["the header gives no time in seconds and no number of training runs"]
    per_run = int(header.group(1)) / _WORDS[header.group(2)]
    found = []
    for number, _, computer in _COST.findall(markdown.split("## Exercises")[-1]):
        runs = re.search(r"\b(\w+) training runs?(?: of (\d+) epochs)?", computer)
        if not runs:
            continue
        seconds = _WORDS[runs.group(1)] * per_run * int(runs.group(2) or epochs) / epochs
        said = re.search(r"about ([\d.]+) min", computer)
        if said and abs(float(said.group(1)) - seconds / 60) > max(0.5, seconds / 60 / 4):
            found.append(f"exercise {number} says {said.group(1)} min, the header gives {seconds / 60:.1f}")
        if "under a minute" in computer and seconds >= 60:
            found.append(f"exercise {number} says under a minute, the header gives {seconds / 60:.1f} min")
        if not said and "under a minute" not in computer:
            found.append(f"exercise {number} gives no minutes for its {runs.group(0)}")
    return found


@pytest.mark.parametrize("stem", ["06_augmentation_and_schedule", "07_distance_losses"])
def test_exercise_costs_follow_the_header(stem):
    markdown = notebook_markdown(config.REPO_ROOT / "notebooks" / f"{stem}.ipynb")
    assert exercise_cost_problems(markdown, config.get_profile("default")["epochs"]) == []


def test_the_cost_check_finds_minutes_the_header_does_not_give():
    header = "**Time and memory** (profile `default`): about 5 minutes (300 s); six training runs.\n"
    exercises = "## Exercises\n\n1. *Change a setting (5 min; two training runs, about 6 min).* x\n"
    assert exercise_cost_problems(header + exercises, 10) == ["exercise 1 says 6 min, the header gives 1.7"]
    fine = exercises.replace("about 6 min", "about 1.5 min")
    assert exercise_cost_problems(header + fine, 10) == []
    vague = exercises.replace(", about 6 min", "")
    assert exercise_cost_problems(header + vague, 10) == [
        "exercise 1 gives no minutes for its two training runs"
    ]
