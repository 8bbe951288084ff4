"""The machines students bring: the runner on Windows (no ``resource``), the device line,
mixed precision on the CPU, the machine's reference rate and the GPU bench in its tiny shape."""

import io
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from helpers import config, device, losses, model, notebooks, speed


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
    rate = speed.reference_rate(seconds=0.5)
    assert rate > 0 and time.perf_counter() - start < 60
    with pytest.raises(ValueError, match="seconds is 0"):
        speed.reference_rate(seconds=0)


# --- a notebook runs alone; times that hold on any machine -------------------------------------


def test_each_notebook_depends_on_the_earlier_ones():
    stems = [path.stem[:2] for path in notebooks.dependencies("09_attention.ipynb")]
    assert stems == ["01", "02", "03", "04", "05", "06", "07", "08"]
    assert notebooks.dependencies("01_locations.ipynb") == []


def test_figures_a_report_or_a_bare_copy_do_not_make_a_notebook_count_as_run(isolated_build):
    smoke = isolated_build / "smoke"
    (smoke / "figures").mkdir(parents=True)
    (smoke / "figures" / "fig03a_scenes.png").touch()  # a run killed after its first figure
    (smoke / "notebooks").mkdir()
    (smoke / "notebooks" / "04_distances.ipynb").touch()  # a copy without the runner's marker
    (smoke / "report.html").touch()
    assert not any(notebooks.has_run(stem, "smoke") for stem in ("03_images", "04_distances", "10_report"))


def test_expected_times_scale_with_the_machine_rate():
    reference = notebooks.REFERENCE_RATE
    measured = notebooks.REFERENCE_SECONDS["default"]["06_augmentation_and_schedule"]
    assert notebooks.expected_seconds("06_augmentation_and_schedule", "default", reference) == measured
    faster = notebooks.expected_seconds("06_augmentation_and_schedule", "default", 2 * reference)
    assert faster == measured / 2
    assert notebooks.expected_seconds("06_augmentation_and_schedule", "full", reference) is None
    text = notebooks.plan(notebooks.numbered_notebooks(), "default", reference / 2)
    total = 2 * sum(notebooks.REFERENCE_SECONDS["default"].values())
    assert "0.50x the reference" in text and f"in all about {total / 60:.1f} min" in text
    assert set(notebooks.REFERENCE_SECONDS["default"]) == {p.stem for p in notebooks.numbered_notebooks()}


def test_the_machine_rate_is_measured_once_an_hour(isolated_build):
    saved = isolated_build / "smoke" / notebooks.MACHINE_FILE
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"rate": 123.0, "measured_at": time.time() - 60}))
    assert notebooks.machine_rate("smoke") == 123.0  # fresh: not measured again
    saved.write_text(json.dumps({"rate": 123.0, "measured_at": time.time() - 2 * 3600}))
    rate = notebooks.machine_rate("smoke")  # stale: measured, in a separate process
    assert rate != 123.0 and rate > 0
    assert json.loads(saved.read_text())["rate"] == rate


def test_the_progress_bar_runs_every_notebook_in_order_and_ends_full():
    ran, out = [], io.StringIO()
    series = notebooks.numbered_notebooks()[:3]
    notebooks.run_series(series, "default", ran.append, rate=notebooks.REFERENCE_RATE * 100, file=out)
    assert ran == series
    text = out.getvalue()
    assert "100%" in text and "03_images" in text and "left" in text


# --- augmentation inside the training step -----------------------------------------------------

from helpers import augment  # noqa: E402


