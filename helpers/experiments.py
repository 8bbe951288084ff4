"""One training experiment, end to end: data, model, optimiser, training, evaluation, records.

Notebooks 05 to 09 compare runs that differ in one setting at a time (augmentation, the
learning-rate schedule, the loss, the data). :func:`run_experiment` keeps the rest equal,
so a comparison table means what it says.
"""

from __future__ import annotations

import json
import math
import re
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


def evaluate(
    probabilities: np.ndarray, table: pd.DataFrame, cells: pd.DataFrame, tree: pd.DataFrame | None = None
) -> dict:
    """Top-1/top-3 accuracy, the error from the arg-max cell's centroid to each image's true
    location (km): mean, median and the share within 1, 25, 200 and 750 km; and the report's
    distance, arg-max centroid to true centroid (``centroid_mean_km``, see :func:`image_scores`).

    With ``tree`` (``future.hierarchy``: each cell's municipality and region), also the share
    of images whose predicted cell lies in the true municipality (``municipality_accuracy``)
    and in the true region (``region_accuracy``), as notebook 12 scores its methods.
    """
    scores = image_scores(probabilities, table, cells)
    result = {
        "top1": float(scores["correct"].mean()),
        "top3": float(scores["in_top3"].mean()),
        **metrics.distance_summary(scores["error_km"]),
        "centroid_mean_km": float(scores["centroid_km"].mean()),
    }
    if tree is not None:
        guess, true = scores["predicted"].to_numpy(), scores["cell"].to_numpy()
        for level in geo.LEVELS:
            parent = geo.parents(tree, level)
            result[f"{level}_accuracy"] = float((parent[guess] == parent[true]).mean())
    return result


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

    Same settings, same numbers: on a CPU a run trained again, later in the same process or
    in a fresh one, gives bit-identical weights and predictions (tests/test_determinism.py).
    """
    profile = config.get_profile(profile)
    # first of all: every draw of this run (the shuffle, the augmentation seeds of each batch,
    # the head's initial weights, dropout) follows from its own seed, whatever ran before it in
    # this process; tf.data reads the global seed when the pipelines are built, below
    keras.utils.set_random_seed(profile["seed"])
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

    layer = model.randaugment_layer(profile, seed=profile["seed"]) if on_device else None
    classifier = model.build_classifier(len(cells), profile, freeze_backbone=freeze_backbone, augment=layer)
    steps = model.steps_per_epoch(len(train_rows), batch)
    optimizer = model.make_optimizer(
        profile, steps, epochs, warmup=warmup, betas=betas, train_images=len(train_rows)
    )
    objective = losses.make_loss(loss, distance_km, centroids=centroids, tau_km=tau_km, ce_weight=ce_weight)

    def score(kept) -> dict:
        """The kept checkpoint's validation scores, and top-1 on a clean pass over the training images."""
        probabilities, _ = model.predict(kept, val_data)
        scores = evaluate(probabilities, val_rows, cells)
        clean_train = model.image_dataset(train_rows, image_root, size, 256, cache_budget_gb=0)
        train_probabilities, _ = model.predict(kept, clean_train)
        # per-image records: the paired comparisons of helpers.statistics need them
        write_predictions(folder, "val", image_scores(probabilities, val_rows, cells))
        train_scores = image_scores(train_probabilities, train_rows, cells)
        write_predictions(folder, "train", train_scores[["image_path", "cell", "predicted", "correct"]])
        scores["train_top1"] = float(train_scores["correct"].mean())
        return scores

    folder = model.run_dir(profile, name)
    run = model.train(
        profile,
        folder,
        classifier,
        train_data,
        val_data,
        loss=objective,
        epochs=epochs,
        optimizer=optimizer,
        distance_km=distance_km,
        settings={
            "loss": loss,
            "augment": augment,
            "warmup": warmup,
            "betas": list(betas or (profile["beta_1"], profile["beta_2"])),
            "freeze_backbone": freeze_backbone,
            "tau_km": tau_km if loss == "haversine_smoothing" else None,
            "ce_weight": ce_weight,
            "batch_size": batch,
            "lr_schedule": profile["lr_schedule"],
            "train_images": len(train_rows),
            "skipped_images": skipped,
        },
        score=score,
        record={"data": data or data_label(profile), "notes": notes},
        verbose=verbose,
    )
    return {k: run[k] for k in ("name", "history", "val", "folder", "settings")}


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
    """The per-image scores of run ``run`` on ``split`` ("val" or "train"), or None if not recorded.

    A file cut short (a kill, a full disk) raises ``metrics.DamagedBuild`` naming it, never a
    table with rows missing or a ``correct`` column read wrong.
    """
    path = predictions_path(profile, run, split)
    if not path.exists():
        return None
    rebuild = metrics.rebuild_hint(profile, f"the notebook that trains {run}")
    return metrics.read_csv(
        path, f"The per-image predictions of run {run}", rebuild, columns=["correct"], numeric=["correct"]
    )


