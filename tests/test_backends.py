"""The training path on every Keras backend the workbook installs: TensorFlow and JAX.

Keras picks its backend once per process (``KERAS_BACKEND``), so each check runs in a child
Python with the variable set, as a student's kernel would have it. PyTorch is not installed
here, so its backend is not tested.

* ``model.train`` (the one training loop) trains a tiny classifier and a two-headed network
  for two epochs on a ``tf.data`` pipeline, keeps its checkpoint, scores it with
  ``model.predict`` and records its results row, on each backend.
* Every loss and metric of ``helpers.losses`` gives on JAX what it gives on TensorFlow.
* Notebooks 05-07 run on JAX in the smoke series of ``tests/test_notebooks.py``
  (``tests/smoke_series.ON_JAX``).
* Two devices on each backend: ``tests/test_distribute.py`` (the same run on one and two).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import config, geo, losses

BACKENDS = ("tensorflow", "jax")  # torch: not installed in this workbook's environment


def run_on_backend(backend: str, code: str, build_dir, timeout: int = 600) -> dict:
    """Run ``code`` in a child Python on Keras backend ``backend``; return the JSON it prints last.

    The child writes its build into ``build_dir`` (``WORKBOOK_BUILD_DIR``).
    """
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "WORKBOOK_BUILD_DIR": str(build_dir),
        "PYTHONPATH": str(config.REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"on {backend}:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


TRAIN_TWICE = """
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from PIL import Image

from helpers import config, experiments, geo, losses, metrics, model

profile = config.get_profile("smoke")
root = Path(config.build_dir(profile)) / "tiny_images"
rows = []
for cell in range(3):  # three cells of solid colours, six images each
    for i in range(6):
        path = root / f"{cell}/{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        colour = np.array([90 * cell, 255 - 90 * cell, 40 * i], dtype="uint8")
        Image.fromarray(np.full((32, 32, 3), colour, dtype="uint8")).save(path)
        rows.append({"image_path": f"{cell}/{i}.png", "cell": cell, "lat": 55.5 + 0.5 * cell, "lng": 10.0})
table = pd.DataFrame(rows)
cells = pd.DataFrame({"cell": [0, 1, 2], "lat": [55.5, 56.0, 56.5], "lng": [10.0, 10.0, 10.0]})
centroids = cells[["lat", "lng"]].to_numpy()
distance_km = geo.pairwise_haversine_km(centroids, centroids)

keras.utils.set_random_seed(0)
train_data = model.image_dataset(table, root, 32, 6, training=True, seed=0)
val_data = model.image_dataset(table, root, 32, 8)
classifier = model.build_classifier(3, profile)
optimizer = model.make_optimizer(profile, model.steps_per_epoch(len(table), 6), 2)


def score(kept):
    probabilities, labels = model.predict(kept, val_data)
    assert (labels == table["cell"].to_numpy()).all()
    return experiments.evaluate(probabilities, table, cells)


run = model.train(
    profile, model.run_dir(profile, "tiny"), classifier, train_data, val_data,
    loss=losses.make_loss("haversine_smoothing", distance_km, centroids=centroids), epochs=2,
    optimizer=optimizer, distance_km=distance_km, settings={"loss": "haversine_smoothing"},
    score=score, record={"data": "tiny images", "notes": "backend test"}, verbose=0,
)
summary = json.loads((run["folder"] / "summary.json").read_text())
row = metrics.load_results(profile).set_index("experiment").loc["tiny"]

# two heads, as notebook 11's hybrid: the cell head and an offset per cell
xy = geo.metric_xy_km(cells["lat"], cells["lng"])
reach = np.ones((3, 2))


def two_targets(x, y):
    import tensorflow as tf

    positions = tf.gather(tf.constant(xy, "float32"), tf.cast(y[:, 0], "int32"))
    return x, {"cells": y, "offsets": tf.concat([y[:, :1], positions], axis=1)}


