"""Image sets: one table per set, whatever the source, and the splits to train and test on.

Every image set is a folder with the images and a ``manifest.csv`` whose rows have at least
``image_path`` (relative to the folder), ``lat``, ``lng`` (where the image was taken,
degrees), ``cell`` and ``source``. Downloads (``helpers.streetview``, ``helpers.mapillary``)
write it as they go; :func:`render_synthetic` writes it for synthetic scenes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from helpers import collect, config, geo, synthetic
from helpers.datasets import largest_remainder


def synthetic_fingerprint(lat: float, lng: float, session: int, day: int, size: int, cues, seed: int) -> str:
    """A name for the synthetic image of one place: a hash of everything that sets its pixels.

    Location (lat, lng in degrees), capture session and day, size (px), the cues drawn, the
    seed and the renderer's version. Change any of them and the name changes, so a stored
    picture can never be reused under a setting it was not rendered with.
    """
    parts = (repr(float(lat)), repr(float(lng)), int(session), int(day), int(size), tuple(cues), int(seed))
    text = "|".join(map(str, (*parts, synthetic.RENDERER_VERSION)))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def render_synthetic(
    locations: pd.DataFrame,
    folder: Path,
    geography: dict,
    *,
    size: int,
    session_leak: float,
    day: int = 0,
    seed: int = 0,
    cues=synthetic.CUES,
) -> pd.DataFrame:
    """Render one synthetic image per row of ``locations`` (lat, lng, cell) into ``folder``.

    Capture sessions are drawn per cell with :func:`helpers.synthetic.assign_sessions`
    (``session_leak``, ``day``). Each file is named by :func:`synthetic_fingerprint`, so a
    file already present was rendered with exactly these settings and is kept: an
    interrupted run continues where it stopped, and a changed setting renders anew. Returns
    the manifest (also written to ``folder/manifest.csv``), with ``session`` and ``day``.
    """
    folder = Path(folder)
    features = synthetic.scene_features(locations["lat"], locations["lng"], geography, seed=seed, cues=cues)
    sessions = synthetic.assign_sessions(locations["cell"], day=day, leak=session_leak, seed=seed)
    paths = [
        f"{cell}/{synthetic_fingerprint(lat, lng, session, day, size, cues, seed)}.png"
        for cell, lat, lng, session in zip(
            locations["cell"], locations["lat"], locations["lng"], sessions, strict=True
        )
    ]
    todo = np.array([not (folder / p).exists() for p in paths])
    for start in range(0, len(paths), 512):  # render in batches: bounded memory
        batch = np.flatnonzero(todo[start : start + 512]) + start
        if len(batch) == 0:
            continue
        images = synthetic.render_locations(
            locations.iloc[batch], features.iloc[batch], sessions[batch], size, day=day, seed=seed
        )
        for index, image in zip(batch, images, strict=True):
            # re-rendered if lost, so no fsync per file (10x slower); the manifest is atomic
            collect.save_image(Image.fromarray(image), folder / paths[index], durable=False)
    manifest = pd.DataFrame(
        {
            "image_path": paths,
            "lat": locations["lat"].to_numpy(),
            "lng": locations["lng"].to_numpy(),
            "cell": locations["cell"].to_numpy(),
            "source": "synthetic",
            "session": sessions,
            "day": day,
        }
    )
    with config.atomic_target(folder / "manifest.csv") as temporary:
        manifest.to_csv(temporary, index=False)
    return manifest


def read_image_set(folder: Path) -> pd.DataFrame:
    """The usable images of a set: its manifest's "ok" rows (downloads) or all rows (synthetic)."""
    folder = Path(folder)
    path = folder / "manifest.csv"
    if not path.exists():
        raise FileNotFoundError(f"No manifest.csv in {folder}. Run notebook 03 (or a download) first.")
    identifiers = ["image_id", "date", "sequence", "captured_at"]  # text, even when they look numeric
    table = pd.read_csv(path, dtype=dict.fromkeys(identifiers, str))
    if "status" in table.columns:
        table = table[table["status"] == "ok"].copy()
        # a manifest written before the newer columns existed: they are empty, not missing
        for column in collect.MANIFEST_COLUMNS:
            if column not in table.columns:
                table[column] = ""
        table[identifiers] = table[identifiers].fillna("")
    return table.reset_index(drop=True)


