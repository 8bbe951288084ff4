"""One training experiment, end to end: data, model, optimiser, training, evaluation, records.

Notebooks 05 to 09 compare runs that differ in one setting at a time (augmentation, the
learning-rate schedule, the loss, the data). :func:`run_experiment` keeps the rest equal,
so a comparison table means what it says.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pandas as pd

from helpers import config, geo, images, losses, metrics, model


def cells_and_distances(profile: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The geocells of notebook 02 and their centroid distance matrix in km (notebook 04)."""
    _, cells = geo.read_geocells(config.output_dir(profile, "geocells"))
    path = config.output_dir(profile, "tables") / "cell_distances_km.csv"
    if not path.exists():
        raise FileNotFoundError(f"No {path.name}; run notebook 04 first (make all PROFILE={profile}).")
    return cells, pd.read_csv(path, index_col=0).to_numpy()


def evaluate(probabilities: np.ndarray, table: pd.DataFrame, cells: pd.DataFrame) -> dict:
    """Top-1/top-3 accuracy and the error from the arg-max cell's centroid to each image's
    true location (km): mean, median and the share within 1, 25, 200 and 750 km."""
    true = table["cell"].to_numpy()
    ranked = np.argsort(-probabilities, axis=1)
    centroids = cells.sort_values("cell")[["lat", "lng"]].to_numpy()
    guess = centroids[ranked[:, 0]]
    errors = geo.haversine_km(table["lat"].to_numpy(), table["lng"].to_numpy(), guess[:, 0], guess[:, 1])
    return {
        "top1": float((ranked[:, 0] == true).mean()),
        "top3": float((ranked[:, :3] == true[:, None]).any(1).mean()),
        **metrics.distance_summary(errors),
    }


def run_experiment(
    profile_name: str,
    name: str,
    *,
    loss: str = "cross_entropy",
    augment: bool = False,
    warmup: bool = True,
    betas: tuple[float, float] | None = None,
    freeze_backbone: bool = False,
    tau_km: float = 75.0,
    epochs: int | None = None,
    dataset: pd.DataFrame | None = None,
    image_root=None,
    data: str | None = None,
    notes: str = "",
    verbose: int = 2,
) -> dict:
    """Train one model and record it; return its history, validation metrics and folder.

    ``dataset`` (with a ``split`` column) defaults to notebook 03's image set; ``data`` names
    it in the results table (default: "<source> images", the set :func:`best_run` picks from).
    The run goes to ``build/<profile>/runs/<name>/``, its validation metrics into the results table.
    """
    profile = config.get_profile(profile_name)
    epochs = epochs or profile["epochs"]
    cells, distance_km = cells_and_distances(profile_name)
    if dataset is None:
        dataset, image_root = model.load_dataset(profile_name)
    dataset, skipped = images.readable_rows(dataset, image_root)
    train_rows, val_rows = dataset[dataset["split"] == "train"], dataset[dataset["split"] == "val"]
    size, batch = profile["image_size"], profile["batch_size"]
    augmenter = model.randaugment(profile, seed=profile["seed"]) if augment else None
    train_data = model.image_dataset(
        train_rows, image_root, size, batch, training=True, augment=augmenter, seed=profile["seed"]
    )
    val_data = model.image_dataset(val_rows, image_root, size, 256)

    keras.utils.set_random_seed(profile["seed"])
    classifier = model.build_classifier(len(cells), profile, freeze_backbone=freeze_backbone)
    steps = int(np.ceil(len(train_rows) / batch))
    optimizer = model.make_optimizer(profile, steps, epochs, warmup=warmup, betas=betas)
    folder = model.run_dir(profile_name, name)
    start = time.perf_counter()
    history = model.train(
        classifier,
        train_data,
        val_data,
        folder,
        epochs,
        losses.make_loss(loss, distance_km, tau_km),
        distance_km,
        optimizer,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start

    probabilities, _ = model.predict(classifier, val_data)
    scores = evaluate(probabilities, val_rows.reset_index(drop=True), cells)
    settings = {
        "loss": loss,
        "augment": augment,
        "warmup": warmup,
        "betas": list(betas or (profile["beta_1"], profile["beta_2"])),
        "freeze_backbone": freeze_backbone,
        "epochs": epochs,
        "train_images": len(train_rows),
        "skipped_images": skipped,
        "seconds": seconds,
    }
    model.write_summary(folder, {"name": name, "profile": profile_name, **settings, "val": scores})
    data = data or f"{profile['image_source']} images"
    metrics.record_result(profile_name, name, data=data, split="val", notes=notes, **scores)
    return {"name": name, "history": history, "val": scores, "folder": folder, "settings": settings}


def best_run(profile_name: str) -> str:
    """The run of notebooks 05-07 with the best validation top-1 accuracy (ties: lower mean km)."""
    profile = config.get_profile(profile_name)
    results = metrics.load_results(profile_name)
    candidates = results[
        (results["split"] == "val") & (results["data"] == f"{profile['image_source']} images")
    ]
    if candidates.empty:
        raise LookupError(
            f"No training runs in the results table of {profile_name!r}; run notebooks 05-07 first."
        )
    return candidates.sort_values(["top1", "mean_km"], ascending=[False, True]).iloc[0]["experiment"]


def predict_split(classifier, dataset: pd.DataFrame, image_root, split: str, profile: dict):
    """Probabilities of ``classifier`` on one split of ``dataset``: (probabilities, rows used)."""
    rows, _ = images.readable_rows(dataset[dataset["split"] == split], image_root)
    rows = rows.reset_index(drop=True)
    data = model.image_dataset(rows, image_root, profile["image_size"], 256)
    probabilities, labels = model.predict(classifier, data)
    assert (labels == rows["cell"].to_numpy()).all()
    return probabilities, rows
