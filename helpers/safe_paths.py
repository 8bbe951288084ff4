"""Paths that cannot escape their folder, names that cannot collide, and one writer per folder.

Everything that arrives from outside (a manifest row, an id a service chose, a preset name,
a setting) can hold ``..``, a ``/``, an absolute path or a character a file system refuses.
Before the workbook writes or deletes anything it goes through one of these:

* :func:`safe_name` turns any id into a file name: a plain id is kept as it is, anything
  else is reduced to safe characters and given a short hash of the original, so two
  different ids never share a file;
* :func:`plain_name` accepts a name only if it already is a plain file name (for names a
  person chose, such as a checkpoint's);
* :func:`inside` resolves a relative path against its folder (links included) and refuses
  it unless the result lies inside that folder;
* :class:`FolderLock` lets one download at a time write into a folder; a second one stops
  with the name of the first (pid, host, start time), and the lock of a run that was killed
  is recognised and taken over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

# letters, digits, ".", "_" and "-", not starting with "." (no hidden files, no "." or "..")
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
LOCK_NAME = ".download.lock"


class UnsafePathError(ValueError):
    """A path or name from outside would reach outside its folder, or is not a usable name."""


class FolderLocked(RuntimeError):
    """Another process is downloading into the same folder."""


def is_plain_name(text) -> bool:
    """Whether ``text`` is a plain file name: 1 to 100 letters, digits, ".", "_", "-", no leading "."."""
    return isinstance(text, str) and _PLAIN.fullmatch(text) is not None


def plain_name(text, what: str) -> str:
    """``text`` if it is a plain file name (see :func:`is_plain_name`), else UnsafePathError.

    ``what`` says where the name came from, for the error message.
    """
    if not is_plain_name(text):
        raise UnsafePathError(
            f"{what} is {text!r}, which is not a plain name: use 1 to 100 letters, digits, '.', '_' "
            "or '-', not starting with '.', and no '/' (for example 'tiny-vit')."
        )
    return text


def safe_name(identifier) -> str:
    """A file name for ``identifier`` (an id a service chose, a cell label) that stays in its folder.

    A plain id (letters, digits, ".", "_", "-"; see :func:`is_plain_name`) is kept as it is,
    so the usual ids name their files. Any other id is reduced to those characters, cut to
    60 of them and followed by 12 hex digits of its SHA-256, so ``"../x"`` and ``"__x"``
    get different names and the same id always gets the same name (a restart finds its file).
    """
    text = str(identifier)
    if is_plain_name(text):
        return text
    stem = _UNSAFE_CHARS.sub("_", text).lstrip(".")[:60] or "id"
    return f"{stem}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def inside(folder: Path, relative, what: str = "path") -> Path:
    """``folder / relative``, resolved, after checking that it lies inside ``folder``.

    ``relative`` must be a relative path that, with every link followed, stays inside
    ``folder`` (which it may not be itself). Raises UnsafePathError naming ``what``, the
    value and the folder otherwise. Nothing is created or removed.
    """
    text = str(relative)
    base = Path(folder).resolve()
    if not text or "\x00" in text or Path(text).is_absolute() or Path(text).drive:
        raise UnsafePathError(f"{what} {text!r} is not a relative path inside {base}.")
    target = (base / text).resolve()
    if target == base or base not in target.parents:
        raise UnsafePathError(
            f"{what} {text!r} leads outside {base} (to {target}); only paths inside that folder are "
            "written or deleted."
        )
    return target


# --- one download per folder ----------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def describe_holder(holder: dict) -> str:
    """``holder`` (what a lock file records) in words: pid, host and start time."""
    return (
        f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


class FolderLock:
    """An exclusive lock on a download folder, held while a download writes there.

    The lock is the operating system's lock on ``folder/.download.lock`` (``flock``), which
    the system releases when the holder dies, however it dies; the file records who holds
    it (pid, host, start time) for the message a second download gets. A file that still
    names a holder when the lock is free was left by an interrupted run: it is taken over,
    with a log line. ``wait_s``: how long a second download waits for the first before it
    stops (0: stop at once). Use as a context manager.
    """

    def __init__(self, folder: Path, wait_s: float = 0.0, poll_s: float = 0.2):
        self.path = Path(folder) / LOCK_NAME
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._handle = None

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _try_lock(self, handle) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: lock the first byte instead
            import msvcrt

            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            # a file system without flock (some network mounts): fall back on the recorded pid
            holder = self._holder()
            same_host = holder.get("host") == socket.gethostname()
            pid = holder.get("pid")
            return not (same_host and isinstance(pid, int) and pid != os.getpid() and _process_alive(pid))
        return True

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        deadline = time.monotonic() + self.wait_s
        while not self._try_lock(handle):
            if time.monotonic() >= deadline:
                handle.close()
                holder = self._holder()
                raise FolderLocked(
                    f"Another download is writing into {self.path.parent}: {describe_holder(holder)}. "
                    "Wait for it to finish (or stop it), then run again; two downloads into one folder "
                    "would lose manifest rows."
                )
            time.sleep(self.poll_s)
        previous = self._holder()
        if previous.get("pid") is not None:
            alive = previous.get("host") == socket.gethostname() and _process_alive(previous["pid"])
            log.warning(
                "taking over the lock of %s in %s (%s)",
                describe_holder(previous),
                self.path.parent,
                "interrupted" if not alive else "it no longer holds the lock",
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        os.fsync(handle.fileno())
        self._handle = handle
        return self

    def release(self) -> None:
        """Free the lock; the file stays, emptied (removing it would let a waiting process and
        a new one each lock a different file)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        finally:
            handle.close()  # closing releases the lock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
