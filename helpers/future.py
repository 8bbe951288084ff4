"""The report's future work, built: hierarchical cells, auxiliary heads, a CNN, a loss without cross-entropy.

Four directions of the report's section 5.2, each compared with the flat cell classifier
trained with the same data, splits, seed, epochs and optimiser (notebook 12):

* **Hierarchy** (Müller-Budack et al., ECCV 2018). Denmark nests: 5 regions, 98
  municipalities, 129 cells. GeoEstimation predicts with the product of the probabilities
  of each level's head, ``p(cell) * p(municipality of cell) * p(region of cell)``; the
  coarse probabilities come either from summing the cell probabilities
  (:func:`summed_hierarchy`) or from heads trained beside the cell head
  (``model.build_multitask``).
* **Auxiliary heads** (multi-task learning; PIGEON trains auxiliary heads too). Labels
  every place has for free: its region and municipality, its distance to the coast and its
  urbanity, the two measures the synthetic renderer draws from (:func:`auxiliary_labels`).
* **A CNN against the ViT.** A small ResNet with about the ViT's parameter count
  (``model.build_cnn``, ``model.matched_width``); in profiles with a pretrained ViT
  (``full``, ``mapillary``) a pretrained ResNet-50 from the Hugging Face Hub
  (``model.RESNET50_PRESET``), loaded through keras-hub as the ViT is.
* **A loss without cross-entropy**, the squared expected distance from the predicted
  cells' centroids to the image's own location (``losses.image_distance_loss``).

Every network here trains through ``model.train``, the loop of every run of the workbook
(:func:`train_network` prepares its data and settings), and is scored by ``experiments.evaluate``.

Coordinates are (lat, lng) in degrees; distances in km.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pandas as pd

from helpers import config, experiments, geo, images, metrics, model, statistics, synthetic
from helpers.geo import LEVELS, parents  # the hierarchy above the cells: notebook 12 reads it here

AUX_WEIGHT = 0.3  # weight of each auxiliary loss beside the cell head's cross-entropy (weight 1)
# the flat baseline of notebook 05 (run "baseline"): no warm-up, Adam's default betas, no augmentation
BASELINE_SETTINGS = {"warmup": False, "betas": (0.9, 0.999), "augment": False}
# What notebook 12 trades to stay within its share of `make all` (about 3 minutes on 2 cores):
# four networks at the default's 64 px would take well over that, so it compares at 32 px
# with the profile's own number of epochs. Other profiles run as they are.
# default's trade: 32 px, and so from scratch, since the committed checkpoint is a 64 px ViT (its
# position embeddings fit 64 px); the CNN starts from scratch too, so the ViT meets it on equal terms
BUDGET = {"default": {"image_size": 32, "pretrained": None}}
# the methods of notebook 12, as named in the results table ("future: <method>"), and their fact keys
METHODS = {
    "flat ViT": "flat_vit",
    "hierarchy, summed cells": "hierarchy_summed",
    "hierarchy, trained heads": "hierarchy_heads",
    "auxiliary heads": "auxiliary_heads",
    "CNN": "cnn",
    "image-distance loss": "image_distance_loss",
}


def comparison_profile(name: str | dict) -> dict:
    """The profile notebook 12 trains with: ``name`` with the :data:`BUDGET` trade, if any."""
    return config.get_profile(name, **BUDGET.get(config.profile_name(name), {}))


def method_key(method: str) -> str:
    """The fact key of a method: its :data:`METHODS` key, else its name with every run of
    characters other than letters, digits and ``_`` replaced by ``_`` (safe as a folder name)."""
    key = METHODS.get(method) or re.sub(r"\W+", "_", method).strip("_")
    if not key:
        raise ValueError(f"A method needs a name with letters or digits, got {method!r}.")
    return key


def predictions_run(method: str) -> str:
    """The run that holds ``method``'s per-image validation scores: ``future_<method key>``.

    For the flat ViT and the CNN it is their training run's folder; the methods that re-read
    a run's probabilities (the hierarchies) or use one head of it get a folder of their own.
    """
    return f"future_{method_key(method)}"


# --- the hierarchy --------------------------------------------------------------------------


def hierarchy(cells: pd.DataFrame, regions) -> pd.DataFrame:
    """The parents of each geocell: its municipality and its region, one row per cell.

    ``cells`` are notebook 02's geocells (``cell``, ``municipality``, ``municipality_code``,
    geometry); ``regions`` the five regions of ``datasets.load_regions()``. A cell's region
    is the region holding its municipality (the region of most of the municipality's cells,
    found from a point inside each cell), so the tree nests exactly: every cell has one
    municipality, every municipality one region. Columns: ``cell``, ``municipality_code``,
    ``municipality``, ``region``, and ``municipality_index``, ``region_index`` (0-based,
    in order of code and name), sorted by cell.
    """
    missing = {"cell", "municipality", "municipality_code", "geometry"} - set(cells.columns)
    if missing:
        raise KeyError(f"`cells` lacks {sorted(missing)}; pass the cells of geo.read_geocells (notebook 02).")
    ordered = cells.sort_values("cell").reset_index(drop=True)
    inside = ordered.geometry.representative_point()
    points = geo.points_from_latlng(inside.y, inside.x, pd.DataFrame(index=ordered.index))
    named = geo.assign_area(points, regions.rename(columns={"name": "region"}), ["region"], max_offshore_km=5)
    if len(named) != len(ordered):
        raise ValueError("Some cells lie in no region; are `regions` the Danish regions of load_regions()?")
    ordered["region"] = named["region"].to_numpy()
    majority = ordered.groupby("municipality_code")["region"].agg(lambda r: r.value_counts().index[0])
    tree = ordered[["cell", "municipality_code", "municipality"]].assign(
        region=ordered["municipality_code"].map(majority)
    )
    tree["municipality_index"] = tree["municipality_code"].rank(method="dense").astype(int) - 1
    tree["region_index"] = tree["region"].rank(method="dense").astype(int) - 1
    return tree


def level_probabilities(cell_probabilities: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Probabilities of the coarser level: each parent gets the sum of its cells' probabilities.

    ``cell_probabilities`` (n_images, n_cells); ``parent`` (n_cells,) parent indices.
    Returns (n_images, n_parents).
    """
    cell_probabilities = np.asarray(cell_probabilities, dtype="float64")
    parent = np.asarray(parent)
    if parent.shape != (cell_probabilities.shape[1],):
        raise ValueError(
            f"`parent` needs one index per cell ({cell_probabilities.shape[1]}), got shape {parent.shape}."
        )
    onehot = np.zeros((len(parent), parent.max() + 1))
    onehot[np.arange(len(parent)), parent] = 1.0
    return cell_probabilities @ onehot


