"""Synthetic Danish street scenes: the offline image source.

Without a Street View key we still want images whose content depends on *where* they were
taken, in the ways real photos do, so that the later notebooks teach the real lessons. An
image here is a deterministic function of (location, capture session, seed):

* **where** sets the scene through smooth functions of real geography:
  - *density* (urbanity): how closely addresses crowd around the place, estimated from the
    report's 42,570 locations with each DAGI postcode area counted once (see
    :func:`build_geography`), as a rank from 0 (the emptiest countryside) to 1 (central
    Copenhagen). Towns have tall, close houses, pavements and parked cars; the
    countryside has fields and trees;
  - *coast*: the distance to the coastline of the DAGI municipalities (sea on the horizon
    within about 2 km of the shore);
  - *architecture*: wall colour and roof style drift across the country (red brick in
    Jutland, yellow brick and washes on the islands, half-timbered Bornholm, ...); a
    stylised map, not a survey of Danish building styles;
  - *terrain* and *vegetation*: flat west and hilly east Jutland, conifer plantations on
    the western heath, beech woods in the east, rapeseed and grain fields;
  plus a fine-scale "local style" (wavelengths of 15-40 km), so that neighbouring cells
  look alike and distant ones differ, as in the report's confusion matrix.
* **when** is the capture session: cloud cover and cloud shapes, sun, brightness and colour
  temperature. ``session_leak`` sets how strongly sessions follow the cell (a Street View
  car covers a district in a day), which makes the sky a possible shortcut, as the report
  suspected. A new capture day redraws the sessions for the same places.

All coordinates are (lat, lng) in degrees; distances in km.
"""

from __future__ import annotations

from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw
from sklearn.neighbors import KDTree

from helpers import geo

CUES = ("density", "coast", "architecture", "terrain", "vegetation")
# Bump whenever the pixels rendered for the same (location, session, seed) change: image
# files are named by a fingerprint that includes it. 2: urbanity from postcode areas.
RENDERER_VERSION = 2
URBANITY_BANDWIDTH_KM = 1.0  # Gaussian kernel around each reference location
URBANITY_PRIOR = 30  # a postcode with n sampled locations counts as n + 30: see build_geography
N_SESSIONS = 48  # distinct weather situations a capture day can draw from

# Stylised regional anchors: (lat, lng) -> wall colour (RGB 0-1) and roof-style weights
# (red tile, black glazed tile, thatch, grey fibre-cement).
_ARCHITECTURE = [
    ((57.35, 10.05), (0.90, 0.86, 0.74), (0.45, 0.10, 0.15, 0.30)),  # Vendsyssel: light washes
    ((56.05, 8.35), (0.58, 0.25, 0.19), (0.55, 0.05, 0.25, 0.15)),  # West Jutland: dark red brick
    ((56.35, 9.50), (0.66, 0.30, 0.22), (0.55, 0.15, 0.05, 0.25)),  # Central Jutland
    ((56.10, 10.15), (0.70, 0.33, 0.24), (0.45, 0.30, 0.05, 0.20)),  # East Jutland towns
    ((55.15, 9.20), (0.55, 0.21, 0.16), (0.70, 0.05, 0.10, 0.15)),  # Southern Jutland
    ((55.30, 10.40), (0.88, 0.74, 0.45), (0.55, 0.15, 0.15, 0.15)),  # Funen: yellow washes
    ((55.55, 11.75), (0.82, 0.70, 0.48), (0.40, 0.35, 0.05, 0.20)),  # Zealand: yellow brick
    ((55.68, 12.55), (0.76, 0.70, 0.62), (0.25, 0.50, 0.00, 0.25)),  # Copenhagen: plaster
    ((54.80, 11.80), (0.92, 0.91, 0.86), (0.55, 0.15, 0.15, 0.15)),  # Lolland-Falster: white
    ((55.10, 14.90), (0.88, 0.66, 0.55), (0.65, 0.10, 0.05, 0.20)),  # Bornholm: pink and ochre
]
# (lat, lng) -> hilliness, conifer share, tree cover, field colour (RGB)
_LANDSCAPE = [
    ((57.30, 10.00), 0.35, 0.35, 0.35, (0.45, 0.60, 0.30)),
    ((56.05, 8.35), 0.05, 0.75, 0.30, (0.50, 0.45, 0.32)),  # heath and plantations
    ((56.10, 9.55), 0.90, 0.55, 0.70, (0.38, 0.58, 0.28)),  # the lake highlands
    ((56.10, 10.15), 0.60, 0.20, 0.55, (0.42, 0.62, 0.30)),
    ((55.15, 9.20), 0.40, 0.30, 0.45, (0.55, 0.62, 0.30)),
    ((55.30, 10.40), 0.35, 0.15, 0.50, (0.80, 0.75, 0.30)),  # rapeseed and grain
    ((55.55, 11.75), 0.45, 0.10, 0.55, (0.75, 0.70, 0.40)),
    ((55.68, 12.55), 0.10, 0.10, 0.40, (0.40, 0.60, 0.32)),
    ((54.80, 11.80), 0.02, 0.10, 0.30, (0.85, 0.78, 0.35)),  # flat farmland
    ((55.10, 14.90), 0.80, 0.40, 0.55, (0.45, 0.58, 0.30)),  # rocky, wooded
]
_ROOFS = np.array([(0.62, 0.24, 0.17), (0.13, 0.13, 0.15), (0.52, 0.45, 0.30), (0.50, 0.51, 0.52)])


