"""Download machinery shared by the Street View and Mapillary clients.

What every image source needs, written once:

* **secrets** from the environment or a git-ignored ``.env`` file, and redaction, so a key
  never reaches a log line, an exception, a notebook or the manifest;
* **HTTP with retries**: exponential back-off with jitter on 429, 5xx, timeouts and broken
  connections, honouring ``Retry-After`` (seconds or an HTTP date); a bounded thread pool
  and one rate limiter shared by all workers, which a 429 or an over-quota answer pauses for
  every worker at once, not only for the thread that got it;
* **a crash-safe manifest**: every image is written to a temporary name, flushed to disk
  and renamed, and only then gets its manifest row, so a killed run (or a power cut) loses
  nothing and a restart skips what is done. ``reconcile`` makes the manifest and the folder
  agree after a crash, dropping rows whose file is empty or does not decode.

A source supplies two functions and its settings: ``lookup(session, lat, lng, settings)``,
which returns metadata of the nearest image (or ``None`` where there is none), and
``fetch(session, found, settings)``, which returns the image as a PIL image. :func:`collect`
does the rest.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pandas as pd
import requests
from PIL import Image
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from helpers import config, geo, safe_paths

log = logging.getLogger(__name__)

# The columns of the first manifests: a manifest written with only these is still read, and
# the columns added since are filled with "".
_FIRST_COLUMNS = [
    "image_path",
    "requested_lat",
    "requested_lng",
    "lat",
    "lng",
    "image_id",
    "date",
    "cell",
    "source",
    "status",
]
# heading: degrees clockwise from north the camera faced (Street View); sequence: the capture
# sequence (Mapillary); captured_at: capture time, ISO 8601 UTC (Mapillary)
MANIFEST_COLUMNS = [*_FIRST_COLUMNS, "heading", "sequence", "captured_at"]
RETRY_STATUS = {429, 500, 502, 503, 504}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # the only files reconcile ever deletes
# locations are requested only inside Denmark's bounding box widened by this much (degrees)
COORDINATE_MARGIN_DEG = 0.5
# how long one HTTP request may take in all (s), however slowly the server sends its answer
DEADLINE_S = 60.0


class FatalAPIError(RuntimeError):
    """The service refused us for a reason retrying cannot fix (bad key, API disabled)."""


class QuotaExceeded(RuntimeError):
    """The service keeps saying we are over quota; stop now, resume later."""


class TransientError(RuntimeError):
    """A request failed after all retries (network, 5xx, a broken image, a malformed answer)."""


class ManifestError(ValueError):
    """A manifest row names a file the download may not touch (outside its folder, not an image)."""


# --- secrets ----------------------------------------------------------------------------


def load_secret(name: str, env_file: Path | None = None) -> str | None:
    """The value of ``name`` from the environment, else from ``.env`` (``NAME=value`` lines).

    ``.env`` sits in the repository root and is git-ignored. Returns None when unset.
    """
    if os.environ.get(name):
        return os.environ[name]
    path = Path(env_file) if env_file else config.REPO_ROOT / ".env"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == name and not key.strip().startswith("#"):
                return value.strip().strip("'\"") or None
    return None


_SECRET_PARAMETERS = re.compile(r"((?:key|access_token|token|signature)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret, and every ``key=``/``access_token=`` value, replaced."""
    text = _SECRET_PARAMETERS.sub(r"\1REDACTED", str(text))
    for secret in secrets:
        if secret:
            # as given, inside a URL, and escaped as repr() shows it (a newline as \\n)
            escaped = secret.encode("unicode_escape").decode("ascii")
            for form in {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), escaped}:
                text = text.replace(form, "REDACTED")
    return text


