"""Loopback stand-ins for the Street View Static API and the Mapillary API v4.

They answer like the real services, including their failures, which a test switches on
through ``faults``: a dict of fault name -> how many of the next requests get it.
"""

from __future__ import annotations

import io
import json
import threading
import time
from urllib.parse import parse_qs, urlparse

from PIL import Image

VALID_KEY = "AIzaTEST-key-0123456789abcdef"
LOGO_COLOUR = (255, 0, 255)


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


def streetview_routes(
    faults: dict | None = None, no_imagery_below_lat: float = 54.9, image_delay_s: float = 0.0
):
    """Routes of a fake Street View: panoramas every 0.01 degree; none south of a latitude.

    Two locations within the same 0.01-degree square share a panorama (duplicates).
    Faults: "429" (with Retry-After: 1), "500", "hang" (3 s before answering),
    "truncated" (image body cut short), "quota" (OVER_QUERY_LIMIT), on metadata or image.
    """
    faults = faults if faults is not None else {}
    lock = threading.Lock()

    def common_faults(handler, kinds):
        fault = take_fault(faults, lock, *kinds)
        if fault == "429":
            return json_answer(429, {"error": "rate"}, {"Retry-After": "1"})
        if fault == "500":
            return json_answer(500, {"status": "UNKNOWN_ERROR"})
        if fault == "hang":
            time.sleep(3)
        return None

    def metadata(handler):
        query = _query(handler)
        trouble = common_faults(handler, ("429", "500", "hang"))
        if trouble:
            return trouble
        if query.get("key") != VALID_KEY:
            return json_answer(
                200, {"status": "REQUEST_DENIED", "error_message": "The provided API key is invalid."}
            )
        if take_fault(faults, lock, "quota"):
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
        trouble = common_faults(handler, ("image_429", "image_500"))
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


def mapillary_routes(base_url_holder: list, faults: dict | None = None):
    """Routes of a fake Mapillary: two images in every box north of 55.0, none south of it."""
    faults = faults if faults is not None else {}
    lock = threading.Lock()

    def images(handler):
        if handler.headers.get("Authorization") != f"OAuth {VALID_TOKEN}":
            return json_answer(
                401,
                {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}},
            )
        if take_fault(faults, lock, "429"):
            return json_answer(
                429,
                {"error": {"message": "Application request limit reached", "code": 4}},
                {"Retry-After": "1"},
            )
        west, south, east, north = (float(v) for v in _query(handler)["bbox"].split(","))
        lat, lng = (south + north) / 2, (west + east) / 2
        if lat < 55.0:
            return json_answer(200, {"data": []})
        far = {
            "id": f"{int(lat * 1e4)}{int(lng * 1e4)}9",
            "captured_at": 1_500_000_000_000,
            "thumb_1024_url": f"{base_url_holder[0]}/thumb/far.jpg",
            "computed_geometry": {"type": "Point", "coordinates": [east, north]},
        }
        near = {
            "id": f"{int(lat * 1e4)}{int(lng * 1e4)}1",
            "captured_at": 1_625_000_000_000,
            "thumb_1024_url": f"{base_url_holder[0]}/thumb/near.jpg",
            "computed_geometry": {"type": "Point", "coordinates": [lng + 1e-5, lat]},
        }
        return json_answer(200, {"data": [far, near]})

    return {
        "/images": images,
        "/thumb/near.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg((1024, 768), (10, 200, 10))),
        "/thumb/far.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg((1024, 768), (200, 10, 10))),
    }