def _anchor_field(lat, lng, anchors, values, length_km: float = 70.0) -> np.ndarray:
    """Gaussian-weighted mix of anchor ``values`` at each (lat, lng): smooth in space."""
    centres = np.array([a[0] for a in anchors])
    distance = geo.pairwise_haversine_km(np.column_stack([lat, lng]), centres)
    weights = np.exp(-((distance / length_km) ** 2)) + 1e-9
    return (weights @ np.asarray(values, dtype=float)) / weights.sum(axis=1, keepdims=True)


def _local_style(lat, lng, seed: int, n_waves: int = 6) -> np.ndarray:
    """A smooth random field in [-1, 1] with wavelengths of 15-40 km, fixed by ``seed``."""
    rng = np.random.default_rng([seed, 7])
    y_km = (np.asarray(lat) - 56.0) * 111.2
    x_km = (np.asarray(lng) - 10.5) * 62.2
    total = np.zeros_like(y_km, dtype=float)
    for _ in range(n_waves):
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        wavelength = rng.uniform(15, 40)
        total += np.sin(2 * np.pi * (x_km * np.cos(angle) + y_km * np.sin(angle)) / wavelength + phase)
    return total / np.sqrt(n_waves / 2) / 2


def _postcode_of(lat, lng, postcodes) -> np.ndarray:
    """The postcode of each (lat, lng): the polygon containing it, else the nearest one."""
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lng, lat), crs=4326).to_crs(geo.METRIC_CRS)
    joined = gpd.sjoin_nearest(points, postcodes[["postcode", "geometry"]].to_crs(geo.METRIC_CRS), how="left")
    return joined[~joined.index.duplicated(keep="first")]["postcode"].to_numpy()


def _weighted_density(
    tree: KDTree, weights: np.ndarray, xy_km: np.ndarray, bandwidth_km: float
) -> np.ndarray:
    """Gaussian kernel density of the weighted tree points at ``xy_km``, weight per km²."""
    index, distance = tree.query_radius(xy_km, r=4 * bandwidth_km, return_distance=True)
    totals = [
        (weights[i] * np.exp(-0.5 * (d / bandwidth_km) ** 2)).sum()
        for i, d in zip(index, distance, strict=True)
    ]
    return np.asarray(totals, dtype=float) / (2 * np.pi * bandwidth_km**2)


