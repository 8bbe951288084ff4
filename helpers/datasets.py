"""The workbook's public inputs: download with a checksum, then load as tidy tables.

Every input is a file at a pinned URL with a known SHA-256. :func:`fetch` puts it in
``data/`` (see ``helpers.config.data_dir``) and checks the hash; a file already there with
the right hash is never downloaded again. The loaders return GeoDataFrames in EPSG:4326
(lng as x, lat as y, as GeoJSON has them) with plain column names.

Samples of those tables are drawn here too: :func:`sample_per_area` (N rows per municipality
or region, shared out over postcodes) and :func:`sample_per_cell` (the report's N per geocell).

Run ``python -m helpers.datasets`` (or ``make data``) to fetch everything at once.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import sys
import warnings
import zlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pooch
import shapely

from helpers import config, geo, safe_paths

log = logging.getLogger(__name__)

_DAGI = "https://raw.githubusercontent.com/Neogeografen/dagi/a1c1563a6484a07ae937caed043ab839d2d6b2d6/geojson"
_REPORT = (
    "https://raw.githubusercontent.com/csiztom/dl-geolocation-vit/ca4f81798d0e303f662e8cb944f75fae55f62261"
)

DATA_FILES: dict[str, dict[str, str]] = {
    "dagi_kommuner.geojson": {
        "url": f"{_DAGI}/kommuner.geojson",
        "sha256": "78003a638315d0c359807371f09f0a680c8077f26e30797315b9ae5436560b7c",
        "what": "Danish municipality boundaries (DAGI 1:500,000, Geodatastyrelsen)",
    },
    "dagi_regioner.geojson": {
        "url": f"{_DAGI}/regioner.geojson",
        "sha256": "922fe86aaf9e53e578317ab6bb25cb92a49d22c1abb922d747491356e1be0c0f",
        "what": "the five Danish regions (DAGI 1:500,000)",
    },
    "dagi_postnumre.geojson": {
        "url": f"{_DAGI}/postnumre.geojson",
        "sha256": "2784f96f1d23d035225b7fc384b42130110b423eda03c512f65085aed45620ad",
        "what": "Danish postcode areas (DAGI 1:500,000)",
    },
    "report_3-distance-matrix.ipynb": {
        "url": f"{_REPORT}/3-distance-matrix.ipynb",
        "sha256": "dc8c0528a0b15ebe4e965df0ad2c03a482cabd0a7929fe1bac07821a323a26ec",
        "what": "the report's notebook whose saved output lists its 42,570 image locations",
    },
}


class DataError(RuntimeError):
    """An input file is missing, corrupt or malformed; the message says what to do."""


sha256_of = safe_paths.file_sha256  # hex SHA-256 of a file, read 1 MB at a time


def fetch(name: str, directory: Path | None = None, url: str | None = None) -> Path:
    """Return the local path of input ``name``, downloading it first if needed.

    ``directory`` defaults to ``data/``; ``url`` overrides the registry's URL (a mirror).
    A present file with the right SHA-256 is used as is. A present file with a wrong hash
    is never used and never deleted: you get an error telling you to replace it. A download
    is written to a temporary file and only moved into place once its hash is right.
    """
    if name not in DATA_FILES:
        raise DataError(f"Unknown input {name!r}; the known inputs are {sorted(DATA_FILES)}.")
    entry = DATA_FILES[name]
    directory = Path(directory) if directory is not None else config.data_dir()
    url = url or entry["url"]
    target = directory / name

    if target.exists():
        actual = sha256_of(target)
        if actual == entry["sha256"]:
            return target
        raise DataError(
            f"{target} is not the expected file: its SHA-256 is {actual}, expected "
            f"{entry['sha256']}. It is corrupt or a different version, so it was not used. "
            f"Delete it and run `make data` to download it again from {url}."
        )

    directory.mkdir(parents=True, exist_ok=True)
    try:
        pooch.retrieve(
            url,
            known_hash=f"sha256:{entry['sha256']}",
            fname=name,
            path=directory,
            downloader=pooch.HTTPDownloader(timeout=60),
        )
    except ValueError as error:  # pooch's hash mismatch; the temporary file is already gone
        raise DataError(
            f"The download of {name} from {url} did not match its SHA-256 "
            f"({entry['sha256']}) and was discarded. The server sent a different file; "
            "try again later, or fetch it by hand and check it with `sha256sum`."
        ) from error
    except Exception as error:  # requests' connection errors, timeouts, HTTP errors
        raise DataError(
            f"Could not download {name} ({entry['what']}).\n"
            f"  URL:   {url}\n"
            f"  error: {type(error).__name__}: {error}\n"
            f"If this machine is offline, download the file elsewhere and put it at {target} "
            f"(expected SHA-256 {entry['sha256']})."
        ) from error
    return target


def fetch_all(directory: Path | None = None) -> list[Path]:
    """Fetch every input in :data:`DATA_FILES`; returns their paths."""
    return [fetch(name, directory) for name in DATA_FILES]


def _read_boundaries(name: str, columns: dict[str, str], dissolve_by: str) -> gpd.GeoDataFrame:
    """Read a DAGI GeoJSON, keep and rename ``columns``, drop Z, one row per ``dissolve_by``."""
    frame = gpd.read_file(fetch(name))
    frame = frame.rename(columns=columns)[[*columns.values(), "geometry"]]
    # DAGI stores a dummy third coordinate (-999); CRS84 and EPSG:4326 share lng/lat values.
    frame = frame.set_geometry(shapely.force_2d(frame.geometry.values)).set_crs(4326, allow_override=True)
    frame = frame.dissolve(by=dissolve_by, aggfunc="first", as_index=False)
    frame = frame[[*columns.values(), "geometry"]]
    return frame.sort_values(dissolve_by).reset_index(drop=True)


def load_municipalities() -> gpd.GeoDataFrame:
    """Danish municipalities: columns ``code`` (e.g. "0101"), ``name``, ``geometry``.

    One row per municipality (98, plus Christiansø, which belongs to none), polygons merged
    into MultiPolygons, EPSG:4326.
    """
    return _read_boundaries("dagi_kommuner.geojson", {"KOMKODE": "code", "KOMNAVN": "name"}, "code")


def load_regions() -> gpd.GeoDataFrame:
    """The five Danish regions: columns ``code``, ``name``, ``geometry`` (EPSG:4326)."""
    return _read_boundaries("dagi_regioner.geojson", {"REGIONKODE": "code", "REGIONNAVN": "name"}, "code")


def load_postcodes() -> gpd.GeoDataFrame:
    """Postcode areas: columns ``postcode`` (text, e.g. "8000"), ``name``, ``geometry``."""
    return _read_boundaries(
        "dagi_postnumre.geojson", {"POSTNR_TXT": "postcode", "POSTBYNAVN": "name"}, "postcode"
    )


def _report_output(code_cell: int) -> dict:
    """The dict printed by code cell ``code_cell`` (1-based) of the report's notebook."""
    path = fetch("report_3-distance-matrix.ipynb")
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    results = [o for o in cells[code_cell - 1].get("outputs", []) if o.get("output_type") == "execute_result"]
    if not results:
        raise DataError(f"{path}: code cell {code_cell} has no saved output to read locations from.")
    return ast.literal_eval("".join(results[0]["data"]["text/plain"]))


