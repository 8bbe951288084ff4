"""The Mapillary client against a loopback server that answers like API v4."""

import logging
import math
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import collect, geo, images, mapillary
from tests.fake_services import VALID_TOKEN, mapillary_routes
from tests.loopback import serve
from tests.test_streetview import assert_consistent

FAST = {"backoff_s": 0.01, "timeout_s": 0.5, "per_second": 0, "progress": False}
PLACES = pd.DataFrame({"lat": [56.10, 56.20, 54.80], "lng": [10.10, 10.20, 11.00], "cell": ["a", "b", "c"]})


def fake_mapillary(faults=None):
    holder = []
    context = serve(mapillary_routes(holder, faults))
    server = context.__enter__()
    holder.append(server.url)
    return context, server


def test_nearest_image_is_downloaded_as_a_square(tmp_path):
    context, server = fake_mapillary()
    try:
        counts = mapillary.download(
            PLACES, tmp_path, token=VALID_TOKEN, size=(64, 64), api_root=server.url, **FAST
        )
    finally:
        context.__exit__(None, None, None)
    assert counts == {"downloaded": 2, "skipped": 0, "no_imagery": 1, "duplicate": 0, "failed": 0}
    rows = assert_consistent(tmp_path)
    ok = [row for row in rows if row["status"] == "ok"]
    assert all(row["image_id"].endswith("1") for row in ok)  # the near image, not the far one
    assert {row["date"] for row in ok} == {"2021-06"}  # captured_at in milliseconds
    image = Image.open(tmp_path / ok[0]["image_path"])
    assert image.size == (64, 64) and image.getpixel((32, 32))[1] > 150  # the green "near" picture
    assert all(VALID_TOKEN not in path for path in server.requests)  # sent in a header, not the URL
    assert any(h.get("Authorization") == f"OAuth {VALID_TOKEN}" for h in server.headers_seen)


