"""How far off is a guess? Distance metrics, the baselines a model must beat, and the results table.

Distances are great-circle kilometres (``helpers.geo.haversine_km``); coordinates are
(lat, lng) in degrees. The thresholds 1, 25, 200 and 750 km are the street, city, region
and country levels used across the image geolocation literature (Im2GPS onwards).

The results table and the facts of a build are stored one file per row and one per fact
(``tables/results/``, ``tables/facts/``; :mod:`helpers.results_store` says why), so two
processes recording at once, or one killed while it records, lose nothing;
``tables/results.csv`` and ``tables/facts.json`` are derived from those files for people to
open. A damaged file raises :class:`DamagedBuild` (naming the file, what is wrong and how to
rebuild it) instead of being read as data, and :func:`check_build_tables` lists every such
problem of a build, with the runs on disk that the results should hold.
"""

from __future__ import annotations

import io
import json
import logging
import math
import numbers
import re
import time

import numpy as np
import pandas as pd

from helpers import config, results_store, safe_paths

# geo (and through it geopandas and scikit-learn, about 1.5 s) is imported by the functions that
# measure distances: the results table is also written and read by processes that measure none
# (the report, several writers at once), and they start faster without it

log = logging.getLogger(__name__)
DamagedBuild = results_store.DamagedBuild
read_json = results_store.read_json
read_csv = results_store.read_csv

THRESHOLDS_KM = (1, 25, 200, 750)
RESULT_COLUMNS = [
    "experiment",
    "data",
    "split",
    "top1",
    "top3",
    "mean_km",
    "median_km",
    # the report's distance: the arg-max cell's centroid to the true cell's centroid (0 when right)
    "centroid_mean_km",
    *[f"within_{t}km" for t in THRESHOLDS_KM],
    "train_top1",  # on a clean pass over the training images (no augmentation)
    "seed",
    "notes",
]


def distance_summary(errors_km) -> dict:
    """Mean and median error in km and the share of guesses within each threshold."""
    errors_km = np.asarray(errors_km, dtype=float)
    summary = {"mean_km": float(errors_km.mean()), "median_km": float(np.median(errors_km))}
    summary.update({f"within_{t}km": float((errors_km <= t).mean()) for t in THRESHOLDS_KM})
    return summary


# the columns that hold text; every other column of RESULT_COLUMNS holds a number or nothing
TEXT_COLUMNS = ("experiment", "data", "split", "notes")
NUMERIC_COLUMNS = tuple(column for column in RESULT_COLUMNS if column not in TEXT_COLUMNS)


def random_cell_errors_km(lat, lng, centroids) -> np.ndarray:
    """Every error a uniformly random cell guess can make: shape (n_points, n_cells), km.

    Row i holds the distance from point i (degrees) to each cell centroid (``centroids``
    has shape (n_cells, 2), (lat, lng) degrees); each column is equally likely, so
    ``distance_summary(errors.ravel())`` is the exact expected summary of random guessing.
    """
    from helpers import geo

    return geo.pairwise_haversine_km(np.column_stack([lat, lng]), centroids)


def best_single_point(lat, lng, iterations: int = 100) -> tuple[float, float]:
    """The (lat, lng) that minimises the mean distance to all points: their geometric median.

    Weiszfeld's algorithm in the metric projection EPSG:25832, which over Denmark differs
    from great-circle distance by well under 1 %. This is the best a model that always
    gives the same answer can do.
    """
    import geopandas as gpd

    from helpers import geo

    xy = geo.metric_xy_km(lat, lng)
    guess = xy.mean(axis=0)
    for _ in range(iterations):
        weights = 1.0 / np.maximum(np.linalg.norm(xy - guess, axis=1), 1e-9)  # 1 µm: no division by 0
        guess = (xy * weights[:, None]).sum(axis=0) / weights.sum()
    metres = guess * 1000.0
    back = gpd.GeoSeries(gpd.points_from_xy([metres[0]], [metres[1]]), crs=geo.METRIC_CRS).to_crs(4326)
    return float(back.y.iloc[0]), float(back.x.iloc[0])


