"""Every numbered notebook: house rules on the source and a real run in the smoke profile.

The series runs into the smoke build that tests/test_solutions.py (the worked solutions)
reads too (tests/smoke_series.py): each notebook runs once there, in order, by whichever
worker needs it first.
"""

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from helpers import config, notebooks
from tests import smoke_series

NOTEBOOKS = notebooks.numbered_notebooks()


def test_there_are_notebooks_in_teaching_order():
    names = [path.name for path in NOTEBOOKS]
    assert names and names[0] == "01_locations.ipynb"
    assert names == sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_source_follows_the_house_rules(path):
    assert notebooks.problems(path) == []


@pytest.fixture(scope="module")
def shared_build(smoke_build_root):
    """One build folder for the whole series: later notebooks read what earlier ones wrote."""
    root = smoke_build_root
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBOOK_BUILD_DIR", str(root))
        yield root


# Opened alone, a notebook runs the ones it reads first (helpers.notebooks.build_inputs). The
# mechanism is the same for every notebook after 01, so the test opens one whose inputs are
# cheap: 04, which reads 01-03 (about a fifth of what 09's inputs, 01-08, cost in smoke).
ALONE = "04_distances"


@pytest.mark.notebooks
def test_a_notebook_alone_in_an_empty_build_folder_builds_its_inputs_first(
    shared_build, tmp_path, monkeypatch
):
    """Opened by itself (a student's fresh Colab machine), notebook 04 runs 01-03 first.

    It starts the series, so the notebooks it builds are the series' own runs of 01-04 (one
    runner, one profile): the tests below and the solutions find them done. Should the other
    worker have begun the series first (another order of modules), it runs in an empty folder
    of its own instead.
    """
    with notebooks.build_lock("smoke", wait_s=smoke_series.LOCK_WAIT_S) as build:
        started = any((build / "notebooks").glob("*.ipynb"))
        if not started:
            check_alone(build)
    if started:
        monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path))
        check_alone(config.build_dir("smoke"))


def check_alone(build):
    """Run notebook 04 in ``build`` (no notebook has run there) and check what it did."""
    assert not any((build / "notebooks").glob("*.ipynb")), "the series starts from an empty build folder"
    output, _ = notebooks.run_notebook(config.REPO_ROOT / "notebooks" / f"{ALONE}.ipynb", "smoke")
    earlier = notebooks.dependencies(f"{ALONE}.ipynb")
    assert [path.stem[:2] for path in earlier] == ["01", "02", "03"]
    assert all(notebooks.has_run(path, "smoke") for path in earlier)
    assert list((build / "figures").glob(f"fig{ALONE[:2]}*.png"))
    executed = json.loads(output.read_text())
    printed = "".join(
        "".join(out.get("text", "")) for cell in executed["cells"] for out in cell.get("outputs", [])
    )
    # the notebook said what it was doing, with the expected time, and ran the three notebooks
    assert f"{ALONE} reads what notebooks 01-03 write" in printed and "running them first" in printed
    assert "This machine:" in printed and "100%" in printed
    assert (build / notebooks.MACHINE_FILE).exists()
    started = [json.loads((build / "notebooks" / f".{path.stem}.done.json").read_text()) for path in earlier]
    assert [record["finished"] for record in started] == sorted(record["finished"] for record in started)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_runs_in_the_smoke_profile(path, shared_build):
    """Each notebook in order, on its series backend (05-07 on JAX: tests/smoke_series.py)."""
    before = path.read_bytes()
    backend = smoke_series.backend_of(path)
    output, _ = smoke_series.ensure_run(path)  # 01-04 ran when notebook 04 was opened alone
    if path.stem[:2] == "05":  # its runs say which backend trained them
        summary = json.loads((shared_build / "smoke" / "runs" / "baseline" / "summary.json").read_text())
        assert summary["keras_backend"] == backend
    assert output == shared_build / "smoke" / "notebooks" / path.name
    executed = json.loads(output.read_text())
    assert any(cell.get("outputs") for cell in executed["cells"] if cell["cell_type"] == "code")
    assert path.read_bytes() == before  # the source is never written
    assert library_noise(executed) == [], "a student reads these outputs: no warnings or library log lines"
    build = shared_build / "smoke"
    if path.stem == "10_report":
        assert (build / "report.html").stat().st_size > 10_000 and (build / "report.pdf").exists()
    else:
        figures = (build / "figures").glob(f"fig{path.stem[:2]}*.png")
        assert list(figures), "every notebook saves its figures in the build folder"


