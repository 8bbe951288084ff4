"""Training on one device or several: the profile's ``devices`` setting (data parallelism).

Kaggle lends two T4 GPUs or a TPU v3-8 (8 cores); Colab Pro and university clusters lend
several GPUs. Data parallelism uses them all for one run: every device holds a copy of the
model, each step splits the batch into equal parts, one per device, and the gradients of
the parts are averaged before the one update all copies apply. So the run computes what it
computes on one device, in less time.

The setting (``config.get_profile("full", devices=2)``), resolved by :func:`resolve_devices`:

``"auto"`` (every profile's default)
    Every accelerator present (GPUs, or a TPU's cores); with none, the one CPU. A laptop with
    one GPU, Colab's one T4 and a CI machine without a GPU all get one device, as before.
an integer N
    The first N accelerators (or, without one, the first N CPU devices: the tests make two).
``"cpu"``
    The CPU alone, even where a GPU is present.
a list of names
    Those devices, e.g. ``["GPU:0", "GPU:1"]`` (any case; TensorFlow's ``/device:GPU:0`` too).

How: :func:`scope` is a context manager. Build the model *and* compile and fit it inside it:
on JAX it makes ``keras.distribution.DataParallel`` current (variables are created
replicated on every device and each batch is sharded along its first axis); on TensorFlow
it enters a ``tf.distribute.MirroredStrategy`` (Keras's distribution API on TensorFlow is a
prototype its source marks "DO NOT USE"), whose steps run without XLA (:func:`jit_compile`);
with one device it does nothing. JAX keeps XLA, so several GPUs train faster through JAX. The PyTorch
backend trains on one device only here. TPUs: through JAX (``KERAS_BACKEND=jax``; a
TensorFlow TPU needs ``TPUStrategy``, which the workbook does not use).

Batch and learning rate. The profile's ``batch_size`` (and ``final_batch_size``) is the
*global* batch: the images of one optimiser step, over all devices together. It must divide
by the number of devices (each gets ``batch_size / devices``); :func:`scope` refuses
otherwise. The learning rate does not change with the device count: the same global batch
gives the same averaged gradient, so the same steps with the same rate follow the same
path, only faster (the losses agree to rounding: ``tests/test_distribute.py``). Whoever
raises the batch to fill more devices (e.g. 32 per device on 8 TPU cores, 256 in all) takes
fewer, less noisy steps per epoch; then the usual rule is to scale the rate with the batch
(linearly, with warm-up; for Adam nearer the square root), which is a new experiment and
not the report's setting.

Validation batches: the last one is usually smaller. TensorFlow's strategy splits any
batch; JAX needs a batch that divides by the devices, so :func:`even_batches` pads it with
copies of its last image at sample weight 0 (metrics compiled as ``weighted_metrics``
stay exact; the validation loss is off by at most (devices - 1) / validation images, as
Keras averages batch losses by batch size).

The optimiser: :func:`prepare_optimizer` (TensorFlow with several devices sums sparse
gradients wrongly for Adam). The checks: :func:`check_model` (built inside the scope?),
:func:`jit_compile` (no XLA under a MirroredStrategy).
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import re

import keras

from helpers import config

# "GPU:1", "gpu:1", "/device:GPU:1", "/job:localhost/replica:0/task:0/device:GPU:1"
_NAME = re.compile(config.DEVICE_NAME_PATTERN, re.IGNORECASE)
ACCEPTED = (
    '"auto" (every accelerator present, else the CPU), a whole number N >= 1 (the first N '
    'accelerators), "cpu", or a list of device names such as ["GPU:0", "GPU:1"]'
)


def device_name(name) -> str:
    """``name`` in the workbook's form, kind in capitals and its index: "GPU:1".

    Takes JAX's "gpu:1", TensorFlow's "/device:GPU:1" (with or without the job prefix) and
    the workbook's own form; anything else raises ValueError.
    """
    match = _NAME.fullmatch(str(name)) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"{name!r} is not a device name: write the kind and its index, e.g. 'GPU:0', 'TPU:3' or 'CPU:0'."
        )
    return f"{match.group('kind').upper()}:{int(match.group('index'))}"


def present_devices() -> list[str]:
    """Every device Keras's backend sees here: accelerators first, then the CPU device(s).

    Asking initialises the backend, so a test that makes virtual devices makes them before.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        accelerators = [d for d in jax.devices() if d.platform != "cpu"]
        cpus = jax.devices("cpu")
        return [f"{d.platform.upper()}:{d.id}" for d in accelerators + cpus]
    if backend == "tensorflow":
        import tensorflow as tf

        found = [device_name(d.name) for d in tf.config.list_logical_devices()]
        return [d for d in found if not d.startswith("CPU:")] + [d for d in found if d.startswith("CPU:")]
    if backend == "torch":
        import torch

        return [f"GPU:{i}" for i in range(torch.cuda.device_count())] + ["CPU:0"]
    return ["CPU:0"]