def _pictures(n=16, size=32):
    rng = np.random.default_rng(3)
    sky = np.linspace(40, 230, size)[None, :, None, None] * np.ones((n, size, size, 3))
    return np.clip(sky + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype("float32")


def test_on_device_mode_gives_the_split_modes_images_where_nothing_is_random():
    images = _pictures()
    for operations in (("equalize", "auto_contrast"), ("equalize",)):
        split, chosen = augment.rand_augment_batch(
            images, 5, operations=operations, rate=0.8, return_choices=True
        )
        fixed, chosen_fixed = augment.rand_augment_batch(
            images, 5, operations=operations, rate=0.8, return_choices=True, on_device=True
        )
        assert np.array_equal(np.asarray(chosen), np.asarray(chosen_fixed))
        assert np.allclose(np.asarray(split), np.asarray(fixed), atol=1e-3)
        assert (np.asarray(chosen) == -1).any()  # skipped rounds are covered too


def test_the_augmentation_layer_trains_inside_an_xla_step_and_is_identity_at_inference():
    images = _pictures()
    inputs = keras.Input((32, 32, 3))
    layer = augment.RandAugmentLayer(seed=1)
    outputs = keras.layers.Dense(4, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(layer(inputs))
    )
    network = keras.Model(inputs, outputs)
    network.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    loss = network.train_on_batch(images, np.arange(16) % 4)
    assert np.isfinite(loss)
    augmented = np.asarray(layer(images, training=True))
    assert augmented.shape == images.shape and augmented.min() >= 0 and augmented.max() <= 255
    assert np.abs(augmented - images).mean() > 1  # it changed the pictures
    assert np.array_equal(np.asarray(layer(images, training=False)), images)
    restored = augment.RandAugmentLayer.from_config(layer.get_config())
    assert restored.settings == layer.settings


def test_on_device_augmentation_compiles_on_the_jax_backend_and_eager_calls_use_it():
    code = (
        "import jax, numpy as np, keras\n"
        "from helpers import augment\n"
        "rng = np.random.default_rng(0)\n"
        "images = rng.uniform(0, 255, (8, 24, 24, 3)).astype('float32')\n"
        "layer = augment.RandAugmentLayer(seed=0)\n"
        "x = keras.Input((24, 24, 3)); model = keras.Model(x, layer(x))\n"
        "step = jax.jit(lambda v, ntv, i: model.stateless_call(v, ntv, i, training=True))\n"
        "out, _ = step([v.value for v in model.trainable_variables],"
        " [v.value for v in model.non_trainable_variables], images)\n"
        "out = np.asarray(out)\n"
        "assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255\n"
        "print('changed', float(np.abs(out - images).mean()))\n"
        # called eagerly (notebook 06's figure), the augmenter runs the same form, compiled
        "eager = augment.rand_augment(seed=0)\n"
        "seed = np.array([3, 4])\n"
        "once, again = (np.asarray(eager(images, training=True, seed=seed)) for _ in range(2))\n"
        "compiled = augment.compiled_batch_augmenter(tuple(sorted(eager.settings.items())))\n"
        "assert np.array_equal(once, again) and np.array_equal(once, np.asarray(compiled(images, seed)))\n"
        "first, second = (np.asarray(eager(images, training=True)) for _ in range(2))\n"
        "assert first.shape == images.shape and first.min() >= 0 and first.max() <= 255\n"
        "assert not np.array_equal(first, second)  # the generator moves on between calls\n"
        "print('eager changed', float(np.abs(first - images).mean()))\n"
    )
    result = run_python(code, KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("changed")[1].split()[0]) > 1
    assert float(result.stdout.split("eager changed")[-1]) > 1


def test_a_classifier_with_augmentation_inside_trains_saves_and_predicts_like_without(isolated_build):
    profile = config.get_profile("smoke")
    keras.utils.set_random_seed(0)
    classifier = model.build_classifier(7, profile, augment=model.randaugment_layer(profile, seed=0))
    classifier.compile(optimizer="adamw", loss=losses.cross_entropy, jit_compile=True)
    size = profile["image_size"]
    images = _pictures(8, size)
    targets = np.stack([np.arange(8) % 7, np.full(8, 56.0), np.full(8, 10.0)], axis=1).astype("float32")
    assert np.isfinite(classifier.train_on_batch(images, targets))
    folder = model.run_dir("smoke", "augmented")  # load_model opens only run folders of a build
    folder.mkdir(parents=True)
    classifier.save(folder / "best.keras")
    restored = model.load_model(folder)
    assert np.allclose(restored.predict_on_batch(images), classifier.predict_on_batch(images), atol=1e-6)
    # at inference the layer passes images through: the same as the model without it
    plain = keras.Model(classifier.get_layer("to_minus1_1").input, classifier.output)
    assert np.allclose(plain.predict_on_batch(images), classifier.predict_on_batch(images), atol=1e-6)
    assert model.augmentation_on_device() is device.has_gpu()


# --- the GPU bench -------------------------------------------------------------------------------


def test_the_gpu_bench_without_a_gpu_says_so_and_measures_nothing(tmp_path):
    output = tmp_path / "bench-gpu.md"
    command = [sys.executable, "bench/gpu.py", "--output", str(output)]
    environment = {**os.environ, "PYTHONPATH": str(config.REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=config.REPO_ROOT, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "needs a GPU" in result.stdout and "estimates" in result.stdout and "--tiny" in result.stdout
    assert not output.exists()


def test_the_gpu_bench_runs_its_code_in_a_tiny_shape_on_the_cpu(tmp_path):
    output = tmp_path / "bench-gpu.md"
    command = [sys.executable, "bench/gpu.py", "--tiny", "--output", str(output)]
    environment = {**os.environ, "PYTHONPATH": str(config.REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=config.REPO_ROOT, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| train") or line.startswith("| predict")]
    # training: float32 and mixed_bfloat16 (this CPU's "auto" is float32), XLA off and on; predictions
    assert len(rows) == 7 and "failed" not in text
    assert sum("mixed_bfloat16" in row for row in rows) == 4 and sum("| on |" in row for row in rows) == 5
    assert all("n/a (no GPU)" in row for row in rows) and "tiny check, not a measurement" in text