def weighted_top_k(probabilities: np.ndarray, centroids: np.ndarray, k: int) -> np.ndarray:
    """A continuous guess per image: the probability-weighted mean of its top-``k`` cell centroids.

    The report's future-work idea. ``centroids`` is (n_cells, 2) (lat, lng) degrees; the
    mean is taken on the sphere (of unit vectors), so it is right wherever the cells are.
    Returns (n_images, 2) (lat, lng). ``k=1`` is the arg-max cell's centroid.
    """
    top = np.argsort(-probabilities, axis=1)[:, :k]
    weights = np.take_along_axis(probabilities, top, axis=1)
    weights = weights / weights.sum(axis=1, keepdims=True)
    lat, lng = np.radians(centroids[:, 0]), np.radians(centroids[:, 1])
    vectors = np.column_stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)])
    mean = (vectors[top] * weights[..., None]).sum(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    return np.column_stack(
        [np.degrees(np.arcsin(mean[:, 2])), np.degrees(np.arctan2(mean[:, 1], mean[:, 0]))]
    )


def top_k_errors(probabilities, true_lat, true_lng, centroids, ks=range(1, 11)) -> pd.DataFrame:
    """Mean and median error (km) of :func:`weighted_top_k` for each ``k``: one row per k."""
    from helpers import geo

    rows = []
    for k in ks:
        guess = weighted_top_k(probabilities, centroids, k)
        errors = geo.haversine_km(true_lat, true_lng, guess[:, 0], guess[:, 1])
        rows.append({"k": k, "mean_km": float(errors.mean()), "median_km": float(np.median(errors))})
    return pd.DataFrame(rows)


def neighbour_error_share(true_cells, predicted_cells, adjacency: np.ndarray) -> dict:
    """How often a wrong guess lands in a cell bordering the true one, against chance.

    ``adjacency`` is the (n_cells, n_cells) boolean matrix of cells that touch. The chance
    share is, per error, the number of neighbours of the true cell divided by the number of
    other cells (a wrong guess drawn uniformly), averaged over the errors.

    Also, pair by pair (the report: "Classes that were neighbouring each other often had
    higher confusion"): ``neighbour_pairs`` counts the ordered pairs (true cell, neighbour)
    whose true cell has images here and at least one non-neighbour, and
    ``neighbour_pairs_higher`` those in which more images of the true cell went to that
    neighbour than, on average, to each of the true cell's non-neighbouring cells.
    """
    true_cells, predicted_cells = np.asarray(true_cells), np.asarray(predicted_cells)
    wrong = true_cells != predicted_cells
    to_neighbour = adjacency[true_cells[wrong], predicted_cells[wrong]]
    chance = adjacency.sum(axis=1)[true_cells[wrong]] / (adjacency.shape[0] - 1)
    n_cells = adjacency.shape[0]
    confusion = np.zeros((n_cells, n_cells))
    np.add.at(confusion, (true_cells, predicted_cells), 1)
    pairs = higher = 0
    for cell in np.unique(true_cells):
        others = ~adjacency[cell].astype(bool)
        others[cell] = False
        neighbours = adjacency[cell].astype(bool).copy()
        neighbours[cell] = False
        if not others.any():
            continue
        baseline = confusion[cell, others].mean()
        pairs += int(neighbours.sum())
        higher += int((confusion[cell, neighbours] > baseline).sum())
    share = float(to_neighbour.mean()) if wrong.any() else float("nan")
    expected = float(chance.mean()) if wrong.any() else float("nan")
    return {
        "errors": int(wrong.sum()),
        "to_neighbours": share,
        "chance": expected,
        "ratio": share / expected if wrong.any() and expected > 0 else float("nan"),
        "neighbour_pairs": pairs,
        "neighbour_pairs_higher": higher,
    }


# ---------------------------------------------------------------------------------------------
# The results table and the facts: one file per row and per fact, tables derived from them


def results_path(profile: str | dict):
    """The results table of ``profile`` for people to open: ``build/<profile>/tables/results.csv``.

    Derived from the row files (:func:`result_rows_dir`), which :func:`load_results` reads.
    """
    return config.output_dir(profile, "tables") / "results.csv"


def result_rows_dir(profile: str | dict):
    """The rows of the results table, one JSON file each: ``build/<profile>/tables/results/``."""
    return config.output_dir(profile, "tables") / "results"


def facts_path(profile: str | dict):
    """The facts of ``profile`` for people to open: ``build/<profile>/tables/facts.json``.

    Derived from the fact files (:func:`fact_files_dir`), which :func:`load_facts` reads.
    """
    return config.output_dir(profile, "tables") / "facts.json"


def fact_files_dir(profile: str | dict):
    """The facts, one JSON file each: ``build/<profile>/tables/facts/``."""
    return config.output_dir(profile, "tables") / "facts"


def rebuild_hint(profile: str | dict, writer: str = "the notebook that wrote it", delete: bool = True) -> str:
    """How to rebuild a damaged or missing part of ``profile``'s build, for :class:`DamagedBuild`.

    ``writer`` names what writes it again ("the notebook that trains final_seed0");
    ``delete`` starts with "Delete it" (a damaged file, which would otherwise stay).
    """
    name = config.profile_name(profile)
    executed = config.build_dir(profile) / "notebooks"
    return (
        f"{'Delete it and run' if delete else 'Run'} {writer} again, or rebuild the profile: delete the "
        f"executed notebooks in {executed} and run `make all PROFILE={name}`."
    )


def _number(column: str, value):
    """A metric value as its row file holds it: a Python number, or None for NaN and missing."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"The result column {column!r} takes a number (a fraction, km or a count), not {value!r} "
            f"({type(value).__name__}); put text in notes."
        )
    value = float(value) if not isinstance(value, int) else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _text(column: str, value, required: bool):
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise TypeError(
            f"The result column {column!r} takes a text{' (not empty)' if required else ''}, not {value!r}."
        )
    return value


def _check_row(path, record, hint: str) -> tuple[int, dict]:
    """(recorded_ns, row) of one row file, or DamagedBuild naming what is wrong with it."""
    what = "A row file of the results table"

    def damaged(problem: str):
        return DamagedBuild(path, what, problem, hint)

    if not isinstance(record, dict) or not isinstance(record.get("row"), dict):
        raise damaged("it holds no object with a 'row' object")
    recorded = record.get("recorded_ns")
    if isinstance(recorded, bool) or not isinstance(recorded, int):
        raise damaged(f"its 'recorded_ns' is {recorded!r}, not a whole number of nanoseconds")
    row = record["row"]
    missing = [column for column in RESULT_COLUMNS if column not in row]
    if missing:
        raise damaged(f"its row lacks the keys {missing}")
    unknown = sorted(set(row) - set(RESULT_COLUMNS))
    if unknown:
        raise damaged(f"its row has keys that are no result column: {unknown}")
    for column in TEXT_COLUMNS:
        value = row[column]
        if not (value is None or isinstance(value, str)) or (column in ("experiment", "split") and not value):
            raise damaged(f"its {column!r} is {value!r}, not a text")
    for column in NUMERIC_COLUMNS:
        value = row[column]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise damaged(f"its {column!r} is {value!r}, not a number")
    expected = results_store.record_name(row["experiment"], row["split"])
    if path.name != expected:
        raise damaged(
            f"it holds the row ({row['experiment']!r}, {row['split']!r}), whose file is {expected}: "
            "it was copied or renamed by hand"
        )
    return recorded, row


def _results_table(rows: list[dict]) -> tuple[pd.DataFrame, str]:
    """The results table of ``rows`` and its CSV text (the table is the CSV read back, so the
    table a caller gets and the file a person opens are the same, NaN for an empty cell)."""
    text = pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False)
    table = pd.read_csv(
        io.StringIO(text), keep_default_na=False, na_values=[""], dtype=dict.fromkeys(TEXT_COLUMNS, str)
    )
    return table, text


def _render_results(profile) -> tuple[pd.DataFrame, str]:
    hint = rebuild_hint(profile)
    records = results_store.read_records(result_rows_dir(profile), "A row file of the results table", hint)
    rows = {path.name: _check_row(path, record, hint) for path, record in records}
    # in the order they were recorded (a re-recorded row moves to the end); the file name breaks ties
    order = sorted(rows, key=lambda name: (rows[name][0], name))
    return _results_table([rows[name][1] for name in order])


def _legacy_results(profile) -> pd.DataFrame:
    """``results.csv`` of a build from before the row files, checked (DamagedBuild if damaged)."""
    path = results_path(profile)
    hint = rebuild_hint(profile, "the notebooks that wrote it (04 to 12)")
    table = read_csv(
        path, "The results table", hint, columns=RESULT_COLUMNS, numeric=NUMERIC_COLUMNS, text=TEXT_COLUMNS
    )
    unknown = [column for column in table.columns if column not in RESULT_COLUMNS]
    if unknown:
        raise DamagedBuild(
            path, "The results table", f"it has columns that are no result column: {unknown}", hint
        )
    for column in ("experiment", "split"):
        empty = table[column].isna()
        if empty.any():
            row = int(empty.to_numpy().argmax()) + 1
            raise DamagedBuild(path, "The results table", f"row {row} has no {column}", hint)
    twice = table[table.duplicated(["experiment", "split"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        raise DamagedBuild(
            path,
            "The results table",
            f"it holds the row ({first['experiment']!r}, {first['split']!r}) {len(twice)} times; keep one",
            hint,
        )
    return table[RESULT_COLUMNS]


def _import_results(profile) -> None:
    """Turn an old build's ``results.csv`` into row files, once (nothing is written if it is damaged)."""

    def write_rows(staging):
        legacy = results_path(profile)
        table = _legacy_results(profile) if legacy.exists() else pd.DataFrame(columns=RESULT_COLUMNS)
        for order, row in enumerate(table.to_dict("records")):
            plain = {
                column: _number(column, value)
                if column in NUMERIC_COLUMNS
                else None
                if pd.isna(value)
                else value
                for column, value in row.items()
            }
            record = {"recorded_ns": order, "imported_from": legacy.name, "row": plain}
            name = results_store.record_name(plain["experiment"], plain["split"])
            results_store.write_atomically(staging / name, _json_bytes(record))
        if len(table):
            log.info("imported %d rows of %s into %s", len(table), legacy, result_rows_dir(profile))

    results_store.import_once(result_rows_dir(profile), write_rows)


def _json_bytes(record) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True).encode("utf-8")