def build_geography(reference: pd.DataFrame, municipalities, postcodes=None) -> dict:
    """Precompute what the scene features need: an urbanity index and the coastline.

    ``reference`` are the report's 42,570 locations (``lat``, ``lng``), ``municipalities``
    the DAGI polygons whose outline is the coast, ``postcodes`` the DAGI postcode areas
    (``datasets.load_postcodes()`` when None).

    Urbanity. The report drew about 330 locations per cell, so counting its locations near
    a place measures how small the cell is, not how urban the place is (Læsø came out as
    dense as Herning, and most of Copenhagen hit the ceiling). Within a postcode, though,
    the sample follows the addresses. So each location gets the weight 1 / (n + 30), n the
    number of sampled locations in its postcode area: every postcode then carries about
    the same total weight whatever its cell's sampling rate, and the weights crowd where
    that postcode's addresses crowd. Postcodes are small and many where people live
    densely, so the weighted density (a Gaussian kernel of 1 km) is high in the cities.
    The 30 keeps a postcode with a handful of sampled locations (a village) from counting
    as a whole town. Urbanity is the rank of that density among the reference locations
    themselves: 0.9 means more urban than 90 % of them.
    """
    if postcodes is None:
        from helpers import datasets

        postcodes = datasets.load_postcodes()
    land = municipalities.to_crs(geo.METRIC_CRS).union_all().simplify(100)
    coast = shapely.get_coordinates(shapely.segmentize(land.boundary, 200))
    lat, lng = np.asarray(reference["lat"], dtype=float), np.asarray(reference["lng"], dtype=float)
    codes = _postcode_of(lat, lng, postcodes)
    per_postcode = pd.Series(codes).value_counts()
    weights = 1.0 / (pd.Series(codes).map(per_postcode).to_numpy() + URBANITY_PRIOR)
    xy = geo.metric_xy_km(lat, lng)
    tree = KDTree(xy)
    levels = np.sort(_weighted_density(tree, weights, xy, URBANITY_BANDWIDTH_KM))
    return {
        "urban_tree": tree,
        "urban_weights": weights,
        "urban_levels": levels,  # sorted densities of the reference locations: the rank scale
        "coast_tree": KDTree(coast / 1000),
    }


def urbanity(lat, lng, geography: dict) -> np.ndarray:
    """Urbanity of each (lat, lng) in [0, 1]: the rank of its postcode-weighted address density
    among the reference locations (see :func:`build_geography`). Smooth in space."""
    km = geo.metric_xy_km(np.asarray(lat, dtype=float), np.asarray(lng, dtype=float))
    density = _weighted_density(
        geography["urban_tree"], geography["urban_weights"], km, URBANITY_BANDWIDTH_KM
    )
    levels = geography["urban_levels"]
    return np.interp(density, levels, (np.arange(len(levels)) + 0.5) / len(levels), left=0.0, right=1.0)


def scene_features(lat, lng, geography: dict, seed: int = 0, cues=CUES) -> pd.DataFrame:
    """The location-dependent content of a scene, one row per (lat, lng).

    Columns: ``density`` (urbanity, 0 countryside .. 1 city centre: :func:`urbanity`),
    ``coast_km``, ``wall_r/g/b``, ``roof_red/black/thatch/grey`` (probabilities),
    ``hilliness``, ``conifer``, ``trees``, ``field_r/g/b``. A cue left out of ``cues`` is set
    to its national average, so a model cannot use it (an exercise in notebook 03).
    """
    lat, lng = np.asarray(lat, dtype=float), np.asarray(lng, dtype=float)
    km = geo.metric_xy_km(lat, lng)
    density = urbanity(lat, lng, geography)
    coast_km = geography["coast_tree"].query(km, k=1)[0][:, 0]
    style = _local_style(lat, lng, seed)

    walls = _anchor_field(lat, lng, _ARCHITECTURE, [a[1] for a in _ARCHITECTURE])
    walls = np.clip(walls * (1 + 0.18 * style[:, None] * np.array([1.0, 0.6, 0.2])), 0, 1)
    roofs = _anchor_field(lat, lng, _ARCHITECTURE, [a[2] for a in _ARCHITECTURE])
    roofs = roofs * np.exp(0.8 * np.outer(_local_style(lat, lng, seed + 1), [1, -1, 1, -1]))
    roofs /= roofs.sum(axis=1, keepdims=True)
    land = _anchor_field(lat, lng, _LANDSCAPE, [(a[1], a[2], a[3], *a[4]) for a in _LANDSCAPE])
    land[:, :3] = np.clip(land[:, :3] + 0.15 * _local_style(lat, lng, seed + 2)[:, None], 0, 1)

    table = pd.DataFrame(
        {
            "density": density,
            "coast_km": coast_km,
            "wall_r": walls[:, 0],
            "wall_g": walls[:, 1],
            "wall_b": walls[:, 2],
            "roof_red": roofs[:, 0],
            "roof_black": roofs[:, 1],
            "roof_thatch": roofs[:, 2],
            "roof_grey": roofs[:, 3],
            "hilliness": land[:, 0],
            "conifer": land[:, 1],
            "trees": land[:, 2],
            "field_r": land[:, 3],
            "field_g": land[:, 4],
            "field_b": land[:, 5],
        }
    )
    unknown = set(cues) - set(CUES)
    if unknown:
        raise ValueError(f"Unknown cues {sorted(unknown)}; choose from {CUES}.")
    groups = {
        "density": ["density"],
        "coast": ["coast_km"],
        "architecture": ["wall_r", "wall_g", "wall_b", "roof_red", "roof_black", "roof_thatch", "roof_grey"],
        "terrain": ["hilliness"],
        "vegetation": ["conifer", "trees", "field_r", "field_g", "field_b"],
    }
    national = {
        "density": 0.5,  # a rank: the middle of the reference locations
        "coast_km": 8.0,
        "wall_r": 0.74,
        "wall_g": 0.55,
        "wall_b": 0.42,
        "roof_red": 0.5,
        "roof_black": 0.2,
        "roof_thatch": 0.1,
        "roof_grey": 0.2,
        "hilliness": 0.4,
        "conifer": 0.3,
        "trees": 0.45,
        "field_r": 0.6,
        "field_g": 0.63,
        "field_b": 0.32,
    }
    for cue in set(CUES) - set(cues):
        for column in groups[cue]:
            table[column] = national[column]
    return table


