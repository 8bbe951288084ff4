"""The Colab/Kaggle setup cell, the badges, and the course picture of the README."""

import ast
import json
import shlex
import shutil
import sys

import pytest

from helpers import colab, config, notebooks, pipeline

NOTEBOOKS = notebooks.numbered_notebooks()
# the notebooks this change applied the cell to; the others get it from `python -m helpers.colab apply`
APPLIED = [p for p in NOTEBOOKS if p.name[:2] in {"01", "02", "04", "05"}]


PUBLISHED = "https://github.com/example-owner/dk-geolocation-workbook"


@pytest.fixture
def published(monkeypatch):
    """The workbook as if published at :data:`PUBLISHED`."""
    monkeypatch.setattr(colab, "REPOSITORY_URL", PUBLISHED)
    return PUBLISHED


def run_setup_cell(tmp_path, monkeypatch, environment: dict) -> dict:
    """Execute the setup cell's code as a kernel would, in ``tmp_path``, with ``environment`` set."""
    for key in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell may prepend the clone
    namespace: dict = {}
    exec(compile(colab.setup_cell(), "setup cell", "exec"), namespace)
    return namespace


def test_outside_colab_and_kaggle_the_cell_does_nothing(tmp_path, monkeypatch):
    before = list(sys.path)
    namespace = run_setup_cell(tmp_path, monkeypatch, {})
    assert namespace["HOSTED"] is False
    assert list(tmp_path.iterdir()) == [] and sys.path == before


@pytest.mark.parametrize("variable", ["COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"])
def test_on_colab_or_kaggle_it_builds_the_install_command(tmp_path, monkeypatch, variable, published):
    # a finished earlier install: the cell must not run the command again, only put the clone on the path
    (tmp_path / "workbook").mkdir()
    (tmp_path / "workbook" / ".installed").touch()
    namespace = run_setup_cell(tmp_path, monkeypatch, {variable: "simulated"})
    assert namespace["HOSTED"] is True
    steps = [shlex.split(step) for step in namespace["SETUP"].split(" && ")]
    python = sys.executable
    assert steps == [
        ["test", "-d", "workbook", "||", "git", "clone", "--depth", "1", published, "workbook"],
        [python, "-m", "pip", "install", "--quiet", "-e", "./workbook"],
        ["cd", "workbook"],
        [python, "-m", "helpers.datasets"],  # what `make data` runs
        ["touch", ".installed"],
    ]
    assert sys.path[0] == str(tmp_path / "workbook")
    assert sorted(p.name for p in (tmp_path / "workbook").iterdir()) == [".installed"]  # nothing ran


def test_an_unpublished_copy_says_so_on_colab_instead_of_failing_in_git_clone(tmp_path, monkeypatch):
    assert colab.REPOSITORY_URL is None or colab.is_published()
    monkeypatch.setattr(colab, "REPOSITORY_URL", None)
    with pytest.raises(SystemExit, match="not published"):
        run_setup_cell(tmp_path, monkeypatch, {"COLAB_RELEASE_TAG": "simulated"})
    assert list(tmp_path.iterdir()) == []  # nothing cloned or installed
    with pytest.raises(ValueError, match="REPOSITORY_URL"):
        colab.colab_url("05_baseline_vit.ipynb")


def test_the_cell_is_short_and_needs_nothing_from_the_workbook():
    source = colab.setup_cell()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"os", "subprocess", "sys"}  # helpers is not installed yet when it runs
    assert len(source.splitlines()) <= 20 and f"REPOSITORY = {colab.REPOSITORY_URL!r}" in source


def test_badges_open_the_notebook_from_the_repository(published):
    url = colab.colab_url("05_baseline_vit.ipynb")
    owner_and_name = colab.REPOSITORY_URL.removeprefix("https://github.com/")
    assert url == (
        f"https://colab.research.google.com/github/{owner_and_name}/blob/{colab.BRANCH}"
        "/notebooks/05_baseline_vit.ipynb"
    )
    kaggle = colab.kaggle_url("05_baseline_vit.ipynb")
    assert kaggle.endswith(f"{owner_and_name}/blob/{colab.BRANCH}/notebooks/05_baseline_vit.ipynb")
    assert url in colab.badges("05_baseline_vit.ipynb")