def load_results(profile: str | dict) -> pd.DataFrame:
    """The results table so far (empty, with its columns, before anything was recorded).

    Read from the row files (``tables/results/``), in the order they were recorded; a build
    from before them (only ``results.csv``) is imported once. Brings ``results.csv`` up to
    date when it is stale. Raises :class:`DamagedBuild` naming a damaged file.
    """
    folder = result_rows_dir(profile)
    if not folder.is_dir():
        if not results_path(profile).exists():
            return pd.DataFrame(columns=RESULT_COLUMNS)
        try:
            _import_results(profile)
        except OSError as error:
            if not results_store.is_read_only_error(error):
                raise
            log.warning("%s cannot be written (%s): reading results.csv as it is", folder.parent, error)
            return _legacy_results(profile).reset_index(drop=True)
    return results_store.refresh_derived(folder, results_path(profile), lambda: _render_results(profile))


def record_result(
    profile: str | dict, experiment: str, data: str, split: str, notes: str = "", **values
) -> pd.DataFrame:
    """Add or replace the row (``experiment``, ``split``) of the results table; return the table.

    ``values`` are metric columns (``top1``, ``mean_km``, ...; fractions, not percent).
    Re-running a notebook replaces its own rows instead of adding duplicates. The row is one
    file (``tables/results/``), written atomically: other processes recording at the same time
    lose nothing, and a process killed while it records leaves the row written whole or not
    at all. ``results.csv`` is then rewritten from the row files.
    """
    unknown = set(values) - set(RESULT_COLUMNS)
    if unknown:
        raise KeyError(f"Unknown result columns {sorted(unknown)}; known: {RESULT_COLUMNS}.")
    row = {column: _number(column, values.get(column)) for column in NUMERIC_COLUMNS}
    row.update(
        experiment=_text("experiment", experiment, required=True),
        data=_text("data", data, required=False),
        split=_text("split", split, required=True),
        notes=_text("notes", notes, required=False),
    )
    folder = result_rows_dir(profile)
    _import_results(profile)  # returns at once once the row files exist
    record = {"recorded_ns": time.time_ns(), "row": {column: row[column] for column in RESULT_COLUMNS}}
    results_store.write_atomically(folder / results_store.record_name(experiment, split), _json_bytes(record))
    return results_store.refresh_derived(folder, results_path(profile), lambda: _render_results(profile))


