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

import geopandas as gpd
import numpy as np
import pandas as pd

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
        (lat >= DENMARK_LAT[0]) & (lat <= DENMARK_LAT[1])
        & (lng >= DENMARK_LNG[0]) & (lng <= DENMARK_LNG[1])
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
    max_offshore_km: float = 5.0,
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
    if n_nearest or n_dropped:
        log.info(
            "%d points inside a polygon, %d just off the coast given the nearest one, "
            "%d more than %.1f km from any polygon dropped",
            counts["inside"], n_nearest, n_dropped, max_offshore_km,
        )
    result = result.loc[keep.to_numpy()].copy()
    result.attrs["assignment"] = counts
    return result


def assign_municipality(
    points: gpd.GeoDataFrame, municipalities: gpd.GeoDataFrame, max_offshore_km: float = 5.0
) -> gpd.GeoDataFrame:
    """Add ``municipality_code`` and ``municipality`` to each point (see :func:`assign_area`).

    ``municipalities`` is the table of ``helpers.datasets.load_municipalities()``.
    Counts of points inside, snapped to the nearest municipality, and dropped are in
    ``result.attrs["assignment"]``.
    """
    renamed = municipalities.rename(columns={"code": "municipality_code", "name": "municipality"})
    return assign_area(points, renamed, ["municipality_code", "municipality"], max_offshore_km)
