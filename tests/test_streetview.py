"""The Street View client against a loopback server that answers like the real API."""

import csv
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from PIL import Image

from helpers import collect, streetview
from tests.fake_services import LOGO_COLOUR, VALID_KEY, streetview_routes
from tests.loopback import serve

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


def test_transient_faults_are_retried(tmp_path):
    faults = {"429": 1, "500": 2, "hang": 1, "truncated": 1, "image_500": 1}
    with serve(streetview_routes(faults)) as server:
        start = time.monotonic()
        counts = streetview.download(
            locations(4, 0, 0),
            tmp_path,
            key=VALID_KEY,
            workers=1,
            api_root=server.url + "/maps/api/streetview",
            **FAST,
        )
        elapsed = time.monotonic() - start
    assert counts["downloaded"] == 4 and counts["failed"] == 0
    assert all(v == 0 for v in faults.values()), faults
    assert elapsed >= 1.0  # Retry-After: 1 was honoured
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
