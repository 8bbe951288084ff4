"""A client for the Mapillary API v4: free, crowd-sourced street-level images.

For each location: ask for the images in a small box around it (``/images`` with a
``bbox``), keep the one nearest to the location, and download its ``thumb_1024_url``,
centre-cropped to a square and resized. The token comes from ``MAPILLARY_ACCESS_TOKEN``
(environment or ``.env``; get one free at mapillary.com/dashboard/developers) and is sent
in the ``Authorization`` header, never in a URL. The download, retry and manifest
machinery is shared with Street View (``helpers.collect``).

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
FIELDS = "id,thumb_1024_url,computed_geometry,captured_at"


def bbox_around(lat: float, lng: float, radius_m: float) -> str:
    """The ``west,south,east,north`` box (degrees) of half-width ``radius_m`` around (lat, lng)."""
    dlat = radius_m / 111_320.0
    dlng = radius_m / (111_320.0 * math.cos(math.radians(lat)))
    return f"{lng - dlng:.6f},{lat - dlat:.6f},{lng + dlng:.6f},{lat + dlat:.6f}"


def lookup(session, lat: float, lng: float, settings: dict) -> dict | None:
    """The image nearest (lat, lng) within ``radius`` m: ``{"image_id", "lat", "lng", "date", "url"}``."""
    answer = _get(
        session,
        f"{settings['root']}/images",
        {"fields": FIELDS, "bbox": bbox_around(lat, lng, settings["radius"]), "limit": 50},
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
    candidates = []
    for item in answer.json().get("data", []):
        point = (item.get("computed_geometry") or {}).get("coordinates")
        if point and item.get("thumb_1024_url"):
            candidates.append((float(geo.haversine_km(lat, lng, point[1], point[0])), item, point))
    if not candidates:
        return None
    _, item, point = min(candidates, key=lambda c: c[0])
    taken = item.get("captured_at")
    date = dt.datetime.fromtimestamp(taken / 1000, tz=dt.timezone.utc).strftime("%Y-%m") if taken else ""
    return {
        "image_id": str(item["id"]),
        "lat": point[1],
        "lng": point[0],
        "date": date,
        "url": item["thumb_1024_url"],
    }


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
        message = answer.json().get("error", {}).get("message", "")
    except ValueError:
        message = answer.text[:200]
    return collect.redact(message, [settings["secret"]])


def download(
    locations,
    folder: Path,
    *,
    token: str | None = None,
    size: tuple[int, int] = (224, 224),
    radius: float = 50,
    workers: int = 8,
    per_second: float = 10.0,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    api_root: str = API_ROOT,
    progress: bool = True,
) -> dict:
    """Download the Mapillary image nearest each location (columns lat, lng, cell) into ``folder``.

    Same contract as ``helpers.streetview.download``: resumable, deduplicated, the token
    never written anywhere. ``radius`` in metres.
    """
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
        size=size,
        radius=radius,
    )
    return collect.collect(
        locations, folder, "mapillary", lookup, fetch, settings, workers=workers, progress=progress
    )