def best_run(profile: str | dict) -> str:
    """The run of notebooks 05-07 with the best validation top-1 accuracy (ties: lower mean km).

    The same rule picks each run's checkpoint (:func:`run_experiment`), so the best run's
    ``best.keras`` is the model that scored this.

    Only rows whose name is a run folder's are candidates: a plain name (``safe_paths``)
    whose ``runs/<name>`` lies inside ``runs/`` and holds ``best.keras``. A row naming a path
    (``../x``, ``a/b``: a damaged or hand-edited table) is left out with a warning, as the
    best run is loaded and its code may run.
    """
    import logging

    from helpers import safe_paths

    results = metrics.load_results(profile)
    candidates = results[(results["split"] == "val") & (results["data"] == data_label(profile))]

    def kept_a_checkpoint(name) -> bool:
        # notebook 12's "future: <method>" rows are scored like runs but save no best.keras
        if not safe_paths.is_plain_name(name):
            if any(mark in str(name) for mark in ("/", "\\", "..")) or str(name).startswith("."):
                logging.getLogger(__name__).warning(
                    "the results table of %s names %r, which is a path, not a run: left out",
                    config.profile_name(profile),
                    name,
                )
            return False
        try:
            return (model.run_dir(profile, name) / "best.keras").is_file()
        except safe_paths.UnsafePathError as error:
            logging.getLogger(__name__).warning("run %r left out: %s", name, error)
            return False

    kept = candidates["experiment"].map(kept_a_checkpoint)
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
    """The ``summary.json`` of a finished run ``name`` (settings and validation scores), or None.

    ``name`` must be a plain run name (:func:`model.run_dir`: UnsafePathError otherwise). A
    summary that is not a JSON object (cut short, say) raises ValueError naming the file.
    """
    path = model.run_dir(profile, name) / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        summary = error
    if not isinstance(summary, dict):
        raise ValueError(
            f"{path} is damaged ({summary if isinstance(summary, Exception) else 'not a JSON object'}): "
            f"delete {path.parent} and run its notebook again to train run {name!r} again."
        )
    return summary


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


# notebook 06's configurations, each trained over seeds as "<configuration>_seed<k>" by repeat_over_seeds
SEED_CONFIGURATIONS = ("baseline", "augment", "betas", "warmup", "final")


