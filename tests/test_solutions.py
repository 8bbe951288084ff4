"""Every worked solution (solutions/NN_name.md) runs in the smoke profile, on the smoke build.

Every code block is fenced ```python and runs as written, with ``PROFILE = "smoke"``. A
solutions file says which notebooks it reads ("... notebooks 02-04 in the build folder"):
those must have run first. They run in the smoke build that tests/test_notebooks.py runs the
series into (tests/smoke_series.py): in a session that runs both modules (plain ``pytest``)
this one mostly finds them done or waits for them, and each notebook runs at most once. The
runs are marked slow: ``make test-slow`` runs them (the notebooks they read first), beside the
rehearsal series, and ``make test`` leaves them out; the checks of the blocks' text stay in it.
"""

import re

import matplotlib.pyplot as plt
import pytest

from helpers import config
from tests import smoke_series

SOLUTIONS = sorted((config.REPO_ROOT / "solutions").glob("[0-9][0-9]_*.md"))
_BLOCK = re.compile(r"^```(python|py)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PARAMETER = 'PROFILE = "default"  # as in the notebook\'s parameters cell\n'
_NEEDS = re.compile(r"notebooks?\s+(?:\d\d-)?(\d\d)\s+in\s+the\s+build")


def code_blocks(path) -> list[tuple[str, str]]:
    """(fence language, code) of every fenced Python block in a solutions file, in order."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shared_build(smoke_build_root):
    """The smoke build of the notebook tests (tests/smoke_series.py), as WORKBOOK_BUILD_DIR."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBOOK_BUILD_DIR", str(smoke_build_root))
        yield smoke_build_root


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_every_block_is_valid_python(path):
    for number, (_, code) in enumerate(code_blocks(path), start=1):
        compile(code, f"{path.name}, block {number}", "exec")


def test_every_code_block_is_fenced_to_run():
    """A block fenced ```py (or unfenced as Python) would be skipped by the run below."""
    for path in SOLUTIONS:
        fences = re.findall(r"^```(\S*)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
        openings = fences[0::2]
        assert all(lang == "python" for lang in openings), f"{path.name}: fence every code block as ```python"


RUNNABLE = [p for p in SOLUTIONS if any(lang == "python" for lang, _ in code_blocks(p))]


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", RUNNABLE, ids=[p.stem for p in RUNNABLE])
def test_solutions_run_in_the_smoke_profile(path, shared_build):
    blocks = [code for lang, code in code_blocks(path) if lang == "python"]
    assert blocks[0].startswith(_PARAMETER), f"the first block of {path.name} must set PROFILE first"
    # papermill's way: the parameter is replaced, everything else runs as written
    blocks[0] = 'PROFILE = "smoke"\n' + blocks[0].removeprefix(_PARAMETER)
    needs = _NEEDS.search(path.read_text(encoding="utf-8").split("```python")[0])
    smoke_series.ensure_through(int(needs.group(1)) if needs else 0)
    namespace = {"__name__": "__solution__"}
    try:
        for number, code in enumerate(blocks, start=1):
            exec(compile(code, f"{path.name}, python block {number}", "exec"), namespace)
    finally:
        plt.close("all")