def hierarchical_probabilities(cell_probabilities: np.ndarray, levels) -> np.ndarray:
    """GeoEstimation's hierarchical prediction: ``p(c) ∝ p_cell(c) · Π_level p_level(parent(c))``.

    ``levels`` is a list of (level probabilities (n_images, n_parents), parent index of
    each cell (n_cells,)). A cell in a likely municipality of a likely region gains over an
    equally likely cell elsewhere. Returns (n_images, n_cells), each row summing to 1.
    """
    product = np.array(cell_probabilities, dtype="float64")
    for probabilities, parent in levels:
        product = product * np.asarray(probabilities, dtype="float64")[:, np.asarray(parent)]
    total = product.sum(axis=1, keepdims=True)
    return product / np.where(total > 0, total, 1.0)


def summed_hierarchy(cell_probabilities: np.ndarray, tree: pd.DataFrame) -> np.ndarray:
    """:func:`hierarchical_probabilities` with each coarse level the sum of its cells' probabilities.

    Needs no extra training: a flat classifier's output, re-weighted by how much
    probability each cell's municipality and region hold in all.
    """
    levels = []
    for level in LEVELS:
        parent = parents(tree, level)
        levels.append((level_probabilities(cell_probabilities, parent), parent))
    return hierarchical_probabilities(cell_probabilities, levels)


# --- auxiliary labels -----------------------------------------------------------------------


def auxiliary_labels(lat, lng, geography: dict, seed: int = 0) -> pd.DataFrame:
    """Labels every place has without manual work: distance to the coast (km) and urbanity (0-1).

    Exactly what the synthetic renderer draws from, read from ``synthetic.scene_features``:
    ``coast_km``, the distance to the DAGI coastline, and ``urbanity``, its ``density``
    column, which is ``synthetic.urbanity``: the rank (0 emptiest countryside, 1 central
    Copenhagen) of the postcode-weighted address density. ``geography`` is
    ``synthetic.build_geography(...)``, built as in notebook 03. One row per (lat, lng).
    """
    features = synthetic.scene_features(lat, lng, geography, seed=seed)
    return pd.DataFrame(
        {"coast_km": features["coast_km"].to_numpy(), "urbanity": features["density"].to_numpy()}
    )


