"""A client for the Google Street View Static API, as the report used it.

Two calls per location:

1. the **metadata** endpoint (free of charge): is there a panorama near (lat, lng), and
   which one (``pano_id``), where exactly, and when was it taken;
2. the **image** endpoint (billed): that panorama as a 224x246 JPEG, whose bottom 22 rows,
   which carry the Google logo, are cropped off to leave 224x224. The camera faces the
   requested address: the request carries the ``heading`` (compass bearing) from the
   panorama to the address, which is what Google does itself when asked by location.

Going through the metadata first means we never pay for "no imagery" answers, and two
addresses that lead to the same panorama are downloaded once (the report lost images to
such duplicates). The key is read from ``GOOGLE_MAPS_API_KEY`` (environment or ``.env``)
and never written anywhere: see ``helpers.collect``.

Beyond a daily number of requests, Google only serves **signed** requests. With a URL
signing secret in ``GOOGLE_MAPS_URL_SIGNING_SECRET`` (environment or ``.env``; from the
Google Cloud console, "Credentials", "Secret generator") every request is signed as Google
documents it: an HMAC-SHA1 of the URL's path and query, keyed with the URL-safe base64
decoded secret, appended URL-safe base64 encoded as the last parameter, ``&signature=``.
Neither the secret nor a signature is ever logged or stored.

Terms: images are for the key holder's own use under the Google Maps Platform terms;
do not publish or redistribute them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np

from helpers import collect, geo

API_ROOT = "https://maps.googleapis.com/maps/api/streetview"
KEY_NAME = "GOOGLE_MAPS_API_KEY"
SIGNING_SECRET_NAME = "GOOGLE_MAPS_URL_SIGNING_SECRET"
LOGO_ROWS = 22  # the report requested 224x246 and cropped to 224x224
MIN_BEARING_M = 1.0  # closer than this, the direction to the address is not defined


# --- signing and heading -----------------------------------------------------------------


def _secret_bytes(secret: str) -> bytes:
    """The signing secret decoded from URL-safe base64 (missing "=" padding is tolerated)."""
    text = secret.strip()
    try:
        return base64.b64decode(
            text.translate(str.maketrans("-_", "+/")) + "=" * (-len(text) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise collect.FatalAPIError(
            f"{SIGNING_SECRET_NAME} is not a URL signing secret: it must be URL-safe base64 "
            "(letters, digits, '-', '_', ending in '='), as the Google Cloud console shows it "
            "under Credentials > Secret generator. Copy it again."
        ) from None


def sign_url(url: str, secret: str) -> str:
    """``url`` with Google's digital signature appended as its last parameter, ``&signature=``.

    The signature is the HMAC-SHA1 of the URL's path and query (``/maps/api/...?...&key=...``,
    exactly as sent), keyed with the URL-safe base64 decoded ``secret``, encoded as URL-safe
    base64. ``url`` must already be URL-encoded: any change to it afterwards breaks the signature.
    """
    parts = urlsplit(url)
    digest = hmac.new(_secret_bytes(secret), f"{parts.path}?{parts.query}".encode(), hashlib.sha1).digest()
    return f"{url}&signature={base64.urlsafe_b64encode(digest).decode()}"


def bearing_deg(lat1, lng1, lat2, lng2):
    """Initial great-circle bearing from (lat1, lng1) to (lat2, lng2), all in degrees.

    Returned in degrees clockwise from north, in [0, 360): 0 north, 90 east, 180 south, 270
    west, as Street View's ``heading``. Arguments broadcast like NumPy arrays.
    """
    lat1, lng1, lat2, lng2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lng1, lat2, lng2))
    dlng = lng2 - lng1
    x = np.sin(dlng) * np.cos(lat2)
    y = np.cos(lat1) * np.sin(lat2) - np.sin(lat1) * np.cos(lat2) * np.cos(dlng)
    return np.degrees(np.arctan2(x, y)) % 360.0


def heading_to(pano_lat: float, pano_lng: float, lat: float, lng: float) -> float | None:
    """The heading (degrees) a camera at the panorama needs to face (lat, lng), rounded to 0.01.

    None when the two are less than ``MIN_BEARING_M`` apart: the direction is then undefined.
    """
    if float(geo.haversine_km(pano_lat, pano_lng, lat, lng)) * 1000.0 < MIN_BEARING_M:
        return None
    return round(float(bearing_deg(pano_lat, pano_lng, lat, lng)), 2) % 360.0


# --- the two endpoints -----------------------------------------------------------------


def _get(session, path: str, params: dict, settings: dict):
    """GET ``root + path`` with ``params``, signed when a signing secret is set."""
    url = f"{settings['root']}{path}?{urlencode(params)}"
    if settings.get("signing_secret"):
        url = sign_url(url, settings["signing_secret"])
    return collect.request(session, url, None, settings)


def _refused(answer, settings: dict, what: str) -> collect.FatalAPIError:
    """The error for a 401/403 answer, naming the likely cause (the signature or the key)."""
    try:
        detail = str(answer.json().get("error_message", ""))
    except (ValueError, AttributeError):  # not JSON (a wrong signature), or not an object
        detail = answer.text[:300].strip()
    detail = collect.redact(detail, collect.secrets_of(settings))
    if settings.get("signing_secret"):
        suspects = (
            f"the URL signature (is {SIGNING_SECRET_NAME} the signing secret of the same project as "
            f"the key?) or the key ({KEY_NAME}: valid, Street View Static API enabled, billing set up)"
        )
    else:
        suspects = (
            f"the missing URL signature (the key may only accept signed requests: set "
            f"{SIGNING_SECRET_NAME}) or the key ({KEY_NAME}: valid, Street View Static API enabled, "
            "billing set up)"
        )
    return collect.FatalAPIError(
        f"Street View refused the {what} request (HTTP {answer.status_code}"
        + (f": {detail}" if detail else "")
        + f"). Suspects: {suspects}. Nothing more will be requested in this run."
    )


def lookup(session, lat: float, lng: float, settings: dict) -> dict | None:
    """Metadata of the panorama nearest (lat, lng) within ``radius`` m, or None if none.

    Returns ``{"image_id": pano_id, "lat", "lng", "date", "heading"}`` with the panorama's
    own position (degrees) and the heading (degrees from north) that faces (lat, lng) from
    it, or ``settings["heading"]`` when that is set. Raises FatalAPIError for a refused key
    or signature and QuotaExceeded when the service keeps answering OVER_QUERY_LIMIT, after
    pausing every worker between tries.
    """
    params = {"location": f"{lat:.7f},{lng:.7f}", "radius": settings["radius"]}
    if settings["outdoor"]:
        params["source"] = "outdoor"
    params["key"] = settings["secret"]
    for attempt in range(settings["retries"] + 1):
        answer = _get(session, "/metadata", params, settings)
        if answer.status_code in (401, 403):
            raise _refused(answer, settings, "metadata")
        body = _json(answer)
        status = body.get("status", "MISSING")
        if status != "OVER_QUERY_LIMIT":
            break
        if attempt < settings["retries"]:
            # over quota is about the whole key: hold back every worker, not just this one
            collect.pause_all(settings, collect.throttle_delay_s(attempt, settings["backoff_s"]))
    else:
        raise collect.QuotaExceeded(
            "Street View answers OVER_QUERY_LIMIT: the daily or per-minute quota of this key is used up. "
            "Everything downloaded so far is kept; run the same command later to resume."
        )
    if status == "OK":
        pano_id, pano_lat, pano_lng = _panorama_of(body, lat, lng)
        heading = (
            settings["heading"]
            if settings["heading"] is not None
            else heading_to(pano_lat, pano_lng, lat, lng)
        )
        date = body.get("date", "")
        return {
            "image_id": pano_id,
            "lat": pano_lat,
            "lng": pano_lng,
            "date": date if isinstance(date, str) else "",
            "heading": "" if heading is None else heading,
        }
    if status in ("ZERO_RESULTS", "NOT_FOUND"):
        return None
    if status == "REQUEST_DENIED":
        message = collect.redact(body.get("error_message", ""), collect.secrets_of(settings))
        raise collect.FatalAPIError(
            "Street View refused the request (REQUEST_DENIED"
            + (f": {message}" if message else "")
            + f"). Check that {KEY_NAME} holds a valid key with the Street View Static API enabled "
            "and billing set up. Nothing more will be requested in this run."
        )
    raise collect.TransientError(f"Street View metadata answered {status} (HTTP {answer.status_code}).")


def _panorama_of(body: dict, lat: float, lng: float) -> tuple[str, float, float]:
    """The ``pano_id`` and position (lat, lng in degrees) of an "OK" metadata answer.

    A missing ``location`` means the requested point. An answer without a text ``pano_id``,
    or with a position that is not two finite numbers, is malformed: TransientError, so the
    location counts as failed and is asked again next run.
    """
    pano_id = body.get("pano_id")
    if not isinstance(pano_id, str) or not pano_id.strip():
        raise collect.TransientError(f"Street View answered OK without a usable pano_id ({pano_id!r:.40}).")
    location = body.get("location", {"lat": lat, "lng": lng})
    try:
        pano_lat, pano_lng = float(location["lat"]), float(location["lng"])
    except (TypeError, ValueError, KeyError):
        pano_lat = pano_lng = math.nan
    if not (math.isfinite(pano_lat) and math.isfinite(pano_lng)):
        raise collect.TransientError(
            f"Street View answered OK with a location that is not two finite numbers ({location!r:.60})."
        )
    return pano_id, pano_lat, pano_lng


def image_params(found: dict, settings: dict) -> dict:
    """The query of the image request for a panorama found by :func:`lookup` (without signature)."""
    width, height = settings["size"]
    params = {"pano": found["image_id"], "size": f"{width}x{height + LOGO_ROWS}"}
    if found.get("heading") not in (None, ""):
        params["heading"] = found["heading"]
    params.update(fov=settings["fov"], pitch=settings["pitch"], return_error_code="true")
    params["key"] = settings["secret"]
    return params


def fetch(session, found: dict, settings: dict):
    """The panorama's image facing ``found["heading"]``, logo rows cropped off (PIL image, RGB)."""
    width, height = settings["size"]
    answer = _get(session, "", image_params(found, settings), settings)
    if answer.status_code in (401, 403):
        raise _refused(answer, settings, "image")
    if answer.status_code != 200:
        raise collect.TransientError(f"Street View image answered HTTP {answer.status_code}.")
    image = collect.decode_image(answer.content)
    if image.size != (width, height + LOGO_ROWS):
        raise collect.TransientError(f"expected a {width}x{height + LOGO_ROWS} image, got {image.size}")
    return image.crop((0, 0, width, height))


