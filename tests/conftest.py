import os

import pytest

from helpers import config, datasets

# JAX compiles each training run's steps anew (a new model is a new function to trace); the runs
# of notebooks 05-07 on JAX and of the backend tests share shapes, so a compilation cache on disk
# that every worker and notebook kernel reads (they inherit the environment) compiles each once.
# Keyed by the compiled program and the JAX version: a hit is the same executable, the same
# numbers. Kept in build/ (git-ignored) between runs of the suite; set the variable to move it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(config.REPO_ROOT / "build" / ".jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_configure(config):
    """Under pytest-xdist, modules go out in the order :func:`pytest_collection_modifyitems` sets.

    xdist otherwise hands out work units (``--dist loadfile``: modules) largest first by their
    number of tests, so the rehearsal series (13 tests) waited behind the unit modules with more
    tests, and two long modules could queue on one worker; ``--no-loadscope-reorder`` is this
    setting on the command line.
    """
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    """Modules that run notebooks first, the longest series first, each kept whole and in order.

    ``make test`` and ``make test-slow`` run modules on two workers (pytest-xdist, ``--dist
    loadfile``). The notebook series take longest, so they start first and the unit tests fill
    in after them: the smoke series in ``make test``; the rehearsal series and the worked
    solutions (which run the smoke notebooks they read) side by side in ``make test-slow``. A
    module's weight is its number of notebook-marked tests (tests/smoke_series.py lets the
    solutions and the smoke series share one build on either worker).
    """
    weight: dict = {}
    for item in items:
        weight.setdefault(item.path, 0)
        weight[item.path] += item.get_closest_marker("notebooks") is not None
    first_seen = {path: position for position, path in enumerate(weight)}
    items.sort(key=lambda item: (-weight[item.path], first_seen[item.path]))


@pytest.fixture(scope="session")
def data_files():
    """The real inputs, fetched (or found) and verified once per test session."""
    return {name: datasets.fetch(name) for name in datasets.DATA_FILES}


@pytest.fixture(scope="session")
def report_locations(data_files):
    return datasets.load_report_locations()


@pytest.fixture(scope="session")
def municipalities(data_files):
    return datasets.load_municipalities()


@pytest.fixture
def isolated_build(tmp_path, monkeypatch):
    """Send everything computed to a temporary build folder."""
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "build"


@pytest.fixture
def smoke_profile():
    return config.get_profile("smoke")


@pytest.fixture(scope="session")
def smoke_build_root(tmp_path_factory):
    """One smoke build for the whole test run, shared by the workers: the notebook tests build it
    in order, and the solution tests read it (tests/smoke_series.py)."""
    from tests import smoke_series

    return smoke_series.shared_root(tmp_path_factory.getbasetemp())