def _plain(value):
    """A value as strict JSON holds it: NumPy numbers as Python numbers, NaN and infinity as None."""
    if value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _check_fact(path, record, hint: str) -> tuple[str, object]:
    what = "A fact file of the build"
    if not isinstance(record, dict) or "value" not in record or not isinstance(record.get("name"), str):
        raise DamagedBuild(path, what, "it holds no object with a 'name' and a 'value'", hint)
    expected = results_store.record_name(record["name"])
    if path.name != expected:
        raise DamagedBuild(
            path,
            what,
            f"it holds the fact {record['name']!r}, whose file is {expected}: it was copied or renamed",
            hint,
        )
    return record["name"], record["value"]


def _render_facts(profile) -> tuple[dict, str]:
    hint = rebuild_hint(profile)
    records = results_store.read_records(fact_files_dir(profile), "A fact file of the build", hint)
    facts = dict(sorted(_check_fact(path, record, hint) for path, record in records))
    return facts, json.dumps(facts, indent=2, sort_keys=True, allow_nan=False)


def _legacy_facts(profile) -> dict:
    """``facts.json`` of a build from before the fact files, checked (DamagedBuild if damaged)."""
    path = facts_path(profile)
    hint = rebuild_hint(profile, "the notebooks that wrote it (08 to 12)")
    facts = read_json(path, "The facts of the build", hint)
    if not isinstance(facts, dict):
        raise DamagedBuild(
            path,
            "The facts of the build",
            f"it holds a JSON {type(facts).__name__}, not an object of name: value",
            hint,
        )
    return facts


