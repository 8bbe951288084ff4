"""Download machinery shared by the Street View and Mapillary clients.

What every image source needs, written once:

* **secrets** from the environment or a git-ignored ``.env`` file, and redaction, so a key
  never reaches a log line, an exception, a notebook or the manifest;
* **HTTP with retries**: exponential back-off with jitter on 429, 5xx, timeouts and broken
  connections, honouring ``Retry-After``; a bounded thread pool and a rate limit;
* **a crash-safe manifest**: every image is written to a temporary name and renamed, and
  only then gets its manifest row, so a killed run loses nothing and a restart skips what
  is done. ``reconcile`` makes the manifest and the folder agree after a crash.

A source supplies two functions and its settings: ``lookup(session, lat, lng, settings)``,
which returns metadata of the nearest image (or ``None`` where there is none), and
``fetch(session, found, settings)``, which returns the image as a PIL image. :func:`collect`
does the rest.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
from PIL import Image

from helpers import config

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
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
RETRY_STATUS = {429, 500, 502, 503, 504}


class FatalAPIError(RuntimeError):
    """The service refused us for a reason retrying cannot fix (bad key, API disabled)."""


class QuotaExceeded(RuntimeError):
    """The service keeps saying we are over quota; stop now, resume later."""


class TransientError(RuntimeError):
    """A request failed after all retries (network, 5xx, a broken image)."""


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
            text = text.replace(secret, "REDACTED")
    return text


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
    """A function that, called before each request, spaces calls ``1/per_second`` s apart."""
    interval = 1.0 / per_second if per_second else 0.0
    lock = threading.Lock()
    next_slot = [time.monotonic()]

    def wait_turn():
        with lock:
            now = time.monotonic()
            slot = max(now, next_slot[0])
            next_slot[0] = slot + interval
        if slot > now:
            time.sleep(slot - now)

    return wait_turn


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


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
) -> requests.Response:
    """GET ``url``, retrying 429, 5xx, timeouts and broken connections; return the response.

    Waits ``backoff_s * 2**attempt`` with full jitter between tries, or the server's
    ``Retry-After`` if that is longer (capped at ``max_wait_s``). Other 4xx answers are
    returned to the caller, who knows what they mean for its API. The body is read inside
    the retry loop, so a truncated body is retried too. A server still answering 429 after
    every try raises QuotaExceeded; other failures TransientError. Errors never contain a secret.
    """
    secrets = list(secrets)
    problem = "no attempt"
    for attempt in range(retries + 1):
        if wait_turn:
            wait_turn()
        try:
            response = session.get(url, params=params, headers=headers, timeout=timeout_s)
            response.content  # noqa: B018 (read the whole body now, so truncation raises here)
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as error:
            problem = f"{type(error).__name__}: {redact(error, secrets)}"
            server_wait = None
        else:
            if response.status_code not in RETRY_STATUS:
                return response
            problem = f"HTTP {response.status_code}"
            server_wait = _retry_after_seconds(response)
        if attempt == retries:
            break
        delay = random.uniform(0, backoff_s * 2**attempt)
        if server_wait is not None:
            delay = max(delay, server_wait)
        delay = min(delay, max_wait_s)
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
    **extra,
) -> dict:
    """The settings every client passes around: its API root, its secret, retry and rate limits,
    plus anything of its own (``extra``: image size, search radius, ...)."""
    return {
        "root": api_root.rstrip("/"),
        "secret": secret,
        "retries": retries,
        "backoff_s": backoff_s,
        "timeout_s": timeout_s,
        "wait_turn": rate_limiter(per_second),
        **extra,
    }


def request(session: requests.Session, url: str, params: dict | None, settings: dict, headers=None):
    """:func:`get_with_retries` with a client's ``settings``: its ``secret``, ``retries``,
    ``backoff_s``, ``timeout_s`` and rate limiter ``wait_turn``."""
    return get_with_retries(
        session,
        url,
        params,
        headers=headers,
        secrets=[settings["secret"]],
        retries=settings["retries"],
        backoff_s=settings["backoff_s"],
        timeout_s=settings["timeout_s"],
        wait_turn=settings["wait_turn"],
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
    """Rows of a manifest CSV; a last line cut short by a crash is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a half-written last row
    rows = list(csv.DictReader(io.StringIO(text)))
    return [row for row in rows if set(row) == set(MANIFEST_COLUMNS) and None not in row.values()]


