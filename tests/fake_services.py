"""Loopback stand-ins for the Street View Static API and the Mapillary API v4.

They answer like the real services, including their failures, which a test switches on
through ``faults``: a dict of fault name -> how many of the next requests get it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
from urllib.parse import parse_qs, urlparse

from PIL import Image

VALID_KEY = "AIzaTEST-key-0123456789abcdef"
# a URL signing secret as the Google Cloud console shows one: 20 random bytes, URL-safe base64
SIGNING_SECRET = "c2lnbmluZy1zZWNyZXQtMjAtYg=="
LOGO_COLOUR = (255, 0, 255)
SIGNATURE_REFUSED = (
    b"The Google Maps Platform server rejected your request. Unable to authenticate the request. "
    b"Provided 'signature' is not valid for the provided API key, or the provided 'client' is not valid."
)


def _query(handler) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(handler.path).query).items()}


def jpeg(size, colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def take_fault(faults: dict, lock: threading.Lock, *names) -> str | None:
    """Consume one pending fault among ``names``, if any is left."""
    with lock:
        for name in names:
            if faults.get(name, 0) > 0:
                faults[name] -= 1
                return name
    return None


def json_answer(status: int, body: dict, headers: dict | None = None):
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def broken_body(handler, body: bytes) -> None:
    """Promise the whole body, send half of it, hang up."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body[: len(body) // 2])
    handler.wfile.flush()
    handler.close_connection = True


def signature_is_valid(path: str, secret: str) -> bool:
    """Whether ``path`` (path and query, as received) ends in Google's signature of the rest.

    Computed here as Google describes it, independently of ``helpers.streetview``.
    """
    unsigned, marker, signature = path.rpartition("&signature=")
    if not marker or "&" in signature:
        return False  # no signature, or not as the last parameter
    key = base64.urlsafe_b64decode(secret)
    expected = base64.urlsafe_b64encode(hmac.new(key, unsigned.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected, signature)


def streetview_routes(
    faults: dict | None = None,
    no_imagery_below_lat: float = 54.9,
    image_delay_s: float = 0.0,
    *,
    retry_after="1",
    signing_secret: str | None = None,
    events: list | None = None,
):
    """Routes of a fake Street View: panoramas every 0.01 degree; none south of a latitude.

    Two locations within the same 0.01-degree square share a panorama (duplicates).
    Faults: "429" (with ``Retry-After: retry_after``; a callable is called for each answer,
    e.g. to give an HTTP date), "500", "hang" (3 s before answering), "truncated" (image body
    cut short), "quota" (OVER_QUERY_LIMIT), on metadata; "image_429", "image_500" on images.
    Each fault answered is appended to ``events`` as (name, time.monotonic(), path). With
    ``signing_secret``, a request without a valid signature gets Google's 403 in plain text.
    """
    faults = faults if faults is not None else {}
    events = events if events is not None else []
    lock = threading.Lock()

    def common_faults(handler, kinds):
        fault = take_fault(faults, lock, *kinds)
        if fault:
            events.append((fault, time.monotonic(), handler.path))
        if fault in ("429", "image_429"):
            value = retry_after() if callable(retry_after) else retry_after
            return json_answer(429, {"error": "rate"}, {"Retry-After": value})
        if fault in ("500", "image_500"):
            return json_answer(500, {"status": "UNKNOWN_ERROR"})
        if fault == "hang":
            time.sleep(3)
        return None

    def signature_refused(handler):
        if signing_secret and not signature_is_valid(handler.path, signing_secret):
            return 403, {"Content-Type": "text/plain; charset=UTF-8"}, SIGNATURE_REFUSED
        return None

    def metadata(handler):
        query = _query(handler)
        trouble = common_faults(handler, ("429", "500", "hang")) or signature_refused(handler)
        if trouble:
            return trouble
        if query.get("key") != VALID_KEY:
            return json_answer(
                200, {"status": "REQUEST_DENIED", "error_message": "The provided API key is invalid."}
            )
        if take_fault(faults, lock, "quota"):
            events.append(("quota", time.monotonic(), handler.path))
            return json_answer(
                200, {"status": "OVER_QUERY_LIMIT", "error_message": "You have exceeded your quota."}
            )
        lat, lng = (float(v) for v in query["location"].split(","))
        if lat < no_imagery_below_lat:
            return json_answer(200, {"status": "ZERO_RESULTS"})
        pano_lat, pano_lng = round(lat, 2), round(lng, 2)
        return json_answer(
            200,
            {
                "status": "OK",
                "pano_id": f"pano_{pano_lat:.2f}_{pano_lng:.2f}",
                "date": "2021-06",
                "location": {"lat": pano_lat, "lng": pano_lng},
                "copyright": "© Google",
            },
        )

    def image(handler):
        query = _query(handler)
        trouble = common_faults(handler, ("image_429", "image_500")) or signature_refused(handler)
        if trouble:
            return trouble
        if query.get("key") != VALID_KEY:
            return (
                403,
                {"Content-Type": "text/plain"},
                b"The Google Maps Platform server rejected your request.",
            )
        time.sleep(image_delay_s)
        width, height = (int(v) for v in query["size"].split("x"))
        picture = Image.new("RGB", (width, height), (30, 120, 200))
        picture.paste(LOGO_COLOUR, (0, height - 22, width, height))  # the "logo" rows to crop
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=95)
        if take_fault(faults, lock, "truncated"):
            broken_body(handler, buffer.getvalue())
            return None
        return 200, {"Content-Type": "image/jpeg"}, buffer.getvalue()

    return {"/maps/api/streetview/metadata": metadata, "/maps/api/streetview": image}


