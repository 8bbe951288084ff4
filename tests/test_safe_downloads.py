"""Downloads and checkpoints against a hostile service and a careless user (issue 20).

Every test runs the real clients against a loopback server that plays the hostile part:
ids that are paths, answers that are malformed, redirects that echo the key, a server that
drips its answer, a second download into the same folder.
"""

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from http.server import ThreadingHTTPServer

import pandas as pd
import pytest
import requests

from helpers import collect, config, mapillary, model, safe_paths, streetview
from tests import loopback
from tests.fake_services import SIGNING_SECRET, VALID_KEY, VALID_TOKEN, jpeg, json_answer, streetview_routes
from tests.loopback import closed_port_url, serve
from tests.test_streetview import assert_consistent, manifest

FAST = {"backoff_s": 0.01, "timeout_s": 0.5, "per_second": 0, "progress": False}
ONE_PLACE = pd.DataFrame({"lat": [56.0], "lng": [10.0], "cell": ["c0"]})


def metadata_answering(body_for):
    """Street View routes whose metadata endpoint answers ``body_for(handler)`` (a JSON body)."""
    routes = streetview_routes()
    routes["/maps/api/streetview/metadata"] = lambda handler: json_answer(200, body_for(handler))
    return routes


def files_outside(root, folder) -> list[str]:
    return [
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and folder not in p.parents
    ]


# --- 1. paths from outside stay inside their folder ------------------------------------------


@pytest.mark.parametrize(
    "pano_id", ["../../../ESCAPED", "/tmp/ABS", "..", "a/../../b", "x\\..\\..\\y", "a\x00b"]
)
def test_a_pano_id_that_is_a_path_stays_inside_the_folder(tmp_path, pano_id):
    folder = tmp_path / "a" / "b" / "images"
    routes = metadata_answering(
        lambda h: {"status": "OK", "pano_id": pano_id, "location": {"lat": 56.0, "lng": 10.0}}
    )
    with serve(routes) as server:
        root = server.url + "/maps/api/streetview"
        counts = streetview.download(ONE_PLACE, folder, key=VALID_KEY, api_root=root, **FAST)
        again = streetview.download(ONE_PLACE, folder, key=VALID_KEY, api_root=root, **FAST)
    assert counts["downloaded"] == 1 and again["skipped"] == 1
    assert files_outside(tmp_path, folder) == []
    (row,) = assert_consistent(folder)
    assert row["image_id"] == pano_id  # the id is recorded as the service gave it
    assert safe_paths.inside(folder, row["image_path"]).is_file()


def test_a_mapillary_id_and_a_cell_that_are_paths_stay_inside_the_folder(tmp_path):
    folder = tmp_path / "a" / "b" / "images"
    holder = []

    def images(handler):
        item = {
            "id": "../../../X",
            "thumb_1024_url": holder[0] + "/thumb.jpg",
            "computed_geometry": {"type": "Point", "coordinates": [10.0, 56.0]},
        }
        return json_answer(200, {"data": [item]})

    places = ONE_PLACE.assign(cell="../../up")
    with serve({"/images": images, "/thumb.jpg": (200, {}, jpeg((300, 200), (9, 9, 9)))}) as server:
        holder.append(server.url)
        counts = mapillary.download(places, folder, token=VALID_TOKEN, api_root=server.url, **FAST)
    assert counts["downloaded"] == 1
    assert files_outside(tmp_path, folder) == []
    assert_consistent(folder)


def test_safe_names_keep_plain_ids_and_never_collide():
    assert safe_paths.safe_name("CAoSLEFGMVFpcE-_x.1") == "CAoSLEFGMVFpcE-_x.1"
    assert safe_paths.safe_name(17) == "17"
    hostile = ["../x", "__x", ".._x", "/x", "x/", ".", "..", "", "a\x00b", "ø"]
    names = [safe_paths.safe_name(h) for h in hostile]
    assert len(set(names)) == len(names)
    assert all(safe_paths.is_plain_name(n) for n in names)
    assert safe_paths.safe_name("../x") == safe_paths.safe_name("../x")  # a restart finds its file


