"""One training experiment, end to end: data, model, optimiser, training, evaluation, records.

Notebooks 05 to 09 compare runs that differ in one setting at a time (augmentation, the
learning-rate schedule, the loss, the data). :func:`run_experiment` keeps the rest equal,
so a comparison table means what it says.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from helpers import config, geo, images, losses, metrics, model, statistics


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


def image_scores(probabilities: np.ndarray, table: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per image: what the arg-max cell got right and how far off it was.

    Columns: ``image_path``, ``cell`` (true), ``predicted`` (arg-max cell), ``correct``
    (0 or 1), ``in_top3``, ``error_km`` (the predicted cell's centroid to the photo's own
    location), ``centroid_km`` (the predicted cell's centroid to the true cell's centroid,
    0 when the cell is right: the report's distance, its authors' ``best_distance``) and
    ``random_centroid_km`` (the same distance for a uniformly random cell: the mean over
    all cells of the distance from the true cell's centroid, the report's "randomly
    choosing predicted cells" baseline on the same basis). Distances in km.
    """
    true = table["cell"].to_numpy().astype(int)
    ranked = np.argsort(-probabilities, axis=1)
    centroids = cells.sort_values("cell")[["lat", "lng"]].to_numpy()
    between = geo.pairwise_haversine_km(centroids, centroids)
    guess = centroids[ranked[:, 0]]
    errors = geo.haversine_km(table["lat"].to_numpy(), table["lng"].to_numpy(), guess[:, 0], guess[:, 1])
    return pd.DataFrame(
        {
            "image_path": table["image_path"].to_numpy() if "image_path" in table else np.arange(len(table)),
            "cell": true,
            "predicted": ranked[:, 0],
            "correct": (ranked[:, 0] == true).astype(int),
            "in_top3": (ranked[:, :3] == true[:, None]).any(1).astype(int),
            "error_km": np.asarray(errors, dtype=float),
            "centroid_km": between[true, ranked[:, 0]],
            "random_centroid_km": between[true].mean(axis=1),
        }
    )