# A warning (Python's "...Warning: ", a library's "WARNING"), an absl or glog line from C++
# ("I0000 00:00:17... port.cc:153] ..."), tqdm's complaint without ipywidgets.
_NOISE = re.compile(
    r"\w+Warning: |^WARNING\b|^\[\w+\] WARNING|^[IWEF]\d{4} [\d:. ]+\d+ \S+:\d+\]|IProgress not found",
    re.MULTILINE,
)


def library_noise(executed: dict) -> list[str]:
    """'cell N: line' for every warning or library log line in an executed notebook's outputs."""
    found = []
    for number, cell in enumerate(executed["cells"]):
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) if output.get("output_type") == "stream" else ""
            found += [f"cell {number}: {line}" for line in text.splitlines() if _NOISE.search(line)]
    return found


def test_library_noise_is_found_and_results_are_not():
    def executed(*texts, name="stderr"):
        outputs = [nbformat.v4.new_output("stream", name=name, text=t) for t in texts]
        return {"cells": [nbformat.v4.new_code_cell("x", outputs=outputs)]}

    noisy = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795993385.787154   11084 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1795993641.515295   15939 cuda_platform.cc:52] failed call to cuInit",
        "/tmp/ipykernel_1/5.py:3: Pandas4Warning: The 'lsuffix' and 'rsuffix' keywords are deprecated",
        "tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.",
    ]
    for line in noisy:
        assert library_noise(executed(line)) == [f"cell 0: {line}"], line
    assert library_noise(executed("x\n" + noisy[3], name="stdout")) == [f"cell 0: {noisy[3]}"]
    clean = [
        "516 images, 129 cells, 32 px",
        "Epoch 1/5 - 3s - loss: 4.8 - accuracy: 0.01",
        "✗ Your turn, haversine: on 50 random pairs in Denmark, the distance differs by up to 342.",
        "a warning sign: the gap grows",
    ]
    assert library_noise(executed(*clean, name="stdout")) == []


def test_tensorflow_imported_through_the_helpers_prints_no_start_up_lines():
    """TensorFlow's absl lines ("oneDNN custom operations are on", "Could not find cuda
    drivers") come before any log level applies; importing helpers first silences them, and
    TensorFlow's Python warnings."""
    # sys.ps1 as in Jupyter, where TensorFlow's own logger starts at INFO
    code = (
        "import sys; sys.ps1 = '>>> '; import helpers, keras, tensorflow as tf; "
        "tf.get_logger().warning('advice to library authors'); print(float(tf.constant(2.0) * 3))"
    )
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment["PYTHONPATH"] = str(config.REPO_ROOT)
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "6.0", result.stderr
    stderr = {"cells": [{"outputs": [{"output_type": "stream", "name": "stderr", "text": result.stderr}]}]}
    assert library_noise(stderr) == []


