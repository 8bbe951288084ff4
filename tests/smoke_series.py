"""The smoke build that the notebook tests and the worked-solution tests share.

Test modules run on two workers (pytest-xdist, ``--dist loadfile``). When one session runs
both the smoke series (tests/test_notebooks.py, ``make test``) and the worked solutions
(tests/test_solutions.py, ``make test-slow``), as plain ``pytest`` does, they read one build
folder and each notebook runs once in it: whoever needs a notebook first runs it, under the
build folder's runner lock (``notebooks.build_lock``), and whoever comes second waits for
that lock and finds it done. Alone, the solutions run the notebooks they read themselves.
"""

import os
from pathlib import Path

import pytest

from helpers import config, notebooks

# The training notebooks run on JAX in the smoke series, the others on TensorFlow: the rehearsal
# series and `make all` train on TensorFlow, so every notebook meets TensorFlow and the training
# ones meet JAX too, and 08-12 read on TensorFlow the models JAX trained (a .keras file is the
# same on every backend). One series instead of a second one on JAX: the suite's time.
ON_JAX = ("05", "06", "07")

# how long a worker waits for the other to finish a notebook it also needs (s): the longest
# smoke notebook takes about 2 min on a busy machine
LOCK_WAIT_S = 1_800


def backend_of(notebook: Path) -> str:
    """The Keras backend the smoke series runs ``notebook`` on."""
    return "jax" if notebook.stem[:2] in ON_JAX else "tensorflow"


def shared_root(basetemp: Path) -> Path:
    """The smoke build's folder (WORKBOOK_BUILD_DIR) for this test run, the same for every worker.

    ``basetemp`` is the worker's ``tmp_path_factory.getbasetemp()``; under pytest-xdist each
    worker's lies in the run's common temporary folder.
    """
    base = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    root = base / "smoke-build"
    root.mkdir(exist_ok=True)
    return root


def ensure_run(notebook: Path) -> tuple[Path, bool]:
    """(executed copy, whether this call ran it) of ``notebook`` in the smoke build.

    Runs it on its series backend unless a runner has already finished it there; waits up to
    :data:`LOCK_WAIT_S` for a runner in another worker. WORKBOOK_BUILD_DIR must name the
    shared build (:func:`shared_root`).
    """
    output = config.build_dir("smoke") / "notebooks" / notebook.name
    if notebooks.has_run(notebook, "smoke"):
        return output, False
    with notebooks.build_lock("smoke", wait_s=LOCK_WAIT_S):
        if notebooks.has_run(notebook, "smoke"):  # the other worker ran it while this one waited
            return output, False
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KERAS_BACKEND", backend_of(notebook))  # the kernel inherits it
            executed, _ = notebooks.run_notebook(notebook, "smoke")
    return executed, True


def ensure_through(number: int) -> None:
    """Every numbered notebook up to ``number`` finished in the smoke build, in order."""
    for notebook in notebooks.numbered_notebooks():
        if int(notebook.name[:2]) <= number:
            ensure_run(notebook)