def _chain(error: BaseException):
    """``error`` and the exceptions it was raised from or during, as a traceback prints them."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def scrubbed(error: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """``error`` itself if neither it nor its chain holds a secret, else a copy without any.

    The copy has the same type where the type can be made from a message (else it is a
    FatalAPIError naming the type), the redacted message with the redacted messages of its
    causes appended, the original traceback (frames and source lines, no values), and no
    ``__cause__`` or ``__context__``, so neither ``str()``, the printed traceback nor the
    exception objects hold the secret. Raise the result outside any ``except`` block, or
    Python links the original back in as its context.
    """
    secrets = list(secrets)
    links = list(_chain(error))
    texts = [f"{type(link).__name__}: {link}" for link in links]
    if all(redact(text, secrets) == text for text in texts):
        return error
    message = redact(str(error), secrets)
    causes = [redact(text, secrets) for text in texts[1:]]
    if causes:
        message += " (raised from " + "; from ".join(causes) + ")"
    try:
        copy = type(error)(message)
        if redact(str(copy), secrets) != str(copy):
            raise TypeError("the type rebuilds its message from other fields")
    except Exception:  # a type that needs other arguments (UnicodeDecodeError, say)
        copy = FatalAPIError(f"{type(error).__name__}: {message}")
    copy.__cause__, copy.__context__, copy.__suppress_context__ = None, None, True
    return copy.with_traceback(error.__traceback__)


class _RedactingFilter(logging.Filter):
    """Scrubs secrets from log records of libraries that log URLs (urllib3 at DEBUG)."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record):
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = ()
        return True


# --- HTTP -------------------------------------------------------------------------------


def rate_limiter(per_second: float) -> Callable[[], None]:
    """The rate limiter all workers of a download share: a function to call before each request.

    Calls are spaced ``1/per_second`` s apart (``per_second`` 0: no spacing). The function
    has an attribute ``pause(seconds)``: after it, every worker's next call waits until the
    pause is over, plus a random extra of up to a tenth of the pause (jitter), so the workers
    do not all send at the same instant when it ends. A longer pause extends a shorter one.
    """
    interval = 1.0 / per_second if per_second else 0.0
    lock = threading.Lock()
    state = {"next_slot": time.monotonic(), "paused_until": 0.0, "spread": 0.0}

    def pause(seconds: float) -> None:
        with lock:
            until = time.monotonic() + max(0.0, seconds)
            if until > state["paused_until"]:
                state["paused_until"], state["spread"] = until, 0.1 * seconds

    def wait_turn() -> None:
        while True:
            with lock:
                now = time.monotonic()
                if now < state["paused_until"]:
                    slot = None
                    delay = state["paused_until"] + random.uniform(0, state["spread"]) - now
                else:
                    slot = max(now, state["next_slot"])
                    state["next_slot"] = slot + interval
                    delay = slot - now
            if delay > 0:
                time.sleep(delay)
            # a pause that began while this worker waited for its slot holds it back too
            if slot is not None and time.monotonic() >= state["paused_until"]:
                return

    wait_turn.pause = pause
    return wait_turn


def pause_all(settings: dict, seconds: float) -> None:
    """Hold back every worker sharing ``settings`` (its rate limiter) for ``seconds``."""
    pause = getattr(settings.get("wait_turn"), "pause", None)
    if pause is None:
        time.sleep(seconds)  # no shared limiter: at least this thread waits
    else:
        pause(seconds)


def throttle_delay_s(
    attempt: int, base_s: float, server_wait_s: float | None = None, max_wait_s: float = 120.0
) -> float:
    """How long to wait (s) before try ``attempt + 1`` when the service says "too many requests".

    ``base_s * 2**attempt`` times a random factor in [0.5, 1] (jitter with a floor, so a pause
    for everyone is never close to nothing), or the server's ``Retry-After`` if that is
    longer; at most ``max_wait_s``.
    """
    delay = base_s * 2**attempt * random.uniform(0.5, 1.0)
    if server_wait_s is not None:
        delay = max(delay, server_wait_s)
    return min(delay, max_wait_s)


