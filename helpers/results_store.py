"""Records no writer can lose: one small JSON file per record, and the tables derived from them.

The results table (one row per experiment and split) and the facts (one value per name) are
written by many notebooks, at times by two processes at once (two runners, a notebook beside a
test) and at times by a process that is killed (``kill -9``, a full disk). So every record is a
file of its own, written where nothing else writes: a temporary file in the same folder,
flushed and ``fsync``-ed, then renamed onto the record's name (``os.replace``, atomic). Two
processes recording different rows never touch the same file; two recording the same row
each replace it whole, the last one wins, and nothing is ever half written.

Why files and not SQLite in WAL mode: one file per record is the simplest to inspect (``cat``
one row, delete one bad row), needs no lock that a killed process could leave behind and
nothing to get wrong about locking (no reader waits, no writer waits for another), and it
works on file systems where SQLite's shared-memory WAL index does not (network mounts).
SQLite would be faster for many thousands of rows; a build holds a few hundred.

The files people open, ``results.csv`` and ``facts.json``, are *derived* from the records:
rewritten after each record and whenever a reader finds them stale (a writer killed between
its record and the table). Code reads the records, never the derived file.

A file that is damaged (cut short, empty, zero bytes where text should be, unparsable, a
column missing) is never read as data: :class:`DamagedBuild` names the file, what is wrong
with it and how to rebuild it. :func:`read_json` and :func:`read_csv` read any build file
that way.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from helpers import safe_paths

log = logging.getLogger(__name__)

# temporary files and folders are named ".<target>.<HOST_TAG>.<pid>.<8 hex>.tmp": they carry this
# host and the writer's pid, so a reader can tell the leftovers of a killed writer (removed) from
# the work of a live one (left alone)
HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogatepass")).hexdigest()[:8]
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
# a leftover of another host is removed only when it is this old (seconds): its writer is gone
STALE_TEMPORARY_S = 24 * 3600
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# how many times a derived table is rewritten while records keep arriving before it is left to
# the next writer or reader (each of which rewrites it again)
_REFRESH_ATTEMPTS = 20
READ_ONLY_ERRORS = {errno.EROFS, errno.EACCES, errno.EPERM}


class DamagedBuild(ValueError):
    """A file of the build cannot be trusted: cut short, empty, unparsable or missing a column.

    Attributes: ``path`` (the file), ``what`` (what it holds, in words), ``problem`` (what is
    wrong with it) and ``rebuild`` (what to do). Nothing was read from the file or changed.
    """

    def __init__(self, path, what: str, problem: str, rebuild: str):
        self.path = Path(path)
        self.what = what
        self.problem = problem
        self.rebuild = rebuild
        super().__init__(f"{what} {self.path} is damaged: {problem}. {rebuild}")

    def __reduce__(self):  # keeps the four parts when it crosses a process boundary
        return type(self), (self.path, self.what, self.problem, self.rebuild)


def record_name(*identity: str) -> str:
    """The file name of the record identified by ``identity`` (e.g. experiment and split).

    A readable stem (letters, digits, ".", "_", "-" of the identity, at most 60) and 16 hex
    digits of the SHA-256 of the identity as a JSON list, so two identities never share a
    file (``("a b", "c")`` and ``("a", "b c")`` differ) and none reaches outside its folder.
    """
    key = json.dumps(list(identity))  # ASCII, lone surrogates escaped
    digest = hashlib.sha256(key.encode("ascii")).hexdigest()[:16]
    stem = _UNSAFE.sub("_", "__".join(identity)).strip("._-")[:60] or "record"
    return f"{stem}-{digest}.json"


def is_record_file(name: str) -> bool:
    """Whether ``name`` in a record folder is a record (not a temporary file, not hidden)."""
    return name.endswith(".json") and not name.startswith(".")


# --- writing ------------------------------------------------------------------------------------


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{HOST_TAG}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _sync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` survive a power cut (no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    A temporary file beside ``path`` (hidden, named after this host and process) is written,
    flushed and, when ``durable``, ``fsync``-ed with its folder, then renamed onto ``path``.
    On any error (a full disk) the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    temporary = _temporary_beside(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with open(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        _sync_folder(path.parent)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def clean_leftovers(folder: Path) -> list[str]:
    """Remove the temporary files and folders that killed writers left in ``folder``; return their names.

    A leftover is removed when its writer (named in it) was a process of this host that is
    gone, or when it is older than :data:`STALE_TEMPORARY_S`; a live writer's is left alone.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if not match:
            continue
        try:
            age_s = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # its writer renamed it meanwhile
        writer_gone = match["host"] == HOST_TAG and not _process_alive(int(match["pid"]))
        if not (writer_gone or age_s > STALE_TEMPORARY_S):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        log.info("removed %s, left in %s by a writer that is gone", entry.name, folder)
        removed.append(entry.name)
    return removed