def _import_facts(profile) -> None:
    def write_facts(staging):
        legacy = facts_path(profile)
        facts = _legacy_facts(profile) if legacy.exists() else {}
        for name, value in facts.items():
            record = {"name": name, "value": value, "recorded_ns": 0, "imported_from": legacy.name}
            results_store.write_atomically(staging / results_store.record_name(name), _json_bytes(record))

    results_store.import_once(fact_files_dir(profile), write_facts)


def record_facts(profile: str | dict, **facts) -> dict:
    """Merge ``facts`` (name -> number or text) into the build's facts; return them all.

    For findings that are one number, not a row of the results table: the share of errors
    that go to neighbouring cells (notebook 08), the share of attention on the sky (09), ...
    The report reads them from here, so no number in it is typed by hand. Each fact is one
    file (``tables/facts/``), written atomically; NaN and infinity are stored as None (null).
    """
    plain = {name: _plain(value) for name, value in facts.items()}
    for name, value in plain.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"The fact {name!r} is {value!r}, which JSON cannot hold ({error}).") from None
    folder = fact_files_dir(profile)
    _import_facts(profile)
    for name, value in plain.items():
        record = {"name": name, "value": value, "recorded_ns": time.time_ns()}
        results_store.write_atomically(folder / results_store.record_name(name), _json_bytes(record))
    return results_store.refresh_derived(folder, facts_path(profile), lambda: _render_facts(profile))