def retry_after_seconds(response: requests.Response) -> float | None:
    """The ``Retry-After`` header in seconds from now (given as seconds or as an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None


_watch = threading.local()


class _Deadline:
    """A limit on the whole of one request: when it passes, the request's socket is shut.

    ``timeout=`` in requests bounds each read, so a server that sends a byte now and then
    could hold a worker for ever; shutting the socket from a timer makes the blocked read
    return at once. Sockets are registered by the connections of :func:`new_session`, in the
    worker's own thread.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def add(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> _Deadline:
        _watch.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _watch.deadline = None


def _shut(sock) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """Registers the connection's socket with the current thread's deadline, if any."""

    def request(self, *args, **kwargs):
        try:
            return super().request(*args, **kwargs)
        finally:
            deadline = getattr(_watch, "deadline", None)
            if deadline is not None and self.sock is not None:
                deadline.add(self.sock)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections let :class:`_Deadline` shut them."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def new_session(workers: int = 8) -> requests.Session:
    """A session for ``workers`` threads whose requests :func:`get_with_retries` can cut off
    at their deadline (a plain ``requests.Session`` only has per-read timeouts)."""
    session = requests.Session()
    adapter = _DeadlineAdapter(pool_connections=workers, pool_maxsize=workers)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# broken connections, timeouts and bodies cut short: worth another try
_RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _attempt(session, url, params, headers, timeout_s, deadline_s, secrets):
    """One GET with its body: (response, None, "") or (None, problem, "") when worth retrying,
    or (None, "", error) with an error to raise (already scrubbed of secrets)."""
    failure = None
    with _Deadline(deadline_s) as deadline:
        try:
            response = session.get(url, params=params, headers=headers, timeout=timeout_s)
            response.content  # noqa: B018 (read the whole body now, so truncation raises here)
        except Exception as error:
            if deadline.expired:
                return None, f"no complete answer within the deadline of {deadline_s:g} s", None
            if isinstance(error, _RETRYABLE):
                return None, f"{type(error).__name__}: {redact(error, secrets)}", None
            failure = scrubbed(error, secrets)
        else:
            return response, "", None
    return None, "", failure


def get_with_retries(
    session: requests.Session,
    url: str,
    params: dict | None = None,
    *,
    headers: dict | None = None,
    secrets: Iterable[str | None] = (),
    retries: int = 5,
    backoff_s: float = 1.0,
    max_wait_s: float = 120.0,
    timeout_s: float = 30.0,
    wait_turn: Callable[[], None] | None = None,
    deadline_s: float = DEADLINE_S,
) -> requests.Response:
    """GET ``url``, retrying 429, 5xx, timeouts and broken connections; return the response.

    A 429, or any answer with ``Retry-After``, means the service wants *everyone* to slow
    down: the shared rate limiter ``wait_turn`` is paused (see :func:`rate_limiter`) for the
    server's ``Retry-After`` or an exponential back-off with jitter, whichever is longer, so
    no worker sends anything until then. Other failures (5xx, timeouts, broken connections)
    concern one request: only this thread waits, ``backoff_s * 2**attempt`` with full jitter.
    Waits are capped at ``max_wait_s``. Other 4xx answers are returned to the caller, who
    knows what they mean for its API. The body is read inside the retry loop, so a truncated
    body is retried too. ``timeout_s`` bounds each read; ``deadline_s`` the whole request,
    body included, with a session from :func:`new_session` (a server dripping its answer is
    cut off then, and the request retried). A server still answering 429 after every try
    raises QuotaExceeded; other failures TransientError. An error that retrying cannot fix
    (a URL without http://, say) is raised at once, whatever its type. No error leaving this
    function holds a secret, in its message or in the exceptions it was raised from.
    """
    secrets = list(secrets)
    problem = "no attempt"
    pause = getattr(wait_turn, "pause", None)
    for attempt in range(retries + 1):
        if wait_turn:
            wait_turn()
        response, trouble, failure = _attempt(session, url, params, headers, timeout_s, deadline_s, secrets)
        if failure is not None:
            raise failure  # outside any except block: nothing with a secret is linked to it
        if response is None:
            problem = trouble
            server_wait, throttled = None, False
        else:
            if response.status_code not in RETRY_STATUS:
                return response
            problem = f"HTTP {response.status_code}"
            server_wait = retry_after_seconds(response)
            throttled = response.status_code == 429 or server_wait is not None
        if attempt == retries:
            break
        if throttled:
            delay = throttle_delay_s(attempt, backoff_s, server_wait, max_wait_s)
            log.info(
                "%s from %s: every worker pauses %.1f s", problem, redact(url.split("?")[0], secrets), delay
            )
            if pause is not None:
                pause(delay)  # the next wait_turn() of every worker, this one included, waits
            else:
                time.sleep(delay)
            continue
        delay = min(random.uniform(0, backoff_s * 2**attempt), max_wait_s)
        log.info("retrying %s in %.1f s after %s", redact(url, secrets), delay, problem)
        time.sleep(delay)
    if problem == "HTTP 429":
        raise QuotaExceeded(
            f"{redact(url, secrets)} kept answering 429 Too Many Requests after {retries + 1} tries: the "
            "rate limit or quota is used up. Everything so far is kept; run again later to resume."
        )
    raise TransientError(f"GET {redact(url, secrets)} failed after {retries + 1} tries ({problem}).")