def _location_keys(lat, lng) -> np.ndarray:
    """An int64 per place from the exact float32 bits of (lat, lng), as the targets carry them."""
    lat_bits = np.asarray(lat, dtype="float32").view("uint32").astype("int64")
    lng_bits = np.asarray(lng, dtype="float32").view("uint32").astype("int64")
    return (lat_bits << 32) | lng_bits


def multitask_targets(data, tree: pd.DataFrame, places: pd.DataFrame, heads=None):
    """Add the auxiliary targets to a ``model.image_dataset`` of (images, [cell, lat, lng]) batches.

    Returns batches (images, {"cells": [cell, lat, lng], "municipality": index, "region":
    index, "coast": (batch, 1), "urbanity": (batch, 1)}). The coarse levels follow from the
    cell (:func:`hierarchy`); coast and urbanity are looked up per image in ``places``
    (columns ``lat``, ``lng``, ``coast``, ``urbanity``, already scaled for training) by the
    image's own (lat, lng), so the image pipeline (cache, shuffle) stays model.image_dataset's.
    ``heads`` keeps only those targets (default: all).
    """
    import tensorflow as tf

    unique = places.drop_duplicates(["lat", "lng"]).reset_index(drop=True)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(_location_keys(unique["lat"], unique["lng"])), tf.range(len(unique), dtype=tf.int64)
        ),
        default_value=-1,
    )
    values = tf.constant(unique[["coast", "urbanity"]].to_numpy("float32"))
    municipality = tf.constant(parents(tree, "municipality"), dtype=tf.int32)
    region = tf.constant(parents(tree, "region"), dtype=tf.int32)

    def add_targets(x, y):
        bits = tf.cast(tf.bitcast(y[:, 1:3], tf.uint32), tf.int64)
        row = table.lookup(tf.bitwise.bitwise_or(tf.bitwise.left_shift(bits[:, 0], 32), bits[:, 1]))
        tf.debugging.assert_non_negative(row, "an image's (lat, lng) is missing from `places`")
        aux = tf.gather(values, row)
        cell = tf.cast(y[:, 0], tf.int32)
        targets = {
            "cells": y,
            "municipality": tf.gather(municipality, cell),
            "region": tf.gather(region, cell),
            "coast": aux[:, :1],
            "urbanity": aux[:, 1:],
        }
        return x, {name: value for name, value in targets.items() if heads is None or name in heads}

    return data.map(add_targets)