def resolve_devices(setting, found: list[str] | None = None) -> list[str]:
    """The devices a ``devices`` setting names, as "KIND:index" (see the module's docstring).

    ``found``: the devices present (default: :func:`present_devices`). A setting of another
    form raises ValueError naming it and the accepted forms; more devices than present, or a
    name not present, raises ValueError saying what was found.
    """
    found = [device_name(d) for d in (present_devices() if found is None else found)]
    cpus = [d for d in found if d.startswith("CPU:")] or ["CPU:0"]
    accelerators = [d for d in found if not d.startswith("CPU:")]
    if isinstance(setting, str) and setting in ("auto", "cpu"):
        return accelerators if setting == "auto" and accelerators else cpus[:1]
    if isinstance(setting, numbers.Integral) and not isinstance(setting, bool):
        if setting < 1:
            raise ValueError(f"devices={setting!r} is not allowed: it must be {ACCEPTED}.")
        pool = accelerators or cpus
        if setting > len(pool):
            raise ValueError(
                f"devices={setting!r} asks for {setting} devices, but {len(pool)} "
                f"{'accelerator' if accelerators else 'CPU device'}{'s were' if len(pool) != 1 else ' was'} "
                f"found ({', '.join(pool)}): use devices='auto' or a number up to {len(pool)}."
            )
        return pool[:setting]
    if isinstance(setting, list | tuple) and setting:
        try:
            names = [device_name(d) for d in setting]
        except ValueError as error:
            raise ValueError(f"devices={setting!r} is not allowed: {error}") from None
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(
                f"devices={setting!r}: {', '.join(missing)} not found here; found {', '.join(found)}."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"devices={setting!r} names a device twice: each device takes one share.")
        if len({n.split(":")[0] for n in names}) > 1:
            raise ValueError(f"devices={setting!r} mixes kinds of device: one run uses one kind.")
        return names
    raise ValueError(f"devices={setting!r} is not allowed: it must be {ACCEPTED}.")


def devices_of(profile: dict) -> list[str]:
    """The devices ``profile`` trains on here (its ``devices`` setting, "auto" if it has none)."""
    return resolve_devices(profile.get("devices", "auto"))


def replicas(profile: dict) -> int:
    """How many copies of the model train side by side: the number of devices of ``profile``."""
    return len(devices_of(profile))


def check_batches(profile: dict, devices: list[str] | None = None) -> None:
    """Raise config.SettingError unless ``batch_size`` and ``final_batch_size`` (global
    batches: the images of one step over all devices) divide by the number of devices."""
    devices = devices_of(profile) if devices is None else devices
    for setting in ("batch_size", "final_batch_size"):
        batch = profile.get(setting)
        if batch is not None and batch % len(devices):
            below = batch - batch % len(devices)
            fits = [b for b in (below, below + len(devices)) if b]
            raise config.SettingError(
                f"{setting}={batch} does not split evenly over {len(devices)} devices "
                f"({', '.join(devices)}): it is the global batch, each device takes an equal share. "
                f"Choose a multiple of {len(devices)} ({' or '.join(map(str, fits))}), or fewer devices."
            )


def _default_device(devices: list[str]) -> bool:
    """Whether a single device is where the backend computes anyway (no scope needed)."""
    found = present_devices()
    accelerators = [d for d in found if not d.startswith("CPU:")]
    return devices[0] == (accelerators[0] if accelerators else "CPU:0")