# --- reading ------------------------------------------------------------------------------------


def _read_bytes(path: Path, what: str, rebuild: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DamagedBuild(path, what, "the file does not exist", rebuild) from None
    except IsADirectoryError:
        raise DamagedBuild(path, what, "it is a folder, not a file", rebuild) from None


def _text_of(path: Path, data: bytes, what: str, rebuild: str) -> str:
    """``data`` as text, after the checks every build file must pass (not empty, no zero bytes)."""
    if not data:
        raise DamagedBuild(
            path,
            what,
            "it is empty (0 bytes): it was created but never written, as when the writing process "
            "is killed or the disk is full",
            rebuild,
        )
    first_zero = data.find(b"\0")
    if first_zero >= 0:
        zeros = data.count(b"\0")
        if not data[first_zero:].strip(b"\0"):
            problem = (
                f"its last {zeros} of {len(data)} bytes are zero bytes: the file system kept its size "
                "but not its content, as after a crash or a full disk"
            )
        else:
            problem = f"it holds {zeros} zero bytes (the first at byte {first_zero}), which no text file has"
        raise DamagedBuild(path, what, problem, rebuild)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DamagedBuild(path, what, f"it is not UTF-8 text (byte {error.start})", rebuild) from None


def _ends_open(text: str) -> bool:
    """Whether JSON ``text`` ends inside a string or with a bracket unclosed (a file cut short)."""
    open_brackets, in_string, escaped = 0, False, False
    for character in text:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            open_brackets += 1
        elif character in "]}":
            open_brackets -= 1
    return in_string or open_brackets > 0


def _parse_json(path: Path, data: bytes, what: str, rebuild: str):
    text = _text_of(path, data, what, rebuild)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"it is not valid JSON ({error})"
        if _ends_open(text):
            problem += ": it stops with a string or bracket still open, so it was cut short"
        raise DamagedBuild(path, what, problem, rebuild) from None


def read_json(path, what: str, rebuild: str, keys: Iterable[str] = ()):
    """The JSON value in ``path``; :class:`DamagedBuild` if it is missing, empty, cut or unparsable.

    ``what`` names the file's content for the message ("the summary of run final_seed0");
    ``rebuild`` says how to make it again ("Run notebook 06 again."). With ``keys``, the value
    must be a JSON object holding each of them.
    """
    value = _parse_json(path, _read_bytes(path, what, rebuild), what, rebuild)
    keys = list(keys)
    if keys:
        if not isinstance(value, dict):
            raise DamagedBuild(
                path, what, f"it holds a JSON {type(value).__name__}, not an object with {keys}", rebuild
            )
        missing = [key for key in keys if key not in value]
        if missing:
            raise DamagedBuild(path, what, f"it lacks the keys {missing}", rebuild)
    return value


def read_csv(
    path,
    what: str,
    rebuild: str,
    columns: Iterable[str] = (),
    numeric: Iterable[str] = (),
    text: Iterable[str] = (),
) -> pd.DataFrame:
    """The table in the CSV file ``path``; :class:`DamagedBuild` if anything in it is cut or missing.

    Checked: the file exists, is not empty, holds no zero bytes, ends with a line end (a file
    cut short ends inside a row), parses as CSV, its header holds every column of
    ``columns`` once, every row has as many fields as the header, and every value of the
    ``numeric`` columns is a number or empty. ``text`` columns are read as text (an
    experiment named "2020" stays "2020"); empty cells read as NaN.
    """
    content = _text_of(path, _read_bytes(path, what, rebuild), what, rebuild)
    if not content.endswith("\n"):
        last = content.rsplit("\n", 1)[-1]
        raise DamagedBuild(
            path,
            what,
            f"it ends inside a row (its last {len(last)} characters have no line end): it was cut short",
            rebuild,
        )
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        header = next(reader)
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise DamagedBuild(path, what, f"its header names the columns {duplicated} twice", rebuild)
        missing = [name for name in columns if name not in header]
        if missing:
            raise DamagedBuild(path, what, f"it lacks the columns {missing} (its header: {header})", rebuild)
        for fields in reader:
            if len(fields) != len(header):
                line = reader.line_num
                problem = (
                    f"line {line} is empty"
                    if not fields
                    else f"line {line} has {len(fields)} fields where the header has {len(header)}"
                    + (": the row was cut short" if len(fields) < len(header) else "")
                )
                raise DamagedBuild(path, what, problem, rebuild)
    except csv.Error as error:
        raise DamagedBuild(
            path, what, f"it cannot be read as CSV (line {reader.line_num}: {error})", rebuild
        ) from None
    text_columns = {name: str for name in text if name in header}
    try:
        table = pd.read_csv(io.StringIO(content), keep_default_na=False, na_values=[""], dtype=text_columns)
    except (pd.errors.ParserError, ValueError) as error:
        raise DamagedBuild(path, what, f"it cannot be read as a table ({error})", rebuild) from None
    for name in numeric:
        if name not in table or pd.api.types.is_numeric_dtype(table[name]):
            continue
        numbers = pd.to_numeric(table[name], errors="coerce")
        wrong = numbers.isna() & table[name].notna()
        if not wrong.any():
            table[name] = numbers
            continue
        row = int(wrong.to_numpy().argmax())
        raise DamagedBuild(
            path,
            what,
            f"row {row + 1} holds {table[name].iloc[row]!r} in column {name!r}, not a number",
            rebuild,
        )
    return table


def fingerprint(folder: Path) -> list[tuple]:
    """What changes whenever a record of ``folder`` is written: (name, inode, size, mtime) of each.

    A record is replaced by a new file (a new inode), so a rewrite shows even within one tick
    of the clock.
    """
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if is_record_file(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    status = entry.stat(follow_symlinks=False)
                    found.append((entry.name, status.st_ino, status.st_size, status.st_mtime_ns))
    return sorted(found)


def read_records(folder: Path, what: str, rebuild: str) -> list[tuple[Path, object]]:
    """Every record in ``folder`` as (path, JSON value), by file name; DamagedBuild on a damaged one.

    Temporary files are not records (their writers' leftovers are removed, :func:`clean_leftovers`).
    ``rebuild`` says how to rebuild a damaged record.
    """
    clean_leftovers(folder)
    records = []
    for name, *_ in fingerprint(folder):
        path = Path(folder) / name
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            continue  # deleted by hand while we read
        records.append((path, _parse_json(path, data, what, rebuild)))
    return records


# --- derived tables and the one-time import of an old build ---------------------------------------


def refresh_derived(folder: Path, derived: Path, render: Callable[[], tuple[object, str]]):
    """Rewrite ``derived`` from the records in ``folder`` until no record arrived meanwhile.

    ``render()`` reads the records and returns (value, text of the derived file); the value of
    the last round is returned. A derived file already up to date is left as it is. A writer
    that lost the race to another one sees a record it has not rendered and renders again,
    so the last derived file written holds every record finished before it. A derived file
    that cannot be written (a full disk, a read-only build) is logged and left to the next
    writer or reader: the records stay the source of truth.
    """
    value = None
    for _ in range(_REFRESH_ATTEMPTS):
        before = fingerprint(folder)
        value, text = render()
        data = text.encode("utf-8")
        try:
            current = derived.read_bytes() if derived.is_file() else None
        except OSError:
            current = None
        if current != data:
            clean_leftovers(derived.parent)
            try:
                write_atomically(derived, data, durable=False)
            except OSError as error:
                log.warning(
                    "could not rewrite %s from %s (%s); it is rewritten on the next read",
                    derived,
                    folder,
                    error,
                )
                return value
        if fingerprint(folder) == before:
            return value
    return value


def import_once(folder: Path, write_records: Callable[[Path], None], wait_s: float = 120.0) -> None:
    """Create the record folder ``folder`` exactly once, filled by ``write_records(staging)``.

    Runs under :class:`helpers.safe_paths.FolderLock` of ``folder``'s parent, so of two
    processes the second waits and finds the folder made. ``write_records`` writes the records
    of an old build into a hidden staging folder (and raises DamagedBuild before anything is
    renamed when the old table is damaged); the staging folder is then renamed to ``folder``
    in one step, so a process killed during the import leaves no half-filled folder (only a
    staging folder, removed by the next import).
    """
    folder = Path(folder)
    if folder.is_dir():
        return
    with safe_paths.FolderLock(folder.parent, wait_s=wait_s):
        if folder.is_dir():
            return  # another process made it while this one waited
        clean_leftovers(folder.parent)
        staging = _temporary_beside(folder)
        staging.mkdir()
        try:
            write_records(staging)
            _sync_folder(staging)
            os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _sync_folder(folder.parent)


def is_read_only_error(error: OSError) -> bool:
    """Whether ``error`` says the build cannot be written (a read-only copy, another user's build)."""
    return error.errno in READ_ONLY_ERRORS