def scaled_places(rows: pd.DataFrame, labels: pd.DataFrame, train: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Training targets for coast and urbanity: standardised with the training images' statistics.

    Distance to the coast is skewed (most places lie within a few km), so it is learned as
    ``log(1 + km)``. Returns (``lat``, ``lng``, ``coast``, ``urbanity`` per row of
    ``rows``; the scaling as {name: (mean, std)}) to map predictions back.
    """
    raw = {"coast": np.log1p(labels["coast_km"].to_numpy()), "urbanity": labels["urbanity"].to_numpy()}
    scaling = {name: (float(v[train].mean()), float(v[train].std() or 1.0)) for name, v in raw.items()}
    scaled = {name: (raw[name] - mean) / std for name, (mean, std) in scaling.items()}
    return pd.DataFrame({"lat": rows["lat"].to_numpy(), "lng": rows["lng"].to_numpy(), **scaled}), scaling


# --- training and evaluation -------------------------------------------------------------------


def splits(profile: dict) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """The training and validation rows of notebook 03's image set (readable files only) and its folder."""
    dataset, root = model.load_dataset(profile)
    dataset, _ = images.readable_rows(dataset, root)
    train = dataset[dataset["split"] == "train"].reset_index(drop=True)
    val = dataset[dataset["split"] == "val"].reset_index(drop=True)
    return train, val, root


def train_network(
    profile: str | dict,
    name: str,
    build,
    loss,
    *,
    epochs: int | None = None,
    places: pd.DataFrame | None = None,
    tree: pd.DataFrame | None = None,
    aux_weight: float = AUX_WEIGHT,
    train_share: float = 1.0,
) -> dict:
    """Train the network ``build()`` returns, as notebook 05 trains its baseline; return its record.

    Same image set and splits, seed (set before ``build()`` is called), batch size,
    ``epochs`` (default the profile's), optimiser (``model.make_optimizer`` with
    :data:`BASELINE_SETTINGS`) and checkpoint rule (the epoch of best validation top-1) as
    ``experiments.run_experiment``, through the same loop (``model.train``: its callbacks, resume,
    precision and ``summary.json``). A network with several outputs (``model.build_multitask``)
    needs ``places`` (:func:`scaled_places` of all images) and ``tree``; its "cells" output
    is the one the checkpoint rule watches, and each other head's loss weighs
    ``aux_weight``. ``train_share`` below 1 trains on that share of the training images
    (a sample drawn with the profile's seed; validation is unchanged). The run goes to
    ``build/<profile>/runs/<name>/``.

    Returns name, folder, history, seconds, parameters, epochs, and the kept checkpoint's
    validation outputs (``val``: a dict of arrays by output name, or the cell
    probabilities) with the validation rows (``rows``). The cell head's per-image scores go
    to the run's ``predictions_val.csv`` (``experiments.write_predictions``), so runs of
    this function can be compared with ``experiments.compare_runs``.
    """
    profile = config.get_profile(profile)
    epochs = epochs or profile["epochs"]
    train_rows, val_rows, root = splits(profile)
    if not 0 < train_share <= 1:
        raise ValueError(f"train_share is a share of the training images in (0, 1], not {train_share}.")
    if train_share < 1:
        train_rows = train_rows.sample(frac=train_share, random_state=profile["seed"]).reset_index(drop=True)
    size, batch, budget = profile["image_size"], profile["batch_size"], profile["cache_budget_gb"]
    # seeded before the pipelines are built: tf.data's shuffle takes the global seed at build time,
    # so the run does not depend on what ran before it in the process
    keras.utils.set_random_seed(profile["seed"])
    train_data = model.image_dataset(
        train_rows, root, size, batch, training=True, seed=profile["seed"], cache_budget_gb=budget
    )
    val_data = model.image_dataset(val_rows, root, size, 256, cache_budget_gb=budget)
    network = build()
    steps = model.steps_per_epoch(len(train_rows), batch)
    optimizer = model.make_optimizer(
        profile, steps, epochs, warmup=BASELINE_SETTINGS["warmup"], betas=BASELINE_SETTINGS["betas"]
    )
    folder = model.run_dir(profile, name)
    heads = list(network.output) if isinstance(network.output, dict) else ["cells"]
    if len(heads) > 1:
        if places is None or tree is None:
            raise ValueError(
                "A network with several heads needs `places` (scaled_places) and `tree` (hierarchy)."
            )
        train_data = multitask_targets(train_data, tree, places, heads)
        val_data = multitask_targets(val_data, tree, places, heads)
        loss = {"cells": loss, **{head: _HEAD_KINDS[head]["loss"]() for head in heads if head != "cells"}}
    run = model.train(
        profile,
        folder,
        network,
        train_data,
        val_data,
        loss=loss,
        epochs=epochs,
        optimizer=optimizer,
        loss_weights={head: 1.0 if head == "cells" else aux_weight for head in heads}
        if len(heads) > 1
        else None,
        head_metrics={head: _HEAD_KINDS[head]["metrics"] for head in heads if head != "cells"},
        settings={
            "network": network.name,
            "heads": heads,
            "aux_weight": aux_weight if len(heads) > 1 else None,
            "warmup": BASELINE_SETTINGS["warmup"],
            "betas": list(BASELINE_SETTINGS["betas"]),
            "augment": BASELINE_SETTINGS["augment"],
            "batch_size": batch,
            "train_share": train_share,
            "train_images": len(train_rows),
        },
        verbose=0,
    )
    outputs = model.predict_outputs(run["model"], val_data)
    # per-image records, as experiments.run_experiment keeps them: the paired noise rule reads them
    cells, _ = experiments.cells_and_distances(profile)
    cell_probabilities = outputs["cells"] if isinstance(outputs, dict) else outputs
    scores = experiments.image_scores(cell_probabilities, val_rows, cells)
    experiments.write_predictions(folder, "val", scores)
    return {
        "name": name,
        "folder": folder,
        "history": run["history"],
        "seconds": run["seconds"],
        "parameters": int(network.count_params()),
        "epochs": epochs,
        "val": outputs,
        "rows": val_rows,
    }


# how each auxiliary head of model.build_multitask is trained and scored: its loss and its metrics
_HEAD_KINDS = {
    "municipality": {
        "loss": keras.losses.SparseCategoricalCrossentropy,
        "metrics": lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    },
    "region": {
        "loss": keras.losses.SparseCategoricalCrossentropy,
        "metrics": lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    },
    "coast": {
        "loss": keras.losses.MeanSquaredError,
        "metrics": lambda: [keras.metrics.MeanAbsoluteError(name="mae")],
    },
    "urbanity": {
        "loss": keras.losses.MeanSquaredError,
        "metrics": lambda: [keras.metrics.MeanAbsoluteError(name="mae")],
    },
}


def record(
    profile: str | dict,
    method: str,
    probabilities: np.ndarray,
    run: dict,
    cells: pd.DataFrame,
    tree: pd.DataFrame,
    notes: str = "",
) -> dict:
    """Score one method's validation ``probabilities`` (``experiments.evaluate``, with ``tree``); record them.

    Writes the row "future: <method>" (split "val", like the flat runs of notebooks 05-07)
    in the results table, the method's row in ``tables/future.csv``, which adds
    municipality and region accuracy, the run's parameters, epochs, image size and
    training seconds, and the method's per-image scores (``experiments.image_scores``) in
    ``runs/<predictions_run(method)>/predictions_val.csv`` for the paired noise rule of
    :func:`comparison`. ``run`` is the :func:`train_network` record the probabilities came
    from. Returns the main numbers of the row, rounded, for display.
    """
    profile = config.get_profile(profile)
    folder = model.run_dir(profile, predictions_run(method))  # checks the name before writing anything
    scores = experiments.evaluate(probabilities, run["rows"], cells, tree)
    model.record_result(
        profile, f"future: {method}", scores, data=experiments.data_label(profile), notes=notes
    )
    if profile["overrides"]:  # the table of this notebook says what changed, as the results row does
        changed = ", ".join(f"{k}={v}" for k, v in profile["overrides"].items())
        notes = f"{notes} [{changed}]" if notes else f"[{changed}]"
    row = {
        "method": method,
        **scores,
        "run": run["name"],
        "parameters": run["parameters"],
        "epochs": run["epochs"],
        "image_size": profile["image_size"],
        "seconds": round(run["seconds"], 1),
        "notes": notes,
    }
    experiments.write_predictions(folder, "val", experiments.image_scores(probabilities, run["rows"], cells))
    path = config.output_dir(profile, "tables") / "future.csv"
    table = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(row))
    table = pd.concat([table[table["method"] != method], pd.DataFrame([row])], ignore_index=True)
    with config.atomic_target(path) as temporary:
        table.to_csv(temporary, index=False)
    shown = ["top1", "top3", "mean_km", "median_km", "municipality_accuracy", "region_accuracy", "seconds"]
    return pd.Series(row)[shown].astype(float).round(3).rename(method)


