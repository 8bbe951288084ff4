"""The Street View client against a loopback server that answers like the real API."""

import base64
import csv
import itertools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from email.utils import formatdate
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
import requests
from PIL import Image
from pyproj import Geod

from helpers import collect, images, streetview
from tests.fake_services import LOGO_COLOUR, SIGNING_SECRET, VALID_KEY, streetview_routes
from tests.loopback import closed_port_url, serve

FAST = {"backoff_s": 0.01, "timeout_s": 0.5, "per_second": 0, "progress": False}


def locations(n_unique: int = 10, duplicates: int = 2, no_imagery: int = 3) -> pd.DataFrame:
    rows = [(56.0 + 0.02 * i, 10.0 + 0.02 * i, f"cell{i % 2}") for i in range(n_unique)]
    rows += [(56.0 + 0.02 * i + 0.001, 10.0 + 0.02 * i + 0.001, f"cell{i % 2}") for i in range(duplicates)]
    rows += [(54.6 + 0.01 * i, 11.0, "cell9") for i in range(no_imagery)]
    return pd.DataFrame(rows, columns=["lat", "lng", "cell"])


def manifest(folder) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_consistent(folder):
    rows = manifest(folder)
    ok = [row for row in rows if row["status"] == "ok"]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    assert sorted(row["image_path"] for row in ok) == files
    assert len({row["image_id"] for row in ok}) == len(ok), "an image was downloaded twice"
    assert not list(folder.rglob(".*.part*")), "a temporary file was left behind"
    return rows


def test_download_skips_no_imagery_and_duplicates_and_crops_the_logo(tmp_path):
    with serve(streetview_routes()) as server:
        counts = streetview.download(
            locations(), tmp_path, key=VALID_KEY, api_root=server.url + "/maps/api/streetview", **FAST
        )
    assert counts == {"downloaded": 10, "skipped": 0, "no_imagery": 3, "duplicate": 2, "failed": 0}
    rows = assert_consistent(tmp_path)
    assert len(rows) == 15
    ok = next(row for row in rows if row["status"] == "ok")
    image = Image.open(tmp_path / ok["image_path"])
    assert image.size == (224, 224)
    assert max(abs(a - b) for a, b in zip(image.getpixel((112, 223)), LOGO_COLOUR, strict=True)) > 60
    assert ok["image_id"].startswith("pano_") and ok["date"] == "2021-06" and ok["source"] == "streetview"
    assert float(ok["lat"]) == round(float(ok["requested_lat"]), 2)  # the panorama's own position


def test_a_second_run_downloads_nothing(tmp_path):
    with serve(streetview_routes()) as server:
        root = server.url + "/maps/api/streetview"
        streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=root, **FAST)
        asked = len(server.requests)
        again = streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert again["skipped"] == 15 and again["downloaded"] == 0
    assert len(server.requests) == asked


def retry_gap_s(server, events, fault: str) -> float:
    """Seconds between the server's answer ``fault`` and the next arrival of the same request."""
    name, sent, path = next(event for event in events if event[0] == fault)
    return min(t for t, asked in server.arrivals if asked == path and t > sent) - sent


