"""Same commit, same seed, same numbers: a training run is a function of its settings alone.

Notebooks train run after run in one kernel, and ``make all`` trains each in a fresh one; a
run's weights, batch order and RandAugment draws must not depend on what ran before it in
the process, nor on the order in which the input pipeline's threads happened to finish.
"""

import os
import random
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from shapely.geometry import box

from helpers import config, experiments, geo, model

# three cells in Jutland (lat, lng in degrees), far enough apart to be told apart
CENTRES = np.array([[55.7, 9.6], [56.2, 10.2], [57.0, 9.9]])
TRAIN_PER_CELL, VAL_PER_CELL = 8, 2
# a tiny augmented run: 24 training images in batches of 8, 2 epochs, the smoke profile's ViT
SETTINGS = {"batch_size": 8}


def write_cells():
    """Three geocells and their distance table, in ``WORKBOOK_BUILD_DIR``'s smoke build."""
    profile = config.get_profile("smoke", **SETTINGS)
    cells = gpd.GeoDataFrame(
        {"cell": range(len(CENTRES)), "lat": CENTRES[:, 0], "lng": CENTRES[:, 1]},
        geometry=[box(lng - 0.2, lat - 0.15, lng + 0.2, lat + 0.15) for lat, lng in CENTRES],
        crs=4326,
    )
    folder = config.output_dir(profile, "geocells")
    cells.to_file(folder / "geocells.geojson", driver="GeoJSON")
    cells[["lat", "lng", "cell"]].to_csv(folder / "locations.csv", index=False)
    distances = pd.DataFrame(geo.pairwise_haversine_km(CENTRES, CENTRES))
    distances.to_csv(config.output_dir(profile, "tables") / "cell_distances_km.csv")


def write_images(root) -> pd.DataFrame:
    """10 textured 32 px images per cell under ``root``, and their table (``root/dataset.csv``).

    Textured, not flat: every RandAugment operation (shear and translation too) changes them.
    """
    noise = np.random.default_rng(0)
    rows = []
    for cell, (lat, lng) in enumerate(CENTRES):
        tint = np.array([80 * cell, 200 - 70 * cell, 60 + 50 * cell])
        for number in range(TRAIN_PER_CELL + VAL_PER_CELL):
            pixels = np.clip(tint + noise.normal(0, 45, (32, 32, 3)), 0, 255).astype(np.uint8)
            path = f"{cell}/{number}.png"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / path)
            split = "train" if number < TRAIN_PER_CELL else "val"
            rows.append({"image_path": path, "cell": cell, "lat": lat, "lng": lng, "split": split})
    table = pd.DataFrame(rows)
    table.to_csv(root / "dataset.csv", index=False)
    return table


def train_and_predict(name: str, root) -> np.ndarray:
    """Train the tiny augmented run ``name``; the last epoch's probabilities on every image."""
    root = Path(root)
    profile = config.get_profile("smoke", **SETTINGS)
    table = pd.read_csv(root / "dataset.csv")
    experiments.run_experiment(
        profile, name, augment=True, epochs=2, dataset=table, image_root=root, verbose=0
    )
    trained = model.load_model(model.run_dir(profile, name), "last")
    every_image = model.image_dataset(table, root, profile["image_size"], 64)
    probabilities, _ = model.predict(trained, every_image)
    return probabilities


def draw_at_random():
    """What a notebook does between two runs: draws from every generator, and reseeds."""
    keras.utils.set_random_seed(7)
    # NumPy's legacy global generator on purpose: the one keras.utils.set_random_seed seeds
    random.random(), np.random.rand(3), tf.random.uniform((3,)), keras.random.normal((3,))  # noqa: NPY002
    list(tf.data.Dataset.range(5).shuffle(5))


def test_the_same_augmented_run_gives_the_same_predictions_anywhere(isolated_build, tmp_path):
    images = tmp_path / "images"
    table = write_images(images)
    write_cells()
    # the same run in a fresh process, as `make all` trains it: started first, so that it
    # runs beside the two below (its own build folder; it reads the same images)
    code = (
        "import sys, numpy as np\n"
        "from tests.test_determinism import train_and_predict, write_cells\n"
        "write_cells()\n"
        "np.save(sys.argv[2], train_and_predict('fresh', sys.argv[1]))\n"
    )
    saved = tmp_path / "fresh.npy"
    environment = {
        **os.environ,
        "PYTHONPATH": str(config.REPO_ROOT),
        "WORKBOOK_BUILD_DIR": str(tmp_path / "fresh-build"),
    }
    fresh_process = subprocess.Popen(
        [sys.executable, "-c", code, str(images), str(saved)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=config.REPO_ROOT,
        env=environment,
    )
    try:
        first = train_and_predict("first", images)
        draw_at_random()
        again = train_and_predict("again", images)
        _, errors = fresh_process.communicate(timeout=300)
    finally:
        fresh_process.kill()  # only if it is still running (a failure above): no stray trainer
    assert fresh_process.returncode == 0, errors[-3000:]
    fresh = np.load(saved)

    assert first.shape == (len(table), len(CENTRES))
    # bit for bit: the same float32 probabilities, not merely close ones
    assert np.array_equal(first, again), np.abs(first - again).max()
    assert np.array_equal(first, fresh), np.abs(first - fresh).max()