def download(profile: dict, locations: pd.DataFrame, folder: Path, geography: dict | None = None) -> dict:
    """Download one image per location (lat, lng, cell) from the profile's ``image_source``.

    ``streetview`` uses Google's service with ``GOOGLE_MAPS_API_KEY``, or, when the
    profile's ``streetview_api`` is "standin" (the rehearsal), the loopback stand-in
    (``helpers.standin``), which this function starts and stops and which needs the
    synthetic ``geography``; ``mapillary`` uses ``MAPILLARY_ACCESS_TOKEN``. Images are stored
    at ``download_size`` px. Resumable. Returns the client's counts (plus the faults the
    stand-in served, under "standin_faults").
    """
    from helpers import mapillary, standin, streetview

    # a hand-built profile could carry a typo ("standn") that would send billed requests to Google
    config.check_settings(profile)
    size = (profile["download_size"],) * 2
    source = profile["image_source"]
    if source == "mapillary":
        return mapillary.download(locations, folder, size=size)
    if source != "streetview":
        raise ValueError(
            f"Image source {source!r} is not downloaded; use render_synthetic for synthetic scenes."
        )
    if profile["streetview_api"] != "standin":
        return streetview.download(locations, folder, size=size)
    if geography is None:
        raise ValueError("The Street View stand-in renders synthetic scenes: pass geography=...")
    with standin.serve(geography, seed=profile["seed"]) as (api_root, log):
        # the stand-in answers at loopback speed; Google allows up to 30,000 requests a minute
        counts = streetview.download(
            locations, folder, key=standin.KEY, api_root=api_root, size=size, per_second=500, progress=False
        )
    return {**counts, "standin_faults": list(log["faults"])}


def dataset_from_download(root: Path, subfolder: str) -> tuple[pd.DataFrame, pd.Series]:
    """The usable images of the download in ``root/subfolder`` and the manifest's status counts.

    Usable: the manifest's "ok" rows whose file decodes. Paths become relative to ``root``;
    (lat, lng) are where the image was taken (the panorama's position), and the requested
    address is kept in ``requested_lat``/``requested_lng``.
    """
    folder = Path(root) / subfolder
    manifest = pd.read_csv(folder / "manifest.csv")
    counts = manifest["status"].value_counts()
    table = read_image_set(folder)
    table = table.assign(image_path=subfolder + "/" + table["image_path"].astype(str))
    table, unreadable = readable_rows(table, root)
    if unreadable:
        counts["unreadable"] = unreadable
    table = table.astype({"lat": float, "lng": float, "cell": int})
    return table.reset_index(drop=True), counts