# The report wrote municipality names in full ("Københavns Kommune"); DAGI writes them short.
_REPORT_SPELLING = {"Københavns": "København", "Bornholms": "Bornholm", "Høje-Taastrup": "Høje Taastrup"}


def report_municipality(cell_names: pd.Series) -> pd.Series:
    """The municipality of each report cell name, spelt as in DAGI (``load_municipalities``).

    "Aarhus Kommune0110" -> "Aarhus": drop the K-means split digits and "Kommune".
    """
    names = cell_names.str.replace(r"[01]*$", "", regex=True).str.strip()
    names = names.str.replace(r" (Regions)?[Kk]ommune$", "", regex=True)
    return names.replace(_REPORT_SPELLING)


def load_report_locations() -> gpd.GeoDataFrame:
    """The report's 42,570 image locations (129 cells x 330), parsed from its notebook.

    Columns: ``lat``, ``lng`` (degrees), ``report_cell`` (the report's cell name: a
    municipality name plus K-means split digits, e.g. "Aarhus Kommune0110"),
    ``report_municipality`` (that municipality in DAGI spelling), ``geometry``.
    """
    by_cell = _report_output(3)  # code cell 3 prints {cell: [[lat, lng], ...]}
    cells = np.repeat(list(by_cell), [len(v) for v in by_cell.values()])
    latlng = np.array([pair for pairs in by_cell.values() for pair in pairs], dtype=float)
    frame = pd.DataFrame({"report_cell": cells})
    frame["report_municipality"] = report_municipality(frame["report_cell"])
    points = geo.points_from_latlng(latlng[:, 0], latlng[:, 1], frame)
    return points[["lat", "lng", "report_cell", "report_municipality", "geometry"]]


