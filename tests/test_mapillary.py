"""The Mapillary client against a loopback server that answers like API v4."""

import logging

import pandas as pd
import pytest
from PIL import Image

from helpers import collect, mapillary
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
