"""Speed benchmarks of the workbook's helpers, written as a Markdown table.

    python bench/run.py --output build/bench.md      (or: make bench)

Each row is a rate (items per second, best of several repeats) measured in this run, and
where two ways of doing the same job are compared, their ratio. Absolute rates depend on
the machine; the ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import shapely

from helpers import config, datasets, geo


def best_seconds(function, repeats: int = 3) -> float:
    """Best wall time in seconds of ``repeats`` calls (the least disturbed one)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def naive_assign(points, municipalities) -> list:
    """Point-in-polygon by hand: each point against each municipality until one contains it."""
    polygons = list(zip(municipalities["name"], municipalities.geometry, strict=True))
    names = []
    for point in points.geometry:
        names.append(next((name for name, polygon in polygons if polygon.contains(point)), None))
    return names


def training_rows(locations, geography) -> list[tuple[str, str, str]]:
    """Images/s of the default model: the model alone, the input pipeline alone, and both."""
    import tempfile

    import keras

    from helpers import images, losses, model

    profile = config.get_profile("default")
    size, batch = profile["image_size"], profile["batch_size"]
    n = 2048
    sample = locations.sample(n, random_state=1).reset_index(drop=True).assign(cell=lambda t: t.index % 129)
    with tempfile.TemporaryDirectory() as folder:
        table = images.render_synthetic(sample, Path(folder), geography, size=size, session_leak=0.5)
        classifier = model.build_classifier(129, profile)
        classifier.compile(model.make_optimizer(profile, n // batch, 10), loss=losses.cross_entropy)
        x = np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")
        y = np.arange(n) % 129
        import tensorflow as tf

        # the model alone: batches already in memory as tensors, nothing to decode or augment;
        # tf.data's autotuner off, as model.image_dataset has it for cached images (on 2 cores its
        # threads compete with the model: with it on, this row measured 805-1,248 images/s)
        options = tf.data.Options()
        options.autotune.enabled = False
        in_memory = (
            tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().prefetch(2).with_options(options)
        )
        classifier.fit(in_memory, epochs=1, verbose=0)  # compile and fill the cache first
        model_s = best_seconds(lambda: classifier.fit(in_memory, epochs=1, verbose=0), repeats=2)
        results = [
            ("train step, default ViT, data in memory (model alone)", f"{n / model_s:,.0f} images/s", "1x")
        ]
        for label, augment in (("", None), (" + RandAugment", model.randaugment(profile))):
            data = model.image_dataset(table, Path(folder), size, batch, training=True, augment=augment)
            for _ in data:  # fill the decode cache, as after the first epoch
                pass
            alone_s = best_seconds(lambda data=data: [None for _ in data], repeats=2)
            both_s = best_seconds(lambda data=data: classifier.fit(data, epochs=1, verbose=0), repeats=2)
            results.append(
                (
                    f"input pipeline alone (cached decode{label})",
                    f"{n / alone_s:,.0f} images/s",
                    f"{model_s / alone_s:.1f}x the model's rate",
                )
            )
            results.append(
                (
                    f"training from files (pipeline{label} + model)",
                    f"{n / both_s:,.0f} images/s",
                    f"{model_s / both_s:.2f}x the model's rate",
                )
            )
        # the previous pipeline, for comparison: Keras 3's own RandAugment, one image at a time
        keras_layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.15, seed=0)
        per_image = (
            tf.data.Dataset.from_tensor_slices(x[:512])
            .map(lambda image: keras_layer(image, training=True), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch)
        )
        augment = model.randaugment(profile)
        # the way model.image_dataset runs it: in a tf.function of its own, called from the map
        # each batch with its own augmentation seed, as model.image_dataset zips them
        batches = tf.data.Dataset.from_tensor_slices((x[:512], y[:512])).batch(batch)
        ours = tf.data.Dataset.zip(batches, model._augmentation_seeds(0)).map(
            model._augment_outside_tf_data(augment)
        )
        for name, stage in (
            ("keras.layers.RandAugment, image by image", per_image),
            ("helpers.augment (keras-cv policy), batch by batch", ours),
        ):
            seconds = best_seconds(lambda stage=stage: [None for _ in stage], repeats=2)
            results.append(
                (
                    f"augmentation alone: {name}",
                    f"{512 / seconds:,.0f} images/s",
                    f"{model_s * 512 / n / seconds:.1f}x the model's rate",
                )
            )
        keras.backend.clear_session()
    return results


def epoch_rows(locations, geography) -> list[tuple[str, str, str]]:
    """Epoch times of a default-profile training run from files, with and without the two
    settings that make ``make all`` fit in 20 minutes on 2 cores: XLA-compiled steps and
    an input pipeline without tf.data's autotuner (``model.image_dataset`` turns it off when
    the images are cached in memory)."""
    import tempfile

    import keras
    import tensorflow as tf

    from helpers import images, losses, model

    profile = config.get_profile("default")
    size, batch, n, epochs = profile["image_size"], profile["batch_size"], 2048, 6
    sample = locations.sample(n, random_state=2).reset_index(drop=True).assign(cell=lambda t: t.index % 129)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as folder:
        table = images.render_synthetic(sample, Path(folder), geography, size=size, session_leak=0.5)
        for label, jit, autotune in (
            ("eager steps, autotuner on (Keras's CPU defaults)", False, True),
            ("XLA steps, autotuner on", True, True),
            ("XLA steps, autotuner off (the default profile)", True, False),
        ):
            data = model.image_dataset(table, Path(folder), size, batch, training=True)
            options = tf.data.Options()
            options.autotune.enabled = autotune
            data = data.with_options(options)
            keras.utils.set_random_seed(0)
            classifier = model.build_classifier(129, profile)
            classifier.compile(
                model.make_optimizer(profile, n // batch, epochs), loss=losses.cross_entropy, jit_compile=jit
            )
            seconds = []
            for _ in range(epochs):
                start = time.perf_counter()
                classifier.fit(data, epochs=1, verbose=0)
                seconds.append(time.perf_counter() - start)
            steady = np.array(seconds[1:])  # the first epoch compiles and fills the cache
            reference = reference or float(np.median(steady))
            rows.append(
                (
                    f"training epoch from files, default ViT: {label}",
                    f"{n / np.median(steady):,.0f} images/s (median epoch {np.median(steady):.2f} s, "
                    f"slowest {steady.max():.2f} s, first {seconds[0]:.1f} s)",
                    f"{reference / np.median(steady):.2f}x the first row",
                )
            )
            keras.backend.clear_session()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=config.REPO_ROOT / "build" / "bench.md")
    args = parser.parse_args()

    from helpers import notebooks, speed

    # the machine's reference rate, as the notebook runner measures it before a build: the
    # README's times were measured at notebooks.REFERENCE_RATE
    rate = max(speed.reference_rate() for _ in range(2))
    rows = [
        (
            f"reference rate: {speed.REFERENCE_WORKLOAD}",
            f"{rate:,.0f} images/s",
            f"{rate / notebooks.REFERENCE_RATE:.2f}x the rate the README's times were measured at",
        )
    ]
    seconds = best_seconds(datasets.load_report_locations, repeats=2)
    rows.append(("parse the report's 42,570 locations", f"{42_570 / seconds:,.0f} locations/s", ""))

    locations = datasets.load_report_locations()
    municipalities = datasets.load_municipalities()
    n = len(locations)
    joined_s = best_seconds(lambda: geo.assign_municipality(locations, municipalities))
    cells_s = best_seconds(lambda: geo.make_geocells(locations, municipalities, n_cells=129))
    naive_s = best_seconds(lambda: naive_assign(locations, municipalities), repeats=1)
    rows.append(
        (
            "make_geocells, 129 cells (assignment + 31 K-means splits + regions)",
            f"{n / cells_s:,.0f} points/s ({cells_s:.2f} s)",
            f"{naive_s / cells_s:.1f}x faster than the naive loop's assignment alone",
        )
    )
    rows.append(
        (
            "assign_municipality (spatial join + nearest)",
            f"{n / joined_s:,.0f} points/s",
            f"{naive_s / joined_s:,.0f}x the naive loop",
        )
    )
    rows.append(
        (
            "naive point-in-polygon loop over municipalities",
            f"{n / naive_s:,.0f} points/s ({naive_s:.2f} s)",
            "1x",
        )
    )

    # synthetic rendering, at the default (64 px) and the full (224 px) image size
    from helpers import synthetic

    geography = synthetic.build_geography(locations, municipalities)
    sample = locations.sample(400, random_state=0).reset_index(drop=True)
    features = synthetic.scene_features(sample["lat"], sample["lng"], geography)
    sessions = np.arange(len(sample)) % synthetic.N_SESSIONS
    targets = {64: 200, 224: 20}
    for size, target in targets.items():
        count = len(sample) if size == 64 else 100
        seconds = best_seconds(
            lambda size=size, count=count: synthetic.render_locations(
                sample.head(count), features.head(count), sessions[:count], size
            ),
            repeats=2,
        )
        rate = count / seconds
        rows.append(
            (
                f"render synthetic scenes, {size}x{size} px",
                f"{rate:,.0f} images/s",
                f"{rate / target:.1f}x the target of {target}/s",
            )
        )

    rows.extend(training_rows(locations, geography))
    rows.extend(epoch_rows(locations, geography))

    # sanity: both ways agree where the naive loop finds a polygon
    subset = locations.sample(500, random_state=0)
    naive = np.array(naive_assign(subset, municipalities), dtype=object)
    joined = geo.assign_municipality(subset, municipalities)["municipality"].to_numpy()
    found = naive != None  # noqa: E711 (element-wise on an object array)
    assert (naive[found] == joined[found]).all(), "the two assignments disagree"

    header = [
        "# Benchmarks",
        "",
        f"Command: `make bench` (python bench/run.py). Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, shapely {shapely.__version__}.",
        "",
        "| what | rate | compared |",
        "|---|---|---|",
    ]
    table = "\n".join(header + [f"| {a} | {b} | {c} |" for a, b, c in rows]) + "\n"
    with config.atomic_target(args.output) as temporary:
        temporary.write_text(table)
    print(table)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
