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
* :func:`check_checksums` compares the files of a folder with its ``SHA256SUMS`` (written by
  :func:`write_checksums`) before they are used, e.g. a committed checkpoint;
* :class:`FolderLock` lets one process at a time write into a folder; a second one stops
  with the name of the first (pid, host, start time). The lock file is never followed
  through a link, the lock of a run killed on this host is taken over, another host's never.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import stat
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


# --- files that are what a checksum list says -------------------------------------------------

CHECKSUMS_NAME = "SHA256SUMS"


class ChecksumError(ValueError):
    """A file differs from the SHA-256 its folder's checksum list records, or the list is missing."""


def stream_sha256(handle) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of what is left to read in the binary ``handle``, 1 MB at a time.

    ``handle`` may be any readable stream: an open file, or a member of an archive.
    """
    digest, size = hashlib.sha256(), 0
    while block := handle.read(1 << 20):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, hex, read 1 MB at a time."""
    with open(path, "rb") as handle:
        return stream_sha256(handle)[0]


def write_checksums(folder: Path, names) -> Path:
    """Write ``folder/SHA256SUMS``: one line ``<sha256>  <name>`` per file of ``names``.

    The format of GNU ``sha256sum``, so ``cd folder && sha256sum -c SHA256SUMS`` checks it
    too. Written atomically (a temporary file renamed into place).
    """
    folder = Path(folder)
    lines = [f"{file_sha256(folder / plain_name(n, 'A checksummed file'))}  {n}\n" for n in sorted(names)]
    temporary = folder / f".{CHECKSUMS_NAME}.partial"
    temporary.write_text("".join(lines), encoding="ascii")
    os.replace(temporary, folder / CHECKSUMS_NAME)
    return folder / CHECKSUMS_NAME