def client_settings(
    api_root: str,
    secret: str,
    *,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    per_second: float,
    more_secrets: Iterable[str | None] = (),
    deadline_s: float = DEADLINE_S,
    **extra,
) -> dict:
    """The settings every client passes around: its API root, its secret, retry and rate limits,
    plus anything of its own (``extra``: image size, search radius, ...).

    ``more_secrets`` (a URL signing secret, say) are kept out of every log line and error,
    like ``secret``. All workers of a download share the one rate limiter made here.
    ``api_root`` must be an http:// or https:// URL (checked here, before any request).
    """
    if not isinstance(api_root, str) or not re.match(r"https?://[^/?#\s]+", api_root):
        raise ValueError(
            f"api_root must be a URL starting with http:// or https://, got {redact(api_root)!r}."
        )
    if not (isinstance(deadline_s, int | float) and deadline_s > 0 and math.isfinite(deadline_s)):
        raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}.")
    return {
        "root": api_root.rstrip("/"),
        "secret": secret,
        "secrets": [secret, *(s for s in more_secrets if s)],
        "retries": retries,
        "backoff_s": backoff_s,
        "timeout_s": timeout_s,
        "deadline_s": deadline_s,
        "wait_turn": rate_limiter(per_second),
        **extra,
    }


def secrets_of(settings: dict) -> list[str]:
    """Every secret in ``settings`` (the key or token, a signing secret)."""
    return list(settings.get("secrets") or [settings["secret"]])


def request(session: requests.Session, url: str, params: dict | None, settings: dict, headers=None):
    """:func:`get_with_retries` with a client's ``settings``: its secrets, ``retries``,
    ``backoff_s``, ``timeout_s`` and shared rate limiter ``wait_turn``."""
    return get_with_retries(
        session,
        url,
        params,
        headers=headers,
        secrets=secrets_of(settings),
        retries=settings["retries"],
        backoff_s=settings["backoff_s"],
        timeout_s=settings["timeout_s"],
        wait_turn=settings["wait_turn"],
        deadline_s=settings.get("deadline_s", DEADLINE_S),
    )


def decode_image(content: bytes) -> Image.Image:
    """Decode image bytes fully (a truncated or corrupt image raises TransientError)."""
    try:
        image = Image.open(io.BytesIO(content))
        image.load()
    except Exception as error:  # PIL raises several types for broken data
        raise TransientError(f"the image could not be decoded ({type(error).__name__}: {error})") from None
    return image.convert("RGB")


