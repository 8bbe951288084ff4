"""Helpers for the Denmark geolocation workbook.

Importing the package also keeps TensorFlow's start-up lines out of the notebooks. Since
TensorFlow logs through absl, its first lines ("oneDNN custom operations are on", "Could not
find cuda drivers") are written to the process's stderr before any log level applies, and
``TF_CPP_MIN_LOG_LEVEL`` does not stop them; Jupyter copies that stream into the cell's
output. So the first ``import tensorflow`` (from Keras or from a helper) runs with the C
stderr pointed at /dev/null, and only that import: Python's own errors and warnings are
raised and shown as always, and everything after the import reaches stderr again.

This works when ``helpers`` is imported before TensorFlow or Keras, as every notebook does.
"""

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from contextlib import contextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later C++ lines, e.g. cuInit failing without a GPU


def _tensorflow_errors_only(tensorflow) -> None:
    """TensorFlow's Python warnings are advice to library authors (e.g. "5 out of the last 7 calls
    ... triggered tf.function retracing" when Keras predicts batch by batch); errors still show.
    Its logger is set up on first use, to INFO in Jupyter, so it is set up here and then lowered."""
    tensorflow.get_logger().setLevel(logging.ERROR)


@contextmanager
def _c_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the duration, whatever Python's sys.stderr is."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual, and runs its module code with the C stderr silenced; once."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module_code = spec.loader.exec_module

        def exec_module(module):
            with _c_stderr_silenced():
                run_module_code(module)
            _tensorflow_errors_only(module)

        spec.loader.exec_module = exec_module  # this spec's own loader object only
        return spec


if "tensorflow" in sys.modules:  # imported before the helpers: too late for the start-up lines
    _tensorflow_errors_only(sys.modules["tensorflow"])
elif not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())