# --- capture sessions -------------------------------------------------------------------


def session_weather(session: int, seed: int = 0) -> dict:
    """Weather and light of capture session ``session``: a fixed draw for each (session, seed)."""
    rng = np.random.default_rng([seed, 11, int(session)])
    cover = float(rng.beta(0.9, 0.9))
    warmth = float(rng.normal(0, 1))
    return {
        "cloud_cover": cover,
        "cloud_texture": int(rng.integers(1 << 30)),
        "cloud_scale": float(rng.choice([0.7, 1.0, 1.4])),
        "sun_x": float(rng.uniform(0.05, 0.95)),
        "brightness": float(np.clip(rng.normal(1.0, 0.12) - 0.15 * cover, 0.55, 1.25)),
        "tint": np.array([1 + 0.06 * warmth, 1.0, 1 - 0.08 * warmth]),
        "haze": float(rng.uniform(0.0, 0.35) + 0.2 * cover),
        "zenith": np.array(rng.normal([0.30, 0.50, 0.85], 0.05)).clip(0, 1),
    }


def assign_sessions(cells, day: int, leak: float, seed: int = 0, n_sessions: int = N_SESSIONS) -> np.ndarray:
    """The capture session of each image: its cell's session that day with probability ``leak``.

    ``cells`` holds the cell of each image, in order. With ``leak=1`` all images of a cell
    share one session (one sky) per day; with ``leak=0`` sessions are drawn independently of
    the cell. A different ``day`` redraws everything: a new capture of the same places.
    """
    if not 0 <= leak <= 1:
        raise ValueError(f"session_leak must be between 0 and 1, got {leak}.")
    cells = np.asarray(cells)
    rng = np.random.default_rng([seed, 13, day])
    names, index = np.unique(cells, return_inverse=True)
    home = rng.integers(n_sessions, size=len(names))
    own = rng.random(len(cells)) < leak
    return np.where(own, home[index], rng.integers(n_sessions, size=len(cells)))


# --- drawing ----------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _cloud_noise(texture: int, height: int, width: int, scale: float) -> np.ndarray:
    """Smooth value noise in [0, 1] of shape (height, width): three octaves of random grids.

    ``scale`` > 1 gives larger clouds. Cached: a session's clouds are computed once per size.
    """
    rng = np.random.default_rng(texture)
    total = np.zeros((height, width))
    for cells_high, weight in ((2.5, 0.55), (5, 0.3), (10, 0.15)):
        grid_rows = max(2, int(np.ceil(cells_high / scale)) + 1)
        grid_cols = 2 * grid_rows
        grid = rng.random((grid_rows + 1, grid_cols + 1))
        rows = np.linspace(0, grid_rows - 1e-6, height)
        cols = np.linspace(0, grid_cols - 1e-6, width)
        r0, c0 = rows.astype(int), cols.astype(int)
        fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
        fr, fc = fr * fr * (3 - 2 * fr), fc * fc * (3 - 2 * fc)  # smoothstep: no visible grid
        top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c0 + 1] * fc
        bottom = grid[r0 + 1][:, c0] * (1 - fc) + grid[r0 + 1][:, c0 + 1] * fc
        total += weight * (top * (1 - fr) + bottom * fr)
    return total


