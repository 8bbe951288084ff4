"""Assignments and grades with otter-grader: hand out the graded notebooks, grade what comes back.

Command line (the Makefile's ``make assignments`` and ``make grade SUBMISSIONS=folder``)::

    python -m helpers.grading assign [--out build/assignments]
    python -m helpers.grading grade SUBMISSIONS [--assignments build/assignments] [--out grades.csv]
                                    [--timeout 600] [--jobs 1]

**assign** writes, for every notebook with graded "Your turn" cells (:data:`helpers.checks.GRADED`):

- ``student/NN_name.ipynb``, the notebook to hand out: the workbook's notebook, with its setup
  cell split in two (its imports, then the rest) and otter's tag ``otter_ignore`` on every
  code cell that grading must not run. A tag is only metadata and the split changes no
  code, so the student version runs as the workbook's does, on a laptop, Colab or Kaggle,
  and imports nothing from otter.
- ``autograder/NN_name/autograder.zip``, otter's autograder, made by ``otter generate`` from
  the test files in ``autograder/NN_name/tests/`` (one per question, kept there to read),
  and ``autograder/NN_name/assignment.json``: the questions, their points and the cells
  grading skips.

Why test files and ``otter generate`` rather than ``otter assign``: ``otter assign`` makes the
student version from a master notebook with solution blocks, puts otter's own cells
(``grader = otter.Notebook()``, ``grader.check(...)``) into it unless each is switched off, and
runs the whole master notebook to prove its tests, training and downloads included. The
workbook's notebooks already are the student version (a stub with ``...`` in every Your-turn
cell), and its checks already are the tests, so the tests are written in otter's documented
exception-based format (``from otter.test_files import test_case``) and zipped by
``otter generate``.

**Questions and points.** One question per graded function, named after it (``haversine``),
worth :data:`POINTS_PER_QUESTION` = 1 point, all or nothing: a function is right when its
check passes on the cases the notebook shows and on the hidden ones
(``checks.check_x(answer, hidden=True)``). Every graded function is one skill of its notebook
and the checks say only right or wrong, so no question weighs more than another; a notebook
is worth as many points as it has graded functions. Each test file holds two of otter's test
cases, the shown cases (public) and the hidden ones (hidden, so a Gradescope student sees only
that they failed).

**What grading runs.** otter drops every cell tagged ``otter_ignore`` before it executes a
submission (``GradingPreprocessor.filter_ignored_cells`` in otter/execute/preprocessor.py), so
grading runs the setup cell's imports, the Your-turn cells and any cell the student added,
never the training, the downloads or the reading of a build. A notebook whose tags were lost
on the way (an editor that drops cell metadata) is tagged again before grading: a cell whose
code is that of a skipped cell of the student version is skipped. The checks limit each case's
time (``checks.SECONDS_PER_CASE``) and catch ``sys.exit()``; a whole submission has
``--timeout`` seconds (default :data:`SUBMISSION_SECONDS`), after which its process and kernel
are ended.

**grade** expects ``SUBMISSIONS/<student>/<NN_name>.ipynb``: one folder per student, named
with plain ASCII letters, digits, ".", "_" or "-" (the ``student`` column), holding the
notebooks under their handed-out names. Anything else (another name, a link, a loose file, a
folder inside a student's) is listed as not graded; names starting with "." are passed over.
Every notebook is graded in a private temporary folder of its own that holds nothing but a
copy of it, by otter's Python API (``otter.api.grade_submission``: otter run without Docker)
in a child process. The result is one CSV (``--out``, written to a temporary file and renamed
onto it): ``student, notebook, question, points, max_points, status``. ``status`` is ``ok``, or
names why a submission could not be graded (``unreadable: ...``, ``timeout: ...``,
``kernel error: ...``); such a submission gets its rows with 0 points, and grading goes on. The
command exits non-zero only for a usage error: 2 for a wrong argument, 1 for no submissions
folder or no autograders.

**Grading runs student code unsandboxed.** A submitted notebook runs with your account's
rights: it can read, change or delete any file you can, the other students' submissions
included, and it can tamper with the checks in its own kernel. The private folder only keeps
one student's files out of another's working folder. Grade a real class inside a container
or a throwaway virtual machine that holds nothing else (docs/teaching.md).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

from helpers import checks, config, safe_paths

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"
IGNORE_TAG = "otter_ignore"  # otter.execute.preprocessor.IGNORE_CELL_TAG: cells grading drops
POINTS_PER_QUESTION = 1
SUBMISSION_SECONDS = 600.0  # imports, the checks (06 trains a small model) and the kernel's start
MANIFEST = "assignment.json"

_STUDENT_NOTE = (
    "**Student version.** Write your answers in the *Your turn* cells. When this notebook is "
    "graded, only the imports of the setup cell, the *Your turn* cells and cells you add are "
    "run; the cells tagged `otter_ignore` are not. So your functions may use the imported "
    "modules, not the tables or models that other cells make."
)


@dataclass(frozen=True)
class Question:
    """One graded function: ``function`` in notebook ``notebook`` (a stem), checked by ``check``."""

    notebook: str
    function: str
    check: str
    points: float = POINTS_PER_QUESTION


def graded_questions() -> dict[str, list[Question]]:
    """{notebook stem: its questions, in the order of :data:`helpers.checks.GRADED`}."""
    questions: dict[str, list[Question]] = {}
    for check, (notebook, function) in checks.GRADED.items():
        questions.setdefault(notebook, []).append(Question(notebook, function, check))
    return dict(sorted(questions.items()))


# --- the student version ---------------------------------------------------------------------------


def _tree(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython magics: not a cell this module reads
        return None


def _calls_check(tree: ast.Module, question: Question) -> bool:
    """Whether the cell calls ``checks.<check>(<function>, ...)``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == question.check
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "checks"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == question.function
        ):
            return True
    return False


