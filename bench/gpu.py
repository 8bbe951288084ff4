"""GPU benchmark: ViT-B/16 at 224 px, as the ``full`` profile trains it, with random weights.

    make bench-gpu                          (python bench/gpu.py --output build/bench-gpu.md)
    KERAS_BACKEND=jax python bench/gpu.py   (a GPU machine with JAX and no TensorFlow)
    python bench/gpu.py --tiny              (the same code, a tiny ViT on the CPU: a check, no figures)

Training steps at batch 32 and 64, in float32 and in mixed precision (the policy the
``precision: auto`` setting picks on this card; bfloat16 where it picks float32), with and
without XLA (TensorFlow only: JAX always compiles, and PyTorch's compile is another thing),
RandAugment inside the step on the device (``augment.RandAugmentLayer``), and prediction.
Each row is images/s and the peak GPU memory. Each configuration runs in its own process,
so peaks and compilation caches do not carry over.

The reference users would otherwise pick: the same ViT-B/16 training step in PyTorch with
timm and automatic mixed precision on the same card, when torch and timm are importable
(``vit_base_patch16_224``, random weights, AdamW). The workbook's goal: 0.8x its rate or better.

Nothing is downloaded: the weights are random, so the bench runs offline. It needs Keras,
keras-hub, NumPy and the workbook's ``helpers`` (pure Python); TensorFlow only for the
TensorFlow backend.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

N_CELLS = 129
# ViT-B/16 at 224 px (helpers.config's _VIT_B16), and a tiny ViT for --tiny on a CPU
SHAPES = {
    "full": {"image_size": 224, "patch_size": 16, "layers": 12, "width": 768, "heads": 12, "mlp": 3072},
    "tiny": {"image_size": 32, "patch_size": 8, "layers": 1, "width": 32, "heads": 2, "mlp": 64},
}
NO_GPU = (
    "make bench-gpu needs a GPU, and Keras's {backend} backend sees none here: nothing measured. "
    "The README's GPU figures stay estimates until it runs on one. "
    "`python bench/gpu.py --tiny` runs the same code on the CPU in a tiny configuration."
)


def build(shape: dict, policy: str, augment_on_device: bool):
    """The workbook's classifier (``helpers.model.build_classifier``'s layers, without its
    checkpoint loading and pandas): pixels 0-255, RandAugment in training, scaling to [-1, 1],
    a keras-hub ViT in ``policy``, the class token, a float32 softmax head."""
    import keras
    import keras_hub

    from helpers import augment

    size = shape["image_size"]
    inputs = keras.Input((size, size, 3), name="image")
    pixels = augment.RandAugmentLayer(seed=0, name="randaugment")(inputs) if augment_on_device else inputs
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus1_1")(pixels)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3),
        patch_size=(shape["patch_size"], shape["patch_size"]),
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        hidden_dim=shape["width"],
        mlp_dim=shape["mlp"],
        dtype=policy,
    )
    tokens = backbone(scaled)
    token = keras.layers.Lambda(lambda t: t[:, 0, :], name="class_token", dtype="float32")(tokens)
    probabilities = keras.layers.Dense(N_CELLS, activation="softmax", name="cells", dtype="float32")(token)
    return keras.Model(inputs, probabilities)


def _reset_peak():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
    elif keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def peak_gpu_gb() -> float | None:
    """Peak GPU memory (GB, 1e9 bytes) in use since the last reset, or None without a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e9
    elif backend == "jax":
        import jax

        gpu = next((d for d in jax.devices() if d.platform == "gpu"), None)
        if gpu is not None:
            return gpu.memory_stats().get("peak_bytes_in_use", 0) / 1e9
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 1e9
    return None


def measure(config: dict) -> dict:
    """One configuration in this process: images/s over ``steps`` steps after ``warmup`` steps."""
    import keras
    import numpy as np

    shape = SHAPES[config["shape"]]
    size, batch = shape["image_size"], config["batch"]
    keras.utils.set_random_seed(0)
    network = build(shape, config["precision"], config["augment"])
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = keras.ops.convert_to_tensor((np.arange(batch) % N_CELLS).astype("int32"))
    _reset_peak()
    if config["mode"] == "train":
        optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01)
        if config["precision"] == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        network.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=config["xla"]
        )

        def step():
            return network.train_on_batch(images, labels)
    else:
        network.compile(jit_compile=config["xla"])

        def step():
            return network.predict_on_batch(images)

    for _ in range(config["warmup"]):
        step()
    start = time.perf_counter()
    for _ in range(config["steps"]):
        result = step()
    np.asarray(result)  # wait for the device
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return {**config, "images_per_s": config["steps"] * batch / seconds, "peak_gb": peak_gpu_gb()}


