"""A stand-in for the Street View Static API on 127.0.0.1, for rehearsing the real path offline.

The ``rehearsal`` profile downloads its images with the real client (``helpers.streetview``)
from this service, which the workbook starts itself. It answers like Google's:

* ``/maps/api/streetview/metadata?location=lat,lng&radius=..&key=..`` gives JSON with
  ``status`` "OK" (``pano_id``, ``location``, ``date``, ``copyright``) or "ZERO_RESULTS"
  (about 3 % of places have no imagery), and "REQUEST_DENIED" for a wrong key;
* ``/maps/api/streetview?pano=..|location=..&size=WxH&key=..`` gives a JPEG of W x H pixels
  whose bottom rows carry a "logo", like the real images; a wrong key gets HTTP 403.

Panoramas sit on a grid of about 50 m, so two addresses on one street can share one
(the client must record a duplicate). The picture of a panorama is the synthetic street
scene of that place (``helpers.synthetic``), captured in the session of its district (a
car covers a district in a day), so a model has something real to learn. On a fixed
schedule the service also fails as the real one does: 429 with ``Retry-After``, 500, and an
image body cut short.

Coordinates are (lat, lng) in degrees.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from helpers import synthetic

KEY = "rehearsal-key-for-the-loopback-stand-in"  # not a secret: the stand-in accepts only this
PANO_GRID_DEG = 0.0005  # panoramas about every 55 m (north-south) by 31 m (east-west)
DISTRICT_DEG = (0.05, 0.08)  # one capture session per district of about 5.5 x 5 km
NO_IMAGERY_SHARE = 0.03
# request number -> fault, per endpoint: every run of the rehearsal meets each failure
FAULTS = {
    "metadata": {11: "500", 40: "429", 300: "500"},
    "image": {7: "truncated", 23: "500", 90: "429", 200: "truncated"},
}


def _unit_hash(*parts) -> float:
    """A number in [0, 1) that depends only on ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def panorama_at(lat: float, lng: float, seed: int = 0) -> dict | None:
    """The stand-in's panorama nearest (lat, lng), or None where it has no imagery.

    Returns ``{"pano_id", "lat", "lng", "date", "session"}``; the session (which sky and
    light the picture has) is shared by the whole district around the panorama.
    """
    row, column = round(lat / PANO_GRID_DEG), round(lng / PANO_GRID_DEG)
    if _unit_hash("imagery", row, column, seed) < NO_IMAGERY_SHARE:
        return None
    district = (int(np.floor(lat / DISTRICT_DEG[0])), int(np.floor(lng / DISTRICT_DEG[1])))
    when = _unit_hash("capture", *district, seed)
    year, month = 2009 + int(when * 15), 1 + int(_unit_hash("month", *district, seed) * 12)
    return {
        "pano_id": f"standin_{row}_{column}",
        "lat": round(row * PANO_GRID_DEG, 7),
        "lng": round(column * PANO_GRID_DEG, 7),
        "date": f"{year}-{month:02d}",
        "session": int(_unit_hash("session", *district, seed) * synthetic.N_SESSIONS),
    }


def _panorama_from_id(pano_id: str, seed: int) -> dict | None:
    try:
        _, row, column = pano_id.split("_")
        lat, lng = int(row) * PANO_GRID_DEG, int(column) * PANO_GRID_DEG
    except ValueError:
        return None
    return panorama_at(lat, lng, seed)


