"""The worked solutions run: every ```python block of solutions/NN_name.md, in the smoke profile.

A solutions file says which notebooks it reads ("... notebooks 02-04 in the build folder"),
so the module first runs the notebooks up to the last of those in the smoke profile into a
temporary build folder (as the notebook tests do), once, as far as the solutions need them.
"""

import re

import matplotlib.pyplot as plt
import pytest

from helpers import config, notebooks

SOLUTIONS = sorted((config.REPO_ROOT / "solutions").glob("[0-9][0-9]_*.md"))
_BLOCK = re.compile(r"^```(python|py)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PARAMETER = 'PROFILE = "default"  # as in the notebook\'s parameters cell\n'
_NEEDS = re.compile(r"notebooks?\s+(?:\d\d-)?(\d\d)\s+in\s+the\s+build")


def code_blocks(path) -> list[tuple[str, str]]:
    """(fence language, code) of every fenced Python block in a solutions file, in order."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def build_through(smoke_build_root):
    """A function that runs the numbered notebooks up to a number in the smoke profile, once each.

    The build is the session's smoke build: notebooks the notebook tests already ran there
    are not run again.
    """
    root = smoke_build_root
    done: set[str] = set()

    def through(number: int) -> None:
        for path in notebooks.numbered_notebooks():
            executed = config.build_dir("smoke") / "notebooks" / path.name
            if int(path.name[:2]) <= number and path.name not in done and not executed.exists():
                notebooks.run_notebook(path, "smoke")
            done.add(path.name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBOOK_BUILD_DIR", str(root))
        yield through


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_every_block_is_valid_python(path):
    for number, (_, code) in enumerate(code_blocks(path), start=1):
        compile(code, f"{path.name}, block {number}", "exec")


RUNNABLE = [p for p in SOLUTIONS if any(lang == "python" for lang, _ in code_blocks(p))]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", RUNNABLE, ids=[p.stem for p in RUNNABLE])
def test_solutions_run_in_the_smoke_profile(path, build_through):
    blocks = [code for lang, code in code_blocks(path) if lang == "python"]
    assert blocks[0].startswith(_PARAMETER), f"the first block of {path.name} must set PROFILE first"
    # papermill's way: the parameter is replaced, everything else runs as written
    blocks[0] = 'PROFILE = "smoke"\n' + blocks[0].removeprefix(_PARAMETER)
    needs = _NEEDS.search(path.read_text(encoding="utf-8").split("```python")[0])
    build_through(int(needs.group(1)) if needs else 0)
    namespace = {"__name__": "__solution__"}
    try:
        for number, code in enumerate(blocks, start=1):
            exec(compile(code, f"{path.name}, python block {number}", "exec"), namespace)
    finally:
        plt.close("all")