def load_report_centroids() -> pd.DataFrame:
    """The report's 129 cell centroids: columns ``report_cell``, ``lat``, ``lng`` (degrees)."""
    by_cell = _report_output(4)  # code cell 4 prints {cell: [lat, lng]}
    return pd.DataFrame(
        [(cell, lat, lng) for cell, (lat, lng) in by_cell.items()], columns=["report_cell", "lat", "lng"]
    )


# --- bring your own OpenAddresses file ---------------------------------------------------

_OA_FIELDS = ["number", "street", "unit", "city", "district", "region", "postcode", "id", "hash"]
ADDRESSES_SETTING = "addresses_file"  # the profile setting that names the user's own file
_PIECE_CHARS = 1 << 20  # a FeatureCollection is read 1 MiB of text at a time
_MAX_FEATURE_CHARS = 16 << 20  # a "feature" longer than this is a broken file, not an address
_SEPARATORS = " \t\r\n\x1e"  # whitespace, and the record separator of GeoJSON text sequences


def _open_text(path: Path):
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    return opener(path, "rt", encoding="utf-8-sig")  # -sig: a byte-order mark is skipped


def _collection_features(handle, path: Path):
    """The features of a GeoJSON FeatureCollection, decoded one at a time from ``handle``.

    Only one feature and one piece of text are held at once, however large the file. If the
    file turns out to hold a first Feature rather than a FeatureCollection (GeoJSON lines),
    yields a single None and stops.
    """
    decoder = json.JSONDecoder()
    state = {"text": "", "at": 0, "end": False}

    def read_more() -> bool:
        piece = handle.read(_PIECE_CHARS)
        if not piece:
            state["end"] = True
            return False
        state["text"], state["at"] = state["text"][state["at"] :] + piece, 0
        return True

    def peek() -> str:
        while True:
            text, at = state["text"], state["at"]
            while at < len(text) and text[at] in _SEPARATORS:
                at += 1
            state["at"] = at
            if at < len(text) or not read_more():
                return text[at] if at < len(text) else ""

    def expect(char: str, where: str) -> None:
        found = peek()
        if found != char:
            raise DataError(
                f"{path}: not a GeoJSON FeatureCollection: expected {char!r} {where}, "
                f"found {found or 'the end of the file'!r}."
            )
        state["at"] += 1

    def value(what: str):
        peek()
        while True:
            try:
                item, end = decoder.raw_decode(state["text"], state["at"])
                if end < len(state["text"]) or state["end"]:  # a number could go on in the next piece
                    state["at"] = end
                    return item
            except json.JSONDecodeError as error:
                if state["end"] or len(state["text"]) - state["at"] > _MAX_FEATURE_CHARS:
                    raise DataError(f"{path}: {what} is not valid JSON ({error.msg}).") from None
            read_more()

    expect("{", "at the start")
    while True:
        char = peek()
        if char == "}":
            yield None  # a whole object without "features": a Feature, so GeoJSON lines
            return
        if char == ",":
            state["at"] += 1
            continue
        key = value("a key of the top-level object")
        expect(":", f"after {key!r}")
        if key != "features":
            value(f"the value of {key!r}")  # "type", "name", "crs", "bbox": not needed
            continue
        expect("[", 'after "features":')
        number = 0
        while True:
            char = peek()
            if char == "]":
                return
            if char == ",":
                state["at"] += 1
                continue
            if not char:
                raise DataError(f"{path}: the file ends inside its list of features (after {number}).")
            number += 1
            yield value(f"feature {number}")


