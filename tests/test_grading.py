"""make assignments and make grade (helpers/grading.py): student notebooks, otter autograders, and
the grades of real submissions.

The submissions are made here from the student notebooks, as a student would: the Your-turn
function is rewritten in its cell (the worked answer of ``solutions/``, or a typical mistake,
:data:`WRONG`) and the notebook saved. :data:`CLASS` says who wrote what; each graded function
of 02, 05, 06 and 07 is answered right once and wrong once. One ``grade`` run grades them all
with otter, each notebook in its own kernel, beside a notebook cut off in the middle of its
JSON and names that are not graded (a folder with a space, a misspelt notebook, a loose file).
Kernels are slow to start, so the class is as small as that allows: 8 notebooks.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import nbformat
import psutil
import pytest
from otter.execute.preprocessor import IGNORE_CELL_TAG, GradingPreprocessor
from otter.test_files import ExceptionTestFile

from helpers import checks, config, grading, notebooks

SOLUTIONS = config.REPO_ROOT / "solutions"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def worked_answers() -> dict[str, str]:
    """{function: its worked answer from solutions/, with the imports of its block above it}."""
    answers = {}
    for path in sorted(SOLUTIONS.glob("[0-9][0-9]_*.md")):
        for code in _BLOCK.findall(path.read_text(encoding="utf-8")):
            if not re.search(r"^# Your turn: ", code, re.MULTILINE):
                continue
            tree = ast.parse(code)
            imports = [
                ast.get_source_segment(code, n)
                for n in tree.body
                if isinstance(n, ast.Import | ast.ImportFrom)
            ]
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    answers[node.name] = "\n".join([*imports, "", "", ast.get_source_segment(code, node)])
    return answers


def fill_in(notebook: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """A copy of a student notebook with each named function's stub replaced by the answer's code."""
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    left = set(answers)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        lines = cell.source.splitlines()
        stubs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in answers]
        for node in reversed(stubs):  # from the bottom, so the line numbers above stay right
            lines[node.lineno - 1 : node.end_lineno] = answers[node.name].strip("\n").splitlines()
            left.discard(node.name)
        cell.source = "\n".join(lines)
    assert not left, f"no stub of {sorted(left)} in the notebook"
    return notebook


def save(notebook: nbformat.NotebookNode, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


WRONG = {  # a typical mistake: the answer's code
    "K-means started once": '''
def split_in_two(lnglat, seed=0):
    """K-means started once (scikit-learn's default n_init), not ten times."""
    side = KMeans(n_clusters=2, random_state=seed).fit_predict(lnglat)
    north = int(lnglat[side == 1, 1].mean() > lnglat[side == 0, 1].mean())
    return (side != north).astype(int)
''',
    "q, k, v zeroed in place": '''
def attention(q, k, v):
    """Clears its inputs before it starts: the caller's q, k and v are zeros afterwards."""
    for tensor in (q, k, v):
        tensor[...] = 0
    weights = ops.softmax(ops.matmul(q, ops.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]), axis=-1)
    return ops.matmul(weights, v), weights
''',
    "Keras' own accuracy": '''
def train_one_epoch(classifier, train_data, val_data, optimizer):
    """Keras' own "accuracy", which misreads the [cell, lat, lng] labels, and no top-3."""
    classifier.compile(optimizer=optimizer, loss=losses.cross_entropy, metrics=["accuracy"])
    return classifier.fit(train_data, validation_data=val_data, epochs=1, verbose=0, shuffle=False)
''',
    "an endless loop": '''
def eq1_loss(cells, probabilities, d):
    """Never returns."""
    while True:
        pass
''',
    "sys.exit()": '''
import sys


def eq3_loss(cells, probabilities, d):
    """Stops the whole program."""
    sys.exit("giving up")
''',
    "centroids moved in place": '''
def smoothed_targets(latlng, centroids, tau_km):
    """Moves the caller's centroids 0.2 degrees north-east, then computes on the moved ones."""
    centroids += 0.2
    km = losses.haversine_km_to_cells(latlng, centroids)
    return ops.exp(-(km - ops.min(km, axis=-1, keepdims=True)) / tau_km)