def test_transient_faults_are_retried(tmp_path):
    faults = {"429": 1, "500": 2, "hang": 1, "truncated": 1, "image_500": 1}
    events = []
    with serve(streetview_routes(faults, events=events)) as server:
        counts = streetview.download(
            locations(4, 0, 0),
            tmp_path,
            key=VALID_KEY,
            workers=1,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert counts["downloaded"] == 4 and counts["failed"] == 0
    assert all(v == 0 for v in faults.values()), faults
    assert retry_gap_s(server, events, "429") >= 1.0  # Retry-After: 1 was honoured, measured on the server
    assert_consistent(tmp_path)


def test_persistent_failures_are_counted_not_fatal(tmp_path):
    faults = {"500": 10_000}
    with serve(streetview_routes(faults)) as server:
        counts = streetview.download(
            locations(3, 0, 0),
            tmp_path,
            key=VALID_KEY,
            retries=1,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert counts["failed"] == 3 and counts["downloaded"] == 0
    assert manifest(tmp_path) == []  # failures are not recorded, so the next run retries them


def test_request_denied_stops_the_whole_run_at_once(tmp_path):
    many = pd.DataFrame({"lat": [56 + i * 1e-3 for i in range(2000)], "lng": 10.0, "cell": "c"})
    with serve(streetview_routes()) as server, pytest.raises(collect.FatalAPIError) as caught:
        streetview.download(
            many,
            tmp_path,
            key="AIzaWRONG-key-000",
            workers=4,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert "REQUEST_DENIED" in str(caught.value) and "GOOGLE_MAPS_API_KEY" in str(caught.value)
    assert "AIzaWRONG" not in str(caught.value)
    assert len(server.requests) <= 64  # one chunk at most, not 2,000 failures


def test_over_query_limit_stops_and_the_next_run_resumes(tmp_path):
    faults = {"quota": 0}
    with serve(streetview_routes(faults)) as server:
        root = server.url + "/maps/api/streetview"
        first = streetview.download(
            locations(10, 0, 0).iloc[:5], tmp_path, key=VALID_KEY, api_root=root, **FAST
        )
        faults["quota"] = 10_000
        with pytest.raises(collect.QuotaExceeded, match="run the same command later"):
            streetview.download(
                locations(10, 0, 0), tmp_path, key=VALID_KEY, retries=2, api_root=root, **FAST
            )
        assert_consistent(tmp_path)
        faults["quota"] = 0
        resumed = streetview.download(locations(10, 0, 0), tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert first["downloaded"] == 5
    assert resumed["skipped"] == 5 and resumed["downloaded"] == 5
    assert len(assert_consistent(tmp_path)) == 10


def test_the_key_is_nowhere_on_disk_or_in_logs(tmp_path, caplog, capsys):
    faults = {"429": 1, "500": 1, "hang": 1, "truncated": 1}
    caplog.set_level(logging.DEBUG)  # urllib3 logs every URL at DEBUG
    with serve(streetview_routes(faults)) as server:
        streetview.download(
            locations(),
            tmp_path,
            key=VALID_KEY,
            api_root=server.url + "/maps/api/streetview",
            backoff_s=0.01,
            timeout_s=0.5,
            per_second=0,
            progress=True,
        )
        with pytest.raises(collect.FatalAPIError) as caught:
            streetview.download(
                locations(),
                tmp_path / "denied",
                key=VALID_KEY[:-1] + "X",
                api_root=server.url + "/maps/api/streetview",
                **FAST,
            )
    assert any(VALID_KEY in path for path in server.requests)  # the key did go to the server...
    captured = capsys.readouterr()
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert any("retrying" in record.getMessage() for record in caplog.records)
    for secret in (VALID_KEY, VALID_KEY[:-1] + "X"):  # ...and nowhere else
        assert secret not in caplog.text
        assert all(secret not in record.getMessage() for record in caplog.records)
        assert secret not in captured.out + captured.err
        assert secret not in str(caught.value)
        assert not any(secret.encode() in blob for blob in written)


def test_missing_key_explains_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_MAPS_API_KEY", raising=False)
    monkeypatch.setattr(collect.config, "REPO_ROOT", tmp_path)  # no .env there
    with pytest.raises(collect.FatalAPIError, match="GOOGLE_MAPS_API_KEY"):
        streetview.download(locations(), tmp_path, progress=False)


def test_secrets_come_from_the_environment_or_dotenv(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nOTHER=1\nGOOGLE_MAPS_API_KEY='from-dotenv'\n")
    monkeypatch.delenv("GOOGLE_MAPS_API_KEY", raising=False)
    assert collect.load_secret("GOOGLE_MAPS_API_KEY", env_file) == "from-dotenv"
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "from-env")
    assert collect.load_secret("GOOGLE_MAPS_API_KEY", env_file) == "from-env"
    assert collect.load_secret("MISSING", env_file) is None


def test_redact():
    text = "GET https://x/y?location=1,2&key=AIzaSECRET&size=1 token=abc"
    assert collect.redact(text) == "GET https://x/y?location=1,2&key=REDACTED&size=1 token=REDACTED"
    assert collect.redact("Bearer s3cr3t!", ["s3cr3t!"]) == "Bearer REDACTED"


KILLABLE = textwrap.dedent("""
    import sys
    import pandas as pd
    from helpers import streetview
    root, folder = sys.argv[1], sys.argv[2]
    rows = [(56.0 + 0.02 * i, 10.0 + 0.02 * i, f"c{i % 3}") for i in range(60)]
    places = pd.DataFrame(rows, columns=["lat", "lng", "cell"])
    streetview.download(places, folder, key=sys.argv[3], api_root=root, workers=2, per_second=0,
                        backoff_s=0.01, progress=False)
""")


def test_killed_half_way_then_resumed(tmp_path):
    folder = tmp_path / "images"
    with serve(streetview_routes(image_delay_s=0.05)) as server:
        root = server.url + "/maps/api/streetview"
        child = subprocess.Popen(
            [sys.executable, "-c", KILLABLE, root, str(folder), VALID_KEY],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        deadline = time.monotonic() + 60
        while len(list(folder.rglob("*.jpg"))) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        on_disk = len(list(folder.rglob("*.jpg")))
        assert 8 <= on_disk < 60, "the child should be killed half-way"

        rows = [(56.0 + 0.02 * i, 10.0 + 0.02 * i, f"c{i % 3}") for i in range(60)]
        places = pd.DataFrame(rows, columns=["lat", "lng", "cell"])
        counts = streetview.download(places, folder, key=VALID_KEY, api_root=root, **FAST)
    rows = assert_consistent(folder)
    assert len(rows) == 60 and all(row["status"] == "ok" for row in rows)
    assert counts["skipped"] + counts["downloaded"] == 60
    assert counts["skipped"] >= on_disk - 8  # what was recorded before the kill is not fetched again


# --- one back-off for all workers ----------------------------------------------------------


def arrivals_after(server, events, fault: str) -> list[float]:
    """Seconds from the server's answer ``fault`` to each request that arrived after it."""
    _, sent, _ = next(event for event in events if event[0] == fault)
    return [t - sent for t, _ in server.arrivals if t > sent]


@pytest.mark.parametrize("retry_after", ["2", "http-date"])
def test_a_429_pauses_every_worker_for_retry_after(tmp_path, retry_after):
    if retry_after == "http-date":
        # an HTTP date at least 2 s ahead (whole seconds, so between 2 and 3 s)
        retry_after = lambda: formatdate(math.ceil(time.time()) + 2, usegmt=True)  # noqa: E731
    faults, events = {}, []
    with serve(streetview_routes(faults, retry_after=retry_after, events=events)) as server:
        root = server.url + "/maps/api/streetview"
        faults["429"] = 1  # the first metadata request
        counts = streetview.download(
            locations(40, 0, 0),
            tmp_path,
            key=VALID_KEY,
            workers=4,
            api_root=root,
            # 20 requests a second: without one pause for all, the other workers would send
            # some 35 more requests before the 2 s are up
            **{**FAST, "per_second": 20},
        )
    assert counts["downloaded"] == 40 and counts["failed"] == 0
    assert retry_gap_s(server, events, "429") >= 1.99  # the retry itself waited (clocks to 10 ms)
    # only requests already on their way when the 429 was sent may still arrive (one or two,
    # a few on a busy machine)
    early = [gap for gap in arrivals_after(server, events, "429") if gap < 1.99]
    assert len(early) <= 4, f"requests arrived {early} s after the 429"


def test_over_query_limit_pauses_every_worker(tmp_path):
    faults, events = {"quota": 1}, []
    with serve(streetview_routes(faults, events=events)) as server:
        counts = streetview.download(
            locations(30, 0, 0),
            tmp_path,
            key=VALID_KEY,
            workers=4,
            api_root=server.url + "/maps/api/streetview",
            **{**FAST, "backoff_s": 1.0, "per_second": 20},  # the pause is 0.5 to 1 s
        )
    assert counts["downloaded"] == 30 and faults["quota"] == 0
    early = [gap for gap in arrivals_after(server, events, "quota") if gap < 0.5]
    assert len(early) <= 4, f"requests arrived {early} s after OVER_QUERY_LIMIT"


def test_a_pause_holds_back_every_caller_of_the_shared_limiter():
    wait_turn = collect.rate_limiter(0)
    wait_turn.pause(0.3)
    wait_turn.pause(0.1)  # a shorter pause does not cut the longer one short
    started, woke = time.monotonic(), []
    threads = [
        threading.Thread(target=lambda: (wait_turn(), woke.append(time.monotonic()))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert min(woke) - started >= 0.3


@pytest.mark.parametrize(
    ("header", "expected"),
    [("2", 2.0), ("0.5", 0.5), ("soon", None), ("", None)],
)
def test_retry_after_seconds(header, expected):
    answer = requests.Response()
    answer.headers["Retry-After"] = header
    assert collect.retry_after_seconds(answer) == expected


def test_retry_after_as_an_http_date():
    answer = requests.Response()
    answer.headers["Retry-After"] = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= collect.retry_after_seconds(answer) <= 30
    answer.headers["Retry-After"] = formatdate(time.time() - 30, usegmt=True)
    assert collect.retry_after_seconds(answer) == 0.0  # in the past: retry now


# --- URL signing -------------------------------------------------------------------------


def openssl_signature(path_and_query: str, secret: str) -> str:
    """Google's signature computed by the openssl command line tool, not by Python's hmac."""
    key_hex = base64.urlsafe_b64decode(secret).hex()
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-mac", "HMAC", "-macopt", f"hexkey:{key_hex}", "-binary"],
        input=path_and_query.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return base64.urlsafe_b64encode(digest).decode()


def test_sign_url_matches_a_published_example():
    # the example of github.com/sgarcez/gmapsign (README): secret "bXlrZXk=" is base64 of "mykey"
    url = "https://maps.googleapis.com/maps/api/staticmap?center=40.714%2C+-73.998&client=myclient&size=400x400&zoom=12"
    assert streetview.sign_url(url, "bXlrZXk=") == url + "&signature=C1UG9w-v41q7i1lISpZsw1xzOV8="


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_signed_download_matches_an_independent_signature(tmp_path):
    with serve(streetview_routes(signing_secret=SIGNING_SECRET)) as server:
        counts = streetview.download(
            locations(),
            tmp_path,
            key=VALID_KEY,
            signing_secret=SIGNING_SECRET,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert counts["downloaded"] == 10 and counts["failed"] == 0  # the server accepted every signature
    metadata = next(path for path in server.requests if "/metadata?" in path)
    image = next(path for path in server.requests if "pano=" in path)
    for path in (metadata, image):
        unsigned, _, signature = path.rpartition("&signature=")
        assert "&key=" in unsigned  # the key is part of what is signed
        assert signature == openssl_signature(unsigned, SIGNING_SECRET)


@pytest.mark.parametrize("secret", [None, base64.urlsafe_b64encode(b"another project's secret").decode()])
def test_a_refused_signature_stops_the_run_at_once(tmp_path, monkeypatch, secret):
    monkeypatch.delenv(streetview.SIGNING_SECRET_NAME, raising=False)
    monkeypatch.setattr(collect.config, "REPO_ROOT", tmp_path)  # no .env there
    many = pd.DataFrame({"lat": [56 + i * 1e-3 for i in range(2000)], "lng": 10.0, "cell": "c"})
    with (
        serve(streetview_routes(signing_secret=SIGNING_SECRET)) as server,
        pytest.raises(collect.FatalAPIError) as caught,
    ):
        streetview.download(
            many,
            tmp_path / "images",
            key=VALID_KEY,
            signing_secret=secret,
            workers=4,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    message = str(caught.value)
    assert "HTTP 403" in message and "signature" in message
    assert streetview.SIGNING_SECRET_NAME in message and streetview.KEY_NAME in message
    assert len(server.requests) <= 64  # one chunk at most, not 2,000 "transient" failures
    assert VALID_KEY not in message and (secret is None or secret not in message)


def test_the_signing_secret_comes_from_dotenv(tmp_path, monkeypatch):
    monkeypatch.delenv(streetview.SIGNING_SECRET_NAME, raising=False)
    (tmp_path / ".env").write_text(f"{streetview.SIGNING_SECRET_NAME}={SIGNING_SECRET}\n")
    monkeypatch.setattr(collect.config, "REPO_ROOT", tmp_path)
    with serve(streetview_routes(signing_secret=SIGNING_SECRET)) as server:
        counts = streetview.download(
            locations(3, 0, 0),
            tmp_path / "images",
            key=VALID_KEY,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert counts["downloaded"] == 3


def test_a_malformed_signing_secret_is_refused_before_any_request(tmp_path):
    with (
        serve(streetview_routes()) as server,
        pytest.raises(collect.FatalAPIError, match="URL-safe base64") as caught,
    ):
        streetview.download(
            locations(),
            tmp_path,
            key=VALID_KEY,
            signing_secret="not*base64!",
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert server.requests == [] and "not*base64!" not in str(caught.value)


def test_secret_and_signatures_are_nowhere_on_disk_or_in_logs(tmp_path, caplog, capsys):
    faults = {"429": 1, "500": 1, "truncated": 1, "image_500": 1}
    caplog.set_level(logging.DEBUG)  # urllib3 logs every URL at DEBUG
    wrong = base64.urlsafe_b64encode(b"a wrong signing secret").decode()
    with serve(streetview_routes(faults, signing_secret=SIGNING_SECRET)) as server:
        root = server.url + "/maps/api/streetview"
        streetview.download(
            locations(), tmp_path, key=VALID_KEY, signing_secret=SIGNING_SECRET, api_root=root, **FAST
        )
        with pytest.raises(collect.FatalAPIError) as caught:
            streetview.download(
                locations(), tmp_path / "refused", key=VALID_KEY, signing_secret=wrong, api_root=root, **FAST
            )
    signatures = {path.rpartition("&signature=")[2] for path in server.requests}
    assert len(signatures) > 20  # every request was signed, each with its own signature
    captured = capsys.readouterr()
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert any("retrying" in record.getMessage() for record in caplog.records)
    for secret in [SIGNING_SECRET, wrong, *signatures]:
        assert secret not in caplog.text
        assert all(secret not in record.getMessage() for record in caplog.records)
        assert secret not in captured.out + captured.err
        assert secret not in str(caught.value)
        assert secret.encode() not in written


# --- the camera faces the address ----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ((56.0, 10.0), (56.1, 10.0), 0.0),  # north
        ((0.0, 10.0), (0.0, 10.1), 90.0),  # east along the equator
        ((56.0, 10.0), (55.9, 10.0), 180.0),  # south
        ((0.0, 10.0), (0.0, 9.9), 270.0),  # west along the equator
    ],
)
def test_bearing_of_the_compass_points(start, end, expected):
    assert streetview.bearing_deg(*start, *end) == pytest.approx(expected, abs=1e-9)


def test_bearing_agrees_with_pyproj_on_danish_places():
    places = {"Copenhagen": (55.6761, 12.5683), "Aarhus": (56.1629, 10.2039), "Skagen": (57.7209, 10.5839)}
    places["Rønne"] = (55.1009, 14.7066)
    places["a house 20 m NE of the first"] = (55.6762271, 12.5685264)
    geod = Geod(ellps="WGS84")
    for a, b in itertools.permutations(places.values(), 2):
        expected = geod.inv(a[1], a[0], b[1], b[0])[0] % 360  # the forward azimuth on the ellipsoid
        assert streetview.bearing_deg(*a, *b) == pytest.approx(expected, abs=0.2)
    assert streetview.heading_to(55.6761, 12.5683, 55.6761, 12.5683) is None  # standing on it


def test_the_camera_faces_the_address(tmp_path):
    # addresses some 20-50 m from their panorama (the fake has one every 0.01 degree), in all
    # directions, and one standing exactly on its panorama
    offsets = [
        (0.0003, 0.0),
        (0.0, 0.0004),
        (-0.0003, 0.0),
        (0.0, -0.0004),
        (0.0002, -0.0003),
        (-0.0002, 0.0003),
    ]
    rows = [(56.0 + 0.02 * i + dlat, 10.0 + 0.02 * i + dlng, "c") for i, (dlat, dlng) in enumerate(offsets)]
    places = pd.DataFrame([*rows, (56.5, 10.5, "c")], columns=["lat", "lng", "cell"])
    with serve(streetview_routes()) as server:
        streetview.download(
            places, tmp_path, key=VALID_KEY, api_root=server.url + "/maps/api/streetview", **FAST
        )
    asked = {}
    for path in server.requests:
        query = parse_qs(urlparse(path).query)
        if "pano" in query:
            asked[query["pano"][0]] = float(query["heading"][0]) if "heading" in query else None
    geod = Geod(ellps="WGS84")
    ok = [row for row in manifest(tmp_path) if row["status"] == "ok"]
    assert len(ok) == 7
    for row in ok[:-1]:
        pano, address = (
            (float(row["lat"]), float(row["lng"])),
            (float(row["requested_lat"]), float(row["requested_lng"])),
        )
        heading = float(row["heading"])
        assert heading == pytest.approx(geod.inv(pano[1], pano[0], address[1], address[0])[0] % 360, abs=0.2)
        assert asked[row["image_id"]] == heading  # the image was requested with that heading
    assert [round(float(row["heading"]) / 90) % 4 for row in ok[:4]] == [0, 1, 2, 3]  # N, E, S, W
    assert ok[-1]["heading"] == "" and asked[ok[-1]["image_id"]] is None  # no direction: Google's default


def test_a_fixed_heading_is_used_as_given(tmp_path):
    with serve(streetview_routes()) as server:
        streetview.download(
            locations(),
            tmp_path,
            key=VALID_KEY,
            heading=90,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
    assert {row["heading"] for row in manifest(tmp_path) if row["status"] == "ok"} == {"90"}
    assert all("heading=90&" in path for path in server.requests if "pano=" in path)


# --- durable files and manifests ---------------------------------------------------------


def test_image_bytes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    def replace(source, target):
        calls.append(("replace", str(source)))
        return real_replace(source, target)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name file descriptors")
    monkeypatch.setattr(collect.os, "fsync", fsync)
    monkeypatch.setattr(collect.os, "replace", replace)
    collect.save_image(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "cell" / "a.jpg")
    temporary = next(source for call, source in calls if call == "replace")
    assert calls.index(("fsync", temporary)) < calls.index(("replace", temporary))
    assert Image.open(tmp_path / "cell" / "a.jpg").size == (8, 8)


def test_reconcile_drops_empty_and_broken_images_and_the_next_run_fetches_them(tmp_path):
    with serve(streetview_routes()) as server:
        root = server.url + "/maps/api/streetview"
        streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=root, **FAST)
        ok = [row for row in manifest(tmp_path) if row["status"] == "ok"]
        empty, broken = tmp_path / ok[0]["image_path"], tmp_path / ok[1]["image_path"]
        empty.write_bytes(b"")  # what a crash between rename and flush can leave
        broken.write_bytes(broken.read_bytes()[:300])
        kept = collect.reconcile(tmp_path)
        assert {row["image_path"] for row in kept}.isdisjoint({ok[0]["image_path"], ok[1]["image_path"]})
        assert not empty.exists() and not broken.exists()
        again = streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert again["downloaded"] == 2
    rows = assert_consistent(tmp_path)
    assert all(collect.readable_image(tmp_path / row["image_path"]) for row in rows if row["status"] == "ok")


def test_a_broken_file_without_a_row_is_downloaded_again(tmp_path):
    with serve(streetview_routes()) as server:
        root = server.url + "/maps/api/streetview"
        streetview.download(locations(2, 0, 0), tmp_path, key=VALID_KEY, api_root=root, **FAST)
        path = tmp_path / manifest(tmp_path)[0]["image_path"]
        (tmp_path / "manifest.csv").unlink()  # as if killed before the row was written
        path.write_bytes(path.read_bytes()[:200])
        streetview.download(locations(2, 0, 0), tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert collect.readable_image(path)
    assert_consistent(tmp_path)


def test_an_old_manifest_is_read_and_upgraded(tmp_path):
    with serve(streetview_routes()) as server:
        root = server.url + "/maps/api/streetview"
        streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=root, **FAST)
        old = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
        old_columns = [c for c in old.columns if c not in ("heading", "sequence", "captured_at")]
        old[old_columns].to_csv(tmp_path / "manifest.csv", index=False)  # as written before the new columns
        table = images.read_image_set(tmp_path)
        assert len(table) == 10 and set(table["heading"]) == {""}
        again = streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert again["skipped"] == 15 and again["downloaded"] == 0  # nothing silently dropped
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header == collect.MANIFEST_COLUMNS
    assert len(assert_consistent(tmp_path)) == 15


def test_a_folder_with_another_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "image_path,lat,lng,cell,source,session\na.png,56,10,0,synthetic,3\n"
    )
    before = (tmp_path / "manifest.csv").read_text()
    with pytest.raises(ValueError, match="not a download manifest"):
        streetview.download(locations(), tmp_path, key=VALID_KEY, api_root=closed_port_url(), **FAST)
    assert (tmp_path / "manifest.csv").read_text() == before