def load_table(profile: str | dict) -> pd.DataFrame:
    """``tables/future.csv``: one row per method recorded by :func:`record`, in :data:`METHODS` order."""
    path = config.output_dir(profile, "tables") / "future.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"No {path.name} yet; run notebook 12 (make all PROFILE={config.profile_name(profile)})."
        )
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    order = {method: i for i, method in enumerate(METHODS)}
    return table.sort_values("method", key=lambda m: m.map(order).fillna(len(order))).reset_index(drop=True)


def auxiliary_errors(outputs: dict, labels: pd.DataFrame, scaling: dict, tree: pd.DataFrame, rows) -> dict:
    """How well the auxiliary heads of ``model.build_multitask`` do on the validation images.

    ``outputs`` are the heads' validation outputs, ``labels`` the true :func:`auxiliary_labels`
    of ``rows``, ``scaling`` the (mean, std) of :func:`scaled_places`. Returns the mean
    absolute error of coast distance (km) and urbanity, each beside that of always answering
    the training mean (for coast, the exponential of the mean log distance), and the
    accuracy of the municipality and region heads; only for the heads ``outputs`` has.
    """
    errors = {}
    if "coast" in outputs:
        mean, std = scaling["coast"]
        coast_km = np.expm1(outputs["coast"][:, 0] * std + mean)
        errors["coast_mae_km"] = float(np.abs(coast_km - labels["coast_km"]).mean())
        errors["coast_mae_km_constant"] = float(np.abs(np.expm1(mean) - labels["coast_km"]).mean())
    if "urbanity" in outputs:
        mean, std = scaling["urbanity"]
        urbanity = outputs["urbanity"][:, 0] * std + mean
        errors["urbanity_mae"] = float(np.abs(urbanity - labels["urbanity"]).mean())
        errors["urbanity_mae_constant"] = float(np.abs(mean - labels["urbanity"]).mean())
    for level in LEVELS:
        if level in outputs:
            truth = parents(tree, level)[rows["cell"].to_numpy()]
            errors[f"{level}_head_accuracy"] = float((outputs[level].argmax(axis=1) == truth).mean())
    return errors