# --- manifest ---------------------------------------------------------------------------


def read_manifest(path: Path) -> list[dict]:
    """Rows of a manifest CSV, each with every column of :data:`MANIFEST_COLUMNS`.

    A last line cut short by a crash is ignored. A manifest written before the newer columns
    existed (heading, sequence, captured_at) is read with those columns empty. A file that is
    not a download manifest at all is an error, so that it is never overwritten.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a half-written last row
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    header = reader.fieldnames or []
    missing = [column for column in _FIRST_COLUMNS if column not in header]
    if header and missing:
        raise ValueError(
            f"{path} is not a download manifest: it lacks the columns {missing}. Download into an "
            "empty folder, or one that only holds an earlier download of the same source."
        )
    complete = [row for row in rows if None not in row and None not in row.values()]
    return [{column: row.get(column, "") for column in MANIFEST_COLUMNS} for row in complete]


def readable_image(path: Path) -> bool:
    """Whether ``path`` is a non-empty image file that decodes to the end."""
    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, SyntaxError):  # what PIL raises for missing or broken files
        return False
    return True


def _checked_rows(folder: Path, rows: list[dict]) -> None:
    """Refuse a manifest whose rows name files outside ``folder`` or files that are not images.

    Checked before anything is deleted: a row from a hand-edited, copied or hostile manifest
    (``../notes.txt``, ``/home/you/x.jpg``) must never make :func:`reconcile` remove a file.
    """
    for number, row in enumerate(rows, start=1):
        path = row["image_path"]
        if not path:
            continue
        where = f"{folder / 'manifest.csv'}, row {number}: image_path"
        try:
            safe_paths.inside(folder, path, where)
        except safe_paths.UnsafePathError as error:
            raise ManifestError(
                f"{error} Fix or remove that row; nothing was deleted or downloaded."
            ) from None
        if not path.lower().endswith(IMAGE_SUFFIXES):
            raise ManifestError(
                f"{where} {path!r} is not an image file ({', '.join(IMAGE_SUFFIXES)}). Fix or remove "
                "that row; nothing was deleted or downloaded."
            )


def reconcile(folder: Path) -> list[dict]:
    """Make ``folder/manifest.csv`` and the image files agree after any interruption.

    Removes temporary files; drops "ok" rows whose file is missing, empty or does not decode
    (deleting such a file, so that the next run downloads it again), and repeated rows; and
    rewrites the manifest atomically with the current columns. Image files without a row are
    left; the next run finds them and adds their row without downloading again. Returns the
    rows kept. Decoding every image costs about half a millisecond per 224 px JPEG.

    Every row's ``image_path`` is checked first: one that leads outside ``folder`` or names
    something other than an image raises ManifestError before anything is touched. Call it
    while holding the folder's lock (:class:`helpers.safe_paths.FolderLock`, as
    :func:`collect` does): the temporary files it removes could be another run's.
    """
    folder = Path(folder)
    rows = read_manifest(folder / "manifest.csv")
    _checked_rows(folder, rows)
    for leftover in folder.rglob(".*.part*"):
        relative = leftover.relative_to(folder)
        if leftover.is_file() and not leftover.is_symlink():
            safe_paths.inside(folder, relative, "temporary file").unlink()
    kept, seen, broken = [], set(), 0
    for row in rows:
        key = (row["requested_lat"], row["requested_lng"], row["image_id"], row["status"])
        if key in seen:
            continue
        image = folder / row["image_path"]
        if row["status"] == "ok" and not (row["image_path"] and readable_image(image)):
            if row["image_path"] and image.is_file() and not image.is_symlink():
                safe_paths.inside(folder, row["image_path"], "image_path").unlink()
            broken += 1
            continue
        seen.add(key)
        kept.append(row)
    if broken:
        log.warning(
            "%d images in %s were missing, empty or broken; they will be downloaded again", broken, folder
        )
    with config.atomic_target(folder / "manifest.csv") as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    return kept


def _append(handle, row: dict) -> None:
    csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS).writerow(row)
    handle.flush()
    os.fsync(handle.fileno())


def save_image(image: Image.Image, path: Path, durable: bool = True) -> None:
    """Write ``image`` to ``path`` (JPEG quality 95, or PNG by suffix) via a temporary file.

    The bytes go to a temporary file, are flushed to disk (fsync), and only then is the file
    renamed to ``path``; the folder entry is synced too. A crash or power cut leaves either
    no file or the whole image, never an empty or half-written file under the final name.
    ``durable=False`` skips the two syncs (about 2 ms per image on an SSD) for files that
    can be made again for free; the rename still hides half-written files from a killed run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part{os.getpid()}-{threading.get_ident()}")
    try:
        with open(temporary, "wb") as handle:
            if path.suffix.lower() == ".png":
                image.save(handle, format="PNG")
            else:
                image.save(handle, format="JPEG", quality=95)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if durable:
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the system allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(descriptor)