def torch_reference(batch: int, steps: int, warmup: int) -> dict | None:
    """The same training step in PyTorch + timm with automatic mixed precision, or None."""
    try:
        import timm
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, _ = torch.cuda.get_device_capability(0)
    dtype = torch.bfloat16 if major >= 8 else torch.float16
    network = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=N_CELLS).cuda()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    images = torch.rand(batch, 3, 224, 224, device="cuda")
    labels = torch.arange(batch, device="cuda") % N_CELLS
    torch.cuda.reset_peak_memory_stats()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(network(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "mode": "train",
        "batch": batch,
        "precision": f"torch autocast {str(dtype).removeprefix('torch.')}",
        "images_per_s": steps * batch / seconds,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
    }


def configurations(tiny: bool, backend: str, mixed: str) -> list[dict]:
    """Every row of the bench: training at two batch sizes, two precisions, with and without XLA,
    augmentation on the device; then prediction; then training without augmentation, for its cost."""
    batches = (4,) if tiny else (32, 64)
    steps, warmup = (2, 1) if tiny else (20, 3)
    # JAX always compiles; on PyTorch, Keras's jit_compile means torch.compile: XLA is TensorFlow's
    xla_settings = (False, True) if backend == "tensorflow" else ("auto",)
    common = {"shape": "tiny" if tiny else "full", "steps": steps, "warmup": warmup}
    rows = [
        {**common, "mode": "train", "batch": b, "precision": p, "xla": x, "augment": True}
        for b in batches
        for p in ("float32", mixed)
        for x in xla_settings
    ]
    rows += [
        {
            **common,
            "mode": "predict",
            "batch": batches[-1],
            "precision": p,
            "xla": xla_settings[-1],
            "augment": False,
        }
        for p in ("float32", mixed)
    ]
    rows.append(
        {
            **common,
            "mode": "train",
            "batch": batches[-1],
            "precision": mixed,
            "xla": xla_settings[-1],
            "augment": False,
        }
    )
    return rows


def _in_a_process(config: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(config)]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return {**config, "error": lines[-1][:160] if lines else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict], reference: dict, header: str) -> str:
    """The Markdown table of the bench."""
    lines = [
        header,
        "",
        "| mode | batch | precision | XLA | RandAugment | images/s | peak GPU memory | vs PyTorch+timm AMP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            rate, memory, ratio = f"failed: {row['error']}", "", ""
        else:
            rate = f"{row['images_per_s']:,.1f}"
            memory = f"{row['peak_gb']:.1f} GB" if row.get("peak_gb") is not None else "n/a (no GPU)"
            same = reference.get(row["batch"])
            mixed = row["precision"] != "float32"
            ratio = (
                f"{row['images_per_s'] / same['images_per_s']:.2f}x"
                if same and row["mode"] == "train" and mixed
                else ""
            )
        xla = {True: "on", False: "off", "auto": "auto"}[row.get("xla", "auto")]
        augment = "on the device" if row.get("augment") else "none"
        cells = [row["mode"], row["batch"], row["precision"], xla, augment, rate, memory, ratio]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    for batch, row in sorted(reference.items()):
        lines.append(
            f"| train (PyTorch {row['precision']}, timm) | {batch} | {row['precision']} | - | none | "
            f"{row['images_per_s']:,.1f} | {row['peak_gb']:.1f} GB | 1x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "build" / "bench-gpu.md")
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT on whatever device: checks the code")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one configuration, as JSON (internal)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0

    import keras

    from helpers import device

    backend = keras.backend.backend()
    found = device.accelerator()
    if found["kind"] != "cuda" and not args.tiny:
        print(NO_GPU.format(backend=backend))
        return 0
    auto = device.resolve_precision("auto", found)
    mixed = auto if auto != "float32" else "mixed_bfloat16"
    rows = []
    for config in configurations(args.tiny, backend, mixed):
        # a tiny run on the CPU stays in this process (quick); on a GPU each row gets a fresh one
        rows.append(measure(config) if args.tiny else _in_a_process(config))
        print(rows[-1], flush=True)
    reference = {}
    if not args.tiny:
        for batch in (32, 64):
            found_reference = torch_reference(batch, steps=20, warmup=3)
            if found_reference:
                reference[batch] = found_reference
    where = f"{found['name']}" + (
        f" (compute capability {found['compute_capability'][0]}.{found['compute_capability'][1]})"
        if found["compute_capability"]
        else ""
    )
    what = "tiny check, not a measurement" if args.tiny else "ViT-B/16, 224 px, random weights"
    header = (
        f"# GPU bench ({what})\n\n"
        f"Command: `make bench-gpu` (python bench/gpu.py{' --tiny' if args.tiny else ''}). Keras "
        f"{keras.__version__} on {backend}; device: {found['kind']} {where}. "
        + (
            "No PyTorch+timm reference (torch, timm or CUDA missing)."
            if not reference and not args.tiny
            else ""
        )
    )
    text = table(rows, reference, header)
    from helpers import config

    with config.atomic_target(args.output) as temporary:  # a reader never sees half a table
        temporary.write_text(text)
    print(text)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
