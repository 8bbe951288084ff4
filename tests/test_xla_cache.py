"""The XLA compile cache that importing ``helpers`` sets up (helpers/__init__.py)."""

import json
import os
import subprocess
import sys

from helpers import config

# a tiny model compiled with XLA, trained one step; prints TensorFlow's flags as it saw them
_FIT = """
import json, os, sys
import helpers  # first, as every notebook does
import keras, numpy as np
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
model.compile(optimizer="adam", loss="mse", jit_compile=True)
model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=1, verbose=0)
print(json.dumps(os.environ.get("TF_XLA_FLAGS", "")))
"""


def _fit_in_a_new_process(build, extra_env=None):
    env = {**os.environ, "WORKBOOK_BUILD_DIR": str(build), "PYTHONPATH": str(config.REPO_ROOT)}
    env.pop("TF_XLA_FLAGS", None)
    env.update(extra_env or {})
    done = subprocess.run(
        [sys.executable, "-c", _FIT], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_compiled_step_is_stored_in_the_build_folder_and_reused_by_the_next_process(tmp_path):
    build = tmp_path / "build"
    flags = _fit_in_a_new_process(build)
    cache = build / "xla-cache"
    assert f"--tf_xla_persistent_cache_directory={cache}" in flags
    stored = sorted(p.name for p in cache.iterdir())
    assert stored, "the compiled training step was not written to the cache"
    # the same program in a second process: found in the cache, nothing new written
    _fit_in_a_new_process(build)
    assert sorted(p.name for p in cache.iterdir()) == stored


def test_flags_the_user_set_are_kept_and_a_path_with_a_space_is_left_alone(tmp_path):
    own = tmp_path / "mine"
    chosen = f"--tf_xla_persistent_cache_directory={own}"
    assert _fit_in_a_new_process(tmp_path / "build", {"TF_XLA_FLAGS": chosen}) == chosen
    assert not (tmp_path / "build" / "xla-cache").exists()
    spaced = tmp_path / "with space" / "build"
    assert _fit_in_a_new_process(spaced) == ""  # TensorFlow would split the path at the space
    assert not (spaced / "xla-cache").exists()