def seed_scores(results: pd.DataFrame, data: str) -> pd.DataFrame:
    """Notebook 06's runs, one row per (run, seed): run, seed, experiment, top1, train_top1, gap, mean_km.

    Read from the validation rows of ``results`` measured on ``data``, by the names
    :func:`repeat_over_seeds` gives: ``<run>_seed<k>`` for run one of
    :data:`SEED_CONFIGURATIONS`; seed 0 of the base model is notebook 05's run "baseline".
    Fractions for top-1, km for the distance.
    """
    columns = ["run", "seed", "experiment", "top1", "train_top1", "gap", "mean_km"]
    rows = results[(results["split"] == "val") & (results["data"] == data)]
    named = re.compile(rf"^({'|'.join(SEED_CONFIGURATIONS)})_seed(\d+)$")
    found = []
    for record in rows.itertuples():
        match = named.match(str(record.experiment))
        if record.experiment == "baseline":
            run, seed = "baseline", 0
        elif match:
            run, seed = match.group(1), int(match.group(2))
        else:
            continue
        top1, train = float(record.top1), float(record.train_top1)
        found.append([run, seed, record.experiment, top1, train, train - top1, float(record.mean_km)])
    table = pd.DataFrame(found, columns=columns)
    # notebook 06 retrains seed 0 as "baseline_seed0" when notebook 05's run differs: that one counts
    table = table.sort_values("experiment", key=lambda names: names == "baseline", kind="stable")
    return table.drop_duplicates(["run", "seed"]).sort_index().reset_index(drop=True)


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
    the other side; "inconclusive" otherwise (neither confirmed nor contradicted: too little power); "not
    testable" without an error. ``degrees_of_freedom`` has no default: with two or three
    seeds it is small, and a normal quantile (1.96) would be far too lenient; take them from
    :func:`compare_experiments` (Welch-Satterthwaite).
    """
    if not np.isfinite(difference) or not np.isfinite(standard_error):
        return "not testable"
    margin = statistics.t_quantile(degrees_of_freedom) * standard_error
    result = {"difference": difference, "margin": margin, "beyond_noise": abs(difference) > margin}
    return statistics.effect_verdict(result, expected)


# --- what the scorecard's verdicts read beyond the runs above (issue 29) -----------------------------

LEAK_FREE = 0.0  # session_leak of the counterparts that show what the capture-session shortcut is worth


def leak_data_label(leak: float) -> str:
    """How the results table names notebook 03's places rendered again at ``session_leak`` ``leak``.

    The label notebook 09 gives its own runs. It is never :func:`data_label`, so :func:`best_run`
    and the tables of seeds leave such runs out: they are counterparts, not candidates.
    """
    return f"synthetic images, session_leak={float(leak)}"


def images_at_leak(profile: str | dict, leak: float, *, day: int = 0, geography: dict | None = None):
    """Notebook 03's image set rendered again with capture sessions drawn at ``session_leak`` ``leak``.

    The same places, splits and row order; only the sessions (the sky and the light) change, so a
    run on this set is the same experiment without (``leak`` 0) or with more of the shortcut.
    Images go to ``images/synthetic-leak_<leak>-day<day>/``, the folder notebook 09 renders into:
    each set is rendered once, later calls keep the files (``images.render_synthetic``).
    ``geography`` is ``synthetic.build_geography`` of the report's locations (built when None).
    Returns (image table, the folder its paths are relative to). Only synthetic profiles: real
    photos carry no capture session to switch off, and a ValueError says so.
    """
    from helpers import datasets, synthetic  # the renderer: only synthetic profiles need it

    settings = config.get_profile(profile)
    if settings["image_source"] != "synthetic":
        raise ValueError(
            f"Profile {settings['name']!r} uses {settings['image_source']} images, which have no capture "
            "session to switch off; only synthetic profiles (smoke, default) render a set at another "
            "session_leak. Guard the call with profile['image_source'] == 'synthetic'."
        )
    dataset, root = model.load_dataset(settings)
    if geography is None:
        geography = synthetic.build_geography(
            datasets.load_report_locations(), datasets.load_municipalities()
        )
    rendered = images.render_like(
        dataset,
        root,
        f"synthetic-leak_{float(leak):.1f}-day{day}",
        geography,
        size=settings["image_size"],
        session_leak=leak,
        day=day,
        seed=settings["seed"],
    )
    return rendered, root


def run_at_leak(
    profile: str | dict, name: str, leak: float = LEAK_FREE, *, geography: dict | None = None, **settings
) -> dict:
    """Train run ``name`` as :func:`run_experiment` would, on :func:`images_at_leak` of ``leak``.

    Every other setting (``settings``, the profile with its overrides and seed) is the caller's, so
    the run is the counterpart at another ``session_leak`` of a run on notebook 03's images; it is
    recorded under :func:`leak_data_label`. Returns what :func:`run_experiment` returns.
    """
    dataset, root = images_at_leak(profile, leak, geography=geography)
    return run_experiment(
        profile, name, dataset=dataset, image_root=root, data=leak_data_label(leak), **settings
    )


# The base model's tuning, as helpers/config.py records it for the default profile: its learning
# rate was chosen among 3e-4, 1e-3 and 3e-3, that is 1/10, 1/3 and 1 times the rate kept. The same
# search chose the images per cell and the epochs, which hold for every run of a build alike. Other
# profiles took their rates without a search; a run tuned "as the base model was" tries the same
# multiples of its own profile's rate there, so the same code runs in every profile.
BASE_MODEL_LEARNING_RATE_MULTIPLES = (0.1, 1 / 3, 1.0)


def learning_rate_grid(profile: str | dict) -> list[float]:
    """The learning rates of the base model's search (:data:`BASE_MODEL_LEARNING_RATE_MULTIPLES` of
    the profile's ``learning_rate``), rounded to two significant digits: [3e-4, 1e-3, 3e-3] in default."""
    rate = config.get_profile(profile)["learning_rate"]
    return [float(f"{rate * multiple:.2g}") for multiple in BASE_MODEL_LEARNING_RATE_MULTIPLES]