# --- the collection loop ----------------------------------------------------------------


def check_locations(locations) -> None:
    """Refuse locations that must not be sent to a service: not finite, or far from Denmark.

    ``locations`` has columns ``lat`` and ``lng`` (degrees). Every row must be a finite
    point inside Denmark's bounding box (``helpers.geo``) widened by
    :data:`COORDINATE_MARGIN_DEG`; otherwise a ValueError names the bad rows and nothing is
    requested (a NaN or Paris would be billed and stored like any other image).
    """
    missing = [column for column in ("lat", "lng", "cell") if column not in locations]
    if missing:
        raise ValueError(f"The locations lack the columns {missing}; they need lat, lng (degrees) and cell.")
    lat = np.asarray(pd.to_numeric(locations["lat"], errors="coerce"), dtype=float)
    lng = np.asarray(pd.to_numeric(locations["lng"], errors="coerce"), dtype=float)
    lat_range = (geo.DENMARK_LAT[0] - COORDINATE_MARGIN_DEG, geo.DENMARK_LAT[1] + COORDINATE_MARGIN_DEG)
    lng_range = (geo.DENMARK_LNG[0] - COORDINATE_MARGIN_DEG, geo.DENMARK_LNG[1] + COORDINATE_MARGIN_DEG)
    with np.errstate(invalid="ignore"):
        good = (
            np.isfinite(lat)
            & np.isfinite(lng)
            & (lat >= lat_range[0])
            & (lat <= lat_range[1])
            & (lng >= lng_range[0])
            & (lng <= lng_range[1])
        )
    if good.all():
        return
    bad = np.flatnonzero(~good)
    labels = list(locations.index[bad[:5]])
    examples = ", ".join(
        f"row {label}: ({locations['lat'].iloc[i]!r}, {locations['lng'].iloc[i]!r})"
        for label, i in zip(labels, bad[:5], strict=True)
    )
    raise ValueError(
        f"{len(bad)} of {len(locations)} locations are not finite points in or near Denmark "
        f"(lat {lat_range[0]:g} to {lat_range[1]:g}, lng {lng_range[0]:g} to {lng_range[1]:g} degrees): "
        f"{examples}{' ...' if len(bad) > 5 else ''}. Fix or drop those rows; nothing was requested."
    )


def _checked_found(meta, source: str):
    """What a lookup found, if usable: None, or a dict with a non-empty text ``image_id`` and,
    if given, finite ``lat``/``lng``. Anything else is a malformed answer: TransientError, so
    the location counts as failed and is tried again next run."""
    if meta is None:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("image_id"), str) or not meta["image_id"]:
        raise TransientError(f"{source} answered without a usable image id.")
    for name in ("lat", "lng"):
        value = meta.get(name, "")
        if value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise TransientError(
                f"{source} answered with a {name} that is not a finite number: {value!r:.40}."
            )
    return meta