def _sky(size: int, horizon: int, weather: dict, jitter: float) -> np.ndarray:
    """The sky above ``horizon``: a gradient, the session's clouds, and a sun glow if clear."""
    rows = np.linspace(0, 1, max(horizon, 1))[:, None, None]
    horizon_colour = np.array([0.80, 0.86, 0.93])
    clear = weather["zenith"] * (1 - rows) + horizon_colour * rows
    overcast = np.array([0.62, 0.64, 0.67])
    sky = clear * (1 - 0.6 * weather["cloud_cover"]) + overcast * 0.6 * weather["cloud_cover"]
    # the session's cloud field, seen through a window that moves a little between images
    noise = _cloud_noise(weather["cloud_texture"] % 4096, size, 2 * size, weather["cloud_scale"])
    offset = int((weather["sun_x"] * 0.5 + 0.1 * jitter) % 1.0 * size)
    cloud = noise[:horizon, offset : offset + size]
    threshold = 1.0 - weather["cloud_cover"] * 0.75 - 0.2
    alpha = np.clip((cloud - threshold) * 5, 0, 1)[..., None]
    cloud_colour = np.array([0.97, 0.97, 0.98]) - 0.35 * weather["cloud_cover"] * (1 - cloud[..., None])
    sky = sky * (1 - alpha) + cloud_colour * alpha
    if weather["cloud_cover"] < 0.5:  # a sun glow low in the sky
        x = np.arange(size)[None, :] / size - weather["sun_x"]
        y = np.linspace(-0.4, 0.6, max(horizon, 1))[:, None]
        glow = np.exp(-(x**2 + y**2) / 0.02)[..., None] * (0.5 - weather["cloud_cover"])
        sky = sky + glow * np.array([1.0, 0.9, 0.7])
    return sky


def _colour(rgb, scale: float = 1.0) -> tuple:
    return tuple(int(v) for v in np.clip(np.asarray(rgb) * 255 * scale, 0, 255))