keras.utils.set_random_seed(0)
hybrid = model.build_hybrid(3, profile)
two = model.train(
    profile, model.run_dir(profile, "tiny_hybrid"), hybrid, train_data.map(two_targets),
    val_data.map(two_targets), loss={"cells": losses.cross_entropy, "offsets": losses.offset_loss(xy, reach)},
    loss_weights={"cells": 1.0, "offsets": 0.5}, epochs=2, verbose=0,
)
outputs = model.predict_outputs(two["model"], val_data)
print(json.dumps({
    "backend": keras.backend.backend(),
    "epochs": list(run["history"]["epoch"]),
    "loss": run["history"]["loss"].tolist(),
    "columns": sorted(run["history"].columns),
    "files": sorted(p.name for p in run["folder"].iterdir()),
    "summary_backend": summary["keras_backend"],
    "summary_loss": summary["loss"],
    "best_epoch": summary["best_epoch"],
    "val_accuracy": run["history"]["val_accuracy"].tolist(),
    "top1": summary["val"]["top1"],
    "row_top1": float(row["top1"]),
    "row_notes": row["notes"],
    "two_columns": sorted(two["history"].columns),
    "two_best_epoch": two["settings"]["best_epoch"],
    "two_val_cells_accuracy": two["history"]["val_cells_accuracy"].tolist(),
    "two_shapes": {k: list(v.shape) for k, v in outputs.items()},
}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_training_loop_trains_checkpoints_and_records_on(backend, tmp_path):
    found = run_on_backend(backend, TRAIN_TWICE, tmp_path / "build")
    assert found["backend"] == found["summary_backend"] == backend
    assert found["epochs"] == [0, 1] and np.isfinite(found["loss"]).all()
    assert {"accuracy", "top3", "centroid_km", "expected_km", "val_accuracy"} <= set(found["columns"])
    assert {"best.keras", "last.keras", "history.csv", "summary.json", "logs"} <= set(found["files"])
    assert "backup" not in found["files"]  # removed once training finished
    # the checkpoint rule: the epoch of the best validation top-1, and the row holds its scores
    assert found["best_epoch"] == int(np.argmax(found["val_accuracy"]))
    assert found["summary_loss"] == "haversine_smoothing"
    assert found["row_top1"] == pytest.approx(found["top1"]) and found["row_notes"] == "backend test"
    # several heads: the cell head's top-1 is the rule, the offsets get their own loss
    assert {"cells_accuracy", "cells_top3", "offsets_loss", "val_cells_accuracy"} <= set(found["two_columns"])
    assert found["two_best_epoch"] == int(np.argmax(found["two_val_cells_accuracy"]))
    assert found["two_shapes"] == {"cells": [18, 3], "offsets": [18, 3, 2]}


# Every loss and metric on one batch: labels [cell, lat, lng], probabilities of four cells
LOSSES_ON_A_BATCH = """
import json

import keras
import numpy as np

from helpers import losses

batch = json.loads({batch!r})
y_true, y_pred = np.array(batch["y_true"], "float32"), np.array(batch["y_pred"], "float32")
distance_km, centroids = np.array(batch["distance_km"]), np.array(batch["centroids"])
values = {{}}
for name in losses.LOSS_NAMES:
    loss = losses.make_loss(name, distance_km, centroids=centroids, tau_km=60.0, ce_weight=0.5)
    values[name] = np.asarray(loss(y_true, y_pred)).tolist()
# the other label form, integer cells (batch,): every loss but the location's reads it
values["distance_plus_cross_entropy_on_cells"] = np.asarray(
    losses.distance_plus_cross_entropy(distance_km, 0.5)(y_true[:, 0].astype("int32"), y_pred)
).tolist()
values["image_distance"] = np.asarray(losses.image_distance_loss(centroids, 300.0)(y_true, y_pred)).tolist()
offsets = np.array(batch["offsets"], "float32")
xy_true = np.concatenate([y_true[:, :1], np.array(batch["xy"], "float32")], axis=1)
offset = losses.offset_loss(np.array(batch["centroids_xy"]), np.array(batch["reach"]))
values["offsets"] = np.asarray(offset(xy_true, offsets)).tolist()
for metric in losses.accuracy_metrics() + losses.distance_metrics(distance_km):
    metric.update_state(y_true, y_pred)
    values[metric.name] = float(np.asarray(metric.result()))
print(json.dumps({{"backend": keras.backend.backend(), "values": values}}))
"""


def test_every_loss_and_metric_gives_the_same_numbers_on_jax_as_on_tensorflow(tmp_path):
    rng = np.random.default_rng(3)
    centroids = np.array([[55.0, 9.0], [55.5, 10.5], [56.0, 12.0], [57.0, 10.0]])
    probabilities = rng.dirichlet(np.ones(4), size=6)
    cells = np.array([0, 1, 2, 3, 1, 2])
    batch = {
        "y_true": np.column_stack([cells, centroids[cells] + rng.normal(0, 0.1, (6, 2))]).tolist(),
        "y_pred": probabilities.tolist(),
        "distance_km": geo.pairwise_haversine_km(centroids, centroids).tolist(),
        "centroids": centroids.tolist(),
        "centroids_xy": (rng.uniform(0, 100, (4, 2))).tolist(),
        "reach": rng.uniform(5, 10, (4, 2)).tolist(),
        "xy": rng.uniform(0, 100, (6, 2)).tolist(),
        "offsets": rng.uniform(-1, 1, (6, 4, 2)).tolist(),
    }
    code = LOSSES_ON_A_BATCH.format(batch=json.dumps(batch))
    on = {backend: run_on_backend(backend, code, tmp_path / "build") for backend in BACKENDS}
    assert [on[b]["backend"] for b in BACKENDS] == list(BACKENDS)
    names = set(losses.LOSS_NAMES) | {"image_distance", "offsets", "accuracy", "top3", "centroid_km"}
    values = on["jax"]["values"]
    assert values["distance_plus_cross_entropy_on_cells"] == pytest.approx(
        values["distance_plus_cross_entropy"]
    )
    assert names <= set(on["jax"]["values"])
    for name, value in on["tensorflow"]["values"].items():
        np.testing.assert_allclose(on["jax"]["values"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    # the numbers are the batch's, not zeros: cross-entropy by hand
    by_hand = -np.log(probabilities[np.arange(6), cells])
    np.testing.assert_allclose(on["jax"]["values"]["cross_entropy"], by_hand, rtol=1e-5)