def _features(path: Path):
    """Every feature of a GeoJSON file: a FeatureCollection, or one Feature per line."""
    with _open_text(path) as handle:
        features = _collection_features(handle, path)
        first = next(features, None)
        if first is not None:
            yield first
            yield from features
            return
    with _open_text(path) as handle:  # GeoJSON lines: one feature per line
        for line_number, line in enumerate(handle, start=1):
            line = line.strip(_SEPARATORS)
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from None


def _geojson_chunks(path: Path, fields: list[str], chunk_rows: int):
    """The features of ``path`` as tables of at most ``chunk_rows`` rows: lng, lat, ``fields``."""
    rows = []
    for feature in _features(path):
        if not isinstance(feature, dict):
            continue
        coordinates = (feature.get("geometry") or {}).get("coordinates")
        if not isinstance(coordinates, list) or len(coordinates) < 2:
            coordinates = [None, None]
        properties = {str(k).lower(): v for k, v in (feature.get("properties") or {}).items()}
        rows.append((coordinates[0], coordinates[1], *(properties.get(k) for k in fields)))
        if len(rows) == chunk_rows:
            yield pd.DataFrame(rows, columns=["lng", "lat", *fields])
            rows = []
    if rows:
        yield pd.DataFrame(rows, columns=["lng", "lat", *fields])


def _csv_chunks(path: Path, fields: list[str], chunk_rows: int):
    """The rows of an OpenAddresses CSV (LON, LAT, ...) as tables of at most ``chunk_rows`` rows."""
    reader = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], chunksize=chunk_rows)
    with reader:
        for chunk in reader:
            chunk.columns = [str(c).strip().lower() for c in chunk.columns]
            if not {"lon", "lat"} <= set(chunk.columns):
                found = list(chunk.columns)
                raise DataError(f"{path}: an OpenAddresses CSV needs the columns LON and LAT; found {found}.")
            chunk = chunk.rename(columns={"lon": "lng"})
            yield chunk.reindex(columns=["lng", "lat", *fields])


