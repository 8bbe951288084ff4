"""The machine a notebook runs on: which accelerator, which precision, whether XLA, how fast.

One line says it all (notebook 01 prints it)::

    >>> print(device.describe(profile))
    Keras 3.12 on tensorflow 2.21 · device: CPU (no GPU found) · precision: float32 · XLA: on

Precision (the profile's ``precision`` setting; "auto" by default):

``float32``
    Every layer computes in 32-bit floats: CPUs and Apple's Metal GPUs.
``mixed_float16``
    The ViT computes in 16-bit floats on the tensor cores of CUDA GPUs of compute
    capability 7.x (V100, T4), whose 16-bit format is float16 only. Its small range needs
    loss scaling (Keras's ``LossScaleOptimizer``) so that small gradients do not round to 0.
``mixed_bfloat16``
    The same on compute capability 8.0 and above (A100, L4, H100), in bfloat16, which has
    float32's range and needs no loss scaling.

In both mixed policies the weights stay float32, and so do the classifier head, the
losses and the metrics (``helpers.model.build_classifier`` keeps the head's ``Dense`` in
float32). The policy is set on the model's layers, never globally, so one run cannot leak
its precision into the next.

How fast the machine trains is :mod:`helpers.speed`'s question (``speed.reference_rate``).
"""

from __future__ import annotations

import functools
import platform
import sys
import warnings

import keras

from helpers import config

PRECISIONS = config.PRECISIONS
# profiles that train ViT-B/16 at 224 px: days on a CPU
GPU_PROFILES = ("mapillary", "full")


@functools.lru_cache(maxsize=1)
def accelerator() -> dict:
    """What Keras's backend computes on: {"kind", "name", "compute_capability"}.

    ``kind`` is "cuda" (an NVIDIA GPU), "metal" (an Apple silicon GPU through tensorflow-metal,
    or PyTorch's MPS) or "cpu"; ``compute_capability`` is (major, minor) for CUDA, else None.
    Found once per process: the devices do not change while a kernel runs.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            if sys.platform == "darwin":
                name = details.get("device_name", "Apple GPU")
                return {"kind": "metal", "name": name, "compute_capability": None}
            capability = details.get("compute_capability")
            return {
                "kind": "cuda",
                "name": details.get("device_name", "GPU"),
                "compute_capability": tuple(capability) if capability else None,
            }
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            capability = getattr(gpus[0], "compute_capability", None)
            major_minor = tuple(int(part) for part in str(capability).split(".")[:2]) if capability else None
            return {"kind": "cuda", "name": gpus[0].device_kind, "compute_capability": major_minor}
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return {
                "kind": "cuda",
                "name": torch.cuda.get_device_name(0),
                "compute_capability": tuple(torch.cuda.get_device_capability(0)),
            }
        if torch.backends.mps.is_available():
            return {"kind": "metal", "name": "Apple GPU (MPS)", "compute_capability": None}
    return {"kind": "cpu", "name": platform.processor() or platform.machine(), "compute_capability": None}


def has_gpu() -> bool:
    """Whether Keras's backend sees a GPU (CUDA or Metal)."""
    return accelerator()["kind"] != "cpu"


def resolve_precision(setting: str = "auto", found: dict | None = None) -> str:
    """The Keras dtype policy name for a ``precision`` setting on the accelerator ``found``.

    "auto": mixed_float16 on CUDA compute capability 7.x, mixed_bfloat16 on 8.0 and above,
    float32 everywhere else (CPUs, Metal, older GPUs). Other settings are returned as they
    are, so a CPU can run mixed_bfloat16 on purpose (the tests do).
    """
    if setting not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {setting!r}: choose one of {', '.join(PRECISIONS)} "
            "(for example config.get_profile('default', precision='float32'))."
        )
    if setting != "auto":
        return setting
    found = found or accelerator()
    capability = found.get("compute_capability")
    if found["kind"] != "cuda" or capability is None:
        return "float32"
    if capability >= (8, 0):
        return "mixed_bfloat16"
    if capability >= (7, 0):
        return "mixed_float16"
    return "float32"  # before Volta: no tensor cores, float16 gains little


def precision(profile: dict) -> str:
    """The dtype policy name the profile trains in on this machine (see :func:`resolve_precision`)."""
    return resolve_precision(profile.get("precision", "auto"))


def jit_compile(profile: dict):
    """The profile's ``jit_compile`` for ``Model.compile`` on this machine.

    False on Metal (tensorflow-metal runs TensorFlow's own kernels; XLA-compiled steps there are
    untested, and Keras's "auto" would turn them on as soon as it sees the GPU); "auto" on the PyTorch
    backend, where True would mean ``torch.compile``; else the profile's setting.
    """
    if accelerator()["kind"] == "metal":
        return False
    if keras.backend.backend() == "torch":
        return "auto"
    return profile.get("jit_compile", "auto")


def _xla_in_words(profile: dict) -> str:
    setting = jit_compile(profile)
    if setting == "auto":  # Keras's rule: XLA with JAX, and with TensorFlow when it sees a GPU
        backend = keras.backend.backend()
        on = backend == "jax" or (backend == "tensorflow" and has_gpu())
        return f"{'on' if on else 'off'} (auto)"
    return "on" if setting else "off"


def describe(profile: dict) -> str:
    """One line: Keras and its backend, the device, the precision and whether steps use XLA."""
    backend = keras.backend.backend()
    try:
        backend_version = __import__(backend).__version__
    except (ImportError, AttributeError):
        backend_version = "?"
    found = accelerator()
    if found["kind"] == "cpu":
        where = f"CPU (no GPU found; {found['name']})"
    elif found["compute_capability"]:
        major, minor = found["compute_capability"]
        where = f"{found['kind'].upper()} GPU {found['name']} (compute capability {major}.{minor})"
    else:
        where = f"{found['kind'].capitalize()} GPU {found['name']}"
    return (
        f"Keras {keras.__version__} on {backend} {backend_version} · device: {where} · "
        f"precision: {precision(profile)} · XLA: {_xla_in_words(profile)}"
    )


def warn_if_no_gpu(profile: dict) -> bool:
    """Warn loudly when a profile that needs a GPU is about to train on a CPU; True if it warned."""
    name = profile.get("name")
    if name not in GPU_PROFILES or has_gpu():
        return False
    message = (
        f"No GPU found, and the {name!r} profile trains ViT-B/16 at 224 px: on a CPU that takes days. "
        "On Colab choose Runtime > Change runtime type > T4 GPU; on Kaggle, Settings > Accelerator > "
        'GPU; on Linux with an NVIDIA card install the `gpu` extra (pip install -e ".[gpu]"). '
        "To try the path on a CPU, use the `rehearsal` profile."
    )
    rule = "!" * 100
    print(f"\n{rule}\n{message}\n{rule}\n", file=sys.stderr, flush=True)
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return True


def training_optimizer(optimizer, profile: dict):
    """``optimizer`` as the profile trains with it here: wrapped in loss scaling under float16.

    Also the moment training is decided, so a GPU profile without a GPU warns here.
    """
    warn_if_no_gpu(profile)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if precision(profile) == "mixed_float16" and not scaled:
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
