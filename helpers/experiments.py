"""One training experiment, end to end: data, model, optimiser, training, evaluation, records.

Notebooks 05 to 09 compare runs that differ in one setting at a time (augmentation, the
learning-rate schedule, the loss, the data). :func:`run_experiment` keeps the rest equal,
so a comparison table means what it says.
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np
import pandas as pd

from helpers import config, geo, images, losses, metrics, model


def cells_and_distances(profile: str | dict) -> tuple[pd.DataFrame, np.ndarray]:
    """The geocells of notebook 02 and their centroid distance matrix in km (notebook 04)."""
    _, cells = geo.read_geocells(config.output_dir(profile, "geocells"))
    path = config.output_dir(profile, "tables") / "cell_distances_km.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"No {path.name}; run notebook 04 first (make all PROFILE={config.profile_name(profile)})."
        )
    return cells, pd.read_csv(path, index_col=0).to_numpy()


def data_label(profile: str | dict) -> str:
    """How the results table names the image set of ``profile``, e.g. "streetview images".

    The rehearsal's images come through the real Street View client from the loopback
    stand-in; the label says so.
    """
    profile = config.get_profile(profile)
    label = f"{profile['image_source']} images"
    return label + " (loopback stand-in)" if profile["streetview_api"] == "standin" else label


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
    profile: str | dict,
    name: str,
    *,
    loss: str = "cross_entropy",
    augment: bool = False,
    warmup: bool = True,
    betas: tuple[float, float] | None = None,
    freeze_backbone: bool = False,
    tau_km: float = 75.0,
    ce_weight: float = 1.0,
    epochs: int | None = None,
    dataset: pd.DataFrame | None = None,
    image_root=None,
    data: str | None = None,
    notes: str = "",
    verbose: int = 2,
) -> dict:
    """Train one model and record it; return its history, validation metrics and folder.

    ``profile`` is a name or a profile from ``config.get_profile`` (with overrides, e.g. a
    seed). ``dataset`` (with a ``split`` column) defaults to notebook 03's image set;
    ``data`` names it in the results table (default :func:`data_label`, the set
    :func:`best_run` picks from). The run goes to ``build/<profile>/runs/<name>/``.

    One rule throughout: the checkpoint kept (``best.keras``) is the epoch with the highest
    validation top-1 accuracy, and the metrics recorded are that checkpoint's: validation
    scores, and top-1 on a clean pass over the training images (no augmentation), so the
    train-validation gap compares like with like.
    """
    profile = config.get_profile(profile)
    epochs = epochs or profile["epochs"]
    cells, distance_km = cells_and_distances(profile)
    centroids = cells.sort_values("cell")[["lat", "lng"]].to_numpy()
    if dataset is None:
        dataset, image_root = model.load_dataset(profile)
    dataset, skipped = images.readable_rows(dataset, image_root)
    train_rows = dataset[dataset["split"] == "train"].reset_index(drop=True)
    val_rows = dataset[dataset["split"] == "val"].reset_index(drop=True)
    size, batch, budget = profile["image_size"], profile["batch_size"], profile["cache_budget_gb"]
    augmenter = model.randaugment(profile, seed=profile["seed"]) if augment else None
    train_data = model.image_dataset(
        train_rows,
        image_root,
        size,
        batch,
        training=True,
        augment=augmenter,
        seed=profile["seed"],
        cache_budget_gb=budget,
    )
    val_data = model.image_dataset(val_rows, image_root, size, 256, cache_budget_gb=budget)

    keras.utils.set_random_seed(profile["seed"])
    classifier = model.build_classifier(len(cells), profile, freeze_backbone=freeze_backbone)
    steps = model.steps_per_epoch(len(train_rows), batch)
    optimizer = model.make_optimizer(profile, steps, epochs, warmup=warmup, betas=betas)
    folder = model.run_dir(profile, name)
    objective = losses.make_loss(loss, distance_km, centroids=centroids, tau_km=tau_km, ce_weight=ce_weight)
    start = time.perf_counter()
    history = model.train(
        classifier,
        train_data,
        val_data,
        folder,
        epochs,
        objective,
        distance_km,
        optimizer,
        verbose=verbose,
        jit_compile=model.jit_compile(profile),
    )
    seconds = time.perf_counter() - start

    kept = model.load_model(folder, "best")
    probabilities, _ = model.predict(kept, val_data)
    scores = evaluate(probabilities, val_rows, cells)
    clean_train = model.image_dataset(train_rows, image_root, size, 256, cache_budget_gb=0)
    train_probabilities, train_labels = model.predict(kept, clean_train)
    scores["train_top1"] = float((train_probabilities.argmax(axis=1) == train_labels).mean())
    settings = {
        "loss": loss,
        "augment": augment,
        "warmup": warmup,
        "betas": list(betas or (profile["beta_1"], profile["beta_2"])),
        "freeze_backbone": freeze_backbone,
        "tau_km": tau_km if loss == "haversine_smoothing" else None,
        "ce_weight": ce_weight,
        "epochs": epochs,
        "best_epoch": int(history["val_accuracy"].idxmax()),
        "seed": profile["seed"],
        "overrides": profile["overrides"],
        "image_source": profile["image_source"],
        "pretrained": model.checkpoint_name(profile),  # the checkpoint this run started from
        "pretrained_sha256": model.checkpoint_sha256(profile),
        "train_images": len(train_rows),
        "skipped_images": skipped,
        "seconds": seconds,
    }
    model.write_summary(folder, {"name": name, "profile": profile["name"], **settings, "val": scores})
    if profile["overrides"]:
        changed = ", ".join(f"{k}={v}" for k, v in profile["overrides"].items())
        notes = f"{notes} [{changed}]" if notes else f"[{changed}]"
    metrics.record_result(
        profile,
        name,
        data=data or data_label(profile),
        split="val",
        notes=notes,
        seed=profile["seed"],
        **scores,
    )
    return {"name": name, "history": history, "val": scores, "folder": folder, "settings": settings}


def best_run(profile: str | dict) -> str:
    """The run of notebooks 05-07 with the best validation top-1 accuracy (ties: lower mean km).

    The same rule picks each run's checkpoint (:func:`run_experiment`), so the best run's
    ``best.keras`` is the model that scored this.
    """
    results = metrics.load_results(profile)
    candidates = results[(results["split"] == "val") & (results["data"] == data_label(profile))]
    if candidates.empty:
        raise LookupError(
            f"No training runs in the results table of {config.profile_name(profile)!r}; "
            "run notebooks 05-07 first."
        )
    return candidates.sort_values(["top1", "mean_km"], ascending=[False, True]).iloc[0]["experiment"]


def predict_split(classifier, dataset: pd.DataFrame, image_root, split: str, profile: dict):
    """Probabilities of ``classifier`` on one split of ``dataset``: (probabilities, rows used)."""
    rows, _ = images.readable_rows(dataset[dataset["split"] == split], image_root)
    rows = rows.reset_index(drop=True)
    data = model.image_dataset(
        rows, image_root, profile["image_size"], 256, cache_budget_gb=0
    )  # one pass: no cache
    probabilities, labels = model.predict(classifier, data)
    assert (labels == rows["cell"].to_numpy()).all()
    return probabilities, rows


def finished_run(profile: str | dict, name: str) -> dict | None:
    """The ``summary.json`` of a finished run ``name`` (settings and validation scores), or None."""
    path = model.run_dir(profile, name) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def repeat_over_seeds(
    profile: str | dict, name: str, seeds=(0, 1, 2), reuse: dict | None = None, **settings
) -> pd.DataFrame:
    """Train the run ``name`` once per seed (everything else equal); one row of scores per seed.

    Runs are named ``<name>_seed<k>``. Only the seed changes: the model's initial weights,
    the order of the batches and the augmentation draws. The spread across seeds is the
    noise against which a difference between two settings must be judged. ``reuse`` maps a
    seed to a run trained earlier with the same settings (``{0: "baseline"}`` takes
    notebook 05's run); it is checked, and trained again if its settings differ.
    """
    rows = []
    for seed in seeds:
        seeded = config.get_profile(profile, seed=seed)
        reused = (reuse or {}).get(seed)
        earlier = finished_run(seeded, reused) if reused else None
        if earlier and _same_settings(earlier, seeded, settings):
            scores = earlier["val"]
        else:
            scores = run_experiment(seeded, f"{name}_seed{seed}", verbose=0, **settings)["val"]
        rows.append({"run": name, "seed": seed, **scores, "gap": scores["train_top1"] - scores["top1"]})
    return pd.DataFrame(rows)


def _same_settings(summary: dict, profile: dict, settings: dict) -> bool:
    """Whether a finished run's ``summary`` was trained with ``profile`` and ``settings``."""
    wanted = {key: settings.get(key, default) for key, default in _COMPARED.items()}
    wanted["betas"] = list(settings.get("betas") or (profile["beta_1"], profile["beta_2"]))
    wanted["epochs"] = settings.get("epochs") or profile["epochs"]
    wanted["seed"] = profile["seed"]
    return all(summary.get(key) == value for key, value in wanted.items())


# the settings that must match for an earlier run to stand in for a new one, with their defaults
_COMPARED = {"loss": "cross_entropy", "augment": False, "warmup": True, "freeze_backbone": False}


def compare_runs(
    scores: pd.DataFrame, reference: str, metric: str = "top1", n_images: int | None = None
) -> pd.DataFrame:
    """Each run's mean ``metric`` over seeds against ``reference``'s, and whether the difference
    is larger than the noise.

    ``scores`` has one row per (run, seed) (:func:`repeat_over_seeds`). The standard error
    of the difference of the means adds the seed noise, ``s_a**2 / n_a + s_b**2 / n_b``
    (``s`` the standard deviation over ``n`` seeds), and, for an accuracy measured on
    ``n_images`` validation images, their sampling noise ``p (1 - p) / n_images`` for each
    run (the same images serve every seed, so this part does not shrink with more seeds).
    The difference counts as larger than the noise when it exceeds twice that error.
    """
    summary = scores.groupby("run", sort=False)[metric].agg(["mean", "std", "count"])
    base = summary.loc[reference]
    difference = summary["mean"] - base["mean"]
    variance = (
        summary["std"].fillna(0) ** 2 / summary["count"] + np.nan_to_num(base["std"]) ** 2 / base["count"]
    )
    if n_images:
        variance = (
            variance
            + (summary["mean"] * (1 - summary["mean"]) + base["mean"] * (1 - base["mean"])) / n_images
        )
    standard_error = np.sqrt(variance)
    return summary.assign(
        difference=difference,
        standard_error=standard_error,
        beyond_noise=(difference.abs() > 2 * standard_error) & (summary.index != reference),
    )


def effect_verdict(difference: float, standard_error: float, expected: float) -> str:
    """Does a measured effect reproduce one the report claims?

    "reproduced" when ``difference`` has the sign of the claimed effect ``expected`` and
    exceeds twice its ``standard_error`` (the seed noise, :func:`compare_runs`); "not
    reproduced" when it exceeds the noise with the opposite sign; "within noise" otherwise
    (neither confirmed nor contradicted).
    """
    if not np.isfinite(difference) or not np.isfinite(standard_error):
        return "not testable"
    if abs(difference) <= 2 * standard_error:
        return "within noise"
    return "reproduced" if np.sign(difference) == np.sign(expected) else "not reproduced"
