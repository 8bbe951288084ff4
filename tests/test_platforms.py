"""The machines students bring: the runner on Windows (no ``resource``), the device line,
mixed precision on the CPU, the machine's reference rate and the GPU bench in its tiny shape."""

import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from helpers import config, device, losses, model


def run_python(code: str, **environment) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root, this worktree's helpers first."""
    env = {**os.environ, "PYTHONPATH": str(config.REPO_ROOT), **environment}
    command = [sys.executable, "-c", code]
    return subprocess.run(command, capture_output=True, text=True, cwd=config.REPO_ROOT, env=env, timeout=600)


def test_the_runner_imports_and_runs_without_resource_as_on_windows():
    # None in sys.modules makes `import resource` raise ImportError, as on Windows
    code = (
        "import sys; sys.modules['resource'] = None\n"
        "from helpers import notebooks\n"
        "assert notebooks.resource is None\n"
        "assert notebooks.kernels_peak_gb() is None\n"
        "print(notebooks.main(['check']))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0"


def test_where_resource_exists_the_peak_memory_is_a_number():
    from helpers import notebooks

    assert notebooks.resource is not None
    assert notebooks.kernels_peak_gb() >= 0


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ({"kind": "cpu", "compute_capability": None}, "float32"),
        ({"kind": "metal", "compute_capability": None}, "float32"),
        ({"kind": "cuda", "compute_capability": (6, 1)}, "float32"),  # Pascal: no tensor cores
        ({"kind": "cuda", "compute_capability": (7, 0)}, "mixed_float16"),  # V100
        ({"kind": "cuda", "compute_capability": (7, 5)}, "mixed_float16"),  # T4
        ({"kind": "cuda", "compute_capability": (8, 0)}, "mixed_bfloat16"),  # A100
        ({"kind": "cuda", "compute_capability": (9, 0)}, "mixed_bfloat16"),  # H100
    ],
)
def test_auto_precision_follows_the_card(found, expected):
    assert device.resolve_precision("auto", found) == expected
    # an explicit setting wins over the card
    assert device.resolve_precision("float32", found) == "float32"


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        device.resolve_precision("half")


def test_on_this_cpu_auto_is_float32_and_the_line_says_so():
    profile = config.get_profile("default")
    assert not device.has_gpu()  # this test machine has none; a GPU machine would pick a mixed policy
    assert device.precision(profile) == "float32"
    line = device.describe(profile)
    assert "device: CPU (no GPU found" in line and "precision: float32" in line and "XLA: on" in line
    assert f"on {keras.backend.backend()} " in line
    assert "XLA: off (auto)" in device.describe(config.get_profile("smoke"))


def _one_step(precision: str):
    profile = config.get_profile("smoke", precision=precision)
    keras.utils.set_random_seed(0)
    classifier = model.build_classifier(7, profile)
    optimizer = model.make_optimizer(profile, steps_per_epoch=2, epochs=1)
    classifier.compile(optimizer=optimizer, loss=losses.cross_entropy)
    size = profile["image_size"]
    images = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    targets = np.stack([np.arange(8) % 7, np.full(8, 56.0), np.full(8, 10.0)], axis=1).astype("float32")
    loss = float(np.asarray(classifier.train_on_batch(images, targets)))
    return classifier, optimizer, loss, classifier.predict_on_batch(images)


@pytest.mark.parametrize(
    ("precision", "compute"), [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")]
)
def test_mixed_precision_trains_a_step_with_a_float32_head(precision, compute):
    assert keras.config.dtype_policy().name == "float32"
    classifier, optimizer, loss, probabilities = _one_step(precision)
    backbone = next(layer for layer in classifier.layers if layer.name.startswith("vi_t_backbone"))
    assert backbone.compute_dtype == compute and backbone.variable_dtype == "float32"
    head = classifier.get_layer("cells")
    assert head.compute_dtype == "float32" and classifier.output.dtype == "float32"
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.isfinite(loss) and loss > 0
    # float16 needs loss scaling; bfloat16 has float32's range and does not
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    # the policy lives on the model's layers: nothing leaks into the next model
    assert keras.config.dtype_policy().name == "float32"
    _, _, _, after = _one_step("float32")
    assert after.dtype == np.float32


def test_a_gpu_profile_without_a_gpu_warns_loudly_when_it_trains(capsys):
    with pytest.warns(RuntimeWarning, match="No GPU found"):
        assert device.warn_if_no_gpu(config.get_profile("mapillary"))
    assert "!!!!!" in capsys.readouterr().err
    assert device.warn_if_no_gpu(config.get_profile("default")) is False


def test_the_reference_rate_is_measured_in_a_few_seconds():
    start = time.perf_counter()
    rate = device.reference_rate(seconds=0.5)
    assert rate > 0 and time.perf_counter() - start < 60
