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
            collect.save_image(Image.fromarray(image), folder / paths[index])
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
    table = pd.read_csv(path)
    if "status" in table.columns:
        table = table[table["status"] == "ok"].copy()
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
) -> pd.DataFrame:
    """``table`` with a ``split`` column, stratified by cell: each cell is split in ``fractions``.

    Default 70 % train, 15 % validation, 15 % test (the report used 85/15 train/validation
    and no test set). With ``block_km``, whole squares of that size are assigned to one split
    (a spatially blocked split): no test image has a training image from the same street.
    """
    fractions = fractions or {"train": 0.70, "val": 0.15, "test": 0.15}
    if abs(sum(fractions.values()) - 1) > 1e-9:
        raise ValueError(f"fractions must add up to 1, got {fractions}.")
    rng = np.random.default_rng(seed)
    names = list(fractions)
    split = np.empty(len(table), dtype=object)
    if block_km:
        square = np.floor(geo.metric_xy_km(table["lat"], table["lng"]) / block_km).astype(int)
        blocks = np.array([f"{x}_{y}" for x, y in square])
    for _, rows in table.groupby("cell").indices.items():
        rows = rng.permutation(rows)
        if not block_km:
            # exact quotas per cell; ties in rounding go to a random split, so that small
            # cells still feed every split across the data set
            order = rng.permutation(len(names))
            quotas = np.empty(len(names), dtype=int)
            quotas[order] = largest_remainder(np.array([fractions[names[i]] for i in order]), len(rows))
            split[rows] = np.repeat(names, quotas)
            continue
        targets = np.cumsum([fractions[n] for n in names]) * len(rows)
        taken = 0
        for block in rng.permutation(np.unique(blocks[rows])):
            unit = rows[blocks[rows] == block]
            # the first split whose running target is not yet met
            split[unit] = names[min(int(np.searchsorted(targets, taken + len(unit) / 2)), len(names) - 1)]
            taken += len(unit)
    return table.assign(split=split)


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