def split_dataset(
    table: pd.DataFrame,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    block_km: float | None = None,
    groups: str | None = None,
) -> pd.DataFrame:
    """``table`` with a ``split`` column: which images to train, validate and test on.

    Default 70 % train, 15 % validation, 15 % test (the report used 85/15 train/validation
    and no test set).

    Without ``block_km`` and ``groups``: a random split stratified by cell, each cell split
    in ``fractions`` exactly. Images of one street or one capture can then sit in train and
    test at once, which flatters the test score.

    With ``block_km`` (a spatially blocked split), all images in one square of that size (km,
    on one grid in EPSG:25832 for the whole country) go to the same split. With ``groups``,
    the name of a column of capture-group ids (see :func:`capture_groups`; empty means none),
    all images of one group do. Both together chain: a group that crosses two squares ties
    them. These units are assigned globally, never per cell, so a square or group across a
    cell border cannot land in train for one cell and in test for another. Largest units
    first, each goes to the split where it best closes the gap to ``fractions``, both over
    the whole set and within its cells; then every cell left without a training image gets
    its smallest unit moved to train. Fractions are therefore met approximately: the coarser
    the units, the lumpier. This is the split to use for downloaded images.
    """
    fractions = fractions or {"train": 0.70, "val": 0.15, "test": 0.15}
    if abs(sum(fractions.values()) - 1) > 1e-9 or min(fractions.values()) < 0:
        raise ValueError(f"fractions must be non-negative and add up to 1, got {fractions}.")
    if block_km is not None and not block_km > 0:
        raise ValueError(f"block_km must be a positive size in km (or None), got {block_km}.")
    if groups is not None and groups not in table.columns:
        raise KeyError(
            f"No column {groups!r} of capture groups; add one first, e.g. "
            f"table[{groups!r}] = images.capture_groups(table)."
        )
    rng = np.random.default_rng(seed)
    names = list(fractions)
    if not block_km and groups is None:
        split = np.empty(len(table), dtype=object)
        for _, rows in table.groupby("cell").indices.items():
            rows = rng.permutation(rows)
            # exact quotas per cell; ties in rounding go to a random split, so that small
            # cells still feed every split across the data set
            order = rng.permutation(len(names))
            quotas = np.empty(len(names), dtype=int)
            quotas[order] = largest_remainder(np.array([fractions[names[i]] for i in order]), len(rows))
            split[rows] = np.repeat(names, quotas)
        return table.assign(split=split)
    if table.empty:
        return table.assign(split=pd.Series(dtype=object))
    units = split_units(table, block_km, groups)
    choice = _assign_units(
        units, pd.factorize(table["cell"])[0], np.array(list(fractions.values())), names, rng
    )
    return table.assign(split=np.array(names, dtype=object)[choice[units]])


def split_units(table: pd.DataFrame, block_km: float | None = None, groups: str | None = None) -> np.ndarray:
    """The unit of each row that a leak-free split must keep whole (an integer per row).

    Rows share a unit when they lie in one ``block_km`` square (EPSG:25832 grid, km) or share
    a non-empty value of column ``groups``, directly or through a chain of such links.
    """
    n = len(table)
    labels = []
    if block_km:
        square = np.floor(geo.metric_xy_km(table["lat"], table["lng"]) / block_km).astype(np.int64)
        labels.append(pd.MultiIndex.from_arrays([square[:, 0], square[:, 1]]).factorize()[0])
    if groups is not None:
        values = table[groups]
        codes = pd.factorize(values)[0]
        alone = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
        codes[alone] = -1
        labels.append(codes)
    # a graph of rows and labels; its connected components are the units
    offset, sources, targets = n, [], []
    for codes in labels:
        linked = codes >= 0
        sources.append(np.flatnonzero(linked))
        targets.append(offset + codes[linked])
        offset += int(codes.max(initial=-1)) + 1
    sources, targets = np.concatenate(sources or [[]]), np.concatenate(targets or [[]])
    graph = coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(offset, offset))
    _, component = connected_components(graph, directed=False)
    return pd.factorize(component[:n])[0]