def _scan_lines(path: Path) -> tuple[int, tuple[int, int, int] | None, str | None]:
    """Read ``path`` (decompressed if .gz) line by line as bytes, to say where reading broke.

    Returns (whole lines read, the first line that is not UTF-8 as (line, byte offset in that
    line, the byte) or None, the compression error met or None).
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    lines, bad_text = 0, None
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    if bad_text is None:
                        bad_text = (number, error.start, line[error.start])
                if line.endswith(b"\n"):
                    lines = number
    except (EOFError, OSError, zlib.error) as error:
        return lines, bad_text, f"{type(error).__name__}: {error}"
    return lines, bad_text, None


def _reading_error(path: Path, error: Exception) -> DataError:
    """A DataError for ``error`` met while reading the addresses file ``path``: it names the
    file, the line (or feature) where reading broke, and what to do."""
    if isinstance(error, pd.errors.EmptyDataError):
        return DataError(
            f"{path}: the file is empty (or has no header line). An OpenAddresses CSV starts with a "
            "header such as LON,LAT,NUMBER,STREET,...,POSTCODE; download the extract again."
        )
    if isinstance(error, pd.errors.ParserError):
        return DataError(
            f"{path}: a row does not fit the header ({str(error).strip()}). Every row needs as many "
            "fields as the header; fix that line (a comma inside an unquoted field?) or download again."
        )
    lines, bad_text, broken = _scan_lines(path)
    if broken is not None:
        return DataError(
            f"{path}: the compressed file is cut short or corrupt after line {lines} ({broken}). "
            "Download it again, or read it uncompressed."
        )
    if bad_text is not None:
        line, offset, byte = bad_text
        return DataError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{byte:02x} at position {offset} of the line). "
            "OpenAddresses files are UTF-8: convert it (e.g. iconv -f latin1 -t utf-8) and try again."
        )
    return DataError(f"{path}: could not be read after line {lines} ({type(error).__name__}: {error}).")


def _explained_chunks(path: Path, chunks):
    """``chunks`` with every parse, encoding or compression error turned into a DataError."""
    chunks = iter(chunks)
    while True:
        failure = None
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except DataError:
            raise
        except (UnicodeError, EOFError, OSError, zlib.error, ValueError, pd.errors.ParserError) as error:
            failure = _reading_error(path, error)
        if failure is not None:
            raise failure  # outside the except block: the message says it all
        yield chunk


def read_openaddresses(
    path, swap_coordinates: bool = False, fields=_OA_FIELDS, chunk_rows: int = 200_000
) -> gpd.GeoDataFrame:
    """Read an OpenAddresses extract for Denmark into points: ``lat``, ``lng``, ``postcode``, ...

    Accepts the OpenAddresses layouts, each optionally gzipped: the CSV (columns LON, LAT,
    NUMBER, STREET, ..., POSTCODE), GeoJSON lines (one Point feature per line), and a GeoJSON
    FeatureCollection. The file is read ``chunk_rows`` addresses at a time, a
    FeatureCollection one feature at a time, so a country-size file (Denmark has about 2.5
    million addresses) never needs more memory than the table it gives; ``fields`` (lowercase
    property names) are the columns kept besides the coordinates.

    Rows without usable coordinates are dropped with a warning; points outside Denmark are
    dropped with a warning; repeated coordinates (the flats of one building share its point)
    are dropped, keeping the first. If most points only fall in Denmark with lat and lng
    exchanged, you get an error: pass ``swap_coordinates=True`` after checking. The counts
    are in ``result.attrs["openaddresses"]``: rows, no_coordinates, outside, repeated, kept.
    A file that cannot be read (empty, a ragged row, not UTF-8, a cut-off .gz) raises a
    DataError naming the file and the line or feature where it broke.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"No OpenAddresses file at {path}. Download the Denmark extract and give its path.")
    fields = [str(f).lower() for f in fields]
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        chunks = _csv_chunks(path, fields, chunk_rows)
    elif name.endswith((".geojson", ".geojsonl", ".geojsonseq", ".jsonl", ".json")):
        chunks = _geojson_chunks(path, fields, chunk_rows)
    else:
        raise DataError(f"{path}: expected an OpenAddresses .csv or .geojson(l) file (optionally .gz).")

    counts = {"rows": 0, "no_coordinates": 0, "outside": 0, "repeated": 0}
    swapped_inside, parts = 0, []
    for chunk in _explained_chunks(path, chunks):
        lat = pd.to_numeric(chunk["lat"], errors="coerce").to_numpy(dtype=float)
        lng = pd.to_numeric(chunk["lng"], errors="coerce").to_numpy(dtype=float)
        if swap_coordinates:
            lat, lng = lng, lat
        usable = np.isfinite(lat) & np.isfinite(lng)
        inside = usable & geo.in_denmark_box(lat, lng)
        swapped_inside += int((usable & geo.in_denmark_box(lng, lat)).sum())
        counts["rows"] += len(chunk)
        counts["no_coordinates"] += int((~usable).sum())
        counts["outside"] += int((usable & ~inside).sum())
        # the flats of one building share its point: one address per point (to 1 cm) is kept,
        # here within the chunk, below across chunks
        rows = np.flatnonzero(inside)
        key = np.round(lat[rows] * 1e7).astype(np.int64) * 10**10 + np.round(lng[rows] * 1e7).astype(np.int64)
        first = ~pd.Series(key).duplicated().to_numpy()
        counts["repeated"] += int((~first).sum())
        rows = rows[first]
        part = chunk.iloc[rows][fields].reset_index(drop=True)
        parts.append(part.assign(lat=lat[rows], lng=lng[rows], point_key=key[first]))

    usable_rows = counts["rows"] - counts["no_coordinates"]
    if not usable_rows:
        raise DataError(f"{path}: none of its {counts['rows']} rows has numeric coordinates.")
    if counts["no_coordinates"]:
        warnings.warn(
            f"{path}: dropped {counts['no_coordinates']} of {counts['rows']} rows with missing or "
            "non-numeric coordinates.",
            stacklevel=2,
        )
    share_in = (usable_rows - counts["outside"]) / usable_rows
    share_swapped = swapped_inside / usable_rows
    if share_in < 0.5 and share_swapped > 0.5:
        raise DataError(
            f"{path}: only {share_in:.0%} of the points fall in Denmark as given, but "
            f"{share_swapped:.0%} do with latitude and longitude exchanged. The coordinate "
            "columns look swapped (OpenAddresses puts LON before LAT). Fix the file, or call "
            "read_openaddresses(path, swap_coordinates=True)."
        )
    if counts["outside"] == usable_rows:
        raise DataError(
            f"{path}: none of the points lies in Denmark (lat {geo.DENMARK_LAT}, lng {geo.DENMARK_LNG})."
        )
    if counts["outside"]:
        warnings.warn(
            f"{path}: dropped {counts['outside']} of {usable_rows} points outside Denmark.", stacklevel=2
        )
    table = pd.concat(parts, ignore_index=True)
    again = table.pop("point_key").duplicated().to_numpy()
    if again.any():
        counts["repeated"] += int(again.sum())
        table = table.loc[~again].reset_index(drop=True)
    counts["kept"] = len(table)
    if counts["repeated"]:
        log.info("%s: dropped %d addresses at a point already taken (flats)", path, counts["repeated"])
    points = geo.points_from_latlng(table.pop("lat"), table.pop("lng"), table)
    points.attrs["openaddresses"] = counts
    return points