def collect(
    locations,
    folder: Path,
    source: str,
    lookup: Callable,
    fetch: Callable,
    settings: dict,
    *,
    workers: int = 8,
    chunk_size: int = 64,
    progress: bool = True,
    lock_wait_s: float = 0.0,
) -> dict:
    """Download one image per location into ``folder``, resumably; return the counts.

    ``locations`` is a DataFrame with ``lat``, ``lng`` (degrees) and ``cell``; every
    location is checked (:func:`check_locations`) before any request. For each location not
    yet in the manifest: ``lookup(session, lat, lng, settings)`` finds the nearest image
    (metadata calls are free on Street View); locations without imagery are recorded as
    "no_imagery"; an image already in the manifest (two addresses, one panorama) is recorded
    as "duplicate", once its original is saved; the rest are fetched with
    ``fetch(session, found, settings)`` in a thread pool and written as
    ``<cell>/<image_id>.jpg``, both names made safe (:func:`helpers.safe_paths.safe_name`)
    and checked to stay inside ``folder``. A malformed answer counts as one failed location,
    tried again next run. The secrets in ``settings`` are kept out of every log line and
    error. All workers share one rate limiter: a 429 or an over-quota answer pauses them all.

    One download at a time writes into a folder: a second one waits ``lock_wait_s`` seconds
    for the first, then stops with a FolderLocked error naming it (pid, host, start time).

    A FatalAPIError or QuotaExceeded stops the whole run at once (pending requests are
    cancelled) and is raised after the manifest is safely written; run again to resume.
    """
    secrets = secrets_of(settings)
    check_locations(locations)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    redactor = _RedactingFilter(secrets)
    watched = [
        logging.getLogger(name)
        for name in ("urllib3", "urllib3.connectionpool", "requests", __name__, f"helpers.{source}")
    ]
    for logger in watched:
        logger.addFilter(redactor)
    failure = None
    try:
        with safe_paths.FolderLock(folder, wait_s=lock_wait_s):
            return _collect_locked(
                locations, folder, source, lookup, fetch, settings, workers, chunk_size, progress
            )
    except Exception as error:
        failure = scrubbed(error, secrets)
    finally:
        for logger in watched:
            logger.removeFilter(redactor)
    raise failure  # outside the except block, so no unscrubbed exception is linked to it