def _assign_units(
    units: np.ndarray, cells: np.ndarray, fractions: np.ndarray, names: list, rng
) -> np.ndarray:
    """The split (index into ``names``) of each unit: greedy, then every cell gets training rows.

    Each unit, largest first (ties in random order), goes to the split that most reduces
    the squared shortfall against ``fractions``, summed over the whole set and over the cells
    the unit touches (each cell weighted by its size, so small cells count as much as large).
    """
    n_units, n_cells = units.max() + 1, cells.max() + 1
    per_unit = pd.DataFrame({"unit": units, "cell": cells}).value_counts().sort_index()
    unit_index = per_unit.index.get_level_values("unit").to_numpy()
    cell_index = per_unit.index.get_level_values("cell").to_numpy()
    bounds = np.searchsorted(unit_index, np.arange(n_units + 1))
    counts = per_unit.to_numpy().astype(float)
    size = np.bincount(units, minlength=n_units)
    cell_size = np.bincount(cells, minlength=n_cells).astype(float)
    cell_gap = cell_size[:, None] * fractions[None, :]  # rows each cell still needs per split
    gap = len(units) * fractions  # rows the whole set still needs per split
    choice = np.empty(n_units, dtype=int)
    order = rng.permutation(n_units)
    for unit in order[np.argsort(-size[order], kind="stable")]:
        own = slice(bounds[unit], bounds[unit + 1])
        unit_cells, unit_counts = cell_index[own], counts[own]
        score = (unit_counts[:, None] * cell_gap[unit_cells] / cell_size[unit_cells, None]).sum(axis=0)
        score += size[unit] * gap / len(units)
        choice[unit] = best = int(np.argmax(score))
        cell_gap[unit_cells, best] -= unit_counts
        gap[best] -= size[unit]
    # a cell without any training image cannot be learnt: move its smallest unit to train
    train = names.index("train") if "train" in names else int(np.argmax(fractions))
    in_train = np.zeros(n_cells, dtype=bool)
    np.logical_or.at(in_train, cell_index, choice[unit_index] == train)
    for cell in np.flatnonzero(~in_train):
        if in_train[cell]:
            continue
        candidates = unit_index[cell_index == cell]
        smallest = candidates[np.argmin(size[candidates])]
        choice[smallest] = train
        in_train[cell_index[unit_index == smallest]] = True
    return choice


def capture_groups(table: pd.DataFrame, radius_m: float = 50.0) -> pd.Series:
    """A capture-group id (text) for each image: images one capture has in common.

    Images taken together share light, weather, season, camera and car, and a model can
    learn those instead of the place; a fair split keeps them out of each other's splits.
    By the row's ``source``:

    * ``streetview``: panoramas with the same capture ``date`` (month) that lie within
      ``radius_m`` metres of each other, chained (one drive along a street); an unknown date
      links to any date. Positions are the panoramas' (``lat``, ``lng``, degrees).
    * ``mapillary``: the ``sequence`` (one upload of one drive or walk); an image without
      one is a group of its own.
    * ``synthetic`` (or no source but a ``session`` column): the (cell, ``day``,
      ``session``) the image was rendered in.
    * anything else: each image alone.

    Returns a Series of ids on ``table``'s index, named ``capture_group``, for
    ``split_dataset(table.assign(capture_group=...), groups="capture_group")``.

    Why 50 m by default: on the report's 42,570 places, with one capture month per district
    of about 5 km, chaining at 100 m already joins up to 300 images of a town centre (and,
    with 1 km blocks, 4,190 images into one unit of the split); at 50 m the largest group
    holds 113 images (918 with 1 km blocks).
    """
    n = len(table)
    position = np.arange(n)
    ids = np.array([f"image:{i}" for i in position], dtype=object)
    if "source" in table.columns:
        source = table["source"].astype(str).to_numpy()
    else:
        source = np.full(n, "synthetic" if "session" in table.columns else "", dtype=object)

    def text(column: str, rows: np.ndarray) -> np.ndarray:
        if column not in table.columns:
            return np.full(len(rows), "", dtype=object)
        values = table[column].iloc[rows]
        return values.where(values.notna(), "").astype(str).str.strip().to_numpy()

    street = np.flatnonzero(source == "streetview")
    if len(street):
        xy = geo.metric_xy_km(table["lat"].iloc[street], table["lng"].iloc[street])
        pairs = cKDTree(xy).query_pairs(radius_m / 1000.0, output_type="ndarray")
        dates = text("date", street)
        first, second = dates[pairs[:, 0]], dates[pairs[:, 1]]
        linked = pairs[(first == second) | (first == "") | (second == "")]
        graph = coo_matrix((np.ones(len(linked)), (linked[:, 0], linked[:, 1])), shape=(len(street),) * 2)
        _, component = connected_components(graph, directed=False)
        ids[street] = [f"streetview:{c}" for c in pd.factorize(component)[0]]
    mapillary = np.flatnonzero(source == "mapillary")
    if len(mapillary):
        sequences = text("sequence", mapillary)
        ids[mapillary] = np.where(sequences != "", "mapillary:" + sequences.astype(object), ids[mapillary])
    synthetic_rows = np.flatnonzero(source == "synthetic")
    if len(synthetic_rows) and "session" in table.columns:
        day = text("day", synthetic_rows)
        parts = [text("cell", synthetic_rows), np.where(day == "", "0", day), text("session", synthetic_rows)]
        ids[synthetic_rows] = ["synthetic:" + ":".join(p) for p in zip(*parts, strict=True)]
    return pd.Series(ids, index=table.index, name="capture_group")