def _defines(tree: ast.Module, function: str) -> bool:
    return any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body)


def your_turn_cells(notebook: nbformat.NotebookNode, questions: list[Question]) -> dict[int, Question]:
    """{cell index: question} of the cells that define a graded function and call its check.

    Raises ValueError naming the question when no cell, or more than one, does both: the
    notebook and :data:`helpers.checks.GRADED` disagree.
    """
    found: dict[int, Question] = {}
    for question in questions:
        cells = [
            index
            for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code"
            and (tree := _tree(cell.source)) is not None
            and _calls_check(tree, question)
            and _defines(tree, question.function)
        ]
        if len(cells) != 1:
            raise ValueError(
                f"checks.GRADED says {question.check} grades {question.function} of notebook "
                f"{question.notebook}, but {len(cells)} of its code cells define {question.function} "
                f"and call checks.{question.check}({question.function}); exactly one should (fix "
                "GRADED or the notebook)."
            )
        found[cells[0]] = question
    return found


def split_imports(source: str) -> tuple[str, str]:
    """(the top-level import statements of a cell, the rest of it), each as written.

    Comments and blank lines go with the statement below them. Statements keep their order
    within each part; the imports come first, so an import written after other code (notebook
    05's ``from keras import ops``) moves up. Raises ValueError for two statements on one line.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    imports: list[str] = []
    rest: list[str] = []
    start = 0  # the first line not yet placed
    for node in tree.body:
        if node.lineno <= start:
            raise ValueError(f"line {node.lineno} holds two statements; put each on a line of its own")
        part = imports if isinstance(node, ast.Import | ast.ImportFrom) else rest
        part.extend(lines[start : node.end_lineno])
        start = node.end_lineno
    rest.extend(lines[start:])
    return "\n".join(imports).strip("\n"), "\n".join(rest).strip("\n")


def _ignored(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    tags = cell.metadata.setdefault("tags", [])
    if IGNORE_TAG not in tags:
        tags.append(IGNORE_TAG)
    return cell


def student_notebook(notebook: nbformat.NotebookNode, questions: list[Question]) -> nbformat.NotebookNode:
    """The student version of a workbook notebook (see the module's docstring).

    Kept as they are: the Your-turn cells (definition and check) and the markdown. Split: the
    setup cell (the one that calls ``build_inputs``) into its imports, run when graded, and
    the rest, tagged ``otter_ignore`` as is every other code cell. A short note under the
    title tells the student what grading runs.
    """
    your_turn = your_turn_cells(notebook, questions)
    setup = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and "build_inputs(" in cell.source
    ]
    if len(setup) != 1:
        raise ValueError(
            f"notebook {questions[0].notebook} has {len(setup)} code cells calling build_inputs; the student "
            "version splits the one setup cell into its imports and the rest"
        )
    student = copy.deepcopy(notebook)
    cells = []
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code" or index in your_turn:
            cells.append(cell)
        elif index == setup[0]:
            imports, rest = split_imports(cell.source)
            for part in (imports, rest):
                cells.append(nbformat.v4.new_code_cell(part, metadata=copy.deepcopy(cell.metadata)))
            _ignored(cells[-1])
        else:
            cells.append(_ignored(cell))
    title = next((i for i, cell in enumerate(cells) if cell.cell_type == "markdown"), -1)
    cells.insert(title + 1, nbformat.v4.new_markdown_cell(_STUDENT_NOTE))
    if student.get("nbformat_minor", 0) < 5:  # cell ids came with nbformat 4.5; new cells have them
        for cell in cells:
            cell.pop("id", None)
    student.cells = cells
    return student


# --- the autograder --------------------------------------------------------------------------------

_TEST_FILE = '''\
"""Notebook {notebook}, Your turn: {function}, worth {points:g}, all or nothing.

helpers.checks.{check} on the cases the notebook shows, then on the hidden ones too.
Written by `python -m helpers.grading assign`; otter's exception-based test format.
"""

from otter.test_files import test_case

from helpers.grading import run_check

OK_FORMAT = False

name = "{function}"
points = {points!r}
all_or_nothing = True


@test_case(hidden=False)
def shown_cases({function}):
    run_check("{check}", {function}, hidden=False)


@test_case(hidden=True)
def hidden_cases({function}):
    run_check("{check}", {function}, hidden=True)
'''

_shown_cases_failed: set[tuple[str, int]] = set()


def run_check(check: str, answer, *, hidden: bool) -> None:
    """One test case of an autograder, run in otter's grading kernel: ``checks.<check>(answer)``
    on the shown cases, or with ``hidden=True`` on the hidden ones too.

    Raises AssertionError (otter's "test case failed") unless the check passes. A function
    that failed its shown cases fails the hidden run at once, without a second run of an
    answer that may run into the time limit again.
    """
    if answer is None:
        raise AssertionError("the notebook does not define this function (renamed or deleted?)")
    key = (check, id(answer))
    if hidden and key in _shown_cases_failed:
        raise AssertionError("the shown cases fail already")
    try:
        passed = getattr(checks, check)(answer, hidden=hidden, quiet=True)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # a check returns False rather than raise; the answer fails either way
        passed, reason = False, f"the check stopped with {type(error).__name__}"
    else:
        reason = "the check failed"
    if passed is not True:
        if not hidden:
            _shown_cases_failed.add(key)
        raise AssertionError(f"{reason} ({'with' if hidden else 'without'} the hidden cases)")


def _write_json(path: Path, value) -> None:
    with config.atomic_target(path) as temporary:
        temporary.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def assign(out: Path, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Write the student notebooks and the autograders into ``out``; return the student notebooks.

    Files written for each notebook NN_name with graded cells: ``student/NN_name.ipynb``,
    ``autograder/NN_name/tests/<function>.py``, ``autograder/NN_name/autograder.zip`` and
    ``autograder/NN_name/assignment.json``. Files already there are replaced.
    """
    from otter.generate import main as otter_generate

    out = Path(out)
    written = []
    for stem, questions in graded_questions().items():
        source = notebook_dir / f"{stem}.ipynb"
        if not source.is_file():
            raise FileNotFoundError(f"checks.GRADED names notebook {stem}, but {source} does not exist")
        student = student_notebook(nbformat.read(source, as_version=4), questions)
        target = out / "student" / f"{stem}.ipynb"
        with config.atomic_target(target) as temporary:
            temporary.write_text(json.dumps(student, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)

        folder = out / "autograder" / stem
        tests = folder / "tests"
        if tests.is_dir():
            shutil.rmtree(tests)  # a question that is gone must not stay in the zip
        tests.mkdir(parents=True)
        for question in questions:
            text = _TEST_FILE.format(
                notebook=stem, function=question.function, check=question.check, points=question.points
            )
            (tests / f"{question.function}.py").write_text(text, encoding="utf-8")
        with config.atomic_target(folder / "autograder.zip") as temporary:
            temporary.unlink()  # otter generate writes the zip itself
            otter_generate(
                tests_dir=str(tests),
                output_path=str(temporary),
                lang="python",
                no_config=True,  # not ./otter_config.json, ./requirements.txt or ./environment.yml of the cwd
                no_requirements=True,
                no_environment=True,
            )
        skipped = [cell.source for cell in student.cells if IGNORE_TAG in cell.metadata.get("tags", [])]
        _write_json(
            folder / MANIFEST,
            {
                "notebook": stem,
                "questions": [
                    {"question": q.function, "check": q.check, "points": q.points} for q in questions
                ],
                "skipped_cells": skipped,
            },
        )
    return written


# --- grading ---------------------------------------------------------------------------------------

COLUMNS = ["student", "notebook", "question", "points", "max_points", "status"]


@dataclass(frozen=True)
class Submission:
    student: str
    notebook: str
    path: Path


def load_assignments(folder: Path) -> dict[str, dict]:
    """{notebook stem: its assignment.json, with ``zip`` the path of its autograder} in ``folder``."""
    found = {}
    for manifest in sorted(Path(folder).glob(f"autograder/*/{MANIFEST}")):
        record = json.loads(manifest.read_text(encoding="utf-8"))
        record["zip"] = manifest.parent / "autograder.zip"
        if record["zip"].is_file():
            found[record["notebook"]] = record
    return found


def find_submissions(folder: Path, notebooks) -> tuple[list[Submission], list[str]]:
    """(the notebooks to grade, sorted by student and notebook; what is not graded and why).

    The layout: ``folder/<student>/<NN_name>.ipynb``, ``NN_name`` one of ``notebooks``.
    """
    folder = Path(folder)
    expected = sorted(f"{stem}.ipynb" for stem in notebooks)
    found, problems = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            problems.append(f"{entry.name}: a link; links are not followed")
        elif not entry.is_dir():
            problems.append(
                f"{entry.name}: not in a student's folder; the layout is <student>/<NN_name>.ipynb"
            )
        elif not safe_paths.is_plain_name(entry.name):
            problems.append(
                f"{entry.name}/: not a plain name; name a student's folder with ASCII letters, digits, "
                "'.', '_' or '-' (for example 'anna-moller')"
            )
        else:
            for item in sorted(entry.iterdir()):
                where = f"{entry.name}/{item.name}"
                if item.name.startswith("."):
                    continue
                if item.is_symlink() or not item.is_file():
                    problems.append(
                        f"{where}: not a file (a link or a folder); put the notebooks directly in it"
                    )
                elif item.name not in expected:
                    problems.append(
                        f"{where}: not a notebook of an assignment; expected {', '.join(expected)}"
                    )
                else:
                    found.append(Submission(entry.name, item.stem, item))
    return found, problems


def grading_copy(submission: nbformat.NotebookNode, skipped_cells) -> nbformat.NotebookNode:
    """The notebook otter grades: the submission, without outputs, with the ``otter_ignore``
    tag on every cell whose code is that of a cell the student version skips (a lost tag
    comes back), and run by the grading machine's own Python kernel."""
    skipped = set(skipped_cells)
    for cell in submission.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if cell.source in skipped:
            _ignored(cell)
    submission.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return submission


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """A submitted notebook, or ValueError saying why it cannot be read."""
    try:
        notebook = nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=4)
        if not all(isinstance(cell.source, str) and "metadata" in cell for cell in notebook.cells):
            raise ValueError("a cell without source or metadata")
    except Exception as error:  # a submission is anything a student saved: every failure is "unreadable"
        text = " ".join(str(error).split())[:200] or type(error).__name__
        raise ValueError(f"not a readable notebook ({text})") from None
    return notebook


def grade_in_this_process(notebook: str, autograder: str, result: str) -> None:
    """Grade one notebook with otter (``otter.api.grade_submission``) and write
    ``{"questions": {name: {"points", "max_points"}}, "error": text or null}`` to ``result``.
    What :func:`grade_one` runs in its child process."""
    from otter.api import grade_submission

    results = grade_submission(notebook, autograder, quiet=True)
    error = results.catastrophic_error
    record = {
        "questions": {
            name: {"points": float(test.score), "max_points": float(test.possible)}
            for name, test in results.results.items()
        },
        "error": None if error is None else f"{type(error).__name__}: {' '.join(str(error).split())[:200]}",
    }
    Path(result).write_text(json.dumps(record), encoding="utf-8")


def _end_process_tree(process: subprocess.Popen) -> None:
    """Kill a child and everything it started (otter's kernel runs in a session of its own)."""
    import psutil  # installed with ipykernel

    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    process.kill()
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait()
    psutil.wait_procs(family, timeout=10)


def _last_line(log: Path) -> str:
    lines = [
        line.strip()
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    return lines[-1][:200] if lines else "no message"


def _run_otter(copy: Path, autograder: Path, folder: Path, seconds: float) -> tuple[dict, str]:
    """({question: points}, status) of the notebook ``copy``, graded by otter in a child process
    whose working and temporary folder is ``folder``; ended, with its kernel, after ``seconds``."""
    result, log = folder / "result.json", folder / "otter.log"
    environment = os.environ | {
        "TMPDIR": str(folder),  # otter's own temporary folder, and the kernel's files, go in here too
        "WORKBOOK_BUILD_DIR": str(folder / "build"),  # a student's cell cannot write into your build
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from helpers import grading; grading.grade_in_this_process(*sys.argv[1:])",
        str(copy),
        str(autograder),
        str(result),
    ]
    with open(log, "wb") as output:
        child = subprocess.Popen(
            command, cwd=folder, env=environment, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
        try:
            child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            _end_process_tree(child)
            return {}, f"timeout: no result within {seconds:g} s (an endless loop outside a graded function?)"
    if not result.is_file():
        return {}, f"kernel error: {_last_line(log)}"
    record = json.loads(result.read_text(encoding="utf-8"))
    if record["error"]:
        return {}, f"error: {record['error']}"
    return {name: float(value["points"]) for name, value in record["questions"].items()}, "ok"


def grade_one(submission: Submission, assignment: dict, seconds: float) -> list[dict]:
    """The rows of one submission (one per question), graded in a private temporary folder.

    Never raises: whatever goes wrong with one submission is its ``status``, with 0 points.
    """
    try:
        notebook = read_notebook(submission.path)
    except ValueError as error:
        points, status = {}, f"unreadable: {error}"
    else:
        try:
            # mode 0700, this submission's alone; a student's files that cannot be removed stay
            with tempfile.TemporaryDirectory(prefix="grading-", ignore_cleanup_errors=True) as private:
                folder = Path(private)
                copy = folder / submission.path.name
                nbformat.write(grading_copy(notebook, assignment["skipped_cells"]), copy)
                points, status = _run_otter(copy, Path(assignment["zip"]).resolve(), folder, seconds)
        except Exception as error:  # one odd submission must not stop the class's grading
            points, status = {}, f"error: {type(error).__name__}: {' '.join(str(error).split())[:200]}"
    return [
        {
            "student": submission.student,
            "notebook": submission.notebook,
            "question": question["question"],
            "points": points.get(question["question"], 0.0),
            "max_points": float(question["points"]),
            "status": status,
        }
        for question in assignment["questions"]
    ]


def write_grades(rows: list[dict], path: Path) -> None:
    """Write the rows as one CSV with :data:`COLUMNS`, atomically (a temporary file renamed onto it)."""
    with (
        config.atomic_target(Path(path)) as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as f,
    ):
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"points": f"{row['points']:g}", "max_points": f"{row['max_points']:g}"})


def summary(rows: list[dict], problems: list[str], seconds: float) -> str:
    """What a lecturer reads after grading: points per student and notebook, failures, names not graded."""
    students = sorted({row["student"] for row in rows})
    notebooks = sorted({row["notebook"] for row in rows})
    submissions = {(row["student"], row["notebook"]) for row in rows}
    lines = [f"Graded {len(submissions)} notebooks of {len(students)} students in {seconds:.0f} s."]
    if rows:
        width = max(len(name) for name in [*students, "student"])
        lines.append("  " + "student".ljust(width) + "".join(f"  {stem[:2]:>7}" for stem in notebooks))
        for student in students:
            cells = []
            for stem in notebooks:
                mine = [r for r in rows if r["student"] == student and r["notebook"] == stem]
                score = (
                    f"{sum(r['points'] for r in mine):g}/{sum(r['max_points'] for r in mine):g}"
                    if mine
                    else "-"
                )
                cells.append(f"  {score:>7}")
            lines.append("  " + student.ljust(width) + "".join(cells))
    failed = sorted({(r["student"], r["notebook"], r["status"]) for r in rows if r["status"] != "ok"})
    if failed:
        lines.append(f"Failed to run, 0 points ({len(failed)}):")
        lines += [f"  {student}/{notebook}.ipynb: {status}" for student, notebook, status in failed]
    if problems:
        lines.append(f"Not graded ({len(problems)}; rename or move, and grade again):")
        lines += [f"  {problem}" for problem in problems]
    return "\n".join(lines)


def grade(
    submissions: Path,
    assignments: Path,
    out: Path,
    seconds: float = SUBMISSION_SECONDS,
    jobs: int = 1,
) -> tuple[list[dict], list[str]]:
    """Grade every submission in ``submissions`` into the CSV ``out``; return (rows, not graded).

    Raises FileNotFoundError when there is no submissions folder or no autograder.
    """
    submissions, assignments = Path(submissions), Path(assignments)
    if not submissions.is_dir():
        raise FileNotFoundError(
            f"no submissions folder {submissions}: give the folder that holds <student>/<NN_name>.ipynb"
        )
    known = load_assignments(assignments)
    if not known:
        raise FileNotFoundError(
            f"no autograders in {assignments}: run `make assignments` "
            "(python -m helpers.grading assign) first"
        )
    found, problems = find_submissions(submissions, known)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        graded = pool.map(lambda s: grade_one(s, known[s.notebook], seconds), found)
        rows = [row for submission_rows in graded for row in submission_rows]
    write_grades(rows, out)
    return rows, problems


def _build_root() -> Path:
    return Path(os.environ.get("WORKBOOK_BUILD_DIR", config.REPO_ROOT / "build"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.grading", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    hand_out = commands.add_parser("assign", help="write the student notebooks and their autograders")
    hand_out.add_argument(
        "--out", type=Path, default=_build_root() / "assignments", help="default: build/assignments"
    )
    marking = commands.add_parser("grade", help="grade SUBMISSIONS/<student>/<NN_name>.ipynb into one CSV")
    marking.add_argument("submissions", type=Path, help="the folder of the students' folders")
    marking.add_argument(
        "--assignments",
        type=Path,
        default=_build_root() / "assignments",
        help="what assign wrote (build/assignments)",
    )
    marking.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV to write (grades.csv)")
    marking.add_argument(
        "--timeout",
        type=float,
        default=SUBMISSION_SECONDS,
        help=f"seconds per notebook ({SUBMISSION_SECONDS:g})",
    )
    marking.add_argument("--jobs", type=int, default=1, help="notebooks graded at the same time (1)")
    args = parser.parse_args(argv)

    if args.command == "assign":
        for path in assign(args.out):
            print(f"{path}  (autograder: {args.out / 'autograder' / path.stem / 'autograder.zip'})")
        return 0
    if args.timeout <= 0 or args.jobs < 1:
        parser.error("--timeout must be above 0 seconds and --jobs at least 1")
    started = time.perf_counter()
    try:
        rows, problems = grade(args.submissions, args.assignments, args.out, args.timeout, args.jobs)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(summary(rows, problems, time.perf_counter() - started))
    print(f"Grades: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