''',
}


# Who wrote what: {(student, notebook): {function: "worked" (the worked answer), "stub" (left as
# handed out) or a mistake of WRONG}}. Every graded function of 02, 05, 06 and 07 is answered
# right once and wrong (or not at all) once; two submissions of 07 hold all its answers.
CLASS = {
    ("alice", "02_geocells"): {"split_in_two": "worked"},
    ("alice", "05_baseline_vit"): {"attention": "worked", "encoder_block": "worked"},
    ("alice", "06_augmentation_and_schedule"): {"train_one_epoch": "worked"},
    ("bob", "02_geocells"): {"split_in_two": "K-means started once"},
    ("bob", "05_baseline_vit"): {"attention": "q, k, v zeroed in place", "encoder_block": "stub"},
    ("bob", "06_augmentation_and_schedule"): {"train_one_epoch": "Keras' own accuracy"},
    ("bob", "07_distance_losses"): {
        "eq1_loss": "an endless loop",
        "eq3_loss": "worked",
        "smoothed_targets": "worked",
    },
    ("carol", "07_distance_losses"): {  # and every cell tag lost on the way
        "eq1_loss": "worked",
        "eq3_loss": "sys.exit()",
        "smoothed_targets": "centroids moved in place",
    },
}


def without_tags(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        cell.metadata.pop("tags", None)
    return notebook


@pytest.fixture(scope="module")
def assignments(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assignments")
    grading.assign(folder)
    return folder


def student_version(assignments, stem: str) -> nbformat.NotebookNode:
    return nbformat.read(assignments / "student" / f"{stem}.ipynb", as_version=4)


# --- assign ------------------------------------------------------------------------------------------


def test_every_graded_notebook_gets_a_student_version_and_an_autograder(assignments):
    notebooks = {notebook for notebook, _ in checks.GRADED.values()}
    assert {p.stem for p in (assignments / "student").glob("*.ipynb")} == notebooks
    for check, (stem, function) in checks.GRADED.items():
        folder = assignments / "autograder" / stem
        manifest = json.loads((folder / grading.MANIFEST).read_text(encoding="utf-8"))
        assert {"question": function, "check": check, "points": 1} in manifest["questions"]
        test = ExceptionTestFile.from_file(str(folder / "tests" / f"{function}.py"))
        assert test.name == function and test.all_or_nothing
        assert [(case.hidden, case.points) for case in test.test_cases] == [(False, 0.5), (True, 0.5)]
        assert f"tests/{function}.py" in zipfile.ZipFile(folder / "autograder.zip").namelist()


def test_the_student_version_keeps_the_workbook_code_and_needs_no_otter(assignments):
    for stem in {notebook for notebook, _ in checks.GRADED.values()}:
        source = nbformat.read(grading.NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
        student = student_version(assignments, stem)
        assert notebooks.problems(assignments / "student" / f"{stem}.ipynb") == []  # the house rules
        code = [cell.source for cell in student.cells if cell.cell_type == "code"]
        assert not any(re.search(r"^\s*(import otter|from otter)", text, re.MULTILINE) for text in code)
        # every line of the workbook's code is in the student version, once (blank lines apart)
        original = [c.source for c in source.cells if c.cell_type == "code"]
        assert lines_of(code) == lines_of(original)


def lines_of(sources) -> list[str]:
    return sorted(line for text in sources for line in text.splitlines() if line.strip())


def test_grading_keeps_only_the_imports_and_the_your_turn_cells(assignments):
    """otter's own filter (the one otter run applies) on the student version."""
    assert grading.IGNORE_TAG == IGNORE_CELL_TAG
    for stem in {notebook for notebook, _ in checks.GRADED.values()}:
        student = student_version(assignments, stem)
        GradingPreprocessor().filter_ignored_cells(student)
        kept = [ast.parse(cell.source) for cell in student.cells if cell.cell_type == "code"]
        imports, *your_turn = kept
        assert imports.body and all(isinstance(n, ast.Import | ast.ImportFrom) for n in imports.body)
        defined = {n.name for tree in your_turn for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert defined == {function for notebook, function in checks.GRADED.values() if notebook == stem}
        assert not any("build_inputs(" in ast.unparse(tree) for tree in your_turn)


def test_a_cell_that_lost_its_tag_is_skipped_again(assignments):
    stem = "07_distance_losses"
    manifest = json.loads((assignments / "autograder" / stem / grading.MANIFEST).read_text(encoding="utf-8"))
    student = student_version(assignments, stem)
    tagged = [i for i, c in enumerate(student.cells) if grading.IGNORE_TAG in c.metadata.get("tags", [])]
    copy = grading.grading_copy(without_tags(student_version(assignments, stem)), manifest["skipped_cells"])
    assert [i for i, c in enumerate(copy.cells) if grading.IGNORE_TAG in c.metadata.get("tags", [])] == tagged


def test_the_setup_cell_is_split_into_its_imports_and_the_rest():
    source = "import numpy as np\n\nbuild(PROFILE)  # slow\n\n# keras after\nfrom keras import ops\nx = 1"
    assert grading.split_imports(source) == (
        "import numpy as np\n\n# keras after\nfrom keras import ops",
        "build(PROFILE)  # slow\nx = 1",
    )
    with pytest.raises(ValueError, match="two statements"):
        grading.split_imports("import os; x = 1\n")


# --- grade: real submissions ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graded(assignments, tmp_path_factory):
    """(rows of grades.csv, what the command printed, the marker files) of one `grade` run."""
    root = tmp_path_factory.mktemp("class")
    submissions, markers = root / "submissions", root / "markers"
    markers.mkdir()
    worked = worked_answers()
    for (student, stem), wrote in CLASS.items():
        code = {f: worked[f] if how == "worked" else WRONG[how] for f, how in wrote.items() if how != "stub"}
        notebook = fill_in(student_version(assignments, stem), code)
        if student == "carol":
            notebook = without_tags(notebook)
        if (student, stem) == ("bob", "02_geocells"):  # a skipped cell and an added one leave a mark
            skipped = next(c for c in notebook.cells if "build_inputs(" in c.source)
            skipped.source = f"open({str(markers / 'skipped')!r}, 'w').close()\n" + skipped.source
            added = f"open({str(markers / 'added')!r}, 'w').close()"
            notebook.cells.append(nbformat.v4.new_code_cell(added))
        save(notebook, submissions / student / f"{stem}.ipynb")

    whole = (assignments / "student" / "02_geocells.ipynb").read_text(encoding="utf-8")
    (submissions / "erin").mkdir()
    (submissions / "erin" / "02_geocells.ipynb").write_text(whole[: len(whole) // 2], encoding="utf-8")
    save(student_version(assignments, "04_distances"), submissions / "eve smith" / "04_distances.ipynb")
    save(student_version(assignments, "04_distances"), submissions / "alice" / "04_distance.ipynb")
    (submissions / "notes.txt").write_text("not a notebook\n", encoding="utf-8")
    (submissions / ".DS_Store").write_text("", encoding="utf-8")

    out = root / "grades.csv"
    printed = io.StringIO()
    command = ["grade", str(submissions), "--assignments", str(assignments), "--out", str(out)]
    with contextlib.redirect_stdout(printed):
        assert grading.main([*command, "--timeout", "300", "--jobs", "2"]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows, printed.getvalue(), markers


def points(rows, student, notebook) -> dict[str, tuple[float, float, str]]:
    return {
        r["question"]: (float(r["points"]), float(r["max_points"]), r["status"])
        for r in rows
        if (r["student"], r["notebook"]) == (student, notebook)
    }


def test_the_csv_has_one_row_per_submitted_notebook_and_question(graded):
    rows, _, _ = graded
    assert list(rows[0]) == ["student", "notebook", "question", "points", "max_points", "status"]
    submitted = {*CLASS, ("erin", "02_geocells")}
    assert {(r["student"], r["notebook"]) for r in rows} == submitted
    for student, notebook in submitted:
        questions = [f for f_notebook, f in checks.GRADED.values() if f_notebook == notebook]
        assert sorted(points(rows, student, notebook)) == sorted(questions)


def answers(how) -> list[tuple[str, str, str]]:
    """(student, notebook, function) of every answer in CLASS that ``how(answer)`` picks."""
    return [(s, n, f) for (s, n), wrote in CLASS.items() for f, answer in wrote.items() if how(answer)]


@pytest.mark.parametrize("student, notebook, function", answers(lambda answer: answer == "worked"))
def test_a_worked_answer_scores_full_marks(graded, student, notebook, function):
    rows, _, _ = graded
    assert points(rows, student, notebook)[function] == (1.0, 1.0, "ok")


@pytest.mark.parametrize("student, notebook, function", answers(lambda answer: answer != "worked"))
def test_a_wrong_or_missing_answer_scores_zero_and_grading_goes_on(graded, student, notebook, function):
    rows, _, _ = graded
    assert points(rows, student, notebook)[function] == (0.0, 1.0, "ok"), CLASS[student, notebook][function]


def test_a_corrupted_notebook_is_reported_as_failed_not_a_crash(graded):
    rows, printed, _ = graded
    ((got, most, status),) = points(rows, "erin", "02_geocells").values()
    assert (got, most) == (0.0, 1.0) and status.startswith("unreadable: not a readable notebook")
    assert "erin/02_geocells.ipynb: unreadable" in printed


def test_names_that_are_not_graded_are_listed(graded):
    rows, printed, _ = graded
    not_graded = printed.split("Not graded")[1]
    for name in (
        "eve smith/: not a plain name",
        "alice/04_distance.ipynb: not a notebook",
        "notes.txt: not in",
    ):
        assert name in not_graded
    assert ".DS_Store" not in printed and "eve smith" not in {r["student"] for r in rows}


def test_skipped_cells_do_not_run_and_added_cells_do(graded):
    _, _, markers = graded
    assert (markers / "added").exists()
    assert not (markers / "skipped").exists()


def running_with(text: str) -> list[psutil.Process]:
    """The live processes whose command line mentions ``text`` (a zombie is not live)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        line = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(text in part for part in line):
            found.append(process)
    return found


def test_a_submission_past_its_time_limit_is_stopped_with_its_kernel(assignments, tmp_path, monkeypatch):
    """A loop outside any graded function: only the submission's time limit stops it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the private folders go here
    looping = student_version(assignments, "04_distances")
    looping.cells.insert(0, nbformat.v4.new_code_cell("while True:\n    pass"))
    save(looping, tmp_path / "submissions" / "frank" / "04_distances.ipynb")
    rows, problems = grading.grade(tmp_path / "submissions", assignments, tmp_path / "grades.csv", seconds=10)
    assert problems == []
    assert [(r["question"], r["points"], r["status"][:8]) for r in rows] == [("haversine", 0.0, "timeout:")]
    # the grading process and its kernel (its connection file is in the private folder) are gone
    assert running_with(str(tmp_path)) == []


def test_a_timed_out_child_is_ended_with_what_it_started_in_a_session_of_its_own(tmp_path):
    """As otter's kernel: a grandchild in a new session, which a process group kill would miss."""
    pid_file = tmp_path / "grandchild.pid"
    grandchild = "import time; time.sleep(600)"
    child = (
        "import subprocess, sys, time\n"
        f"g = subprocess.Popen([sys.executable, '-c', {grandchild!r}], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "time.sleep(600)"
    )
    process = subprocess.Popen([sys.executable, "-c", child])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild_pid = int(pid_file.read_text())
    grading._end_process_tree(process)
    assert process.poll() is not None
    assert (
        not psutil.pid_exists(grandchild_pid)
        or psutil.Process(grandchild_pid).status() == psutil.STATUS_ZOMBIE
    )


def test_usage_errors_exit_with_1_and_say_what_to_do(tmp_path, capsys):
    assert grading.main(["grade", str(tmp_path / "nowhere"), "--assignments", str(tmp_path)]) == 1
    assert "no submissions folder" in capsys.readouterr().err
    (tmp_path / "submissions").mkdir()
    assert grading.main(["grade", str(tmp_path / "submissions"), "--assignments", str(tmp_path)]) == 1
    assert "make assignments" in capsys.readouterr().err