def open_rgb(path: Path) -> Image.Image | None:
    """The image at ``path`` fully decoded as RGB, or None if it is missing, truncated or corrupt."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() decodes the whole file
    except (OSError, ValueError, SyntaxError):  # what PIL raises for missing or broken files
        return None


def readable_rows(table: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, int]:
    """The rows of ``table`` whose image file opens and decodes; and how many did not."""
    good = [open_rgb(Path(root) / relative) is not None for relative in table["image_path"]]
    return table.loc[good], len(table) - sum(good)


def load_images(table: pd.DataFrame, folder: Path, size: int) -> tuple[np.ndarray, pd.DataFrame, int]:
    """Read the images of ``table`` into an array (n, size, size, 3) uint8.

    Images are resized to ``size`` if needed. Unreadable or corrupt files are skipped and
    counted, never fatal. Returns (images, the rows that were read, number skipped).
    """
    images, kept = [], []
    for row, relative in enumerate(table["image_path"]):
        picture = open_rgb(Path(folder) / relative)
        if picture is None:
            continue
        if picture.size != (size, size):
            picture = picture.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(picture))
        kept.append(row)
    array = np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    return array, table.iloc[kept].reset_index(drop=True), len(table) - len(kept)


def render_like(
    dataset: pd.DataFrame,
    root: Path,
    subfolder: str,
    geography: dict,
    *,
    size: int,
    session_leak: float,
    day: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Re-render the locations of ``dataset`` (same rows, same splits) with other sessions.

    For controlled experiments: only the capture sessions change (``session_leak``,
    ``day``). Images go to ``root/subfolder``; the returned table's paths are relative to ``root``.
    """
    rendered = render_synthetic(
        dataset[["lat", "lng", "cell"]].reset_index(drop=True),
        Path(root) / subfolder,
        geography,
        size=size,
        session_leak=session_leak,
        day=day,
        seed=seed,
    )
    return dataset.reset_index(drop=True).assign(
        image_path=subfolder + "/" + rendered["image_path"], session=rendered["session"], day=day
    )


def synthetic_sky_masks(
    rows: pd.DataFrame, root: Path, geography: dict, size: int, seed: int = 0
) -> np.ndarray:
    """The sky mask (size, size) of each synthetic image in ``rows``, by rendering it again.

    Rendering is deterministic, so the re-rendered image must equal the file on disk; this
    is checked, so a mask can never belong to a different picture.
    """
    masks = np.empty((len(rows), size, size), dtype=bool)
    features = synthetic.scene_features(rows["lat"], rows["lng"], geography, seed=seed)
    for day in rows["day"].unique():
        part = np.flatnonzero(rows["day"].to_numpy() == day)
        pictures, masks[part] = synthetic.render_locations(
            rows.iloc[part],
            features.iloc[part],
            rows["session"].to_numpy()[part],
            size,
            day=int(day),
            seed=seed,
            sky_masks=True,
        )
        stored, _, _ = load_images(rows.iloc[part], root, size)
        if not np.array_equal(stored, pictures):
            raise ValueError("The images on disk differ from their re-rendering; render the image set again.")
    return masks