@pytest.mark.parametrize("path", APPLIED, ids=[p.stem for p in APPLIED])
def test_notebooks_open_with_badges_and_the_setup_cell(path):
    assert colab.problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_apply_gives_every_notebook_a_cell_that_passes_the_house_rules(path, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    colab.apply(copy)
    assert colab.problems(copy) == [] and notebooks.problems(copy) == []
    assert colab.apply(copy) is False  # applying twice changes nothing

    def body(cells):  # all but the title cell and the setup cell
        return [c for c in cells[1:] if colab.SETUP_TAG not in c["metadata"].get("tags", [])]

    assert body(json.loads(copy.read_text())["cells"]) == body(json.loads(path.read_text())["cells"])


def test_the_command_line_applies_to_the_same_notebooks_as_the_runner(tmp_path):
    assert colab.every_notebook() == NOTEBOOKS
    for name in ("03_images.ipynb", "01_locations.ipynb", "notes.ipynb", "1_short.ipynb"):
        (tmp_path / name).write_text("{}")
    expected = [tmp_path / "01_locations.ipynb", tmp_path / "03_images.ipynb"]
    assert colab.every_notebook(tmp_path) == expected == notebooks.numbered_notebooks(tmp_path)


def test_a_changed_setup_cell_or_a_stray_pip_install_is_reported(tmp_path):
    copy = tmp_path / APPLIED[0].name
    shutil.copy(APPLIED[0], copy)
    notebook = json.loads(copy.read_text())
    setup = next(c for c in notebook["cells"] if colab.SETUP_TAG in c["metadata"].get("tags", []))
    setup["source"] = ["!pip install haversine"]
    copy.write_text(json.dumps(notebook))
    assert any("stale or misplaced Colab setup cell" in p for p in notebooks.problems(copy))
    assert colab.problems(copy)


def test_the_readme_gives_every_notebook_its_open_in_cell_and_shows_the_pipeline():
    readme = (config.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"| {colab.open_in_cell(path)} |" in readme, (
            f"README lacks the 'open in' cell of {path.name}: give it a row in the course table, "
            "then run `python -m helpers.colab apply`"
        )
    if not colab.is_published():  # no link that leads nowhere
        assert "colab.research.google.com/github" not in readme and "OWNER" not in readme
    assert pipeline.pipeline_mermaid() in readme


def test_publishing_puts_links_in_the_readme_and_unpublishing_takes_them_out(tmp_path, monkeypatch):
    copy = tmp_path / "README.md"
    shutil.copy(config.REPO_ROOT / "README.md", copy)
    monkeypatch.setattr(colab, "REPOSITORY_URL", PUBLISHED)
    colab.update_readme(copy)
    text = copy.read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"| [Colab]({colab.colab_url(path)}) · [Kaggle]({colab.kaggle_url(path)}) |" in text
    assert colab.update_readme(copy) is False  # a second run changes nothing
    monkeypatch.setattr(colab, "REPOSITORY_URL", None)
    colab.update_readme(copy)
    assert copy.read_text(encoding="utf-8") == (config.REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_published_notebooks_get_badges_and_unpublished_ones_none(tmp_path, monkeypatch):
    copy = tmp_path / "09_attention.ipynb"
    shutil.copy(config.REPO_ROOT / "notebooks" / "09_attention.ipynb", copy)
    monkeypatch.setattr(colab, "REPOSITORY_URL", PUBLISHED)
    assert colab.apply(copy) is True
    title = "".join(json.loads(copy.read_text())["cells"][0]["source"])
    assert colab.colab_url(copy) in title and "runs the notebooks it reads (01-08)" in title
    monkeypatch.setattr(colab, "REPOSITORY_URL", None)
    colab.apply(copy)
    assert copy.read_bytes() == (config.REPO_ROOT / "notebooks" / "09_attention.ipynb").read_bytes()


def test_the_pipeline_names_every_notebook_once():
    numbers = []
    for numbers_of_step, _, _ in pipeline.STEPS:
        first, _, last = numbers_of_step.partition("-")
        numbers += list(range(int(first), int(last or first) + 1))
    assert numbers == [int(p.name[:2]) for p in NOTEBOOKS]
    figure = pipeline.pipeline_figure()
    labels = [t.get_text() for t in figure.axes[0].texts]
    assert all(any(label.startswith(f"{n} · {s}") for label in labels) for n, s, _ in pipeline.STEPS)