def load_facts(profile: str | dict) -> dict:
    """The facts recorded so far, by name (empty before any); DamagedBuild naming a damaged file."""
    folder = fact_files_dir(profile)
    if not folder.is_dir():
        if not facts_path(profile).exists():
            return {}
        try:
            _import_facts(profile)
        except OSError as error:
            if not results_store.is_read_only_error(error):
                raise
            log.warning("%s cannot be written (%s): reading facts.json as it is", folder.parent, error)
            return dict(sorted(_legacy_facts(profile).items()))
    return results_store.refresh_derived(folder, facts_path(profile), lambda: _render_facts(profile))


# a run of notebook 06 or 07 repeated over seeds (experiments.repeat_over_seeds)
_SEED_RUN = re.compile(r"(?P<run>.+)_seed(?P<seed>\d+)")


def check_build_tables(profile: str | dict) -> list[str]:
    """Every problem of the tables of ``profile``'s build, each naming the file and how to rebuild it.

    Empty when the build's tables can be trusted. The report prints these instead of verdicts.
    Checked: every row file and fact file (and an old build's ``results.csv``/``facts.json``)
    parses and has its columns; every run folder ``runs/<name>/`` whose ``summary.json``
    holds validation scores (a run of notebooks 05-07 or 09) has its validation row in the
    results, with the same top-1 accuracy; every results row of a seed run ``<x>_seed<k>``
    has its run folder's ``summary.json`` (else the seed counts would be wrong).
    """
    problems = []
    try:
        results = load_results(profile)
    except DamagedBuild as error:
        problems.append(str(error))
        results = None
    try:
        load_facts(profile)
    except DamagedBuild as error:
        problems.append(str(error))
    runs_dir = config.build_dir(profile) / "runs"
    summaries = {}
    for path in sorted(runs_dir.glob("*/summary.json")):
        run = path.parent.name
        try:
            summaries[run] = read_json(
                path, f"The summary of run {run}", rebuild_hint(profile, f"the notebook that trains {run}")
            )
        except DamagedBuild as error:
            problems.append(str(error))
            summaries[run] = None
    if results is None:
        return problems
    val_rows = results[results["split"] == "val"].set_index("experiment")
    for run, summary in summaries.items():
        if not isinstance(summary, dict) or not isinstance(summary.get("val"), dict):
            continue  # not a scored run (notebook 11's hybrid head), or damaged (said above)
        retrain = rebuild_hint(profile, f"the notebook that trains {run}", delete=False)
        if run not in val_rows.index:
            problems.append(
                f"Run {run} has {runs_dir / run / 'summary.json'} but no validation row in the results "
                f"({result_rows_dir(profile)}): the notebook that trains it stopped between the two. "
                + retrain
            )
            continue
        recorded, summarised = val_rows.loc[run, "top1"], summary["val"].get("top1")
        if isinstance(summarised, int | float) and not (
            pd.isna(recorded) or math.isclose(float(recorded), float(summarised), rel_tol=1e-9, abs_tol=1e-12)
        ):
            problems.append(
                f"Run {run}'s validation row in {result_rows_dir(profile)} says top1 {recorded}, its "
                f"summary.json says {summarised}: the run was trained again and stopped before it recorded "
                f"its row. {retrain}"
            )
    seeded = results[results["experiment"].astype(str).str.fullmatch(_SEED_RUN.pattern)]
    for experiment in dict.fromkeys(seeded["experiment"]):
        if not safe_paths.is_plain_name(experiment):
            problems.append(
                f"The results row {experiment!r} (in {result_rows_dir(profile)}) names a run that is not a "
                f"plain folder name, so no run folder can hold it. {rebuild_hint(profile)}"
            )
        elif experiment not in summaries:
            problems.append(
                f"The results row {experiment!r} (in {result_rows_dir(profile)}) is a seed run, but "
                f"{runs_dir / experiment / 'summary.json'} does not exist, so the seed counts would count a "
                "run that is not on disk. Train it again (delete the row's file to drop it instead). "
                + rebuild_hint(profile, f"the notebook that trains {experiment}", delete=False)
            )
    return problems