def reconcile(folder: Path) -> list[dict]:
    """Make ``folder/manifest.csv`` and the image files agree after any interruption.

    Removes temporary files, drops "ok" rows whose file is missing, repeated rows, and
    rewrites the manifest atomically. Image files without a row are left; the next run finds
    them and adds their row without downloading again. Returns the rows kept.
    """
    folder = Path(folder)
    for leftover in folder.rglob(".*.part*"):
        leftover.unlink()
    kept, seen = [], set()
    for row in read_manifest(folder / "manifest.csv"):
        key = (row["requested_lat"], row["requested_lng"], row["image_id"], row["status"])
        if key in seen or (row["status"] == "ok" and not (folder / row["image_path"]).exists()):
            continue
        seen.add(key)
        kept.append(row)
    with config.atomic_target(folder / "manifest.csv") as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    return kept


def _append(handle, row: dict) -> None:
    csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS).writerow(row)
    handle.flush()
    os.fsync(handle.fileno())


def save_image(image: Image.Image, path: Path) -> None:
    """Write ``image`` to ``path`` (JPEG quality 95, or PNG by suffix) via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part{os.getpid()}-{threading.get_ident()}")
    try:
        if path.suffix.lower() == ".png":
            image.save(temporary, format="PNG")
        else:
            image.save(temporary, format="JPEG", quality=95)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- the collection loop ----------------------------------------------------------------


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
) -> dict:
    """Download one image per location into ``folder``, resumably; return the counts.

    ``locations`` is a DataFrame with ``lat``, ``lng`` (degrees) and ``cell``. For each
    location not yet in the manifest: ``lookup(session, lat, lng, settings)`` finds the
    nearest image (metadata calls are free on Street View); locations without imagery are
    recorded as "no_imagery"; an image already in the manifest (two addresses, one
    panorama) is recorded as "duplicate"; the rest are fetched with
    ``fetch(session, found, settings)`` in a thread pool and written as
    ``<cell>/<image_id>.jpg``. ``settings["secret"]`` is kept out of every log line.

    A FatalAPIError or QuotaExceeded stops the whole run at once (pending requests are
    cancelled) and is raised after the manifest is safely written; run again to resume.
    """
    from tqdm.auto import tqdm

    secrets = [settings["secret"]]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = reconcile(folder)
    done = {(row["requested_lat"], row["requested_lng"]) for row in rows}
    have = {row["image_id"] for row in rows if row["status"] == "ok"}
    counts = {"downloaded": 0, "skipped": len(done), "no_imagery": 0, "duplicate": 0, "failed": 0}

    redactor = _RedactingFilter(secrets)
    watched = [logging.getLogger(name) for name in ("urllib3", "urllib3.connectionpool", "requests")]
    for logger in watched:
        logger.addFilter(redactor)

    pending = [
        (repr(float(lat)), repr(float(lng)), float(lat), float(lng), cell)
        for lat, lng, cell in zip(locations["lat"], locations["lng"], locations["cell"], strict=True)
        if (repr(float(lat)), repr(float(lng))) not in done
    ]
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=workers, pool_maxsize=workers)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    bar = tqdm(total=len(pending), desc=f"{source} images", disable=not progress, unit="loc")
    manifest = open(folder / "manifest.csv", "a", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(pending), chunk_size):
                chunk = pending[start : start + chunk_size]
                found = _run_all(pool, [lambda c=c: lookup(session, c[2], c[3], settings) for c in chunk])
                to_fetch = []
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
                    elif meta["image_id"] in have:
                        _append(manifest, _row(base, meta, status="duplicate"))
                        counts["duplicate"] += 1
                    else:
                        have.add(meta["image_id"])
                        to_fetch.append((base, meta))
                images = _run_all(
                    pool,
                    [
                        lambda b=b, m=m: _fetch_to_disk(session, fetch, settings, folder, b, m)
                        for b, m in to_fetch
                    ],
                )
                for (base, meta), result in zip(to_fetch, images, strict=True):
                    if isinstance(result, TransientError):
                        have.discard(meta["image_id"])
                        counts["failed"] += 1
                        log.warning("image %s failed: %s", meta["image_id"], result)
                        continue
                    _append(manifest, _row(base, meta, status="ok", image_path=result))
                    counts["downloaded"] += 1
                bar.update(len(chunk))
                bar.set_postfix({k: v for k, v in counts.items() if k != "skipped"}, refresh=False)
    finally:
        manifest.close()
        bar.close()
        for logger in watched:
            logger.removeFilter(redactor)
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
    }


def _fetch_to_disk(session, fetch, settings: dict, folder: Path, base: dict, meta: dict) -> str:
    relative = Path(str(base["cell"])) / f"{meta['image_id']}.jpg"
    if not (folder / relative).exists():  # a file left by a run killed before its manifest row
        save_image(fetch(session, meta, settings), folder / relative)
    return relative.as_posix()


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