@functools.lru_cache(maxsize=8)
def _strategy(devices: tuple[str, ...]):
    """One MirroredStrategy per set of devices, so that entering :func:`scope` twice (while
    building, then while training) enters the same strategy, as TensorFlow requires."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy([f"/device:{d}" for d in devices])


@functools.lru_cache(maxsize=8)
def _data_parallel(devices: tuple[str, ...]):
    """One ``keras.distribution.DataParallel`` per set of devices (JAX's names: "gpu:0")."""
    return keras.distribution.DataParallel(devices=[d.lower() for d in devices])


def scope(profile: dict):
    """A context manager to build, compile and fit a model in on the profile's devices.

    One device: nothing (or ``keras.device`` when it is not the backend's default, e.g.
    devices="cpu" beside a GPU). Several: ``keras.distribution.DataParallel`` made current
    on JAX, ``tf.distribute.MirroredStrategy.scope()`` on TensorFlow. Entering it again
    inside itself is harmless (the same distribution, restored on the way out). Checks
    first that the batch sizes divide by the devices (:func:`check_batches`).
    """
    devices = devices_of(profile)
    check_batches(profile, devices)
    if len(devices) == 1:
        if _default_device(devices):
            return contextlib.nullcontext()
        return keras.device(devices[0].lower())
    backend = keras.backend.backend()
    if backend == "jax":
        return _data_parallel(tuple(devices)).scope()
    if backend == "tensorflow":
        if devices[0].startswith("TPU:"):
            raise ValueError(
                "TPUs train through JAX in this workbook: start with KERAS_BACKEND=jax "
                "(TensorFlow would need a TPUStrategy)."
            )
        return _strategy(tuple(devices)).scope()
    raise ValueError(
        f"The {backend} backend trains on one device here, and devices={profile.get('devices')!r} "
        f"names {len(devices)}: use KERAS_BACKEND=jax or tensorflow, or devices=1."
    )


def jit_compile(profile: dict, setting):
    """``setting`` (``Model.compile``'s ``jit_compile``) as it can be with the profile's devices:
    False on TensorFlow with several, where XLA-compiled steps of a MirroredStrategy fail
    (a variable's copy on another device) and Keras's own "auto" turns XLA off; else unchanged.
    JAX compiles every step with XLA on any number of devices."""
    if keras.backend.backend() == "tensorflow" and replicas(profile) > 1:
        return False
    return setting


def prepare_optimizer(optimizer, profile: dict):
    """``optimizer`` as it must be for the profile's devices: the same object, which on
    TensorFlow with several devices turns sparse gradients dense before they are summed.

    Why: the gradient of an embedding lookup (the ViT's position embedding) is a
    ``tf.IndexedSlices``; summed over the devices it holds each row once per device, and
    Keras's Adam squares those rows before adding them up, so its second moment was
    sum(g_device^2) rather than (sum g_device)^2: half on two devices, and the position
    embedding took steps 1.4x too large (the losses of one and two devices parted by 1e-3
    after one step; ``tests/test_distribute.py``). Dense, the sum comes first. JAX has no
    sparse gradients; one device needs nothing.
    """
    if keras.backend.backend() != "tensorflow" or replicas(profile) == 1:
        return optimizer
    if getattr(optimizer, "_dense_gradients", False):
        return optimizer
    import tensorflow as tf

    sparse_apply = optimizer.apply

    def apply(grads, trainable_variables=None):
        dense = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return sparse_apply(dense, trainable_variables)

    optimizer.apply = apply
    optimizer._dense_gradients = True
    return optimizer


def check_model(model, profile: dict) -> None:
    """Raise ValueError if ``model`` was built outside :func:`scope` of a multi-device profile
    (its weights would sit on one device, and training would fail deep inside the backend)."""
    devices = devices_of(profile)
    if len(devices) == 1 or not model.weights:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        inside = getattr(model, "_distribute_strategy", None) is _strategy(tuple(devices))
    elif backend == "jax":
        inside = len(model.weights[0].value.sharding.device_set) == len(devices)
    else:
        inside = False
    if not inside:
        raise ValueError(
            f"The model {model.name!r} was built outside distribute.scope(profile) for {len(devices)} "
            "devices: build it inside the scope too (with distribute.scope(profile): model = ..., then "
            "compile and train it there), so every device holds a copy of its weights."
        )


def even_batches(data, profile: dict):
    """``data`` (a ``tf.data`` dataset of (images, targets) or (images, targets, weights)
    batches) with every batch divisible by the devices, for JAX with several devices.

    A batch that does not divide is padded with copies of its last row at sample weight 0
    (its real rows keep their weight, 1 when there was none). Keras applies sample weights
    to the loss and to ``weighted_metrics`` only, so compile the metrics as
    ``weighted_metrics``: then they count real images only (without weights they count as
    ``metrics`` do). The loss of a padded batch is its real rows' sum over the padded size.
    Unchanged with one device and on TensorFlow, whose strategy splits any batch.
    """
    n = replicas(profile)
    if n == 1 or keras.backend.backend() != "jax":
        return data
    import tensorflow as tf

    def pad(*batch):
        if len(batch) not in (2, 3):
            raise ValueError(
                f"even_batches takes batches of (images, targets) or (images, targets, weights), "
                f"not {len(batch)} parts."
            )
        images, targets = batch[0], batch[1]
        real = tf.shape(tf.nest.flatten(images)[0])[0]
        missing = (n - real % n) % n
        weights = batch[2] if len(batch) == 3 else tf.ones([real], "float32")

        def repeat_last(part):
            return tf.concat([part, tf.repeat(part[-1:], missing, axis=0)], axis=0)

        zeros = tf.zeros([missing], "float32")
        return (
            tf.nest.map_structure(repeat_last, images),
            tf.nest.map_structure(repeat_last, targets),
            tf.nest.map_structure(lambda w: tf.concat([tf.cast(w, "float32"), zeros], axis=0), weights),
        )

    return data.map(pad)


def describe(profile: dict) -> str:
    """One line for the notebooks: "2 devices (CPU:0, CPU:1), global batch 32 = 16 per device"."""
    devices = devices_of(profile)
    check_batches(profile, devices)
    n, batch = len(devices), profile["batch_size"]
    if n == 1:
        return f"1 device ({devices[0]}), batch {batch}"
    text = f"{n} devices ({', '.join(devices)}), global batch {batch} = {batch // n} per device"
    final = profile.get("final_batch_size")
    if final is not None and final != batch:
        text += f"; final runs {final} = {final // n} per device"
    return text
