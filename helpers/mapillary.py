"""A client for the Mapillary API v4: free, crowd-sourced street-level images.

For each location: ask for the images in a small box around it (``/images`` with a
``bbox``), keep the flat (not panoramic) one nearest to the location, and download its
``thumb_1024_url``, centre-cropped to a square and resized. The token comes from
``MAPILLARY_ACCESS_TOKEN`` (environment or ``.env``; get one free at
mapillary.com/dashboard/developers) and is sent in the ``Authorization`` header, never in
a URL. The download, retry and manifest machinery is shared with Street View
(``helpers.collect``).

Terms: Mapillary images are CC BY-SA 4.0; credit "Mapillary contributors" when you show them.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from PIL import Image

from helpers import collect, geo

API_ROOT = "https://graph.mapillary.com"
TOKEN_NAME = "MAPILLARY_ACCESS_TOKEN"
FIELDS = "id,thumb_1024_url,computed_geometry,geometry,captured_at,sequence,is_pano"
SMALLEST_BOX_M = 2.0  # a box this small that still holds a full page of images is taken as it is


def bbox_around(lat: float, lng: float, radius_m: float) -> str:
    """The ``west,south,east,north`` box (degrees) of half-width ``radius_m`` around (lat, lng)."""
    dlat = radius_m / 111_320.0
    dlng = radius_m / (111_320.0 * math.cos(math.radians(lat)))
    return f"{lng - dlng:.6f},{lat - dlat:.6f},{lng + dlng:.6f},{lat + dlat:.6f}"


def lookup(session, lat: float, lng: float, settings: dict) -> dict | None:
    """The flat image nearest (lat, lng) within ``radius`` m, or None if there is none.

    Returns ``{"image_id", "lat", "lng", "date", "captured_at", "sequence", "url"}``.

    The API lists the images in a box in no particular order and at most ``candidates`` of
    them, so a full page may miss the nearest one. A full page is therefore asked again for
    a box of half the size, until a page is not full: then every image in that box is known,
    and the nearest one is certain whenever it lies within the box's half-width (``radius``
    for the first box, so one request settles most locations). Panoramas
    (``is_pano``) are skipped: a centre crop of a 360-degree image is not a street view like
    the others. A location with panoramas only counts as having no imagery.
    """
    radius = float(settings["radius"])
    half = radius
    known: dict[str, tuple[float, dict, list]] = {}  # id -> (distance m, item, [lng, lat])
    while True:
        items = _images_in_box(session, lat, lng, half, settings)
        for item in items:
            point = _usable_point(item)
            if point is None:
                continue
            distance = float(geo.haversine_km(lat, lng, point[1], point[0])) * 1000.0
            if distance <= radius:
                known[str(item["id"])] = (distance, item, point)
        if len(items) < settings["candidates"] or half / 2 < SMALLEST_BOX_M:
            break
        half /= 2  # a full page: there may be nearer images the page left out
    if not known:
        return None
    _, item, point = min(known.values(), key=lambda c: c[0])
    return {
        "image_id": str(item["id"]),
        "lat": point[1],
        "lng": point[0],
        **_capture_time(item.get("captured_at")),
        "sequence": _sequence_id(item.get("sequence")),
        "url": item["thumb_1024_url"],
    }


def _usable_point(item: dict) -> list[float] | None:
    """[lng, lat] of a listed image that can be used, or None (malformed, or a panorama).

    Usable: an id that is text or a whole number, a position of two finite numbers, and an
    http(s) thumbnail URL; anything else in an answer is skipped, not trusted.
    """
    if item.get("is_pano") or isinstance(item.get("id"), bool | float):
        return None
    if not isinstance(item.get("id"), str | int) or not str(item["id"]).strip():
        return None
    url = item.get("thumb_1024_url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return None
    geometry = item.get("computed_geometry") or item.get("geometry")
    point = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if not isinstance(point, list | tuple) or len(point) < 2:
        return None
    try:
        lng, lat = float(point[0]), float(point[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lng) and -90 <= lat <= 90 and -180 <= lng <= 180):
        return None
    return [lng, lat]


def _images_in_box(session, lat: float, lng: float, half_m: float, settings: dict) -> list[dict]:
    """The images the API lists in the box of half-width ``half_m`` around (lat, lng)."""
    answer = _get(
        session,
        f"{settings['root']}/images",
        {"fields": FIELDS, "bbox": bbox_around(lat, lng, half_m), "limit": settings["candidates"]},
        settings,
    )
    if answer.status_code in (401, 403):
        raise collect.FatalAPIError(
            f"Mapillary refused the token (HTTP {answer.status_code}: {_error_message(answer, settings)}). "
            f"Check {TOKEN_NAME}. Nothing more will be requested in this run."
        )
    if answer.status_code != 200:
        raise collect.TransientError(
            f"Mapillary answered HTTP {answer.status_code}: {_error_message(answer, settings)}"
        )
    try:
        body = answer.json()
    except ValueError:
        # a proxy's or an overloaded server's HTML page: try this location again next run
        raise collect.TransientError(
            f"Mapillary answered HTTP 200 with something that is not JSON "
            f"({answer.headers.get('Content-Type', 'no content type')})."
        ) from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise collect.TransientError("Mapillary answered JSON without a list of images under 'data'.")
    return [item for item in data if isinstance(item, dict) and "id" in item]


def _capture_time(milliseconds) -> dict:
    """``date`` (YYYY-MM) and ``captured_at`` (ISO 8601, UTC) from Mapillary's epoch milliseconds."""
    try:
        taken = dt.datetime.fromtimestamp(float(milliseconds) / 1000, tz=dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return {"date": "", "captured_at": ""}
    return {"date": taken.strftime("%Y-%m"), "captured_at": taken.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _sequence_id(sequence) -> str:
    """The sequence id, whether the API gives it as text or as an object with an ``id``."""
    if isinstance(sequence, dict):
        sequence = sequence.get("id")
    return "" if sequence is None else str(sequence)


def fetch(session, found: dict, settings: dict) -> Image.Image:
    """The image, centre-cropped to a square and resized to ``size`` (a PIL image, RGB)."""
    answer = collect.request(session, found["url"], None, settings)  # pre-signed URL: no token sent
    if answer.status_code != 200:
        raise collect.TransientError(f"Mapillary thumbnail answered HTTP {answer.status_code}.")
    image = collect.decode_image(answer.content)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize(settings["size"], Image.BILINEAR)


def _get(session, url, params, settings):
    return collect.request(
        session, url, params, settings, headers={"Authorization": f"OAuth {settings['secret']}"}
    )


def _error_message(answer, settings) -> str:
    try:
        body = answer.json()
        message = str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""
    except (ValueError, AttributeError):
        message = answer.text[:200]
    return collect.redact(message, collect.secrets_of(settings))


def download(
    locations,
    folder: Path,
    *,
    token: str | None = None,
    size: tuple[int, int] = (224, 224),
    radius: float = 50,
    candidates: int = 100,
    workers: int = 8,
    per_second: float = 10.0,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    api_root: str = API_ROOT,
    progress: bool = True,
    deadline_s: float = collect.DEADLINE_S,
    lock_wait_s: float = 0.0,
) -> dict:
    """Download the Mapillary image nearest each location (columns lat, lng, cell) into ``folder``.

    Same contract as ``helpers.streetview.download``: resumable, deduplicated, the token
    never written anywhere. ``radius`` in metres; ``candidates``: images asked for per box
    (the API allows up to 2,000). The manifest records each image's ``sequence`` and
    ``captured_at``, so that images of one capture can be kept in one split. ``deadline_s``
    bounds the whole of each request (s); ``lock_wait_s`` how long a second download into the
    same folder waits for the first. Image ids, positions and thumbnail URLs from the answers
    are checked before use; a malformed image in a listing is skipped.
    """
    if not 1 <= candidates <= 2000:
        raise ValueError(f"candidates must be between 1 and 2,000 (the API's limit), got {candidates}.")
    token = token or collect.load_secret(TOKEN_NAME)
    if not token:
        raise collect.FatalAPIError(
            f"No Mapillary token: set {TOKEN_NAME} in the environment or the git-ignored .env file "
            "(free at mapillary.com/dashboard/developers). Without one, use the synthetic images."
        )
    settings = collect.client_settings(
        api_root,
        token,
        retries=retries,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        per_second=per_second,
        deadline_s=deadline_s,
        size=size,
        radius=radius,
        candidates=candidates,
    )
    return collect.collect(
        locations,
        folder,
        "mapillary",
        lookup,
        fetch,
        settings,
        workers=workers,
        progress=progress,
        lock_wait_s=lock_wait_s,
    )