def addresses_path(profile) -> Path | None:
    """The user's own OpenAddresses file named by the profile setting ``addresses_file``, or None.

    A relative path is taken inside ``data/`` (``helpers.config.data_dir``); ``~`` is expanded.
    """
    if not isinstance(profile, dict):
        profile = config.get_profile(profile)
    setting = profile.get(ADDRESSES_SETTING)
    if not setting:
        return None
    path = Path(setting).expanduser()
    return path if path.is_absolute() else config.data_dir() / path


def load_locations(profile) -> gpd.GeoDataFrame:
    """The places notebooks 01 to 03 start from, as the profile says.

    Without an ``addresses_file`` setting: the report's 42,570 locations
    (:func:`load_report_locations`). With one: every address of that OpenAddresses file
    (:func:`read_openaddresses`: Denmark only, one per point), which the report sampled its
    locations from; columns ``lat``, ``lng`` (degrees), ``postcode`` and the other address
    fields, for sampling in proportion to postcodes with ``sample_per_area(...,
    subarea="postcode")``. ``profile`` is a profile dictionary or name.
    """
    path = addresses_path(profile)
    if path is None:
        return load_report_locations()
    if not path.exists():
        raise DataError(
            f"The profile's {ADDRESSES_SETTING} is {path}, but there is no file there. Download the "
            "Denmark extract from openaddresses.io (CSV or GeoJSON, optionally .gz), or set "
            f"{ADDRESSES_SETTING}=None to use the report's locations."
        )
    return read_openaddresses(path)


