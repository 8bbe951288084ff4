"""Reading a build: everything the report reads from ``build/<profile>/``, checked before use.

:func:`load_build` gathers the results table, the facts, each run's ``summary.json``, the
sizes of the data and the report's own published numbers (:data:`PUBLISHED`). Nothing is
trained or evaluated again. A table that cannot be read, or that does not agree with the
runs on disk, is not judged: it is listed in ``build["damaged"]`` with the file and how to
rebuild it, and the scorecard says "damaged" instead of a verdict (never a verdict on wrong
data).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from helpers import config, experiments, metrics

# The original report's published numbers (Csizmadia and Głowaczewski, 2023) and where it prints
# them. Measured on its Street View photos and its validation split; shown only as the report's.
PUBLISHED = {
    "addresses_sampled": (42_570, "3.1 Dataset"),
    "per_cell": (330, "3.1 Dataset"),
    "n_cells": (129, "3.1 Dataset"),
    "image_px": (224, "3.1 Dataset"),
    "epochs": (20, "3.2 Model"),
    "batch_size": (32, "3.2 Model"),
    "learning_rate": (6e-5, "3.2 Model"),
    "weight_decay": (0.1, "3.2 Model"),
    "randaugment_ops": (2, "3.2 Model"),
    "randaugment_magnitude": (0.15, "3.2 Model"),
    "baseline_top1": (0.29, "3.2 Model"),
    "augment_top1": (0.35, "3.2 Model"),
    "schedule_gain": (0.02, "3.2 Model"),
    "frozen_top1": (0.10, "3.2 Model"),
    "final_gain": (0.08, "4 Results"),
    "final_top1": (0.37, "4 Results"),
    "final_mean_km": (62.0, "4 Results"),
    "random_mean_km": (150.0, "4 Results"),
}


def published(key: str) -> float:
    """The original report's number ``key`` of :data:`PUBLISHED` (fractions, km, counts)."""
    return PUBLISHED[key][0]


def section(key: str) -> str:
    """The section of the report that prints the number ``key``: "§3.2"."""
    return f"§{PUBLISHED[key][1].split()[0]}"


# Which notebook writes a run, by its name: where to rebuild it from
_RUN_NOTEBOOKS = (
    (r"^(baseline|baseline_scratch|frozen|frozen_leak0)$", "05"),
    (r"^(baseline|augment|betas|warmup|final)_(seed\d+|leak0)$|^schedule_", "06"),
    (r"^loss_", "07"),
    (r"^leak_", "09"),
)
PREDICTION_COLUMNS = {"image_path", "cell", "predicted", "correct"}


def notebook_of_run(run: str) -> str:
    """The notebook that trains run ``run`` ("05" ... "09"), or "05-09" when the name is not known."""
    for pattern, notebook in _RUN_NOTEBOOKS:
        if re.match(pattern, run):
            return notebook
    return "05-09"


def rebuild_run(settings: dict, run: str) -> str:
    """How to rebuild run ``run``: delete its folder and run its notebook again."""
    folder = config.build_dir(settings) / "runs" / run
    return (
        f"delete {folder} and run notebook {notebook_of_run(run)} again (make all PROFILE={settings['name']})"
    )


def load_build(profile: str | dict) -> dict:
    """Everything the report reads from ``build/<profile>/``, as one dictionary.

    Keys: ``profile`` (settings), ``root`` (folder), ``results`` (results table), ``facts``,
    ``runs`` (run name -> its ``summary.json``), ``data`` (this build's training image set,
    :func:`experiments.data_label`), ``real_photos`` (False for synthetic scenes, also when
    served by the loopback stand-in), ``sizes`` (counts of locations, cells and images) and
    ``damaged`` (one line per damaged table: the file, what is wrong and how to rebuild it;
    empty when every table reads). No file is required: whatever is missing reads as empty,
    and the report says so.
    """
    settings = config.get_profile(profile)
    root = config.build_dir(settings)
    damaged: list[str] = []
    results = _read(
        damaged,
        lambda: metrics.load_results(settings),
        pd.DataFrame(columns=metrics.RESULT_COLUMNS),
        metrics.results_path(settings),
        f"delete it and run the notebooks again (make all PROFILE={settings['name']})",
    )
    facts = _read(
        damaged,
        lambda: metrics.load_facts(settings),
        {},
        metrics.facts_path(settings),
        f"delete it and run notebooks 05-09 again (make all PROFILE={settings['name']})",
    )
    runs = {}
    for path in sorted((root / "runs").glob("*/summary.json")):
        summary = _read(damaged, lambda path=path: _summary(settings, path), None)
        if summary is not None:
            runs[path.parent.name] = summary
    checker = getattr(metrics, "check_build_tables", None)  # the tables against the runs on disk
    if checker is not None:  # it reads the same tables again, naming each problem once: its words win
        damaged = _read([], lambda: checker(settings), []) or damaged
    damaged += prediction_problems(settings, root)
    return {
        "profile": settings,
        "root": root,
        "results": results,
        "facts": facts,
        "runs": runs,
        "data": experiments.data_label(settings),
        "real_photos": settings["image_source"] != "synthetic" and settings["streetview_api"] != "standin",
        "sizes": build_sizes(root),
        "damaged": damaged,
    }


