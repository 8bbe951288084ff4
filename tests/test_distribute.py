"""Data-parallel training (helpers.distribute): the same run on one and on two devices.

The two devices are virtual CPU devices, made before the backend starts, so each backend
runs in a subprocess of its own: JAX with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``,
TensorFlow with two logical CPU devices (``tf.config.set_logical_device_configuration``).
The subprocesses of the two backends run side by side.

Tolerance: the per-step losses of one and two devices agree to rtol 1e-4. Both runs start
from the same weights and see the same batches; only the order of the sums differs (two
devices each sum the gradient over their half of the batch and the halves are then added,
where one device sums the whole batch at once), and float32 addition is not associative:
each sum differs in its last bits (about 1e-7 relative), which three AdamW steps carry into
the loss, far below 1e-4. A wrong split moves them further: without
``distribute.prepare_optimizer``, TensorFlow's two devices parted from one by 1.5e-3 at the
second step (Adam's second moment of the position embedding halved).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import config, distribute

RTOL = 1e-4
N_TRAIN, N_VAL, BATCH = 48, 23, 16  # 3 training steps; validation batches of 16 and 7 images

# One backend, one process: the same short run of the smoke profile's ViT on devices=1 and
# devices=2, through the workbook's training loop; prints the results as one line of JSON.
SCRIPT = textwrap.dedent(
    f"""
    import json, os, sys, tempfile
    from pathlib import Path

    backend = os.environ["KERAS_BACKEND"]
    os.environ["WORKBOOK_BUILD_DIR"] = tempfile.mkdtemp()  # the runs of this check, thrown away
    import tensorflow as tf  # the input pipeline is tf.data on every backend, as in the workbook

    if backend == "tensorflow":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from helpers import config, distribute, losses, model

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, ({N_TRAIN + N_VAL}, 32, 32, 3)).astype("float32")
    cells = np.arange({N_TRAIN + N_VAL}) % 7
    # labels as model.labels_of writes them: [cell, lat, lng]
    targets = np.stack([cells, 55 + rng.uniform(0, 2, cells.size), 8 + rng.uniform(0, 4, cells.size)], 1)
    targets = targets.astype("float32")

    def batches(start, stop):
        data = tf.data.Dataset.from_tensor_slices((images[start:stop], targets[start:stop]))
        return data.batch({BATCH})

    def run(devices):
        profile = config.get_profile("smoke", devices=devices, batch_size={BATCH})
        step_losses = []

        class PerStep(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                step_losses.append(float(logs["loss"]))

        keras.utils.set_random_seed(0)
        with distribute.scope(profile), distribute.scope(profile):  # entered twice: harmless
            network = model.build_classifier(profile["n_cells"], profile)
        distribute.check_model(network, profile)
        optimizer = model.make_optimizer(profile, steps_per_epoch={N_TRAIN // BATCH}, epochs=1)
        # the workbook's one training loop: it enters the scope, pads for JAX, compiles and fits
        folder = model.run_dir(profile, f"devices{{devices}}")
        validation = batches({N_TRAIN}, {N_TRAIN + N_VAL})
        run = model.train(profile, folder, network, batches(0, {N_TRAIN}), validation,
                          loss=losses.cross_entropy, epochs=1, optimizer=optimizer, verbose=0,
                          extra_callbacks=[PerStep()])
        history = run["history"].iloc[-1]
        if backend == "jax":
            copies = len(network.weights[0].value.sharding.device_set)
        else:
            copies = network.distribute_strategy.num_replicas_in_sync
        return {{
            "jit_recorded": run["settings"]["jit_compile"],
            "losses": step_losses,
            "val_loss": float(history["val_loss"]),
            "val_accuracy": float(history["val_accuracy"]),
            "copies": copies,
            "describe": distribute.describe(profile),
            "xla": distribute.jit_compile(profile, True),
        }}

    result = {{"one": run(1), "two": run(2)}}
    two = config.get_profile("smoke", devices=2, batch_size={BATCH})
    # the builders enter the scope themselves: a network built with no scope around it passes
    distribute.check_model(model.build_classifier(3, two), two)
    outside = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    try:
        distribute.check_model(outside, two)
    except ValueError as error:
        result["outside"] = str(error)
    if backend == "jax":
        padded = distribute.even_batches(batches({N_TRAIN}, {N_TRAIN + N_VAL}), two)
        result["padded"] = [[int(x.shape[0]), w.numpy().tolist()] for x, _, w in padded]
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{backend: what SCRIPT printed}, both backends run side by side."""
    script = tmp_path_factory.mktemp("distribute") / "run.py"
    script.write_text(SCRIPT)
    processes = {}
    for backend in ("jax", "tensorflow"):
        environment = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "PYTHONPATH": str(config.REPO_ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "CUDA_VISIBLE_DEVICES": "",  # the CPU devices, even on a machine with a GPU
            "JAX_PLATFORMS": "cpu",
        }
        processes[backend] = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=config.REPO_ROOT,
        )
    results = {}
    for backend, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{backend} run failed:\n{err[-3000:]}"
        results[backend] = json.loads(out.strip().splitlines()[-1])
    return results


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_one_and_two_devices_give_the_same_losses(runs, backend):
    one, two = runs[backend]["one"], runs[backend]["two"]
    assert one["copies"] == 1 and two["copies"] == 2  # the second run really held two copies
    assert len(one["losses"]) == len(two["losses"]) == N_TRAIN // BATCH
    assert len(set(one["losses"])) > 1  # the weights moved between steps
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=RTOL)
    # validation metrics count the real images only, also where JAX pads the last batch
    np.testing.assert_allclose(two["val_accuracy"], one["val_accuracy"], rtol=RTOL, atol=1e-7)
    # the padded batch's loss is divided by its padded size: off by at most 1 image in N_VAL
    np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=RTOL + 1 / N_VAL)
    assert one["describe"] == f"1 device (CPU:0), batch {BATCH}"
    assert two["describe"] == f"2 devices (CPU:0, CPU:1), global batch {BATCH} = {BATCH // 2} per device"
    assert "built outside distribute.scope(profile) for 2 devices" in runs[backend]["outside"]
    # XLA-compiled steps: always on JAX; on TensorFlow not under a MirroredStrategy (they fail)
    assert one["xla"] is True and two["xla"] is (backend == "jax")
    if backend == "tensorflow":  # and the run's summary.json says so (JAX records the profile's "auto")
        assert two["jit_recorded"] is False


def test_jax_pads_the_last_validation_batch_at_weight_0(runs):
    # 23 images in batches of 16: the second batch, 7 images, gets one copy at weight 0
    assert runs["jax"]["padded"] == [[16, [1.0] * 16], [8, [1.0] * 7 + [0.0]]]


# --- which devices a setting names (no backend needed: the devices present are given) -----------

TWO_GPUS = ["GPU:0", "GPU:1", "CPU:0"]


@pytest.mark.parametrize(
    ("setting", "found", "devices"),
    [
        ("auto", TWO_GPUS, ["GPU:0", "GPU:1"]),
        ("auto", ["CPU:0", "CPU:1"], ["CPU:0"]),  # no accelerator: the one CPU
        ("auto", ["TPU:0", "TPU:1", "TPU:2", "TPU:3", "CPU:0"], ["TPU:0", "TPU:1", "TPU:2", "TPU:3"]),
        (1, TWO_GPUS, ["GPU:0"]),
        (2, ["cpu:0", "cpu:1"], ["CPU:0", "CPU:1"]),  # JAX's names
        ("cpu", TWO_GPUS, ["CPU:0"]),
        (["gpu:1"], TWO_GPUS, ["GPU:1"]),
        (["/device:GPU:1", "/job:localhost/replica:0/task:0/device:GPU:0"], TWO_GPUS, ["GPU:1", "GPU:0"]),
    ],
)
def test_a_setting_resolves_to_devices(setting, found, devices):
    assert distribute.resolve_devices(setting, found) == devices


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("all", "devices='all' is not allowed"),
        (0, "devices=0 is not allowed"),
        (True, "devices=True is not allowed"),
        ([], r"devices=\[\] is not allowed"),
        (["GPU:0", "GPU:0"], "names a device twice"),
        (["GPU:0", "CPU:0"], "mixes kinds of device"),
        (["XPU:0"], "is not a device name"),
        (["GPU:2"], "GPU:2 not found here; found GPU:0, GPU:1, CPU:0"),
        (3, r"asks for 3 devices, but 2 accelerators were found \(GPU:0, GPU:1\)"),
    ],
)
def test_a_bad_setting_is_refused_with_what_was_wrong(setting, message):
    with pytest.raises(ValueError, match=message) as caught:
        distribute.resolve_devices(setting, TWO_GPUS)
    if "not allowed" in message:  # names the accepted forms
        assert '"auto"' in str(caught.value) and '"cpu"' in str(caught.value)


def test_more_cpu_devices_than_present_says_how_many_were_found():
    with pytest.raises(ValueError, match=r"asks for 2 devices, but 1 CPU device was found \(CPU:0\)"):
        distribute.resolve_devices(2, ["CPU:0"])


def test_the_global_batch_must_split_evenly():
    profile = config.get_profile("full")  # batch 32, final runs 16
    distribute.check_batches(profile, ["GPU:0", "GPU:1"])
    distribute.check_batches(profile, [f"TPU:{i}" for i in range(8)])
    three = r"batch_size=32 does not split evenly over 3 devices.*30 or 33"
    with pytest.raises(config.SettingError, match=three):
        distribute.check_batches(profile, ["GPU:0", "GPU:1", "GPU:2"])
    with pytest.raises(config.SettingError, match="final_batch_size=16 does not split evenly over 32"):
        distribute.check_batches({**profile, "batch_size": 64}, [f"TPU:{i}" for i in range(32)])


def test_one_device_here_is_no_scope_and_says_so():
    profile = config.get_profile("smoke")
    assert distribute.replicas(profile) == 1
    with distribute.scope(profile):
        pass
    assert distribute.describe(profile).startswith("1 device (")


def test_device_names_in_every_form():
    assert distribute.device_name("gpu:3") == distribute.device_name("/device:GPU:3") == "GPU:3"
    with pytest.raises(ValueError, match="is not a device name"):
        distribute.device_name("GPU")
