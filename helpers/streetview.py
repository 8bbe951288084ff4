"""A client for the Google Street View Static API, as the report used it.

Two calls per location:

1. the **metadata** endpoint (free of charge): is there a panorama near (lat, lng), and
   which one (``pano_id``), where exactly, and when was it taken;
2. the **image** endpoint (billed): that panorama as a 224x246 JPEG, whose bottom 22 rows,
   which carry the Google logo, are cropped off to leave 224x224.

Going through the metadata first means we never pay for "no imagery" answers, and two
addresses that lead to the same panorama are downloaded once (the report lost images to
such duplicates). The key is read from ``GOOGLE_MAPS_API_KEY`` (environment or ``.env``)
and never written anywhere: see ``helpers.collect``.

Terms: images are for the key holder's own use under the Google Maps Platform terms;
do not publish or redistribute them.
"""

from __future__ import annotations

from pathlib import Path

from helpers import collect

API_ROOT = "https://maps.googleapis.com/maps/api/streetview"
KEY_NAME = "GOOGLE_MAPS_API_KEY"
LOGO_ROWS = 22  # the report requested 224x246 and cropped to 224x224


def lookup(session, lat: float, lng: float, settings: dict) -> dict | None:
    """Metadata of the panorama nearest (lat, lng) within ``radius`` m, or None if none.

    Returns ``{"image_id": pano_id, "lat", "lng", "date"}`` with the panorama's own
    position (degrees). Raises FatalAPIError for a refused key and QuotaExceeded when the
    service keeps answering OVER_QUERY_LIMIT.
    """
    params = {"location": f"{lat:.7f},{lng:.7f}", "radius": settings["radius"], "key": settings["secret"]}
    if settings["outdoor"]:
        params["source"] = "outdoor"
    for attempt in range(settings["retries"] + 1):
        answer = collect.request(session, f"{settings['root']}/metadata", params, settings)
        status = _json(answer, settings).get("status", "MISSING")
        if status != "OVER_QUERY_LIMIT":
            break
        if attempt < settings["retries"]:
            collect.time.sleep(settings["backoff_s"] * 2**attempt)
    else:
        raise collect.QuotaExceeded(
            "Street View answers OVER_QUERY_LIMIT: the daily or per-minute quota of this key is used up. "
            "Everything downloaded so far is kept; run the same command later to resume."
        )
    body = _json(answer, settings)
    if status == "OK":
        location = body.get("location") or {}
        return {
            "image_id": body["pano_id"],
            "lat": location.get("lat", lat),
            "lng": location.get("lng", lng),
            "date": body.get("date", ""),
        }
    if status in ("ZERO_RESULTS", "NOT_FOUND"):
        return None
    if status == "REQUEST_DENIED" or answer.status_code in (401, 403):
        raise collect.FatalAPIError(
            "Street View refused the request (REQUEST_DENIED"
            + (
                f": {collect.redact(body['error_message'], [settings['secret']])}"
                if body.get("error_message")
                else ""
            )
            + f"). Check that {KEY_NAME} holds a valid key with the Street View Static API enabled "
            "and billing set up. Nothing more will be requested in this run."
        )
    raise collect.TransientError(f"Street View metadata answered {status} (HTTP {answer.status_code}).")


def fetch(session, found: dict, settings: dict):
    """The panorama's image, with the logo rows cropped off (a PIL image, RGB)."""
    width, height = settings["size"]
    params = {
        "pano": found["image_id"],
        "size": f"{width}x{height + LOGO_ROWS}",
        "fov": settings["fov"],
        "pitch": settings["pitch"],
        "key": settings["secret"],
        "return_error_code": "true",
    }
    if settings["heading"] is not None:
        params["heading"] = settings["heading"]
    answer = collect.request(session, settings["root"], params, settings)
    if answer.status_code in (401, 403):
        raise collect.FatalAPIError(
            f"Street View refused the image request (HTTP {answer.status_code}). Check {KEY_NAME}."
        )
    if answer.status_code != 200:
        raise collect.TransientError(f"Street View image answered HTTP {answer.status_code}.")
    image = collect.decode_image(answer.content)
    if image.size != (width, height + LOGO_ROWS):
        raise collect.TransientError(f"expected a {width}x{height + LOGO_ROWS} image, got {image.size}")
    return image.crop((0, 0, width, height))


def example_requests(lat: float, lng: float, key: str = "YOUR_KEY", size=(224, 224)) -> dict[str, str]:
    """The two URLs this client asks for at (lat, lng), for reading (the key is a placeholder)."""
    import requests

    metadata = {"location": f"{lat:.7f},{lng:.7f}", "radius": 50, "source": "outdoor", "key": key}
    image = {
        "pano": "PANO_ID_FROM_METADATA",
        "size": f"{size[0]}x{size[1] + LOGO_ROWS}",
        "fov": 90,
        "pitch": 0,
        "key": key,
        "return_error_code": "true",
    }
    return {
        "metadata (free)": requests.Request("GET", f"{API_ROOT}/metadata", params=metadata).prepare().url,
        "image (billed)": requests.Request("GET", API_ROOT, params=image).prepare().url,
    }


def _json(answer, settings) -> dict:
    try:
        return answer.json()
    except ValueError:
        raise collect.TransientError(
            f"Street View sent something that is not JSON (HTTP {answer.status_code})."
        ) from None


def download(
    locations,
    folder: Path,
    *,
    key: str | None = None,
    size: tuple[int, int] = (224, 224),
    heading: float | None = None,
    fov: float = 90,
    pitch: float = 0,
    radius: int = 50,
    outdoor: bool = True,
    workers: int = 8,
    per_second: float = 20.0,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    api_root: str = API_ROOT,
    progress: bool = True,
) -> dict:
    """Download one Street View image per location (columns lat, lng, cell) into ``folder``.

    ``size`` is the image kept after cropping; ``LOGO_ROWS`` more are requested. ``heading``
    None lets Google face along the road. ``radius`` is in metres. Resumable: run it again
    after any interruption. Returns counts (downloaded, skipped, no_imagery, duplicate, failed).
    """
    key = key or collect.load_secret(KEY_NAME)
    if not key:
        raise collect.FatalAPIError(
            f"No Street View key: set {KEY_NAME} in the environment or in the git-ignored .env file "
            "(see the README, 'Getting real images'). Without one, use the synthetic images."
        )
    settings = collect.client_settings(
        api_root,
        key,
        retries=retries,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        per_second=per_second,
        size=size,
        heading=heading,
        fov=fov,
        pitch=pitch,
        radius=radius,
        outdoor=outdoor,
    )
    return collect.collect(
        locations, folder, "streetview", lookup, fetch, settings, workers=workers, progress=progress
    )