def _collect_locked(locations, folder, source, lookup, fetch, settings, workers, chunk_size, progress):
    from tqdm.auto import tqdm

    rows = reconcile(folder)
    done = {(row["requested_lat"], row["requested_lng"]) for row in rows}
    saved = {row["image_id"] for row in rows if row["status"] == "ok"}
    counts = {"downloaded": 0, "skipped": len(done), "no_imagery": 0, "duplicate": 0, "failed": 0}
    pending = [
        (repr(float(lat)), repr(float(lng)), float(lat), float(lng), cell)
        for lat, lng, cell in zip(locations["lat"], locations["lng"], locations["cell"], strict=True)
        if (repr(float(lat)), repr(float(lng))) not in done
    ]
    session = new_session(workers)
    bar = tqdm(total=len(pending), desc=f"{source} images", disable=not progress, unit="loc")
    manifest = open(folder / "manifest.csv", "a", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(pending), chunk_size):
                chunk = pending[start : start + chunk_size]
                found = _run_all(
                    pool,
                    [
                        lambda c=c: _checked_found(lookup(session, c[2], c[3], settings), source)
                        for c in chunk
                    ],
                )
                to_fetch = []
                # image id -> the locations that found the same image in this chunk: their
                # "duplicate" rows wait until the original is saved
                waiting: dict[str, list] = {}
                for (lat_text, lng_text, _, _, cell), meta in zip(chunk, found, strict=True):
                    base = {
                        "requested_lat": lat_text,
                        "requested_lng": lng_text,
                        "cell": cell,
                        "source": source,
                    }
                    if isinstance(meta, TransientError):
                        counts["failed"] += 1
                        log.warning("lookup failed at (%s, %s): %s", lat_text, lng_text, meta)
                        continue  # not recorded: the next run tries again
                    if meta is None:
                        _append(manifest, _row(base, status="no_imagery"))
                        counts["no_imagery"] += 1
                    elif meta["image_id"] in saved:
                        _append(manifest, _row(base, meta, status="duplicate"))
                        counts["duplicate"] += 1
                    elif meta["image_id"] in waiting:
                        waiting[meta["image_id"]].append((base, meta))
                    else:
                        waiting[meta["image_id"]] = []
                        to_fetch.append((base, meta))
                images = _run_all(
                    pool,
                    [
                        lambda b=b, m=m: _fetch_to_disk(session, fetch, settings, folder, b, m)
                        for b, m in to_fetch
                    ],
                )
                for (base, meta), result in zip(to_fetch, images, strict=True):
                    later = waiting.pop(meta["image_id"])
                    if isinstance(result, TransientError):
                        counts["failed"] += 1 + len(later)  # the duplicates too: all retried next run
                        log.warning("image %s failed: %s", meta["image_id"], result)
                        continue
                    _append(manifest, _row(base, meta, status="ok", image_path=result))
                    saved.add(meta["image_id"])
                    counts["downloaded"] += 1
                    for other_base, other_meta in later:
                        _append(manifest, _row(other_base, other_meta, status="duplicate"))
                        counts["duplicate"] += 1
                bar.update(len(chunk))
                bar.set_postfix({k: v for k, v in counts.items() if k != "skipped"}, refresh=False)
    finally:
        manifest.close()
        bar.close()
        session.close()
    return counts


def _row(base: dict, meta: dict | None = None, *, status: str, image_path: str = "") -> dict:
    meta = meta or {}
    return {
        **base,
        "image_path": image_path,
        "status": status,
        "image_id": meta.get("image_id", ""),
        "lat": meta.get("lat", ""),
        "lng": meta.get("lng", ""),
        "date": meta.get("date", ""),
        "heading": meta.get("heading", ""),
        "sequence": meta.get("sequence", ""),
        "captured_at": meta.get("captured_at", ""),
    }


def image_path(cell, image_id) -> str:
    """The path (relative to the download folder) of the image ``image_id`` of ``cell``.

    Both come from outside (the locations table, the service), so both are made safe file
    names (:func:`helpers.safe_paths.safe_name`): ``../../x`` cannot climb out of the folder.
    """
    return f"{safe_paths.safe_name(cell)}/{safe_paths.safe_name(image_id)}.jpg"


def _fetch_to_disk(session, fetch, settings: dict, folder: Path, base: dict, meta: dict) -> str:
    relative = image_path(base["cell"], meta["image_id"])
    target = safe_paths.inside(folder, relative, "image path")
    # a good file left by a run killed before its manifest row is kept; a broken one replaced
    if not readable_image(target):
        save_image(fetch(session, meta, settings), target)
    return relative


def _run_all(pool: ThreadPoolExecutor, jobs: list[Callable]) -> list:
    """Run ``jobs`` in ``pool``; results in order, a TransientError in place of a failed job.

    Any other exception (FatalAPIError, QuotaExceeded, a bug) cancels the jobs not yet
    started and is raised.
    """
    futures = [pool.submit(job) for job in jobs]
    finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
    for future in finished:
        error = future.exception()
        if error is not None and not isinstance(error, TransientError):
            for other in futures:
                other.cancel()
            wait(futures)
            raise error
    results = []
    for future in futures:
        error = future.exception()
        results.append(error if isinstance(error, TransientError) else future.result())
    return results