@pytest.mark.parametrize(
    "bad_path", ["../notes.txt", "ABSOLUTE", "notes.txt", "link/escaped.jpg", "c/../../x.jpg"]
)
def test_a_manifest_row_outside_the_folder_or_not_an_image_deletes_nothing(tmp_path, bad_path):
    folder = tmp_path / "images"
    folder.mkdir()
    precious = {
        tmp_path / "notes.txt": b"notes",
        folder / "notes.txt": b"inside, but not an image",
        tmp_path / "outside" / "escaped.jpg": b"",  # empty: reconcile would delete it as broken
        tmp_path / "x.jpg": b"",
    }
    for path, content in precious.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
    (folder / "link").symlink_to(tmp_path / "outside")
    if bad_path == "ABSOLUTE":
        bad_path = str(tmp_path / "x.jpg")
    header = ",".join(collect.MANIFEST_COLUMNS)
    (folder / "manifest.csv").write_text(f"{header}\n{bad_path},56,10,56,10,p1,,c,streetview,ok,,,\n")
    before = (folder / "manifest.csv").read_text()
    with pytest.raises(collect.ManifestError, match="row 1") as caught:
        collect.reconcile(folder)
    assert repr(bad_path) in str(caught.value) and "nothing was deleted" in str(caught.value)
    assert all(path.read_bytes() == content for path, content in precious.items())
    assert (folder / "manifest.csv").read_text() == before
    with serve(streetview_routes()) as server, pytest.raises(collect.ManifestError):
        streetview.download(ONE_PLACE, folder, key=VALID_KEY, api_root=server.url, **FAST)
    assert server.requests == []


@pytest.mark.parametrize("name", ["", "/tmp/abs", "../../../x", ".", "..", "a/b", ".hidden"])
def test_a_standin_checkpoint_name_must_be_plain(isolated_build, name):
    profile = config.get_profile("rehearsal")
    checkpoints = isolated_build / "rehearsal" / "checkpoints"
    other = checkpoints / "other" / "model.safetensors"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another checkpoint")
    before = sorted(p for p in isolated_build.parent.rglob("*"))
    with pytest.raises(safe_paths.UnsafePathError, match="not a plain name") as caught:
        model.resolve_preset(profile, f"standin:{name}")
    assert repr(name) in str(caught.value)
    assert other.read_bytes() == b"another checkpoint"
    assert sorted(p for p in isolated_build.parent.rglob("*")) == before
    with pytest.raises(config.SettingError, match="pretrained"):
        config.get_profile("rehearsal", pretrained=f"standin:{name}")


def test_a_plain_standin_name_is_written_beside_the_others(isolated_build):
    profile = config.get_profile("rehearsal")
    other = isolated_build / "rehearsal" / "checkpoints" / "other" / "model.safetensors"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another checkpoint")
    folder = model.resolve_preset(profile, "standin:tiny-vit")
    assert folder == str(isolated_build / "rehearsal" / "checkpoints" / "tiny-vit")
    assert (isolated_build / "rehearsal" / "checkpoints" / "tiny-vit" / "model.safetensors").is_file()
    assert other.read_bytes() == b"another checkpoint"


# --- 3. no secret in any error, traceback or log ---------------------------------------------


def echo_redirect(target: str):
    """A route that redirects to ``target`` + the request's own query (key and signature)."""

    def answer(handler):
        query = handler.path.partition("?")[2]
        return 302, {"Location": f"{target}?{query}"}, b""

    return answer


def all_text(error: BaseException) -> str:
    """Everything a notebook could show of ``error``: message, traceback, the exceptions in its chain."""
    texts = ["".join(traceback.format_exception(error))]
    link = error
    while link is not None:
        texts += [str(link), repr(link.args)]
        link = link.__cause__ or link.__context__
    return "\n".join(texts)