def render_panorama(pano: dict, width: int, height: int, geography: dict, seed: int = 0) -> bytes:
    """The JPEG of ``pano``: its synthetic scene, ``width`` px square, on top of a logo band
    filling the remaining ``height - width`` rows (Google's images carry the logo there)."""
    place = pd.DataFrame({"lat": [pano["lat"]], "lng": [pano["lng"]]})
    features = synthetic.scene_features(place["lat"], place["lng"], geography, seed=seed)
    scene = synthetic.render_locations(place, features, np.array([pano["session"]]), width, seed=seed)[0]
    picture = Image.new("RGB", (width, height), (236, 236, 236))
    picture.paste(Image.fromarray(scene).crop((0, 0, width, min(width, height))), (0, 0))
    if height > width:
        draw = ImageDraw.Draw(picture)
        draw.text((4, width + 2), "Stand-in", fill=(90, 90, 90))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _answer(handler, status: int, content_type: str, body: bytes, headers: dict | None = None):
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _json(handler, status: int, body: dict, headers: dict | None = None):
    _answer(handler, status, "application/json; charset=UTF-8", json.dumps(body).encode(), headers)


def _make_handler(geography: dict, seed: int, faults: dict, log: dict):
    lock = threading.Lock()

    def next_fault(endpoint: str) -> str | None:
        with lock:
            log[endpoint] += 1
            fault = faults.get(endpoint, {}).get(log[endpoint])
            if fault:
                log["faults"].append((endpoint, log[endpoint], fault))
            return fault

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (name fixed by http.server)
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/maps/api/streetview/metadata":
                self.metadata(query)
            elif url.path == "/maps/api/streetview":
                self.image(query)
            else:
                _answer(self, 404, "text/plain", b"Not Found")

        def common_fault(self, fault) -> bool:
            if fault == "429":
                _json(self, 429, {"error": "Too Many Requests"}, {"Retry-After": "1"})
            elif fault == "500":
                _json(self, 500, {"status": "UNKNOWN_ERROR"})
            return fault in ("429", "500")

        def metadata(self, query):
            if self.common_fault(next_fault("metadata")):
                return
            if query.get("key") != KEY:
                _json(
                    self,
                    200,
                    {"status": "REQUEST_DENIED", "error_message": "The provided API key is invalid."},
                )
                return
            try:
                lat, lng = (float(v) for v in query["location"].split(","))
            except (KeyError, ValueError):
                _json(self, 200, {"status": "INVALID_REQUEST"})
                return
            pano = panorama_at(lat, lng, seed)
            if pano is None:
                _json(self, 200, {"status": "ZERO_RESULTS"})
                return
            body = {
                "copyright": "© stand-in (synthetic scenes)",
                "date": pano["date"],
                "location": {"lat": pano["lat"], "lng": pano["lng"]},
                "pano_id": pano["pano_id"],
                "status": "OK",
            }
            _json(self, 200, body)

        def image(self, query):
            fault = next_fault("image")
            if self.common_fault(fault):
                return
            if query.get("key") != KEY:
                _answer(self, 403, "text/plain", b"The Google Maps Platform server rejected your request.")
                return
            if "pano" in query:
                pano = _panorama_from_id(query["pano"], seed)
            else:
                lat, lng = (float(v) for v in query.get("location", "nan,nan").split(","))
                pano = panorama_at(lat, lng, seed)
            if pano is None:  # with return_error_code=true the service answers 404
                _answer(self, 404, "text/plain", b"Not Found")
                return
            width, height = (int(v) for v in query.get("size", "640x640").split("x"))
            body = render_panorama(pano, width, height, geography, seed)
            if fault == "truncated":  # promise the whole body, send half, hang up
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            _answer(self, 200, "image/jpeg", body)

        def log_message(self, *args):  # the notebook prints counts, not one line per request
            pass

    return Handler


@contextmanager
def serve(geography: dict, seed: int = 0, faults: dict | None = None):
    """Run the stand-in on a free port of 127.0.0.1 while the block runs.

    Yields ``(api_root, log)``: pass ``api_root`` to ``streetview.download(api_root=...)``
    with ``key=KEY``; ``log`` counts the requests per endpoint and lists the faults served.
    ``faults`` replaces the schedule :data:`FAULTS` ({} for none).
    """
    log = {"metadata": 0, "image": 0, "faults": []}
    handler = _make_handler(geography, seed, FAULTS if faults is None else faults, log)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/maps/api/streetview", log
    finally:
        server.shutdown()
        server.server_close()