def test_a_failing_notebook_names_the_cell_and_keeps_a_copy(tmp_path, isolated_build):
    source = tmp_path / "99_broken.ipynb"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell('PROFILE = "default"', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("x = 1"),
            nbformat.v4.new_code_cell("raise ValueError('no such cell: 130')"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    with pytest.raises(notebooks.NotebookFailed) as caught:
        notebooks.run_notebook(source, "smoke")
    message = str(caught.value)
    assert "99_broken.ipynb failed" in message and "ValueError: no such cell: 130" in message
    folder = config.build_dir("smoke") / "notebooks"
    assert (folder / "99_broken.failed.ipynb").exists()
    assert not (folder / "99_broken.ipynb").exists()


def test_strip_and_problems_on_a_dirty_notebook(tmp_path):
    path = tmp_path / "01_x.ipynb"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title\n\nWhat you will learn"),
            nbformat.v4.new_code_cell(
                "!pip install haversine",
                execution_count=3,
                outputs=[nbformat.v4.new_output("stream", text="ok")],
            ),
            nbformat.v4.new_markdown_cell("## Summary\n\n## Exercises"),
        ]
    )
    nbformat.write(nb, path)
    found = " | ".join(notebooks.problems(path))
    assert "has outputs" in found and "pip install" in found and "parameters" in found
    assert notebooks.strip(path) is True
    assert notebooks.strip(path) is False
    assert "has outputs" not in " | ".join(notebooks.problems(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_has_worked_solutions(path):
    """Every exercise and every closing question of a notebook has an answer in solutions/."""
    solutions = config.REPO_ROOT / "solutions" / f"{path.stem}.md"
    assert solutions.exists(), f"write the worked solutions of {path.name} in {solutions}"
    exercises, questions = notebooks_markdown(path).split("## Exercises")[-1].split("## Questions")
    answers, _, answered_questions = solutions.read_text(encoding="utf-8").partition("## Questions")
    for kind, asked, given in (("exercise", exercises, answers), ("question", questions, answered_questions)):
        numbers = re.findall(r"^(\d+)\. ", asked, flags=re.MULTILINE)
        assert numbers, f"{path.name} has no numbered {kind}s"
        missing = [n for n in numbers if f"**{n}." not in given]
        assert not missing, f"{solutions.name} does not answer {kind}(s) {', '.join(missing)} of {path.name}"


def notebooks_markdown(path):
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


# ---- prose that cannot go stale ----
_HEADER_TIME = re.compile(
    r"\*\*Time and memory\*\* \(profile `default`\): ((?:about )?[\d.,-]+ (?:s|min|minutes))"
)


def test_the_readme_lists_every_notebook_with_the_time_its_header_gives():
    readme = (config.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        header = _HEADER_TIME.search(notebooks_markdown(path))
        assert header, f"{path.name} needs a '**Time and memory** (profile `default`): about N s' header"
        row = re.search(rf"^\| {path.stem[:2]} \| `{path.stem}` \| [^|]+ \| ([^|]+) \|", readme, re.MULTILINE)
        assert row, f"README.md has no row for {path.name}"
        said, measured = row.group(1), header.group(1)
        assert said == measured, f"README says {said!r} for {path.name}, its header {measured!r}"
    count = len(NOTEBOOKS)
    words = {12: "twelve", 13: "thirteen", 14: "fourteen"}
    assert f"runs notebooks 01-{count:02d}" in readme and f"The {words.get(count, count)} notebooks" in readme


# ---- the book of the smoke build: keep this the LAST test of the module ----
# The course book (helpers/book) is built from the executed notebooks of the smoke build above
# and its pages are opened in headless Chromium by tests/book_pages.py, the book's own checks.
# It runs here, at the end of the smoke series, so that it reads this build instead of making one.
BOOK_PAGES = config.REPO_ROOT / "tests" / "book_pages.py"


@pytest.mark.notebooks
def test_the_book_builds_from_the_smoke_build(shared_build):
    if not BOOK_PAGES.exists():
        pytest.skip(f"{BOOK_PAGES.relative_to(config.REPO_ROOT)} does not exist: no book check to run yet")
    from tests import book_pages

    smoke_series.ensure_through(len(NOTEBOOKS))  # every notebook's executed copy, when this test runs alone
    book_pages.check_smoke_book(shared_build)