def seed_noise(profile: str | dict) -> dict | None:
    """The seed noise of one run, borrowed from notebook 06's base model over seeds.

    Every method of notebook 12 ran once, with the recipe of the base model (notebook 05's
    "baseline", repeated over seeds in notebook 06), so its seed noise is taken to be that
    of one base-model run (``statistics.borrowed_seed_variance`` of the per-seed validation
    top-1). Returns ``borrowed`` (variance of one run's top-1, degrees of freedom),
    ``top1_std`` (its square root), ``seeds`` and the ``image_size`` they were trained at;
    None before notebook 06 has run two seeds.
    """
    results = metrics.load_results(profile)
    scores = experiments.seed_scores(results, experiments.data_label(profile))
    top1 = scores.loc[scores["run"] == "baseline", "top1"]
    variance, degrees_of_freedom = statistics.borrowed_seed_variance(top1)
    if not np.isfinite(variance):
        return None
    return {
        "borrowed": (variance, degrees_of_freedom),
        "top1_std": float(np.sqrt(variance)),
        "seeds": len(top1),
        "image_size": config.get_profile(config.profile_name(profile))["image_size"],
    }


def comparison(
    profile: str | dict, table: pd.DataFrame, noise: dict | None, reference: str = "flat ViT"
) -> pd.DataFrame:
    """Each method of ``tables/future.csv`` beside the flat classifier, with the differences.

    With ``noise`` (:func:`seed_noise`), each method's top-1 difference from ``reference``
    gets the workbook's one rule, ``experiments.compare_experiments`` (:mod:`helpers.statistics`):
    paired image by image on the same validation images (each method's per-image scores,
    written by :func:`record`), each side's seed noise borrowed from ``noise`` since every
    method ran once, a 95 % Student-t interval with Welch-Satterthwaite degrees of freedom.
    Columns ``top1_low`` and ``top1_high`` hold the interval of the difference,
    ``verdict_top1`` "better" or "worse" when it leaves out zero, "inconclusive" when it
    holds zero. A method that re-reads the reference's probabilities (the summed hierarchy)
    shares its training run, so counting the seed noise of two runs errs towards "inconclusive".
    """
    shown = table.set_index("method")
    if reference not in shown.index:
        raise KeyError(f"No {reference!r} row in the table; train the flat reference first.")
    base = shown.loc[reference]
    out = shown[["top1", "top3", "mean_km", "median_km", "municipality_accuracy", "region_accuracy"]].copy()
    out.insert(1, "top1_vs_flat", shown["top1"] - base["top1"])
    out.insert(4, "mean_km_vs_flat", shown["mean_km"] - base["mean_km"])
    out["parameters"] = shown["parameters"]
    if noise is not None:
        words = {"reproduced": "better", "not reproduced": "worse"}  # a gain in top-1 is the effect tested
        judged = {reference: (np.nan, np.nan, "reference")}
        for method in out.index.drop(reference):
            result = experiments.compare_experiments(
                profile,
                [predictions_run(method)],
                [predictions_run(reference)],
                "top1",
                borrowed=noise["borrowed"],
            )
            verdict = statistics.effect_verdict(result, 1.0)
            judged[method] = (result["low"], result["high"], words.get(verdict, verdict))
        columns = ["top1_low", "top1_high", "verdict_top1"]
        out = out.join(pd.DataFrame.from_dict(judged, orient="index", columns=columns))
    return out


def record_facts(profile: str | dict, table: pd.DataFrame, extra: dict) -> dict:
    """Facts for the report, keys prefixed "future_": top-1, mean km and region accuracy of each
    method of :data:`METHODS` present in ``table``, plus ``extra`` (prefixed too)."""
    facts = {}
    for _, row in table.iterrows():
        key = method_key(row["method"])
        for column in ("top1", "mean_km", "region_accuracy"):
            facts[f"future_{key}_{column}"] = float(row[column])
    facts.update({f"future_{key}": value for key, value in extra.items()})
    return metrics.record_facts(profile, **facts)
