"""A notebook runs alone: notebook 09 started by itself in an empty build folder, smoke profile.

Slow (it runs notebooks 01-08 first, as a student's fresh Colab machine would), so the module
is marked ``notebooks`` and the conftest starts it early on its own worker.
"""

import json

import pytest

from helpers import config, notebooks

pytestmark = pytest.mark.notebooks


def test_notebook_09_alone_in_an_empty_build_folder_builds_its_inputs_first(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))
    build = config.build_dir("smoke")
    assert not build.exists()
    output, _ = notebooks.run_notebook(config.REPO_ROOT / "notebooks" / "09_attention.ipynb", "smoke")
    earlier = notebooks.dependencies("09_attention.ipynb")
    assert all((build / "notebooks" / path.name).exists() for path in earlier)
    assert list((build / "figures").glob("fig09*.png"))
    executed = json.loads(output.read_text())
    printed = "".join(
        "".join(out.get("text", "")) for cell in executed["cells"] for out in cell.get("outputs", [])
    )
    # the notebook said what it was doing, with the expected time, and ran the eight notebooks
    assert "09_attention reads what notebooks 01-08 write" in printed and "running them first" in printed
    assert "This machine:" in printed and "100%" in printed
    assert (build / notebooks.MACHINE_FILE).exists()