def test_invalid_token_stops_the_run(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    context, server = fake_mapillary()
    try:
        with pytest.raises(collect.FatalAPIError, match="Invalid OAuth access token") as caught:
            mapillary.download(PLACES, tmp_path, token="MLY|bad", api_root=server.url, **FAST)
    finally:
        context.__exit__(None, None, None)
    assert "MLY|bad" not in str(caught.value) and "MLY|bad" not in caplog.text
    assert "MAPILLARY_ACCESS_TOKEN" in str(caught.value)


def test_rate_limit_is_retried_then_reported_as_quota(tmp_path):
    faults = {"429": 1}
    context, server = fake_mapillary(faults)
    try:
        counts = mapillary.download(PLACES.iloc[:1], tmp_path, token=VALID_TOKEN, api_root=server.url, **FAST)
        assert counts["downloaded"] == 1 and faults["429"] == 0
        faults["429"] = 100
        with pytest.raises(collect.QuotaExceeded, match="429"):
            mapillary.download(
                PLACES,
                tmp_path,
                token=VALID_TOKEN,
                api_root=server.url,
                retries=1,
                **{**FAST, "backoff_s": 0.0},
            )
    finally:
        context.__exit__(None, None, None)
    assert_consistent(tmp_path)


def test_bbox_is_west_south_east_north():
    west, south, east, north = (float(v) for v in mapillary.bbox_around(56.0, 10.0, 100).split(","))
    assert west < 10.0 < east and south < 56.0 < north
    assert (north - south) * 111_320 == pytest.approx(200, rel=0.01)
    assert (east - west) > (north - south)  # a degree of longitude is shorter at 56° N


def download_world(tmp_path, world, places=PLACES, faults=None, **options):
    context, server = fake_mapillary_world(world, faults)
    try:
        counts = mapillary.download(
            places, tmp_path, token=VALID_TOKEN, size=(32, 32), api_root=server.url, **{**FAST, **options}
        )
    finally:
        context.__exit__(None, None, None)
    return counts, server


def fake_mapillary_world(world, faults=None):
    holder = []
    context = serve(mapillary_routes(holder, faults, world=world))
    server = context.__enter__()
    holder.append(server.url)
    return context, server


def metres_east(lat, lng, metres):
    return lat, lng + metres / (111_195.0 * math.cos(math.radians(lat)))


def test_an_answer_that_is_not_json_is_transient_not_fatal(tmp_path):
    faults = {"not_json": 1}
    context, server = fake_mapillary(faults)
    try:
        first = mapillary.download(
            PLACES, tmp_path, token=VALID_TOKEN, api_root=server.url, workers=1, **FAST
        )
        second = mapillary.download(PLACES, tmp_path, token=VALID_TOKEN, api_root=server.url, **FAST)
    finally:
        context.__exit__(None, None, None)
    assert faults["not_json"] == 0
    assert first["failed"] == 1 and first["downloaded"] + first["no_imagery"] == 2  # the run went on
    assert (
        second["skipped"] == 2 and second["downloaded"] + second["no_imagery"] == 1
    )  # and the next run retried
    assert len(assert_consistent(tmp_path)) == 3


def test_panoramas_are_skipped(tmp_path):
    lat, lng = 56.1, 10.1
    world = [
        ("1", *metres_east(lat, lng, 2), {"is_pano": True, "sequence": "360-cam"}),  # nearest, but a panorama
        ("2", *metres_east(lat, lng, 9), {"sequence": "phone"}),
        ("3", *metres_east(56.2, 10.2, 1), {"is_pano": True}),  # the only image at the second place
    ]
    places = pd.DataFrame({"lat": [lat, 56.2], "lng": [lng, 10.2], "cell": ["a", "b"]})
    counts, _ = download_world(tmp_path, world, places)
    assert counts["downloaded"] == 1 and counts["no_imagery"] == 1
    ok = [row for row in assert_consistent(tmp_path) if row["status"] == "ok"]
    assert [row["image_id"] for row in ok] == ["2"]


def test_sequence_and_capture_time_are_in_the_manifest(tmp_path):
    lat, lng = 56.1, 10.1
    world = [("77", *metres_east(lat, lng, 3), {"sequence": "seqABC", "captured_at": 1_625_000_000_000})]
    download_world(tmp_path, world, PLACES.iloc[:1])
    row = assert_consistent(tmp_path)[0]
    assert row["sequence"] == "seqABC"
    assert row["captured_at"] == "2021-06-29T20:53:20Z" and row["date"] == "2021-06"  # 1.625e12 ms, UTC
    assert images.read_image_set(tmp_path)["sequence"].tolist() == ["seqABC"]


def test_the_nearest_image_is_found_when_a_page_is_full(tmp_path):
    lat, lng = 56.1, 10.1
    rng = np.random.default_rng(0)
    # 300 images within the 50 m box, listed by id; the nearest one has the last id, so a
    # page of 100 never shows it unless the box shrinks around the place
    world = [
        (f"{i:04d}", lat + dlat, lng + dlng, {})
        for i, (dlat, dlng) in enumerate(rng.uniform(-0.00044, 0.00044, (300, 2)) + 0.0001)
    ]
    world.append(("9999", *metres_east(lat, lng, 1.5), {}))
    distances = {w[0]: geo.haversine_km(lat, lng, w[1], w[2]) for w in world}
    assert min(distances, key=distances.get) == "9999"
    counts, server = download_world(tmp_path, world, PLACES.iloc[:1], candidates=100)
    assert counts["downloaded"] == 1
    assert assert_consistent(tmp_path)[0]["image_id"] == "9999"
    boxes = [
        parse_qs(urlparse(path).query)["bbox"][0] for path in server.requests if path.startswith("/images")
    ]
    widths = [float(b.split(",")[2]) - float(b.split(",")[0]) for b in boxes]
    assert len(widths) >= 2 and widths == sorted(widths, reverse=True)  # it asked again, closer in


def test_candidates_are_within_the_apis_limit(tmp_path):
    with pytest.raises(ValueError, match="2,000"):
        mapillary.download(PLACES, tmp_path, token=VALID_TOKEN, candidates=5000, **FAST)