def _setting_text(value) -> str:
    """A setting's value as it appears in a run name: 0.003 as "0.003", 1e-05 as "1e-05"."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def tune_run(profile: str | dict, name: str, grid: dict, *, notes: str = "", **settings) -> dict:
    """Train run ``name`` once per combination of the profile settings in ``grid``; keep the best.

    ``grid`` maps profile settings to their candidate values, e.g. ``{"learning_rate":
    learning_rate_grid(profile)}``. Each combination trains a run
    ``<name>_tuning_<setting><value>`` with :func:`run_experiment` and ``settings``; the candidates
    are recorded under the data label "<data_label> (tuning <name>)", so :func:`best_run` and the
    tables of seeds leave them out. The one with the best validation top-1 (ties: the lower mean km,
    the rule of :func:`best_run`) becomes run ``name`` (:func:`keep_best_candidate`). Returns the
    kept run as :func:`run_experiment` returns it, plus ``tuning`` and ``candidates``.
    """
    import itertools

    settings_of = config.get_profile(profile)
    empty = [setting for setting, values in grid.items() if len(values) == 0]
    if not grid or empty:
        raise ValueError(
            f"tune_run needs at least one candidate value per setting; {empty or 'the grid'} has none. "
            "Pass e.g. grid={'learning_rate': experiments.learning_rate_grid(profile)}."
        )
    unknown = sorted(set(grid) - set(settings_of))
    if unknown:
        raise ValueError(f"Unknown profile setting(s) {', '.join(unknown)} in the tuning grid of {name!r}.")
    candidates = {}
    for values in itertools.product(*grid.values()):
        chosen = dict(zip(grid, values, strict=True))
        candidate = f"{name}_tuning_" + "_".join(f"{key}{_setting_text(v)}" for key, v in chosen.items())
        changed = {key: value for key, value in chosen.items() if value != settings_of[key]}
        run_experiment(
            config.get_profile(settings_of, **changed),
            candidate,
            data=f"{data_label(settings_of)} (tuning {name})",
            notes=f"{notes}; tuning candidate" if notes else "tuning candidate",
            **settings,
        )
        candidates[candidate] = chosen
    return keep_best_candidate(settings_of, name, candidates, grid, notes=notes)


def keep_best_candidate(
    profile: str | dict, name: str, candidates: dict, grid: dict, *, notes: str = ""
) -> dict:
    """Copy the finished run among ``candidates`` with the best validation top-1 to run ``name``.

    ``candidates`` maps each candidate run to the grid values it was trained with. Ties go to the
    lower mean km, then to the earlier candidate. The copy (without the resumable backup) is
    staged outside ``runs/`` and renamed into place, so a reader never sees half a run; an
    earlier run ``name`` is replaced only once the new one is complete. Its ``summary.json``
    gains ``"tuning": {"grid": ..., "chosen": ..., "budget_runs": ...}`` (the candidates trained),
    and the results table a row ``name`` (validation split, :func:`data_label`). Returns the run
    as :func:`run_experiment` returns it, plus ``tuning`` and ``candidates`` (one row per
    candidate: its grid values, validation top-1, mean km and train top-1).
    """
    import os
    import shutil
    import tempfile

    summaries = {candidate: finished_run(profile, candidate) for candidate in candidates}
    missing = [candidate for candidate, summary in summaries.items() if summary is None]
    if not candidates or missing:
        raise LookupError(
            f"No finished candidate run {', '.join(missing) or '(none given)'} to keep as {name!r}; "
            "train the candidates first (tune_run)."
        )
    table = pd.DataFrame(
        [
            {
                "run": candidate,
                **values,
                "top1": summaries[candidate]["val"]["top1"],
                "mean_km": summaries[candidate]["val"]["mean_km"],
                "train_top1": summaries[candidate]["val"].get("train_top1", math.nan),
            }
            for candidate, values in candidates.items()
        ]
    )
    ranked = table.assign(order=range(len(table))).sort_values(
        ["top1", "mean_km", "order"], ascending=[False, True, True]
    )
    best = ranked.iloc[0]["run"]
    tuning = {
        "grid": {setting: list(values) for setting, values in grid.items()},
        "chosen": dict(candidates[best]),
        "budget_runs": len(candidates),
    }
    summary = {**summaries[best], "name": name, "tuning": tuning}
    source, target = model.run_dir(profile, best), model.run_dir(profile, name)
    staging_area = target.parent.parent  # beside runs/, where no reader of runs/*/ looks
    umask = os.umask(0)
    os.umask(umask)
    staging = Path(tempfile.mkdtemp(dir=staging_area, prefix=f".{name}-new-"))
    retired = None
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("backup"), dirs_exist_ok=True)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; give the run normal permissions
        model.write_summary(staging, summary)
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=staging_area, prefix=f".{name}-old-"))
            os.replace(target, retired / name)
        try:
            os.replace(staging, target)
        except OSError:
            if retired is not None:
                os.replace(retired / name, target)  # put the earlier run back
                retired = None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # still there only when something failed
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    chosen_text = ", ".join(f"{key}={_setting_text(value)}" for key, value in tuning["chosen"].items())
    kept_notes = f"best of {len(candidates)} tuning runs ({chosen_text})"
    model.record_result(
        profile,
        name,
        {**summary["val"], "seed": summary.get("seed")},
        data=data_label(profile),
        notes=f"{notes}; {kept_notes}" if notes else kept_notes,
    )
    settings = {key: value for key, value in summary.items() if key not in ("name", "profile", "val")}
    return {
        "name": name,
        "history": pd.read_csv(target / "history.csv"),
        "val": summary["val"],
        "folder": target,
        "settings": settings,
        "tuning": tuning,
        "candidates": table.set_index("run"),
    }


def sky_attention_per_image(
    classifier, rows: pd.DataFrame, root, geography: dict, size: int, seed: int = 0, batch_size: int = 64
) -> pd.DataFrame:
    """Per synthetic image of ``rows``: the share of its rollout attention on sky pixels and the
    share of its pixels that are sky (the renderer's sky mask), in the order of ``rows``.

    Columns ``image_path``, ``sky_attention``, ``sky_pixels`` (fractions). Their means are what
    ``attention.mean_sky_share`` returns; per image, two models can be compared on the same images.
    """
    from helpers import attention

    found = []
    for part, _, grids in attention.rollout_batches(classifier, rows, root, size, batch_size):
        masks = images.synthetic_sky_masks(part, root, geography, size, seed=seed)
        found.append(
            pd.DataFrame(
                {
                    "image_path": part["image_path"].to_numpy(),
                    "sky_attention": [
                        attention.sky_share(grid, mask) for grid, mask in zip(grids, masks, strict=True)
                    ],
                    "sky_pixels": masks.mean(axis=(1, 2)),
                }
            )
        )
    return (
        pd.concat(found, ignore_index=True)
        if found
        else pd.DataFrame(columns=["image_path", "sky_attention", "sky_pixels"])
    )