def render(features, weather: dict, size: int, layout_seed, capture_seed=0, return_sky_mask: bool = False):
    """Render one scene as an (size, size, 3) uint8 array; optionally also its sky mask.

    ``features`` is one row of :func:`scene_features`, ``weather`` one
    :func:`session_weather`. ``layout_seed`` fixes where houses and trees stand (a place looks
    the same on every visit); ``capture_seed`` moves the cars and the camera slightly.
    """
    f = features
    layout = np.random.default_rng(layout_seed)
    capture = np.random.default_rng(capture_seed)
    s = size
    horizon = int(s * (0.46 + 0.03 * layout.standard_normal() + 0.01 * capture.standard_normal()))
    horizon = int(np.clip(horizon, 0.35 * s, 0.6 * s))
    vanish = s * (0.5 + 0.07 * layout.standard_normal())
    density = f["density"]

    picture = np.zeros((s, s, 3))
    picture[:horizon] = _sky(s, horizon, weather, capture.random())
    field = np.array([f["field_r"], f["field_g"], f["field_b"]])
    ground_rows = np.linspace(0, 1, s - horizon)[:, None, None]
    ground = field * (1 - 0.55 * density) + np.array([0.45, 0.45, 0.43]) * 0.55 * density
    picture[horizon:] = ground * (0.75 + 0.25 * ground_rows)
    canvas = Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mask = Image.new("L", (s, s), 0)  # 255 where something stands in front of the sky
    mask_draw = ImageDraw.Draw(mask)

    def shape(kind, points, colour):
        getattr(draw, kind)(points, fill=colour)
        getattr(mask_draw, kind)(points, fill=255)

    # background: the sea near the coast, or hills whose height follows the terrain
    sea_side = layout.choice([-1, 1])
    sea = f["coast_km"] < 2.0 and layout.random() < np.exp(-f["coast_km"] / 1.2)
    xs = np.linspace(0, s, 17)
    heights = (
        f["hilliness"] * 0.09 * s * (0.5 + 0.5 * np.sin(xs / s * layout.uniform(3, 8) + layout.uniform(0, 6)))
    )
    heights += 0.012 * s
    if sea:
        heights = np.where((xs - vanish) * sea_side > 0, 0, heights)
        sea_x = (0, vanish) if sea_side < 0 else (vanish, s)
        draw.rectangle(
            [sea_x[0], horizon - 1, sea_x[1], horizon + 0.05 * s], fill=_colour((0.20, 0.38, 0.55))
        )
    hill_colour = (
        np.array([0.35, 0.45, 0.42]) * (1 - weather["haze"]) + np.array([0.7, 0.75, 0.8]) * weather["haze"]
    )
    shape(
        "polygon",
        [(0, horizon), *zip(xs, horizon - heights, strict=True), (s, horizon)],
        _colour(hill_colour),
    )

    # the road, with pavements in towns and a dashed centre line
    half_bottom = s * (0.28 + 0.18 * density)
    road = [
        (vanish - 0.01 * s, horizon),
        (vanish + 0.01 * s, horizon),
        (s / 2 + half_bottom, s),
        (s / 2 - half_bottom, s),
    ]
    if density > 0.5:
        kerb = 0.12 * s * density
        draw.polygon(
            [
                (vanish - 0.02 * s, horizon),
                (vanish + 0.02 * s, horizon),
                (s / 2 + half_bottom + kerb, s),
                (s / 2 - half_bottom - kerb, s),
            ],
            fill=_colour((0.66, 0.65, 0.62)),
        )
    draw.polygon(road, fill=_colour((0.30, 0.30, 0.32)))
    for start in (0.15, 0.35, 0.6, 0.85):
        y0, y1 = horizon + (s - horizon) * start**1.6, horizon + (s - horizon) * (start + 0.08) ** 1.6
        x0 = vanish + (s / 2 - vanish) * (y0 - horizon) / (s - horizon)
        x1 = vanish + (s / 2 - vanish) * (y1 - horizon) / (s - horizon)
        width = max(1, 0.012 * s * (y1 - horizon) / (s - horizon))
        draw.polygon(
            [(x0 - width / 3, y0), (x0 + width / 3, y0), (x1 + width, y1), (x1 - width, y1)],
            fill=_colour((0.92, 0.92, 0.88)),
        )

    def edge_x(depth, side):
        return (
            vanish + side * (0.01 * s + (half_bottom + 0.1 * s * density) * depth) + (s / 2 - vanish) * depth
        )

    # houses and trees along both sides, far ones first
    n_houses = int(round(layout.uniform(0.6, 1.4) * (1 + 7 * density**1.5)))
    n_trees = int(round(f["trees"] * (1 - 0.75 * density) * layout.uniform(4, 12)))
    objects = [("house", layout.uniform(0.08, 0.95), layout.choice([-1, 1])) for _ in range(n_houses)]
    objects += [("tree", layout.uniform(0.05, 0.9), layout.choice([-1, 1])) for _ in range(n_trees)]
    wall = np.array([f["wall_r"], f["wall_g"], f["wall_b"]])
    roof_weights = np.array([f["roof_red"], f["roof_black"], f["roof_thatch"], f["roof_grey"]])
    for kind, depth, side in sorted(objects, key=lambda o: o[1]):
        ground_y = horizon + (s - horizon) * depth
        x = edge_x(depth, side) + side * layout.uniform(0.0, 0.15) * s * depth
        if kind == "tree":
            height = s * depth * layout.uniform(0.35, 0.7)
            trunk = max(1, 0.02 * s * depth)
            draw.rectangle(
                [x - trunk, ground_y - height * 0.4, x + trunk, ground_y], fill=_colour((0.3, 0.22, 0.15))
            )
            if layout.random() < f["conifer"]:
                width = height * 0.28
                shape(
                    "polygon",
                    [
                        (x - width, ground_y - height * 0.25),
                        (x + width, ground_y - height * 0.25),
                        (x, ground_y - height),
                    ],
                    _colour((0.12, 0.28, 0.16), layout.uniform(0.8, 1.1)),
                )
            else:
                width = height * 0.38
                shape(
                    "ellipse",
                    [x - width, ground_y - height, x + width, ground_y - height * 0.3],
                    _colour((0.25, 0.45, 0.20), layout.uniform(0.8, 1.2)),
                )
            continue
        storeys = 1 + int(layout.random() < 0.3) + int(round(3 * density**2 * layout.uniform(0.5, 1.5)))
        width = s * depth * layout.uniform(0.3, 0.55) * (1.4 if storeys > 2 else 1.0)
        height = s * depth * 0.16 * storeys
        x_near, x_far = x, x + side * width
        left, right = min(x_near, x_far), max(x_near, x_far)
        house_wall = np.clip(wall * layout.uniform(0.85, 1.12), 0, 1)
        shape("rectangle", [left, ground_y - height, right, ground_y], _colour(house_wall))
        roof = _ROOFS[layout.choice(4, p=roof_weights / roof_weights.sum())]
        if storeys <= 2:
            pitch = height * layout.uniform(0.5, 0.9)
            shape(
                "polygon",
                [
                    (left - 0.02 * width, ground_y - height),
                    (right + 0.02 * width, ground_y - height),
                    (right - 0.2 * width, ground_y - height - pitch),
                    (left + 0.2 * width, ground_y - height - pitch),
                ],
                _colour(roof),
            )
        else:
            shape(
                "rectangle",
                [left, ground_y - height - 0.04 * height, right, ground_y - height],
                _colour(roof),
            )
        columns = max(1, int(width / (0.09 * s * depth + 1)))
        window = np.array([0.25, 0.30, 0.38]) + 0.3 * weather["cloud_cover"]
        for storey in range(storeys):
            for column in range(columns):
                wx = left + (column + 0.3) * width / columns
                wy = ground_y - height + (storey + 0.25) * height / storeys
                draw.rectangle(
                    [wx, wy, wx + 0.4 * width / columns, wy + 0.45 * height / storeys],
                    fill=_colour(window),
                    outline=_colour((0.95, 0.95, 0.95)),
                )

    # cars: more of them in towns; they move between captures
    for _ in range(capture.poisson(0.3 + 3.0 * density)):
        depth = capture.uniform(0.2, 0.95)
        ground_y = horizon + (s - horizon) * depth
        x = edge_x(depth, capture.choice([-1, 1])) * 0.85 + vanish * 0.15
        width, height = 0.22 * s * depth, 0.1 * s * depth
        body = capture.choice(
            [(0.8, 0.1, 0.1), (0.1, 0.2, 0.6), (0.9, 0.9, 0.9), (0.1, 0.1, 0.1), (0.5, 0.5, 0.55)]
        )
        shape("rectangle", [x - width / 2, ground_y - height, x + width / 2, ground_y], _colour(body))
        draw.rectangle(
            [x - width / 3, ground_y - height * 0.95, x + width / 3, ground_y - height * 0.55],
            fill=_colour((0.2, 0.25, 0.3)),
        )

    image = np.asarray(canvas, dtype=np.float32) / 255
    image = image * weather["brightness"] * weather["tint"]
    image += capture.normal(0, 0.015, image.shape)
    out = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    if not return_sky_mask:
        return out
    sky = np.zeros((s, s), dtype=bool)
    sky[:horizon] = True
    return out, sky & (np.asarray(mask) == 0)