def read_checksums(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` from ``folder/SHA256SUMS``; ChecksumError if it is missing or unreadable."""
    path = Path(folder) / CHECKSUMS_NAME
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ChecksumError(f"{path} cannot be read ({error}).") from None
    expected = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S+)", line.strip())
        if not match or not is_plain_name(match.group(2)):
            raise ChecksumError(f"Line {number} of {path} is not '<sha256>  <plain file name>': {line!r}.")
        expected[match.group(2)] = match.group(1)
    return expected


def check_checksums(folder: Path, required=(), restore: str = "") -> dict[str, str]:
    """Compare every file ``folder/SHA256SUMS`` lists with its recorded SHA-256; return the list.

    ``required``: file names the list must hold. A file that is missing, is a link, or
    differs raises ChecksumError naming the file, the expected and the actual hash, and
    ``restore`` (how to get the folder back).
    """
    folder = Path(folder)
    try:
        expected = read_checksums(folder)
    except ChecksumError as error:
        raise ChecksumError(f"{error} {restore}") from None
    absent = sorted(set(required) - set(expected))
    if absent:
        listed = folder / CHECKSUMS_NAME
        raise ChecksumError(f"{listed} records no SHA-256 for {', '.join(absent)}. {restore}")
    for name, digest in expected.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise ChecksumError(f"{path} is missing or not a plain file (a link, say). {restore}")
        actual = file_sha256(path)
        if actual != digest:
            raise ChecksumError(
                f"{path} is not the file {CHECKSUMS_NAME} records: expected SHA-256 {digest}, found "
                f"{actual} (changed or damaged since it was written). {restore}"
            )
    return expected


# --- one writer per folder --------------------------------------------------------------------

_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_RECORD_BYTES = 4096  # a lock record is about 150 bytes; anything longer is not one
# folders where flock failed in this process: later locks there go straight to the record
_FOLDERS_WITHOUT_FLOCK: set[str] = set()


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


def describe_holder(holder) -> str:
    """``holder`` (what a lock file records) in words: pid, host and start time."""
    if not isinstance(holder, dict):
        return "an unknown holder (the lock file holds no readable record)"
    return (
        f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


def _open_plain_file(path: Path, flags: int, mode: int = 0o666) -> int:
    """A descriptor of ``path`` opened with ``flags``, refused unless ``path`` is a regular file.

    The last component is never followed if it is a link (``O_NOFOLLOW``; where the system
    lacks it, the link is refused before opening), and a FIFO or device does not block.
    """
    refusal = (
        f"The lock file {path} is {{}}, not a plain file: the lock would write through it. "
        f"Remove it (rm {path}) and run again."
    )
    if path.is_symlink():
        raise UnsafePathError(refusal.format("a link"))
    try:
        descriptor = os.open(path, flags | _OPEN_FLAGS, mode)
    except OSError as error:
        if path.is_symlink():
            raise UnsafePathError(refusal.format("a link")) from None
        if isinstance(error, IsADirectoryError):
            raise UnsafePathError(refusal.format("a folder")) from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnsafePathError(refusal.format("a folder, a FIFO or a device"))
    return descriptor


def _read_record(descriptor: int) -> tuple[str, dict | bytes]:
    """What a lock file says: ("free", {}), ("held", the record) or ("unreadable", its bytes)."""
    os.lseek(descriptor, 0, os.SEEK_SET)
    raw = os.read(descriptor, _RECORD_BYTES + 1)
    if not raw.strip():
        return "free", {}
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        return "unreadable", raw
    if (
        len(raw) > _RECORD_BYTES
        or not isinstance(record, dict)
        or not isinstance(record.get("pid"), int)
        or isinstance(record.get("pid"), bool)
        or not isinstance(record.get("host"), str)
    ):
        return "unreadable", raw
    return "held", record


def _holder_once_written(descriptor: int, wait_s: float = 1.0) -> dict | bytes:
    """The record of a lock file another process holds (flock, or msvcrt's byte lock), once written.

    The holder takes the lock first and writes its record just after: read in between, the
    file is still empty (or the last holder's). Read again for up to ``wait_s`` seconds, so
    the message names the holder; whatever is there then is returned.
    """
    deadline = time.monotonic() + wait_s
    state, holder = _read_record(descriptor)
    while state != "held" and time.monotonic() < deadline:
        time.sleep(0.02)
        state, holder = _read_record(descriptor)
    return holder


class FolderLock:
    """An exclusive lock on a folder, held while one process writes there (a download, a run).

    The lock is ``folder/.download.lock``, a plain file that records its holder (pid, host,
    start time) for the message a second process gets. It is opened without following links
    (``O_NOFOLLOW``) and must be a regular file; a link, folder or FIFO there is refused.

    Where the file system has ``flock``, the operating system's lock on that file is the
    lock: the system releases it when the holder dies, however it dies, so a record left
    by a killed run on this host is taken over (with a log line). Where it has none (some
    network mounts), the lock is the record itself: it is put in place with ``link()``,
    which only succeeds where no lock file exists, and a stale one (its process no longer
    runs on this host, or its content is unreadable) is removed by one process at a time,
    the one that creates ``.download.lock.break-<inode>`` first.

    A record of another host is never taken over: this host cannot tell whether that process
    still runs. The message names it and how to remove the lock if it is stale. Content that
    is no record at all (a truncated write, ``[]``) is treated as stale, with a log line.

    ``wait_s``: how long a second process waits for the first before it stops (0: at once);
    ``poll_s``: how often it looks. ``purpose`` names the writer in messages. Use as a
    context manager.
    """

    def __init__(
        self,
        folder: Path,
        wait_s: float = 0.0,
        poll_s: float = 0.2,
        *,
        name: str = LOCK_NAME,
        purpose: str = "download",
    ):
        plain_name(name.removeprefix("."), "The lock file name (after its leading '.')")
        self.path = Path(folder) / name
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.purpose = purpose
        self._descriptor = None  # flock: the open lock file, locked
        self._record = None  # without flock: our record, whose file is the lock
        self._inode = None
        self._without_flock = os.path.abspath(self.path.parent) in _FOLDERS_WITHOUT_FLOCK

    # -- the record --------------------------------------------------------------------------

    def _new_record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "token": os.urandom(8).hex(),  # tells two holders of one pid apart (threads, reuse)
        }

    def _busy_message(self, holder, extra: str = "") -> str:
        folder = self.path.parent
        if isinstance(holder, dict) and holder.get("host") not in (None, socket.gethostname()):
            return (
                f"Another {self.purpose} holds {folder}: {describe_holder(holder)}. This host cannot tell "
                f"whether a process on another host still runs, so that lock is never taken over: wait "
                f"for it to finish; if it was stopped (the lock is stale), delete {self.path} and run "
                f"again.{extra}"
            )
        return (
            f"Another {self.purpose} is writing into {folder}: {describe_holder(holder)}. Wait for it "
            f"to finish (or stop it), then run again; two at once in one folder would overwrite each "
            f"other's files.{extra}"
        )

    def _judge(self, state: str, holder) -> str | None:
        """None if a lock file in ``state`` with ``holder`` may be taken (logging why), else the
        message for the caller. Called with the flock held, or before a take-over without it."""
        if state == "free":
            return None
        if state == "unreadable":
            log.warning(
                "the lock file %s holds no readable record (%r); treating it as stale and taking it over",
                self.path,
                bytes(holder[:80]),
            )
            return None
        if holder["host"] != socket.gethostname():
            return self._busy_message(holder)
        alive = _process_alive(holder["pid"])
        if alive and self._without_flock:
            return self._busy_message(holder)  # without flock the record is the lock
        log.warning(
            "taking over the lock of %s in %s (%s)",
            describe_holder(holder),
            self.path.parent,
            "it no longer holds the lock" if alive else "interrupted",
        )
        return None

    # -- with flock ----------------------------------------------------------------------------

    def _try_flock(self) -> str | None:
        """Try once with ``flock``: None when held, else the message. Sets ``_without_flock``
        when the file system has no flock."""
        descriptor = _open_plain_file(self.path, os.O_RDWR | os.O_CREAT)
        try:
            try:
                import fcntl
            except ImportError:  # Windows: lock the first byte instead
                import msvcrt

                try:
                    msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
                except OSError:
                    return self._busy_message(_holder_once_written(descriptor))
            else:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return self._busy_message(_holder_once_written(descriptor))
                except OSError as error:
                    log.info("no flock on %s (%s): the lock record is the lock", self.path.parent, error)
                    self._without_flock = True
                    _FOLDERS_WITHOUT_FLOCK.add(os.path.abspath(self.path.parent))
                    return "no flock"
            message = self._judge(*_read_record(descriptor))
            if message is not None:
                return message  # another host's record: the descriptor closes, freeing the flock
            record = json.dumps(self._new_record()).encode("utf-8")
            os.ftruncate(descriptor, 0)
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.write(descriptor, record)
            os.fsync(descriptor)
            self._descriptor, descriptor = descriptor, None
            return None
        finally:
            if descriptor is not None:
                os.close(descriptor)

    # -- without flock -------------------------------------------------------------------------

    def _try_link(self) -> str | None:
        """Try once without flock: None when held, else the message.

        The record is written to a fresh file first (``O_EXCL``) and then linked to the lock's
        name, which fails if a lock file is there: whoever links first holds the lock, and no
        reader ever sees half a record. A stale or free lock file is removed only by the process
        that created ``<lock>.break-<its inode>``, after checking again that it is still that
        file and still stale; so two processes never both remove a file, nor a fresh one.
        """
        folder = self.path.parent
        record = self._new_record()
        claim = folder / f"{self.path.name}.claim-{record['token']}"
        descriptor = _open_plain_file(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(descriptor, json.dumps(record).encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            for _ in range(10):  # each round either holds, is refused, or saw the file change
                try:
                    os.link(claim, self.path)
                except FileExistsError:
                    pass
                else:
                    self._record, self._inode = record, os.lstat(claim).st_ino
                    return None
                try:
                    descriptor = _open_plain_file(self.path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # released in between: link again
                try:
                    inode = os.fstat(descriptor).st_ino
                    state, holder = _read_record(descriptor)
                finally:
                    os.close(descriptor)
                elsewhere = state == "held" and holder["host"] != socket.gethostname()
                if elsewhere or (state == "held" and _process_alive(holder["pid"])):
                    return self._busy_message(holder)
                message = self._break(inode)
                if message is not None:
                    return message
            return self._busy_message({}, " (the lock file kept changing)")
        finally:
            claim.unlink(missing_ok=True)  # the lock, if held, keeps the file under its own name

    def _break(self, inode: int) -> str | None:
        """Remove the stale or free lock file ``inode`` if this process may; None if it did or
        the file changed meanwhile, else the message."""
        breaker = self.path.parent / f"{self.path.name}.break-{inode}"
        try:
            descriptor = _open_plain_file(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            extra = (
                f" (another process is taking over a stale lock; if {breaker} stays, that take-over was "
                f"interrupted: delete {breaker} and {self.path}, then run again)"
            )
            return self._busy_message({}, extra)
        try:
            os.write(descriptor, json.dumps(self._new_record()).encode("utf-8"))
            os.close(descriptor)
            try:
                descriptor = _open_plain_file(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                if os.fstat(descriptor).st_ino != inode:
                    return None  # someone else's file now: look again
                message = self._judge(*_read_record(descriptor))
            finally:
                os.close(descriptor)
            if message is None:
                self.path.unlink()
            return message
        finally:
            breaker.unlink(missing_ok=True)

    # -- the lock --------------------------------------------------------------------------------

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            message = None if self._without_flock else self._try_flock()
            if self._without_flock:
                message = self._try_link()
            if message is None:
                return self
            if time.monotonic() >= deadline:
                raise FolderLocked(message)
            time.sleep(self.poll_s)

    def release(self) -> None:
        """Free the lock. With flock the file stays, emptied (removing it would let a waiting
        process and a new one each lock a different file); without flock our file is removed,
        if it is still ours."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            try:
                os.ftruncate(descriptor, 0)
            finally:
                os.close(descriptor)  # closing releases the flock
        record, self._record = self._record, None
        if record is not None:
            try:
                descriptor = _open_plain_file(self.path, os.O_RDONLY)
            except (FileNotFoundError, UnsafePathError):
                log.warning("the lock file %s went away while held", self.path)
                return
            try:
                ours = os.fstat(descriptor).st_ino == self._inode and _read_record(descriptor)[1] == record
            finally:
                os.close(descriptor)
            if ours:
                self.path.unlink()
            else:
                log.warning("the lock file %s was replaced while held; left as it is", self.path)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