def largest_remainder(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integer quotas proportional to ``counts`` (Hamilton's method)."""
    exact = counts * total / counts.sum()
    quotas = np.floor(exact).astype(int)
    leftover = total - quotas.sum()
    # stable sort: ties go to the earlier sub-area, so the result is deterministic
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftover]] += 1
    return quotas


def sample_per_area(
    points: pd.DataFrame,
    area: str,
    n_per_area: int,
    subarea: str | None = None,
    seed: int = 0,
    warn: bool = True,
) -> pd.DataFrame:
    """Draw ``n_per_area`` rows from each value of column ``area``, without replacement.

    With ``subarea`` (e.g. "postcode"), each area's sample is split across its sub-areas in
    proportion to how many rows each holds (largest-remainder rounding), so the sample keeps
    the area's own geography: a town with 30 % of a municipality's addresses gets 30 % of its
    sample. An area with fewer rows than ``n_per_area`` gives all it has, with a warning
    (``warn=False``: none, for a caller that reports them itself). Either way the result's
    ``attrs["short_areas"]`` maps each such area to the number of rows it had.
    Deterministic for a given ``seed``. Rows keep their original index.
    """
    if n_per_area < 1:
        raise ValueError(f"n_per_area must be at least 1, got {n_per_area}.")
    for column in [area] + ([subarea] if subarea else []):
        if column not in points.columns:
            raise KeyError(f"No column {column!r}; the table has {list(points.columns)}.")
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    short: dict = {}
    for area_value, group in points.groupby(area, sort=True):
        n = min(n_per_area, len(group))
        if n < n_per_area:
            short[area_value] = len(group)
        if subarea is None:
            chosen.append(rng.choice(group.index.to_numpy(), size=n, replace=False))
            continue
        parts = group.groupby(subarea, sort=True, dropna=False).groups
        sizes = np.array([len(ix) for ix in parts.values()])
        for index, quota in zip(parts.values(), largest_remainder(sizes, n), strict=True):
            if quota:
                chosen.append(rng.choice(np.asarray(index), size=quota, replace=False))
    if short and warn:
        named = [f"{value} ({count})" for value, count in short.items()]
        warnings.warn(
            f"{len(short)} areas have fewer than {n_per_area} rows and were taken whole: "
            + ", ".join(named[:10])
            + (" ..." if len(named) > 10 else ""),
            stacklevel=2,
        )
    sample = points.loc[np.concatenate(chosen)]
    sample.attrs["short_areas"] = short
    return sample


def sample_per_cell(
    points: pd.DataFrame,
    labels: pd.Series,
    per_cell: int,
    seed: int = 0,
    subarea: str | None = None,
    warn: bool = True,
) -> pd.DataFrame:
    """The report's "N per geocell": ``per_cell`` random points from each cell, with a ``cell`` column.

    ``labels`` are the geocells of ``geo.make_geocells`` (a cell number per point, indexed like
    ``points``); only the labelled points are drawn from. With ``subarea`` (a column such as
    "postcode"), each cell's points are shared out over its sub-areas in proportion to their
    addresses, as the report sampled OpenAddresses (:func:`sample_per_area`). A cell with fewer
    points is taken whole: ``attrs["short_areas"]`` maps it to its count (a warning names it
    too, unless ``warn=False``).
    """
    table = points.loc[labels.index].assign(cell=labels)
    return sample_per_area(table, "cell", per_cell, subarea=subarea, seed=seed, warn=warn)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m helpers.datasets [NAME ...]`` fetches the named inputs (all by default)."""
    names = (argv if argv is not None else sys.argv[1:]) or list(DATA_FILES)
    try:
        for name in names:
            path = fetch(name)
            print(f"ok  {path}  ({DATA_FILES[name]['what']})")
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