def evaluate(probabilities: np.ndarray, table: pd.DataFrame, cells: pd.DataFrame) -> dict:
    """Top-1/top-3 accuracy, the error from the arg-max cell's centroid to each image's true
    location (km): mean, median and the share within 1, 25, 200 and 750 km; and the report's
    distance, arg-max centroid to true centroid (``centroid_mean_km``, see :func:`image_scores`)."""
    scores = image_scores(probabilities, table, cells)
    return {
        "top1": float(scores["correct"].mean()),
        "top3": float(scores["in_top3"].mean()),
        **metrics.distance_summary(scores["error_km"]),
        "centroid_mean_km": float(scores["centroid_km"].mean()),
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
    size, budget = profile["image_size"], profile["cache_budget_gb"]
    batch = batch_size_of(profile, augment=augment, warmup=warmup, betas=betas)
    # RandAugment: in the training step on a GPU, in the input pipeline on a CPU
    on_device = augment and model.augmentation_on_device()
    augmenter = model.randaugment(profile, seed=profile["seed"]) if augment and not on_device else None
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
    layer = model.randaugment_layer(profile, seed=profile["seed"]) if on_device else None
    classifier = model.build_classifier(len(cells), profile, freeze_backbone=freeze_backbone, augment=layer)
    steps = model.steps_per_epoch(len(train_rows), batch)
    optimizer = model.make_optimizer(
        profile, steps, epochs, warmup=warmup, betas=betas, train_images=len(train_rows)
    )
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
    train_probabilities, _ = model.predict(kept, clean_train)
    # per-image records: the paired comparisons of helpers.statistics need them
    write_predictions(folder, "val", image_scores(probabilities, val_rows, cells))
    train_scores = image_scores(train_probabilities, train_rows, cells)
    write_predictions(folder, "train", train_scores[["image_path", "cell", "predicted", "correct"]])
    scores["train_top1"] = float(train_scores["correct"].mean())
    settings = {
        "loss": loss,
        "augment": augment,
        "warmup": warmup,
        "betas": list(betas or (profile["beta_1"], profile["beta_2"])),
        "freeze_backbone": freeze_backbone,
        "tau_km": tau_km if loss == "haversine_smoothing" else None,
        "ce_weight": ce_weight,
        "epochs": epochs,
        "batch_size": batch,
        "lr_schedule": profile["lr_schedule"],
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


def batch_size_of(profile: dict, *, augment: bool, warmup: bool, betas: tuple[float, float] | None) -> int:
    """The batch size of a run: ``final_batch_size`` for the report's final configuration, else
    ``batch_size``.

    The report trained its base model with batch 32 and "decreased the batch size to 16, as
    the new custom model used more memory" (§3.3); its authors' final notebook
    (``5-image-classification.ipynb``) trains with 16. The final configuration here is
    augmentation, warm-up and the profile's betas: notebook 06's final runs and every loss
    of notebook 07. ``final_batch_size`` None keeps one batch size for all runs.
    """
    betas = tuple(betas or (profile["beta_1"], profile["beta_2"]))
    final = augment and warmup and betas == (profile["beta_1"], profile["beta_2"])
    return int((final and profile.get("final_batch_size")) or profile["batch_size"])


def predictions_path(profile: str | dict, run: str, split: str = "val"):
    """Where run ``run`` keeps its per-image scores: ``runs/<run>/predictions_<split>.csv``."""
    return model.run_dir(profile, run) / f"predictions_{split}.csv"


def write_predictions(folder, split: str, scores: pd.DataFrame) -> None:
    """Write a run's per-image scores (:func:`image_scores`) atomically to ``predictions_<split>.csv``."""
    with config.atomic_target(Path(folder) / f"predictions_{split}.csv") as temporary:
        scores.to_csv(temporary, index=False)


def load_predictions(profile: str | dict, run: str, split: str = "val") -> pd.DataFrame | None:
    """The per-image scores of run ``run`` on ``split`` ("val" or "train"), or None if not recorded."""
    path = predictions_path(profile, run, split)
    return pd.read_csv(path) if path.exists() else None


def best_run(profile: str | dict) -> str:
    """The run of notebooks 05-07 with the best validation top-1 accuracy (ties: lower mean km).

    The same rule picks each run's checkpoint (:func:`run_experiment`), so the best run's
    ``best.keras`` is the model that scored this.
    """
    results = metrics.load_results(profile)
    candidates = results[(results["split"] == "val") & (results["data"] == data_label(profile))]
    # only runs that kept a checkpoint: notebook 12's "future: <method>" rows are scored like
    # runs but save no best.keras, and the best run is loaded by name
    kept = candidates["experiment"].map(lambda name: (model.run_dir(profile, name) / "best.keras").exists())
    candidates = candidates[kept.astype(bool)]
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
        if (
            earlier
            and _same_settings(earlier, seeded, settings)
            and load_predictions(seeded, reused) is not None
        ):
            experiment, scores = reused, earlier["val"]
        else:
            experiment = f"{name}_seed{seed}"
            scores = run_experiment(seeded, experiment, verbose=0, **settings)["val"]
        rows.append(
            {
                "run": name,
                "seed": seed,
                "experiment": experiment,
                **scores,
                "gap": scores["train_top1"] - scores["top1"],
            }
        )
    return pd.DataFrame(rows)


def _same_settings(summary: dict, profile: dict, settings: dict) -> bool:
    """Whether a finished run's ``summary`` was trained with ``profile`` and ``settings``."""
    wanted = {key: settings.get(key, default) for key, default in _COMPARED.items()}
    wanted["betas"] = list(settings.get("betas") or (profile["beta_1"], profile["beta_2"]))
    wanted["epochs"] = settings.get("epochs") or profile["epochs"]
    wanted["seed"] = profile["seed"]
    wanted["lr_schedule"] = profile["lr_schedule"]
    wanted["batch_size"] = batch_size_of(
        profile,
        augment=wanted["augment"],
        warmup=wanted["warmup"],
        betas=tuple(wanted["betas"]),
    )
    return all(summary.get(key) == value for key, value in wanted.items())


# the settings that must match for an earlier run to stand in for a new one, with their defaults
_COMPARED = {"loss": "cross_entropy", "augment": False, "warmup": True, "freeze_backbone": False}


# per-image column of predictions_val.csv behind each metric of the results table
PER_IMAGE = {"top1": "correct", "top3": "in_top3", "mean_km": "error_km", "centroid_mean_km": "centroid_km"}


def per_image_values(profile, runs: list[str], split: str, column: str) -> pd.DataFrame:
    """Per-image values of ``column`` for ``runs`` on ``split``: rows images, columns runs."""
    found = {}
    for run in runs:
        table = load_predictions(profile, run, split)
        if table is None:
            raise LookupError(
                f"No per-image predictions of run {run!r} ({predictions_path(profile, run, split)}); "
                "runs record them since the paired noise rule; train it again (notebooks 05-07)."
            )
        found[run] = table.set_index("image_path")[column]
    matrix = pd.DataFrame(found)
    if matrix.isna().any().any():
        raise ValueError(
            f"Runs {', '.join(runs)} were not scored on the same {split} images; a paired comparison "
            "needs one image set (the same dataset.csv)."
        )
    return matrix


def compare_experiments(
    profile: str | dict,
    runs_a: list[str],
    runs_b: list[str] | None = None,
    metric: str = "top1",
    *,
    borrowed: tuple[float, float] | None = None,
    shift: float = 0.0,
) -> dict:
    """The noise rule (:func:`helpers.statistics.difference_test`) for runs ``runs_a`` against ``runs_b``.

    Each list holds the runs of one setting, one per seed (a setting trained once needs
    ``borrowed``). ``metric`` is a column of the results table with a per-image column
    (:data:`PER_IMAGE`: top1, top3, mean_km, centroid_mean_km), or "gap" (train minus
    validation top-1). Per-seed scores and per-image values come from each run's
    ``predictions_val.csv`` (and ``predictions_train.csv`` for the gap), paired image by
    image. ``runs_b`` None tests ``mean(a) - shift``. Returns the rule's dictionary plus
    ``mean_a`` and ``mean_b``.
    """
    runs_b = list(runs_b) if runs_b else []
    everything = list(runs_a) + runs_b
    if metric == "gap":
        train = per_image_values(profile, everything, "train", "correct")
        val = per_image_values(profile, everything, "val", "correct")
        per_seed = train.mean() - val.mean()
        blocks = [
            train[runs_a].mean(axis=1) - (train[runs_b].mean(axis=1) if runs_b else 0),
            val[runs_a].mean(axis=1) - (val[runs_b].mean(axis=1) if runs_b else 0),
        ]
    else:
        if metric not in PER_IMAGE:
            raise KeyError(
                f"No per-image values for metric {metric!r}; choose one of {sorted(PER_IMAGE)} or 'gap'."
            )
        values = per_image_values(profile, everything, "val", PER_IMAGE[metric])
        per_seed = values.mean()
        blocks = [values[runs_a].mean(axis=1) - (values[runs_b].mean(axis=1) if runs_b else 0)]
    result = statistics.difference_test(
        per_seed[list(runs_a)].to_numpy(),
        per_seed[runs_b].to_numpy() if runs_b else None,
        [block.to_numpy() for block in blocks],
        borrowed=borrowed,
        shift=shift,
    )
    return {
        **result,
        "mean_a": float(per_seed[list(runs_a)].mean()),
        "mean_b": float(per_seed[runs_b].mean()) if runs_b else math.nan,
    }


def compare_runs(
    profile: str | dict,
    scores: pd.DataFrame,
    reference: str,
    metric: str = "top1",
    borrowed: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Each run's mean ``metric`` over seeds against ``reference``'s, and whether the difference
    is larger than the noise.

    ``scores`` has one row per (run, seed) with the ``experiment`` that holds it
    (:func:`repeat_over_seeds`). The rule is :func:`helpers.statistics.difference_test`: a
    paired comparison on the same validation images across seeds, Student-t with
    Welch-Satterthwaite degrees of freedom (:func:`compare_experiments`). A run trained with
    one seed takes its seed noise from ``borrowed`` (``statistics.borrowed_seed_variance`` of
    another run's seeds, in the same ``metric``); without it, its interval is unknown (NaN).
    """
    rows = {}
    groups = scores.groupby("run", sort=False)["experiment"].apply(list)
    for run, experiments_of_run in groups.items():
        if run == reference:
            result = compare_experiments(profile, experiments_of_run, None, metric)
            result.update(difference=0.0, low=math.nan, high=math.nan, beyond_noise=False)
        else:
            result = compare_experiments(
                profile, experiments_of_run, groups[reference], metric, borrowed=borrowed
            )
        rows[run] = {
            "mean": result["mean_a"],
            "seeds": len(experiments_of_run),
            "difference": result["difference"],
            "standard_error": result["standard_error"],
            "degrees_of_freedom": result["degrees_of_freedom"],
            "margin": result["margin"],
            "low": result["low"],
            "high": result["high"],
            "beyond_noise": result["beyond_noise"],
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("run")


def effect_verdict(
    difference: float, standard_error: float, expected: float, degrees_of_freedom: float
) -> str:
    """Does a measured effect reproduce one the report claims? The rule of :mod:`helpers.statistics`.

    "reproduced" when ``difference`` has the sign of the claimed effect ``expected`` and its
    two-sided 95 % Student-t interval leaves out 0; "not reproduced" when it leaves out 0 on
    the other side; "within noise" otherwise (neither confirmed nor contradicted); "not
    testable" without an error. ``degrees_of_freedom`` has no default: with two or three
    seeds it is small, and a normal quantile (1.96) would be far too lenient; take them from
    :func:`compare_experiments` (Welch-Satterthwaite).
    """
    if not np.isfinite(difference) or not np.isfinite(standard_error):
        return "not testable"
    margin = statistics.t_quantile(degrees_of_freedom) * standard_error
    result = {"difference": difference, "margin": margin, "beyond_noise": abs(difference) > margin}
    return statistics.effect_verdict(result, expected)