def location_seed(lat: float, lng: float, seed: int) -> list[int]:
    """A seed for the layout of the place at (lat, lng): the same place, the same scene."""
    return [seed, int(round(lat * 1e6)), int(round(lng * 1e6)) & 0xFFFFFFFF]


def render_locations(
    locations: pd.DataFrame,
    features: pd.DataFrame,
    sessions,
    size: int,
    day: int = 0,
    seed: int = 0,
    sky_masks: bool = False,
):
    """Render every row of ``locations`` (lat, lng) with its ``features`` row and session.

    Returns an array (n, size, size, 3) uint8, and with ``sky_masks`` also (n, size, size) bool.
    """
    images = np.empty((len(locations), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(locations), size, size), dtype=bool) if sky_masks else None
    weather = {int(k): session_weather(int(k), seed) for k in np.unique(sessions)}
    rows = features.to_dict("records")
    for i, (lat, lng, session) in enumerate(zip(locations["lat"], locations["lng"], sessions, strict=True)):
        layout = location_seed(lat, lng, seed)
        result = render(
            rows[i], weather[int(session)], size, layout, [*layout, 1000 + day], return_sky_mask=sky_masks
        )
        if sky_masks:
            images[i], masks[i] = result
        else:
            images[i] = result
    return (images, masks) if sky_masks else images