def example_requests(lat: float, lng: float, key: str = "YOUR_KEY", size=(224, 224)) -> dict[str, str]:
    """The two URLs this client asks for at (lat, lng), for reading (the key is a placeholder).

    With a signing secret set, each also ends in ``&signature=...``.
    """
    metadata = {"location": f"{lat:.7f},{lng:.7f}", "radius": 50, "source": "outdoor", "key": key}
    image = {
        "pano": "PANO_ID_FROM_METADATA",
        "size": f"{size[0]}x{size[1] + LOGO_ROWS}",
        "heading": "BEARING_FROM_PANORAMA_TO_ADDRESS",
        "fov": 90,
        "pitch": 0,
        "return_error_code": "true",
        "key": key,
    }
    return {
        "metadata (free)": f"{API_ROOT}/metadata?{urlencode(metadata)}",
        "image (billed)": f"{API_ROOT}?{urlencode(image)}",
    }


def _json(answer) -> dict:
    try:
        body = answer.json()
    except ValueError:
        raise collect.TransientError(
            f"Street View sent something that is not JSON (HTTP {answer.status_code})."
        ) from None
    if not isinstance(body, dict):
        raise collect.TransientError(
            f"Street View sent JSON that is not an object (HTTP {answer.status_code})."
        )
    return body


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
    signing_secret: str | None = None,
    deadline_s: float = collect.DEADLINE_S,
    lock_wait_s: float = 0.0,
) -> dict:
    """Download one Street View image per location (columns lat, lng, cell) into ``folder``.

    ``size`` is the image kept after cropping; ``LOGO_ROWS`` more are requested. ``heading``
    None points the camera at each address (the bearing from its panorama, recorded in the
    manifest); a number (degrees from north) fixes it for every image. ``radius`` is in
    metres. ``signing_secret`` defaults to ``GOOGLE_MAPS_URL_SIGNING_SECRET`` (environment or
    ``.env``); without one, requests go unsigned. ``timeout_s`` bounds each read of an
    answer, ``deadline_s`` the whole of each request (s). Locations must be finite points in
    or near Denmark (checked before any request). A second download into the same folder
    waits ``lock_wait_s`` s, then stops with the name of the first. Resumable: run it again
    after any interruption. Returns counts (downloaded, skipped, no_imagery, duplicate, failed).
    """
    key = key or collect.load_secret(KEY_NAME)
    if not key:
        raise collect.FatalAPIError(
            f"No Street View key: set {KEY_NAME} in the environment or in the git-ignored .env file "
            "(see the README, 'Getting real images'). Without one, use the synthetic images."
        )
    signing_secret = signing_secret or collect.load_secret(SIGNING_SECRET_NAME)
    if signing_secret:
        _secret_bytes(signing_secret)  # a malformed secret fails now, not at every request
    settings = collect.client_settings(
        api_root,
        key,
        retries=retries,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        per_second=per_second,
        deadline_s=deadline_s,
        more_secrets=[signing_secret],
        signing_secret=signing_secret,
        size=size,
        heading=heading,
        fov=fov,
        pitch=pitch,
        radius=radius,
        outdoor=outdoor,
    )
    return collect.collect(
        locations,
        folder,
        "streetview",
        lookup,
        fetch,
        settings,
        workers=workers,
        progress=progress,
        lock_wait_s=lock_wait_s,
    )
