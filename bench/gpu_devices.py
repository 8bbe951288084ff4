"""Images/s per device count: the full profile's ViT-B/16 trained data-parallel on 1..N GPUs.

    make bench-gpu                 (python bench/gpu_devices.py --output build/bench-gpu.md --append)
    KERAS_BACKEND=jax python bench/gpu_devices.py
    python bench/gpu_devices.py --tiny --cpu-devices 2   (the same code on 2 virtual CPU devices:
                                                          a check of the path, no figures)

Each device count k = 1..N (N: the accelerators present) trains ViT-B/16 at 224 px with
random weights (``bench/gpu.py``'s network: offline, nothing downloaded) for a few steps in
a fresh process, through ``helpers.distribute`` as the workbook trains (``devices=k``), at
``--per-device`` images per device (32: the full profile's batch on one device), so the
global batch grows with k (weak scaling, the way to fill more devices). In the precision
the ``precision: auto`` setting picks on the card. Rows: images/s, images/s per device, the
speed-up over one device and the scaling efficiency (speed-up / k).

With fewer than two accelerators nothing multi-device can be measured: the rows for 2, 4
and 8 devices are then labelled "estimate", from the one-device rate (measured on this
card, or with no GPU the README's T4 estimate, ``--one-device-rate``) times k times an
assumed efficiency: each step sends the gradients of ViT-B/16's 86 million weights (344 MB
in float32) around a ring of k devices, 2 (k - 1) / k times their size; taken as 10 % of a
step's time at k = 2 over PCIe (a T4 pair), so efficiency 1 / (1 + 0.1 (k - 1) / (k / 2)).
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
sys.path.insert(0, str(REPO_ROOT / "bench"))

SECTION = "## Images/s per device count"
T4_FLOAT32_ESTIMATE = 110.0  # images/s, ViT-B/16 training on one T4 (README's profile table, an estimate)
OVERHEAD_AT_TWO = 0.10  # share of a step spent exchanging gradients on 2 devices (assumed, see above)


def assumed_efficiency(k: int) -> float:
    """Scaling efficiency assumed for k devices (the module's docstring says from what)."""
    return 1.0 / (1.0 + OVERHEAD_AT_TWO * (k - 1) / (k / 2)) if k > 1 else 1.0


def _virtual_cpu_devices(count: int) -> None:
    """Make ``count`` CPU devices before the backend starts (``--cpu-devices``, a check only)."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"  # JAX
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def measure(k: int, per_device: int, tiny: bool, steps: int, warmup: int) -> dict:
    """Images/s of ``steps`` training steps on ``k`` devices, in this process."""
    import keras
    import numpy as np
    from gpu import N_CELLS, SHAPES, build

    from helpers import config, device, distribute

    shape = SHAPES["tiny" if tiny else "full"]
    batch = per_device * k
    profile = config.get_profile("full", devices=k, batch_size=batch, final_batch_size=None)
    policy = device.precision(profile)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    size = shape["image_size"]
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = (np.arange(batch) % N_CELLS).astype("int32")
    with distribute.scope(profile):
        network = build(shape, policy, augment_on_device=False)
        optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01)
        optimizer = distribute.prepare_optimizer(device.training_optimizer(optimizer, profile), profile)
        network.compile(
            optimizer=optimizer,
            loss="sparse_categorical_crossentropy",
            jit_compile=distribute.jit_compile(profile, device.jit_compile(profile)),
        )
        for _ in range(warmup):
            network.train_on_batch(images, labels)
        start = time.perf_counter()
        for _ in range(steps):
            loss = network.train_on_batch(images, labels)
        float(np.asarray(loss))  # wait for the devices
        seconds = time.perf_counter() - start
    return {
        "devices": k,
        "names": distribute.devices_of(profile),
        "batch": batch,
        "precision": policy,
        "images_per_s": steps * batch / seconds,
    }


def _in_a_process(k: int, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(k)]
    command += ["--per-device", str(args.per_device)]
    command += ["--tiny"] if args.tiny else []
    command += ["--cpu-devices", str(args.cpu_devices)] if args.cpu_devices else []
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if args.cpu_devices:
        environment["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return {"devices": k, "error": lines[-1][:200] if lines else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict], measured_one: float | None, estimated_one: float | None) -> str:
    """The Markdown table: measured rows (speed-up over the measured one-device rate), then
    estimated ones (over the one-device rate they were estimated from)."""
    lines = [
        "| devices | global batch | images/s | per device | speed-up | efficiency | how |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        k = row["devices"]
        if "error" in row:
            lines.append(f"| {k} | | failed: {row['error']} | | | | measured |")
            continue
        rate = row["images_per_s"]
        base = measured_one if row["how"] == "measured" else estimated_one
        speedup = rate / base if base else None
        cells = [
            k,
            row["batch"],
            f"{rate:,.1f}",
            f"{rate / k:,.1f}",
            f"{speedup:.2f}x" if speedup else "",
            f"{speedup / k:.0%}" if speedup else "",
            row["how"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "build" / "bench-gpu.md")
    parser.add_argument("--append", action="store_true", help="replace only this bench's section of --output")
    parser.add_argument("--per-device", type=int, default=32, help="images per device and step")
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT: checks the code, no figures")
    parser.add_argument("--cpu-devices", type=int, default=0, help="virtual CPU devices (with --tiny)")
    parser.add_argument("--one-device-rate", type=float, default=T4_FLOAT32_ESTIMATE)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one device count (internal)
    args = parser.parse_args(argv)

    if args.one:
        if args.cpu_devices:
            _virtual_cpu_devices(args.cpu_devices)
        steps, warmup = (2, 1) if args.tiny else (args.steps, 3)
        print(json.dumps(measure(args.one, args.per_device, args.tiny, steps, warmup)))
        return 0

    if args.cpu_devices:
        _virtual_cpu_devices(args.cpu_devices)
    import keras

    from helpers import device, distribute

    backend = keras.backend.backend()
    present = distribute.present_devices()
    accelerators = [d for d in present if not d.startswith("CPU:")]
    counts = range(1, len(accelerators) + 1) if accelerators else range(1, (args.cpu_devices or 0) + 1)
    if not accelerators and not args.tiny:
        counts = range(0)  # ViT-B/16 on a CPU: hours per step count, and no figure worth having
    rows = []
    for k in counts:
        rows.append({**_in_a_process(k, args), "how": "measured"})
        print(rows[-1], flush=True)
    measured_one = next((r["images_per_s"] for r in rows if r["devices"] == 1 and "error" not in r), None)
    notes = []
    if len(accelerators) < 2:
        base = measured_one if accelerators and measured_one else args.one_device_rate
        source = (
            f"the one-device rate measured here ({base:,.1f} images/s)"
            if accelerators and measured_one
            else f"the README's T4 estimate for one device ({base:,.0f} images/s, float32)"
        )
        notes.append(
            f"No machine with several GPUs was lent: the rows for 2, 4 and 8 devices are estimates, "
            f"{source} x devices x an assumed efficiency (gradient exchange taken as "
            f"{OVERHEAD_AT_TWO:.0%} of a step on 2 devices; bench/gpu_devices.py says why)."
        )
        if not accelerators:
            rows.append({"devices": 1, "batch": args.per_device, "images_per_s": base, "how": "estimate"})
        for k in (2, 4, 8):
            rows.append(
                {
                    "devices": k,
                    "batch": args.per_device * k,
                    "images_per_s": base * k * assumed_efficiency(k),
                    "how": f"estimate (efficiency {assumed_efficiency(k):.0%} assumed)",
                }
            )
    else:
        base = None
    found = device.accelerator()
    what = "tiny check, not a measurement" if args.tiny else "ViT-B/16, 224 px, random weights"
    text = (
        f"{SECTION} ({what})\n\n"
        f"Command: `make bench-gpu` (python bench/gpu_devices.py). Keras {keras.__version__} on "
        f"{backend}; devices present: {', '.join(present)} ({found['name']}); "
        f"{args.per_device} images per device and step, data-parallel through helpers.distribute.\n\n"
        + "".join(note + "\n\n" for note in notes)
        + table(rows, measured_one, base)
    )
    previous = ""
    if args.append and args.output.exists():
        previous = args.output.read_text().split(SECTION)[0].rstrip() + "\n\n"
    from helpers import config

    with config.atomic_target(args.output) as temporary:  # a reader never sees half a table
        temporary.write_text(previous + text)
    print(text)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