VALID_TOKEN = "MLY|1234567890|abcdefTESTTOKEN"


def mapillary_image(image_id, lat, lng, base_url, *, captured_at=1_625_000_000_000, sequence="seq", **more):
    """One image as Mapillary's ``/images`` lists it (``more``: is_pano, a thumbnail name)."""
    thumb = more.pop("thumb", "near.jpg")
    return {
        "id": str(image_id),
        "captured_at": captured_at,
        "sequence": sequence,
        "is_pano": more.pop("is_pano", False),
        "thumb_1024_url": f"{base_url}/thumb/{thumb}",
        "computed_geometry": {"type": "Point", "coordinates": [lng, lat]},
    }


def mapillary_routes(base_url_holder: list, faults: dict | None = None, world: list | None = None):
    """Routes of a fake Mapillary.

    Without ``world``: two images in every box north of 55.0 (one a few metres from the box's
    centre, one in its north-east corner), none south of it. With ``world`` (a list of
    ``(id, lat, lng, extra fields)``): the images of the world inside the box, listed in
    order of id, not of distance, and cut at the request's ``limit``, as the API pages them.
    Faults: "429" (Retry-After: 1), "not_json" (HTTP 200 with an HTML page).
    """
    faults = faults if faults is not None else {}
    lock = threading.Lock()

    def images(handler):
        if handler.headers.get("Authorization") != f"OAuth {VALID_TOKEN}":
            return json_answer(
                401,
                {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}},
            )
        fault = take_fault(faults, lock, "429", "not_json")
        if fault == "429":
            return json_answer(
                429,
                {"error": {"message": "Application request limit reached", "code": 4}},
                {"Retry-After": "1"},
            )
        if fault == "not_json":
            return (
                200,
                {"Content-Type": "text/html"},
                b"<html><body>Sorry, something went wrong.</body></html>",
            )
        query = _query(handler)
        west, south, east, north = (float(v) for v in query["bbox"].split(","))
        base = base_url_holder[0]
        if world is not None:
            inside = [
                mapillary_image(image_id, lat, lng, base, **extra)
                for image_id, lat, lng, extra in sorted(world, key=lambda w: str(w[0]))
                if south <= lat <= north and west <= lng <= east
            ]
            return json_answer(200, {"data": inside[: int(query.get("limit", 2000))]})
        lat, lng = (south + north) / 2, (west + east) / 2
        if lat < 55.0:
            return json_answer(200, {"data": []})
        far = mapillary_image(
            f"{int(lat * 1e4)}{int(lng * 1e4)}9",
            north,
            east,
            base,
            captured_at=1_500_000_000_000,
            thumb="far.jpg",
        )
        near = mapillary_image(f"{int(lat * 1e4)}{int(lng * 1e4)}1", lat, lng + 1e-5, base)
        return json_answer(200, {"data": [far, near]})

    return {
        "/images": images,
        "/thumb/near.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg((1024, 768), (10, 200, 10))),
        "/thumb/far.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg((1024, 768), (200, 10, 10))),
    }