def _read(damaged: list[str], reader, empty, path: Path | None = None, rebuild: str = ""):
    """``reader()``, or ``empty`` with the error added to ``damaged`` when a table cannot be read.

    ``metrics.DamagedBuild`` names the file and how to rebuild it; pandas' and json's own
    errors (both ValueError) do not, so ``path`` and ``rebuild`` are added to them.
    """
    try:
        return reader()
    except ValueError as error:
        if isinstance(error, getattr(metrics, "DamagedBuild", ())) or path is None:
            damaged.append(str(error))
        else:
            damaged.append(f"{path} cannot be read ({type(error).__name__}: {error}): {rebuild}.")
        return empty


def _summary(settings: dict, path: Path) -> dict:
    """A run's ``summary.json``, through ``metrics.read_json`` when it exists (it names the damage)."""
    rebuild = rebuild_run(settings, path.parent.name)
    reader = getattr(metrics, "read_json", None)
    if reader is not None:
        return reader(path, f"the summary of run {path.parent.name}", rebuild)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} cannot be read ({error}): {rebuild}.") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds no settings (a JSON object): {rebuild}.")
    return summary


def prediction_problems(settings: dict, root: Path) -> list[str]:
    """One line per per-image prediction file of ``root/runs`` that the rules could not trust.

    A file is damaged when it does not parse, lacks a column (image_path, cell, predicted,
    correct), has no rows, misses a value or holds a ``correct`` that is not 0 or 1 (a row cut
    short by a kill or a full disk, a tail of zero bytes). Each line names the file and how to
    rebuild the run.
    """
    problems = []
    for path in sorted((root / "runs").glob("*/predictions_*.csv")):
        run = path.parent.name
        # the shared reader names a file that is cut, empty, unparsable or short of a column
        try:
            table = metrics.read_csv(
                path,
                f"The per-image predictions of run {run}",
                rebuild_run(settings, run),
                columns=sorted(PREDICTION_COLUMNS),
                numeric=["correct"],
            )
        except metrics.DamagedBuild as error:
            problems.append(str(error))
            continue
        if table.empty or table.isna().any().any() or not table["correct"].isin([0, 1]).all():
            problems.append(
                f"{path} has rows cut short, or none (a value missing, or a 'correct' that is not 0 or 1): "
                f"{rebuild_run(settings, run)}."
            )
    return problems


def build_sizes(root: Path) -> dict:
    """Counts of a build folder: locations, municipalities, cells (with their sizes) and images.

    Read from ``geocells/locations.csv``, ``geocells/geocells.geojson``, ``images/dataset.csv``
    and ``images/dataset_new_day.csv``; a count whose file is absent is left out.
    """
    sizes: dict = {}
    locations = root / "geocells" / "locations.csv"
    if locations.exists():
        table = pd.read_csv(locations, usecols=lambda c: c in {"lat", "municipality"})
        sizes["locations"] = len(table)
        if "municipality" in table:
            sizes["municipalities"] = int(table["municipality"].nunique())
    cells = root / "geocells" / "geocells.geojson"
    if cells.exists():
        properties = pd.DataFrame([f["properties"] for f in json.loads(cells.read_text())["features"]])
        sizes["cells"] = len(properties)
        for column in ("n_points", "area_km2"):
            if column in properties:
                sizes[column] = properties[column].describe()[["min", "50%", "max"]].to_dict()
    images = root / "images" / "dataset.csv"
    if images.exists():
        table = pd.read_csv(images, usecols=["cell", "split"])
        sizes["images"] = len(table)
        sizes["splits"] = table["split"].value_counts().to_dict()
        sizes["images_per_cell"] = table.groupby("cell").size().describe()[["min", "50%", "max"]].to_dict()
    new_day = root / "images" / "dataset_new_day.csv"
    if new_day.exists():
        sizes["new_day_images"] = len(pd.read_csv(new_day, usecols=["cell"]))
    return sizes


def as_build(profile) -> dict:
    """``profile`` as a :func:`load_build` dictionary (read once when it is a name or settings)."""
    return profile if isinstance(profile, dict) and "results" in profile else load_build(profile)


def row(results: pd.DataFrame, experiment: str, split: str):
    """The results row (``experiment``, ``split``), or None."""
    rows = results[(results["experiment"] == experiment) & (results["split"] == split)]
    return None if rows.empty else rows.iloc[0]


def best_test_row(results: pd.DataFrame):
    """Notebook 08's test row of the best run ("best run (<name>)"), or None."""
    rows = results[
        (results["split"] == "test") & results["experiment"].astype(str).str.match(r"^best run \([^)]*\)$")
    ]
    return None if rows.empty else rows.iloc[0]


def best_name(best_row) -> str:
    """The run's name in a "best run (<name>)" row."""
    return re.match(r"^best run \((.*)\)$", best_row["experiment"]).group(1)


def seed_runs(build: dict, run: str) -> list[str]:
    """The experiments holding notebook 06's run ``run`` in this build, one per seed."""
    scores = experiments.seed_scores(build["results"], build["data"])
    return list(scores.loc[scores["run"] == run, "experiment"])


def predictions(build: dict, run: str, split: str):
    """Run ``run``'s per-image predictions on ``split``, or None when not recorded."""
    return experiments.load_predictions(build["profile"], run, split)