HOSTILE = {
    "InvalidSchema": (echo_redirect("ftp://127.0.0.1/x"), requests.exceptions.InvalidSchema),
    "InvalidURL": (echo_redirect("http://:80/x"), requests.exceptions.InvalidURL),
    # retried, then one failed location: the error only reaches the log
    "ConnectionError": (echo_redirect(closed_port_url() + "/x"), None),
    "TooManyRedirects": (
        echo_redirect("/maps/api/streetview/metadata"),
        requests.exceptions.TooManyRedirects,
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_no_request_error_holds_the_key_or_the_signature(tmp_path, caplog, kind):
    route, expected = HOSTILE[kind]
    caplog.set_level(logging.DEBUG)
    routes = streetview_routes()
    routes["/maps/api/streetview/metadata"] = route
    with serve(routes) as server:
        try:
            counts = streetview.download(
                ONE_PLACE,
                tmp_path,
                key=VALID_KEY,
                signing_secret=SIGNING_SECRET,
                api_root=server.url + "/maps/api/streetview",
                retries=1,
                **FAST,
            )
        except Exception as error:  # checked below: its type, and every text it can show
            caught = error
        else:
            caught = None
    if expected is None:
        assert caught is None and counts["failed"] == 1
        assert kind in caplog.text  # the failure was logged...
    else:
        assert type(caught) is expected, repr(caught)
    signatures = {path.rpartition("&signature=")[2] for path in server.requests if "&signature=" in path}
    assert signatures, "the requests were signed"
    text = all_text(caught) if caught is not None else ""
    logs = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    for secret in (VALID_KEY, SIGNING_SECRET, *signatures):
        assert secret not in text, f"{secret} in the error"
        assert secret not in logs, f"{secret} in the logs"  # ...without a secret


def test_an_error_raised_by_a_single_request_holds_no_key(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"{closed_port_url()}/maps/api/streetview/metadata?key={VALID_KEY}&signature=c2lnbmF0dXJl"
    with pytest.raises(collect.TransientError) as caught:
        collect.get_with_retries(collect.new_session(1), url, secrets=[VALID_KEY], retries=1, backoff_s=0.01)
    assert "ConnectionError" in str(caught.value)
    for secret in (VALID_KEY, "c2lnbmF0dXJl"):
        assert secret not in all_text(caught.value) and secret not in caplog.text


def test_a_token_that_breaks_the_header_does_not_leak(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    token = "MLY|123|abc\nSECRETPART"
    with serve({}) as server, pytest.raises(Exception) as caught:
        mapillary.download(ONE_PLACE, tmp_path, token=token, api_root=server.url, **FAST)
    assert isinstance(caught.value, requests.exceptions.InvalidHeader)
    for part in (token, "SECRETPART", "abc\\nSECRETPART"):
        assert part not in all_text(caught.value) and part not in caplog.text


def test_an_api_root_without_a_scheme_is_refused_before_any_request(tmp_path):
    with pytest.raises(ValueError, match="http:// or https://") as caught:
        streetview.download(ONE_PLACE, tmp_path, key=VALID_KEY, api_root="localhost:1/maps", **FAST)
    assert VALID_KEY not in all_text(caught.value)
    assert not (tmp_path / "manifest.csv").exists()


def test_scrubbed_keeps_an_error_without_secrets_as_it_is():
    error = ValueError("plain")
    assert collect.scrubbed(error, [VALID_KEY]) is error
    copy = collect.scrubbed(OSError(f"GET /x?key={VALID_KEY}"), [VALID_KEY])
    assert type(copy) is OSError and VALID_KEY not in str(copy) and "key=REDACTED" in str(copy)


# --- 4. one download per folder ----------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from helpers import safe_paths
    lock = safe_paths.FolderLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def hold_lock_in_another_process(folder):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_download_into_the_same_folder_stops_and_names_the_first(tmp_path):
    child = hold_lock_in_another_process(tmp_path)
    try:
        with serve(streetview_routes()) as server, pytest.raises(safe_paths.FolderLocked) as caught:
            streetview.download(ONE_PLACE, tmp_path, key=VALID_KEY, api_root=server.url, **FAST)
        message = str(caught.value)
        assert f"process {child.pid}" in message and socket.gethostname() in message
        assert "started 20" in message  # the start time, ISO 8601
        assert server.requests == [] and not (tmp_path / "manifest.csv").exists()
    finally:
        child.kill()
        child.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    child = hold_lock_in_another_process(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert json.loads((tmp_path / safe_paths.LOCK_NAME).read_text())["pid"] == child.pid  # it is stale
    caplog.set_level(logging.WARNING)
    with serve(streetview_routes()) as server:
        counts = streetview.download(
            ONE_PLACE, tmp_path, key=VALID_KEY, api_root=server.url + "/maps/api/streetview", **FAST
        )
    assert counts["downloaded"] == 1
    assert f"taking over the lock of process {child.pid}" in caplog.text
    assert (tmp_path / safe_paths.LOCK_NAME).read_text() == ""  # released when done


def test_two_downloads_at_once_into_one_folder_lose_nothing(tmp_path):
    places = pd.DataFrame(
        {
            "lat": [55.0 + 0.011 * i for i in range(120)],
            "lng": 10.0,
            "cell": [f"c{i % 3}" for i in range(120)],
        }
    )
    results = {}
    with serve(streetview_routes(image_delay_s=0.01)) as server:

        def run(name):
            try:
                results[name] = streetview.download(
                    places, tmp_path, key=VALID_KEY, api_root=server.url + "/maps/api/streetview", **FAST
                )
            except safe_paths.FolderLocked as error:
                results[name] = error

        threads = [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    refused = [r for r in results.values() if isinstance(r, safe_paths.FolderLocked)]
    finished = [r for r in results.values() if isinstance(r, dict)]
    assert len(refused) == 1 and len(finished) == 1
    assert f"process {os.getpid()}" in str(refused[0])
    rows = assert_consistent(tmp_path)
    assert len(rows) == 120 == finished[0]["downloaded"]


def test_a_second_download_can_wait_for_the_first(tmp_path):
    lock = safe_paths.FolderLock(tmp_path).acquire()
    threading.Timer(0.5, lock.release).start()
    with serve(streetview_routes()) as server:
        counts = streetview.download(
            ONE_PLACE,
            tmp_path,
            key=VALID_KEY,
            api_root=server.url + "/maps/api/streetview",
            lock_wait_s=30,
            **FAST,
        )
    assert counts["downloaded"] == 1


# --- 5. duplicates, malformed answers, deadlines, coordinates --------------------------------


def test_a_duplicate_row_waits_for_its_original(tmp_path):
    same_panorama = pd.DataFrame({"lat": [56.0, 56.001], "lng": [10.0, 10.001], "cell": ["c", "c"]})
    faults = {"image_500": 1000}
    with serve(streetview_routes(faults)) as server:
        root = server.url + "/maps/api/streetview"
        failed = streetview.download(same_panorama, tmp_path, key=VALID_KEY, api_root=root, retries=1, **FAST)
        assert manifest(tmp_path) == []  # no "duplicate" row pointing at an image never saved
        faults["image_500"] = 0
        resumed = streetview.download(same_panorama, tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert failed["failed"] == 2 and failed["duplicate"] == 0
    assert resumed["downloaded"] == 1 and resumed["duplicate"] == 1
    rows = assert_consistent(tmp_path)
    assert [row["status"] for row in rows] == ["ok", "duplicate"]


MALFORMED = {
    "no pano_id": {"status": "OK", "location": {"lat": 56.0, "lng": 10.0}},
    "numeric pano_id": {"status": "OK", "pano_id": 12, "location": {"lat": 56.0, "lng": 10.0}},
    "text location": {"status": "OK", "pano_id": "p1", "location": {"lat": "north", "lng": 10.0}},
    "NaN location": {"status": "OK", "pano_id": "p1", "location": {"lat": float("nan"), "lng": 10.0}},
    "list location": {"status": "OK", "pano_id": "p1", "location": [56.0, 10.0]},
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_ok_answer_is_one_failed_location_retried_next_run(tmp_path, kind):
    places = pd.DataFrame({"lat": [56.0, 56.5], "lng": [10.0, 10.5], "cell": ["a", "b"]})
    good = streetview_routes()
    broken = {"on": True}

    def metadata(handler):
        if broken["on"] and "location=56.0000000" in handler.path:
            return json_answer(200, MALFORMED[kind])
        return good["/maps/api/streetview/metadata"](handler)

    routes = {**good, "/maps/api/streetview/metadata": metadata}
    with serve(routes) as server:
        root = server.url + "/maps/api/streetview"
        first = streetview.download(places, tmp_path, key=VALID_KEY, api_root=root, **FAST)
        broken["on"] = False
        second = streetview.download(places, tmp_path, key=VALID_KEY, api_root=root, **FAST)
    assert first["failed"] == 1 and first["downloaded"] == 1
    assert second["skipped"] == 1 and second["downloaded"] == 1
    assert len(assert_consistent(tmp_path)) == 2


def test_malformed_mapillary_images_are_skipped(tmp_path):
    holder = []

    def images(handler):
        base = holder[0]
        point = {"type": "Point", "coordinates": [10.0, 56.0]}
        data = [
            {"id": None, "thumb_1024_url": base + "/t.jpg", "computed_geometry": point},
            {"id": "a", "thumb_1024_url": base + "/t.jpg", "computed_geometry": {"coordinates": ["x", "y"]}},
            {"id": "b", "thumb_1024_url": "file:///etc/passwd", "computed_geometry": point},
            {"id": "c", "thumb_1024_url": base + "/t.jpg", "computed_geometry": "nowhere"},
            {"id": "good", "thumb_1024_url": base + "/t.jpg", "computed_geometry": point},
        ]
        return json_answer(200, {"data": data})

    with serve({"/images": images, "/t.jpg": (200, {}, jpeg((100, 100), (5, 5, 5)))}) as server:
        holder.append(server.url)
        counts = mapillary.download(ONE_PLACE, tmp_path, token=VALID_TOKEN, api_root=server.url, **FAST)
    assert counts["downloaded"] == 1 and counts["failed"] == 0
    assert [row["image_id"] for row in manifest(tmp_path)] == ["good"]


def drip(part: str):
    """A metadata route that drips its answer, one byte every 0.5 s, in its headers or its body."""

    def answer(handler):
        body = json.dumps({"status": "ZERO_RESULTS"}).encode() + b" " * 200
        try:
            handler.send_response(200)
            if part == "headers":
                handler.wfile.write(b"X-Slow: ")
                for _ in range(200):
                    handler.wfile.write(b"a")
                    handler.wfile.flush()
                    time.sleep(0.5)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for byte in body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass  # the client hung up, as it should
        return None

    return answer


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_dripping_server_is_cut_off_at_the_deadline(tmp_path, part):
    routes = streetview_routes()
    routes["/maps/api/streetview/metadata"] = drip(part)
    result = {}
    with serve(routes) as server:
        worker = threading.Thread(
            target=lambda: result.update(
                streetview.download(
                    ONE_PLACE,
                    tmp_path,
                    key=VALID_KEY,
                    api_root=server.url + "/maps/api/streetview",
                    retries=1,
                    backoff_s=0.01,
                    timeout_s=2,  # each byte comes well within the read timeout
                    deadline_s=1,
                    per_second=0,
                    progress=False,
                )
            ),
            daemon=True,
        )
        worker.start()
        worker.join(30)  # the drip would take 100 s per try; two tries with a 1 s deadline take ~2 s
        assert not worker.is_alive(), "the dripping server still holds the worker"
    assert result["failed"] == 1 and len(server.requests) == 2
    assert manifest(tmp_path) == []  # not recorded: the next run tries again


def test_get_with_retries_names_the_deadline(tmp_path):
    with (
        serve({"/slow": drip("body")}) as server,
        pytest.raises(collect.TransientError, match="deadline of 1 s"),
    ):
        collect.get_with_retries(
            collect.new_session(1), server.url + "/slow", retries=0, timeout_s=2, deadline_s=1
        )


BAD_PLACES = {
    "NaN": (float("nan"), 10.0),
    "infinity": (56.0, float("inf")),
    "latitude 91": (91.0, 10.0),
    "Paris": (48.8566, 2.3522),
    "text": ("56,1", 10.0),
}


@pytest.mark.parametrize("kind", list(BAD_PLACES))
def test_coordinates_are_checked_before_any_request(tmp_path, kind):
    lat, lng = BAD_PLACES[kind]
    places = pd.DataFrame({"lat": [56.1, lat], "lng": [10.1, lng], "cell": ["a", "b"]})
    with serve(streetview_routes(no_imagery_below_lat=-100)) as server, pytest.raises(ValueError) as caught:
        streetview.download(places, tmp_path, key=VALID_KEY, api_root=server.url, **FAST)
    assert "row 1" in str(caught.value) and "Denmark" in str(caught.value)
    assert server.requests == [] and not (tmp_path / "manifest.csv").exists()


def test_places_near_the_border_are_still_requested(tmp_path):
    # Gedser, Bornholm's Christiansø and Skagen lie at the edges of the box
    places = pd.DataFrame(
        {"lat": [54.56, 55.32, 57.74], "lng": [11.93, 15.19, 10.65], "cell": ["a", "b", "c"]}
    )
    with serve(streetview_routes()) as server:
        counts = streetview.download(
            places, tmp_path, key=VALID_KEY, api_root=server.url + "/maps/api/streetview", **FAST
        )
    assert counts["downloaded"] + counts["no_imagery"] == 3


@pytest.fixture
def tls_server(tmp_path):
    """A loopback HTTPS server with a self-signed certificate (made with the openssl tool)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), loopback._Handler)
    server.routes = {"/ok": (200, {}, b"fine"), "/slow": drip("body")}
    server.requests, server.arrivals, server.headers_seen = [], [], []
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", str(cert)
    finally:
        server.shutdown()
        server.server_close()


def test_the_deadline_holds_for_https_too(tls_server, monkeypatch):
    url, cert = tls_server
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they would win over session.verify
        monkeypatch.delenv(name, raising=False)
    session = collect.new_session(1)
    session.verify = cert
    assert collect.get_with_retries(session, url + "/ok", retries=0).content == b"fine"
    with pytest.raises(collect.TransientError, match="deadline of 1 s"):
        collect.get_with_retries(session, url + "/slow", retries=0, timeout_s=2, deadline_s=1)
