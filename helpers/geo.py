"""Geometry on the globe and on the map of Denmark.

Conventions used throughout the workbook:

* coordinates are WGS84 degrees, always in the order (lat, lng) in our own function
  signatures and tables; shapely and GeoJSON store (x=lng, y=lat), so a shapely ``Point``
  is built as ``Point(lng, lat)``;
* distances are kilometres;
* metric work (distances to polygons, areas) happens in ETRS89 / UTM zone 32N (EPSG:25832),
  the projection Danish agencies publish their maps in.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Polygon
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from helpers.config import atomic_target

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)
METRIC_CRS = "EPSG:25832"

# A generous box around Denmark, Bornholm and Ertholmene included (degrees).
DENMARK_LAT = (54.4, 57.9)
DENMARK_LNG = (7.9, 15.3)

log = logging.getLogger(__name__)


def haversine_km(lat1, lng1, lat2, lng2):
    """Great-circle distance in km between (lat1, lng1) and (lat2, lng2), all in degrees.

    Arguments broadcast like NumPy arrays, so one point against many, or two equal-length
    arrays pairwise, both work. The Earth is a sphere of radius ``EARTH_RADIUS_KM``.
    """
    lat1, lng1, lat2, lng2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lng1, lat2, lng2))
    half_dlat = (lat2 - lat1) / 2
    half_dlng = (lng2 - lng1) / 2
    a = np.sin(half_dlat) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(half_dlng) ** 2
    # clip guards against a ≥ 1 by rounding for antipodal points
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def pairwise_haversine_km(points_a, points_b=None):
    """Matrix of great-circle distances in km between two lists of (lat, lng) points.

    ``points_a`` has shape (n, 2) and ``points_b`` shape (m, 2), both (lat, lng) in degrees;
    the result has shape (n, m). With ``points_b`` omitted, the distances within ``points_a``.
    """
    a = np.asarray(points_a, dtype=float).reshape(-1, 2)
    b = a if points_b is None else np.asarray(points_b, dtype=float).reshape(-1, 2)
    return haversine_km(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])


def in_denmark_box(lat, lng):
    """Boolean array: is (lat, lng) inside the rough bounding box of Denmark?"""
    lat, lng = np.asarray(lat, dtype=float), np.asarray(lng, dtype=float)
    return (
        (lat >= DENMARK_LAT[0]) & (lat <= DENMARK_LAT[1]) & (lng >= DENMARK_LNG[0]) & (lng <= DENMARK_LNG[1])
    )


def points_from_latlng(lat, lng, data=None) -> gpd.GeoDataFrame:
    """A GeoDataFrame of points (EPSG:4326) with columns ``lat`` and ``lng`` in degrees.

    ``data``, if given, is a DataFrame whose other columns are kept. Missing or non-finite
    coordinates are an error: drop or fix those rows first.
    """
    lat = np.asarray(lat, dtype=float)
    lng = np.asarray(lng, dtype=float)
    bad = ~(np.isfinite(lat) & np.isfinite(lng))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {len(lat)} points have a missing or non-numeric lat/lng "
            f"(first at row {int(np.flatnonzero(bad)[0])}). Drop those rows, e.g. "
            "`df.dropna(subset=['lat', 'lng'])`, before building points."
        )
    frame = pd.DataFrame(index=pd.RangeIndex(len(lat))) if data is None else data.copy()
    frame["lat"] = lat
    frame["lng"] = lng
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(lng, lat), crs="EPSG:4326")


def assign_area(
    points: gpd.GeoDataFrame,
    areas: gpd.GeoDataFrame,
    columns: list[str],
    max_offshore_km: float = 1.0,
) -> gpd.GeoDataFrame:
    """Give every point the ``columns`` of the polygon in ``areas`` that contains it.

    The boundaries are generalised (DAGI at 1:500,000), so some real addresses on the coast
    fall just outside every polygon: those get the nearest polygon if it is within
    ``max_offshore_km`` (measured in EPSG:25832). Points farther away are not in Denmark;
    they are dropped and counted. Where generalised polygons overlap, the first one wins.

    Returns a copy of the kept points with ``columns`` added plus ``offshore_km`` (0 inside a
    polygon). ``result.attrs["assignment"]`` holds the counts: inside, nearest, dropped.
    """
    missing = [c for c in columns if c not in areas.columns]
    if missing:
        raise KeyError(f"`areas` has no column(s) {missing}; it has {list(areas.columns)}.")
    lat, lng = points.geometry.y.to_numpy(), points.geometry.x.to_numpy()
    share_in, share_swapped = in_denmark_box(lat, lng).mean(), in_denmark_box(lng, lat).mean()
    if share_in < 0.5 and share_swapped > 0.5:
        raise ValueError(
            f"Only {share_in:.0%} of the points lie in Denmark, but {share_swapped:.0%} would with "
            "latitude and longitude exchanged: the coordinates look swapped. Build the points with "
            "points_from_latlng(lat, lng), latitude first."
        )
    areas = areas[columns + ["geometry"]].to_crs(points.crs)
    inside = gpd.sjoin(points, areas, how="left", predicate="within")
    inside = inside[~inside.index.duplicated(keep="first")].drop(columns="index_right")
    matched = inside[columns[0]].notna()

    result = inside.copy()
    result["offshore_km"] = 0.0
    outside = points.loc[~matched.to_numpy()]
    n_nearest = 0
    if len(outside):
        nearest = gpd.sjoin_nearest(
            outside.to_crs(METRIC_CRS),
            areas.to_crs(METRIC_CRS),
            how="left",
            max_distance=max_offshore_km * 1000.0,
            distance_col="offshore_m",
        )
        nearest = nearest[~nearest.index.duplicated(keep="first")]
        found = nearest[columns[0]].notna()
        n_nearest = int(found.sum())
        for column in columns:
            result.loc[nearest.index[found], column] = nearest.loc[found, column].to_numpy()
        result.loc[nearest.index[found], "offshore_km"] = nearest.loc[found, "offshore_m"] / 1000.0

    keep = result[columns[0]].notna()
    n_dropped = int((~keep).sum())
    counts = {"inside": int(matched.sum()), "nearest": n_nearest, "dropped": n_dropped}
    if n_nearest:
        log.info("%d points just off the coast were given the nearest area", n_nearest)
    if n_dropped:
        warnings.warn(
            f"{n_dropped} of {len(points)} points lie more than {max_offshore_km} km from every area "
            f"(outside Denmark?) and were dropped, e.g. (lat, lng) = "
            f"({lat[~keep.to_numpy()][0]:.4f}, {lng[~keep.to_numpy()][0]:.4f}).",
            stacklevel=3,
        )
    result = result.loc[keep.to_numpy()].copy()
    result.attrs["assignment"] = counts
    return result


def assign_municipality(
    points: gpd.GeoDataFrame, municipalities: gpd.GeoDataFrame, max_offshore_km: float = 1.0
) -> gpd.GeoDataFrame:
    """Add ``municipality_code`` and ``municipality`` to each point (see :func:`assign_area`).

    ``municipalities`` is the table of ``helpers.datasets.load_municipalities()``.
    Counts of points inside, snapped to the nearest municipality, and dropped are in
    ``result.attrs["assignment"]``.
    """
    renamed = municipalities.rename(columns={"code": "municipality_code", "name": "municipality"})
    return assign_area(points, renamed, ["municipality_code", "municipality"], max_offshore_km)


# --- geocells ----------------------------------------------------------------------------


def metric_xy_km(lat, lng) -> np.ndarray:
    """(x, y) in km in EPSG:25832 of points given in (lat, lng) degrees: shape (n, 2)."""
    projected = gpd.GeoSeries(gpd.points_from_xy(lng, lat), crs="EPSG:4326").to_crs(METRIC_CRS)
    return np.column_stack([projected.x, projected.y]) / 1000.0


def _clustering_coordinates(lat, lng, space: str) -> np.ndarray:
    """Coordinates K-means works in: "degrees" (lng, lat) as the report did, or "metric" km."""
    if space == "degrees":
        return np.column_stack([lng, lat])
    if space == "metric":
        return metric_xy_km(lat, lng)
    raise ValueError(f"space must be 'degrees' or 'metric', not {space!r}.")


def make_geocells(
    points: gpd.GeoDataFrame,
    municipalities: gpd.GeoDataFrame,
    n_cells: int = 129,
    seed: int = 0,
    space: str = "degrees",
) -> tuple[pd.Series, pd.DataFrame]:
    """The report's geocells: municipalities, with the fullest cell split by K-means until ``n_cells``.

    Start with one cell per municipality that holds points. While there are fewer than
    ``n_cells`` cells, take the cell with the most points (ties: the first name) and split
    it in two with 2-means on its points' coordinates (``space="degrees"``: (lng, lat) as the
    report did; ``"metric"``: km in EPSG:25832). Child "0" is the one whose centre lies
    further north. Deterministic for a given ``seed``.

    Returns ``(labels, cells)``: ``labels`` is an integer cell id for every point kept by
    :func:`assign_municipality` (same index as ``points``); ``cells`` is a GeoDataFrame with
    one row per cell: ``cell`` (id), ``name`` (municipality plus split digits, e.g.
    "Aarhus 0110"), ``municipality``, ``municipality_code``, ``n_points``, ``lat``, ``lng``
    (the mean of its points in degrees, as the report's centroids), ``area_km2``, and as
    geometry the cell's exact region: its municipality cut by the straight K-means
    boundaries of its splits (a 2-means split divides the plane along the perpendicular
    bisector of its two centres).
    """
    located = points if "municipality" in points.columns else assign_municipality(points, municipalities)
    n_start = located["municipality"].nunique()
    n_distinct = len(located[["lat", "lng"]].drop_duplicates())
    if n_cells < n_start:
        raise ValueError(
            f"n_cells={n_cells} is fewer than the {n_start} municipalities that hold points; the "
            f"algorithm only splits cells, so ask for at least {n_start}."
        )
    if n_cells > n_distinct:
        raise ValueError(
            f"n_cells={n_cells} is more than the {n_distinct} distinct locations can fill; every cell "
            "needs at least one location. Ask for fewer cells or bring more points."
        )
    coordinates = _clustering_coordinates(located["lat"].to_numpy(), located["lng"].to_numpy(), space)
    latitudes = located["lat"].to_numpy()

    # name -> (municipality, code, positions of its points, splits on the way)
    cells: dict[str, tuple[str, str, np.ndarray, list]] = {}
    for (code, name), group in located.groupby(["municipality_code", "municipality"], sort=True):
        cells[name] = (name, code, located.index.get_indexer(group.index), [])
    while len(cells) < n_cells:
        parent = min(cells, key=lambda c: (-len(cells[c][2]), c))
        municipality, code, members, splits = cells.pop(parent)
        if len(np.unique(coordinates[members], axis=0)) < 2:
            raise ValueError(f"Cannot split {parent!r} further: all its points share one location.")
        kmeans = _two_means(coordinates[members], seed)
        north_first = np.argsort([-latitudes[members][kmeans.labels_ == k].mean() for k in (0, 1)])
        centres = kmeans.cluster_centers_
        stem = parent if parent != municipality else f"{municipality} "
        for digit, cluster in enumerate(north_first):
            other = north_first[1 - digit]
            cells[f"{stem}{digit}"] = (
                municipality,
                code,
                members[kmeans.labels_ == cluster],
                [*splits, (centres[cluster].tolist(), centres[other].tolist())],
            )

    rows, labels = [], np.empty(len(located), dtype=int)
    for cell_id, name in enumerate(sorted(cells, key=lambda c: (cells[c][1], c))):
        municipality, code, members, splits = cells[name]
        labels[members] = cell_id
        rows.append(
            {
                "cell": cell_id,
                "name": name,
                "municipality": municipality,
                "municipality_code": code,
                "n_points": len(members),
                "lat": latitudes[members].mean(),
                "lng": located["lng"].to_numpy()[members].mean(),
                "splits": splits,
            }
        )
    cells_table = _cell_regions(pd.DataFrame(rows), municipalities, space)
    return pd.Series(labels, index=located.index, name="cell"), cells_table


def _two_means(points: np.ndarray, seed: int) -> KMeans:
    """2-means on (n, 2) points, ten starts, on one thread.

    scikit-learn's K-means runs on all cores through OpenMP, whose threads wait by spinning:
    beside a training run on 2 cores (``make test`` runs two workers), a cell of notebook 02
    that builds the cells four times took 76 s instead of under 3 s. One thread loses nothing
    on a few thousand points (``make_geocells`` alone: 0.5 s on all cores, 0.4 s on one).
    """
    two_means = KMeans(n_clusters=2, n_init=10, random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        two_means.fit_predict(points)  # fits it in place: callers read labels_ and cluster_centers_
    return two_means


def split_in_two(lnglat, seed: int = 0) -> np.ndarray:
    """The splitting rule of :func:`make_geocells` on its own: 2-means, northern half first.

    ``lnglat`` is (n, 2) raw (lng, lat) degrees of one cell's points, as the report clustered.
    Returns the side of every point, int (n,): 0 for the cluster whose points' mean latitude
    is the larger (the northern half), 1 for the other. Notebook 02 checks that its loop with
    this rule makes the cells of :func:`make_geocells` point for point.
    """
    lnglat = np.asarray(lnglat, dtype=float)
    side = _two_means(lnglat, seed).labels_
    north = int(lnglat[side == 1, 1].mean() > lnglat[side == 0, 1].mean())
    return (side != north).astype(int)


def _half_plane(own, other, reach: float):
    """Polygon of the points closer to ``own`` than to ``other`` (2-D), ``reach`` units wide."""
    own, other = np.asarray(own, dtype=float), np.asarray(other, dtype=float)
    middle = (own + other) / 2
    normal = (own - other) / np.linalg.norm(own - other)  # points towards own
    along = np.array([-normal[1], normal[0]])
    corners = [
        middle + along * reach,
        middle + along * reach + normal * reach,
        middle - along * reach + normal * reach,
        middle - along * reach,
    ]
    return Polygon(corners)


def _cell_regions(cells: pd.DataFrame, municipalities: gpd.GeoDataFrame, space: str) -> gpd.GeoDataFrame:
    """``cells`` with each cell's region as geometry: its municipality cut by one half-plane per split."""
    shapes = municipalities.set_index("code").geometry
    working = shapes if space == "degrees" else shapes.to_crs(METRIC_CRS)
    scale = 1.0 if space == "degrees" else 1000.0  # metric splits are in km, the CRS in metres
    reach = 1e3 if space == "degrees" else 1e4
    geometries = []
    for code, splits in zip(cells["municipality_code"], cells["splits"], strict=True):
        region = working.loc[code]
        for own, other in splits:
            region = region.intersection(
                _half_plane(np.multiply(own, scale), np.multiply(other, scale), reach * scale)
            )
        geometries.append(region)
    crs = "EPSG:4326" if space == "degrees" else METRIC_CRS
    regions = gpd.GeoDataFrame(cells.drop(columns="splits"), geometry=geometries, crs=crs).to_crs(4326)
    regions["area_km2"] = regions.to_crs(METRIC_CRS).area / 1e6
    regions.attrs["space"] = space
    return regions


def cell_polygons(labels: pd.Series, points: gpd.GeoDataFrame, land) -> gpd.GeoDataFrame:
    """Voronoi polygons of the points, merged per cell and clipped to ``land`` (the report's Figure 2).

    ``labels`` is the cell of each point (index as ``points``); ``land`` a GeoDataFrame or
    geometry of Denmark (e.g. the municipalities). Computed in EPSG:25832, returned in EPSG:4326
    with one row per cell: ``cell``, ``geometry``.
    """
    metric = points.loc[labels.index].to_crs(METRIC_CRS)
    xy = np.column_stack([metric.geometry.x, metric.geometry.y])
    unique_xy, first = np.unique(np.round(xy, 1), axis=0, return_index=True)  # Voronoi needs distinct sites
    sites = shapely.points(unique_xy)
    tiles = shapely.voronoi_polygons(shapely.multipoints(sites), ordered=True)
    tiles = gpd.GeoDataFrame(
        {"cell": labels.to_numpy()[first]}, geometry=list(shapely.get_parts(tiles)), crs=METRIC_CRS
    )
    merged = tiles.dissolve(by="cell", as_index=False)
    land_shape = land.to_crs(METRIC_CRS).union_all() if hasattr(land, "to_crs") else land
    merged["geometry"] = merged.geometry.intersection(land_shape)
    return merged.to_crs(4326)


def write_geocells(
    folder: Path, labels: pd.Series, points: gpd.GeoDataFrame, cells: gpd.GeoDataFrame
) -> None:
    """Save geocells for later notebooks: ``geocells.geojson`` (cells with their regions) and
    ``locations.csv`` (every labelled point: ``lat``, ``lng``, ``cell`` and its other columns)."""
    folder = Path(folder)
    with atomic_target(folder / "geocells.geojson") as temporary:
        cells.to_file(temporary, driver="GeoJSON")
    table = pd.DataFrame(points.loc[labels.index].drop(columns="geometry")).assign(cell=labels)
    with atomic_target(folder / "locations.csv") as temporary:
        table.to_csv(temporary, index=False)


def read_geocells(folder: Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Load what :func:`write_geocells` saved: ``(locations, cells)``, both GeoDataFrames."""
    folder = Path(folder)
    missing = [name for name in ("geocells.geojson", "locations.csv") if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"No geocells in {folder} (missing {', '.join(missing)}). Run notebook 02 first, "
            "e.g. `make all`, with the same PROFILE."
        )
    cells = gpd.read_file(folder / "geocells.geojson").sort_values("cell").reset_index(drop=True)
    table = pd.read_csv(folder / "locations.csv", dtype={"municipality_code": str})
    return points_from_latlng(table["lat"], table["lng"], table), cells


def order_cells_geographically(cells: pd.DataFrame, regions: gpd.GeoDataFrame) -> pd.DataFrame:
    """``cells`` with a ``region`` column, sorted by region (north to south), then so that
    consecutive cells within a region are close (optimal leaf order of a clustering tree).

    Matrices indexed by cells (distances, confusion) become readable in this order:
    neighbouring rows are usually neighbouring cells.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering

    centres = points_from_latlng(cells["lat"], cells["lng"], pd.DataFrame(index=cells.index))
    named = assign_area(centres, regions.rename(columns={"name": "region"}), ["region"], max_offshore_km=50)
    out = cells.assign(region=named["region"])
    parts = []
    for _, part in sorted(out.groupby("region"), key=lambda item: -item[1]["lat"].mean()):
        if len(part) > 2:
            xy = _clustering_coordinates(part["lat"].to_numpy(), part["lng"].to_numpy(), "metric")
            tree = linkage(xy, "average")
            part = part.iloc[leaves_list(optimal_leaf_ordering(tree, xy))]
        parts.append(part)
    return pd.concat(parts)


def cell_adjacency(cells: gpd.GeoDataFrame, tolerance_m: float = 50.0) -> np.ndarray:
    """Boolean (n_cells, n_cells) matrix: do the regions of two cells touch?

    Regions closer than ``tolerance_m`` count as touching (generalised borders leave slivers).
    Rows and columns follow ``cells["cell"]`` sorted; the diagonal is False.
    """
    ordered = cells.sort_values("cell")
    shapes = ordered.to_crs(METRIC_CRS).geometry.buffer(tolerance_m / 2).to_numpy()
    left, right = shapely.STRtree(shapes).query(shapes, predicate="intersects")
    adjacency = np.zeros((len(shapes), len(shapes)), dtype=bool)
    adjacency[left, right] = True
    np.fill_diagonal(adjacency, False)
    return adjacency


# The coarser levels above the cells, fine to coarse: each cell lies in one municipality (it was
# cut from it) and so in one region. The hierarchy of notebook 12 and the evaluation's columns.
LEVELS = ("municipality", "region")


def parents(tree: pd.DataFrame, level: str) -> np.ndarray:
    """The parent index of each cell at ``level`` ("municipality" or "region"): shape (n_cells,).

    ``tree`` has one row per cell with ``cell`` and ``<level>_index`` columns.
    """
    if level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}; choose from {LEVELS}.")
    return tree.sort_values("cell")[f"{level}_index"].to_numpy()
