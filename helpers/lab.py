"""The lab's build: one archive of an executed build, unpacked into the lab's own folder.

A 90-minute lab cannot wait for ``make all`` (the README gives its time), so the students
start from the lecturer's build (docs/teaching.md, "A 90-minute lab")::

    python -m helpers.lab pack --profile default      # the lecturer, once: build/lab-default.tar.gz
    python -m helpers.lab unpack build/lab-default.tar.gz --profile default   # or, in a notebook:

    from helpers import lab; lab.unpack("https://example.org/lab-default.tar.gz")

:func:`pack` archives what the lab's notebooks read from ``build/<profile>/`` (:func:`lab_choice`
says what is left out and why), with a manifest of every file's size and SHA-256.
:func:`unpack` writes it into the lab's own build folder, ``build/lab/<profile>/``, and points
this process's ``WORKBOOK_BUILD_DIR`` there (``helpers.config.build_dir`` reads it at every
call), so a cell run past a stopping point retrains into the lab's copy and never overwrites
the lecturer's ``build/<profile>/``. Before it writes anything it checks every member of the
archive: regular files only (no links, devices or pipes), relative names without ``..``,
sizes within limits, and the manifest's hashes; a bad archive raises :class:`LabArchiveError`
and leaves the disk as it was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import ipaddress
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from helpers import config, notebooks, safe_paths

MANIFEST_NAME = "lab-manifest.json"
UNPACKED_RECORD = ".lab-unpacked.json"  # in build/lab/<profile>/: which archive it came from
FORMAT = 1
# The default build's archive is a few hundred MB at most; the full profile's images are
# 4.5 GB as uint8 (helpers/config.py), stored as JPEG far less. Past these it is no lab archive.
MAX_UNPACKED_BYTES = 16 * 2**30
MAX_MEMBER_BYTES = 4 * 2**30
MAX_MEMBERS = 1_000_000
MAX_NAME_CHARS = 400  # the build's longest path is under 100 characters
_CHUNK = 1 << 20
_NAME_PART = re.compile(r"[A-Za-z0-9._+-]{1,255}")  # the build writes only these characters
# the notebooks the lab plan runs (docs/teaching.md): they and the notebooks they read must
# have finished in the build before it is packed
LAB_NOTEBOOKS = ("02_geocells", "04_distances", "05_baseline_vit")


class LabArchiveError(ValueError):
    """A lab archive is missing, unreadable, unsafe or does not match its manifest; the message
    says which member and what to do. Nothing was written."""


def lab_root() -> Path:
    """The lab's own build folder, ``build/lab/`` of the workbook (never the lecturer's ``build/``)."""
    return config.REPO_ROOT / "build" / "lab"


# --- what goes into the archive ------------------------------------------------------------------

# (test on the path inside build/<profile>/, why it is left out); the first that matches wins
_LEFT_OUT = (
    (
        lambda p: p.parts[0] in ("report.html", "report.pdf"),
        "notebook 10's report: no lab notebook reads it (make all writes it again)",
    ),
    (
        lambda p: p.parts[0] == "maps",
        "standalone copies of the maps that the executed notebooks show inline; no notebook reads them",
    ),
    (lambda p: p.parts[0] == "slides", "the lecturer's decks (make slides), not read by any notebook"),
    (
        lambda p: p.parts[0] == notebooks.MACHINE_FILE,
        "this machine's reference rate: a student's machine measures its own",
    ),
    (
        lambda p: p.parts[0] == "notebooks" and (p.suffix == ".log" or p.name.endswith(".failed.ipynb")),
        "the runner's logs and failed copies",
    ),
    (
        lambda p: (
            p.parts[0] == "runs" and (p.name == "last.keras" or "logs" in p.parts or "backup" in p.parts)
        ),
        "the last epoch's model, TensorBoard logs and resume state: the notebooks load best.keras",
    ),
    (
        lambda p: p.parts[0] == "images" and len(p.parts) > 1 and p.parts[1].startswith("synthetic-leak_"),
        "the image sets at another session_leak: notebooks 06 and 09 render them again when they "
        "train on them (experiments.images_at_leak), past the lab's stopping points",
    ),
    (
        lambda p: (
            p.name.startswith(".") and not (p.parts[0] == "notebooks" and p.name.endswith(".done.json"))
        ),
        "locks and temporary files",
    ),
)
# why each kept folder is there, for the printout and the manifest
KEPT = {
    "notebooks": "the executed copies, and the runner's markers that tell build_inputs they have run",
    "geocells": "notebook 02's cells and locations, read by notebooks 03-12",
    "images": "notebook 03's images and splits, read by notebooks 05-12",
    "tables": "notebook 04's distance matrix, every run's scores (results.csv) and the facts",
    "runs": "the trained runs (best.keras, history, predictions) that notebooks 07-12 read",
    "figures": "the figures, which notebook 10's report and make slides read",
}


def lab_choice(relative: PurePosixPath) -> str | None:
    """Why the build's file ``relative`` (its path inside ``build/<profile>/``) stays out of the
    lab archive, or None when the archive keeps it."""
    for test, why in _LEFT_OUT:
        if test(relative):
            return why
    return None


def _build_files(folder: Path) -> list[PurePosixPath]:
    """Every regular file under ``folder`` as a relative path, sorted; links are refused."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise LabArchiveError(f"{path} is a link; a lab archive holds only the build's own files.")
        if path.is_file():
            found.append(PurePosixPath(path.relative_to(folder).as_posix()))
    return found


def pack(profile: str | dict = "default", output: Path | None = None) -> Path:
    """Write the lab archive of ``build/<profile>/`` (``build/lab-<profile>.tar.gz`` by default).

    The build must hold finished runs of :data:`LAB_NOTEBOOKS` and the notebooks they read
    (``notebooks.has_run``); otherwise a LabArchiveError says which to run. Members are
    ``<profile>/<path>`` plus :data:`MANIFEST_NAME` (every file's bytes and SHA-256, and what
    was left out and why). Prints the archive's size and SHA-256. Returns its path.
    """
    name = config.profile_name(profile)
    source = config.build_dir(name)
    if not source.is_dir():
        raise LabArchiveError(f"No build in {source}: run `make all PROFILE={name}` first.")
    needed = sorted(
        {
            path.stem
            for stem in LAB_NOTEBOOKS
            for path in [*notebooks.dependencies(f"{stem}.ipynb"), Path(stem)]
        }
    )
    missing = [stem for stem in needed if not notebooks.has_run(stem, name)]
    if missing:
        raise LabArchiveError(
            f"The build in {source} lacks finished runs of {', '.join(missing)}, which the lab reads: "
            f"run `make all PROFILE={name}` first."
        )
    files, left_out = {}, {}
    for relative in _build_files(source):
        why = lab_choice(relative)
        if why is not None:
            entry = left_out.setdefault(why, {"files": 0, "bytes": 0})
            entry["files"] += 1
            entry["bytes"] += (source / relative).stat().st_size
            continue
        with open(source / relative, "rb") as handle:
            digest, size = safe_paths.stream_sha256(handle)
        files[f"{name}/{relative}"] = {"bytes": size, "sha256": digest}
    manifest = {
        "format": FORMAT,
        "profile": name,
        "made": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "kept": KEPT,
        "left_out": left_out,
    }
    output = Path(output) if output is not None else source.parent / f"lab-{name}.tar.gz"
    with config.atomic_target(output) as temporary, tarfile.open(temporary, "w:gz") as archive:
        data = json.dumps(manifest, indent=1).encode()
        archive.addfile(_file_info(MANIFEST_NAME, len(data)), io.BytesIO(data))
        for member, entry in files.items():
            with open(source.parent / member, "rb") as handle:
                archive.addfile(_file_info(member, entry["bytes"]), handle)
    size = output.stat().st_size
    print(
        f"{output}: {size / 1e6:,.1f} MB, {len(files):,} files "
        f"({sum(e['bytes'] for e in files.values()) / 1e6:,.1f} MB unpacked); "
        f"SHA-256 {safe_paths.file_sha256(output)}"
    )
    for why, entry in left_out.items():
        print(f"  left out {entry['files']:,} files, {entry['bytes'] / 1e6:,.1f} MB: {why}")
    return output


def _file_info(name: str, size: int) -> tarfile.TarInfo:
    """A plain, owner-free member header: the same archive from the same files."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


# --- unpacking -----------------------------------------------------------------------------------


def member_problem(name: str, profile: str) -> str | None:
    """Why ``name`` cannot be a member of a lab archive for ``profile``, or None when it can.

    Allowed: :data:`MANIFEST_NAME`, or ``<profile>/`` followed by relative parts of the
    characters the build writes (letters, digits, ``. _ + -``), none of them ``.`` or ``..``.
    """
    if name == MANIFEST_NAME:
        return None
    if len(name) > MAX_NAME_CHARS:
        return f"a name of {len(name)} characters (at most {MAX_NAME_CHARS})"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "an empty, '.' or '..' part: it would point outside its folder"
    if not all(_NAME_PART.fullmatch(part) for part in parts):
        return "characters other than letters, digits, '.', '_', '+', '-'"
    if parts[0] != profile or len(parts) < 2:
        return f"not inside {profile}/, the profile the archive is for"
    return None


def _check_members(archive: tarfile.TarFile, profile: str, max_bytes: int) -> tuple[dict, list]:
    """The manifest and the file members of ``archive``, once every member passed the checks
    (names, types, sizes, the manifest); raises LabArchiveError at the first that does not."""
    members, seen, total = [], set(), 0
    for number, member in enumerate(archive, start=1):
        if number > MAX_MEMBERS:
            raise LabArchiveError(f"The archive has more than {MAX_MEMBERS:,} members: it is no lab archive.")
        problem = member_problem(member.name, profile)
        if problem:
            raise LabArchiveError(f"Refused: the archive's member {member.name!r} has {problem}.")
        if member.isdir():
            continue
        if not member.isfile():  # links, devices, pipes: a lab build has none
            kind = "a link" if member.issym() or member.islnk() else "a device, pipe or other special file"
            raise LabArchiveError(f"Refused: the archive's member {member.name!r} is {kind}, not a file.")
        if member.name in seen:
            raise LabArchiveError(f"Refused: the archive holds {member.name!r} twice.")
        if member.size > MAX_MEMBER_BYTES:
            raise LabArchiveError(
                f"Refused: {member.name!r} is {member.size:,} bytes (at most {MAX_MEMBER_BYTES:,})."
            )
        total += member.size
        if total > max_bytes:
            raise LabArchiveError(
                f"Refused: the archive unpacks to more than {max_bytes:,} bytes (the limit of max_bytes)."
            )
        seen.add(member.name)
        members.append(member)
    if MANIFEST_NAME not in seen:
        raise LabArchiveError(
            f"The archive has no {MANIFEST_NAME}: make it with `python -m helpers.lab pack`."
        )
    manifest_member = next(m for m in members if m.name == MANIFEST_NAME)
    try:
        manifest = json.loads(archive.extractfile(manifest_member).read())
        listed = manifest["files"]
        assert isinstance(listed, dict) and manifest.get("format") == FORMAT
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise LabArchiveError(f"The archive's {MANIFEST_NAME} is not a lab manifest ({error}).") from error
    if manifest.get("profile") != profile:
        raise LabArchiveError(
            f"The archive is for profile {manifest.get('profile')!r}, not {profile!r}: "
            "pass profile= to match."
        )
    files = [m for m in members if m.name != MANIFEST_NAME]
    extra = sorted({m.name for m in files} - set(listed))
    absent = sorted(set(listed) - {m.name for m in files})
    if extra or absent:
        raise LabArchiveError(
            "The archive does not match its manifest: "
            + "; ".join(
                filter(
                    None,
                    [
                        extra and f"not listed: {', '.join(extra[:3])}",
                        absent and f"listed but absent: {', '.join(absent[:3])}",
                    ],
                )
            )
        )
    for member in files:
        if listed[member.name].get("bytes") != member.size:
            raise LabArchiveError(
                f"{member.name!r} has {member.size:,} bytes; its manifest says "
                f"{listed[member.name].get('bytes')}."
            )
    return manifest, files


def _check_hashes(archive: tarfile.TarFile, files: list, manifest: dict) -> None:
    """Read every file member once and compare its SHA-256 with the manifest's (writes nothing)."""
    for member in files:
        digest, _ = safe_paths.stream_sha256(archive.extractfile(member))
        if digest != manifest["files"][member.name].get("sha256"):
            raise LabArchiveError(
                f"{member.name!r} does not match the SHA-256 in the archive's manifest: the archive "
                "is damaged or was altered. Download it again, or ask for a new one."
            )


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _download(url: str, folder: Path, max_bytes: int) -> Path:
    """Fetch ``url`` into ``folder`` (https, or http on this machine only), at most ``max_bytes``."""
    import requests

    parts = urlparse(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise LabArchiveError(f"{url!r}: give an https:// address (plain http only on this machine).")
    target = folder / "lab-archive.tar.gz"
    try:
        with requests.get(url, stream=True, timeout=60) as answer:
            answer.raise_for_status()
            size = 0
            with open(target, "wb") as handle:
                for chunk in answer.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise LabArchiveError(f"The download from {url} is larger than {max_bytes:,} bytes.")
                    handle.write(chunk)
    except requests.RequestException as error:
        raise LabArchiveError(
            f"Could not download the lab archive from {url}: {type(error).__name__}: {error}. "
            "Check the address, or download it by hand and pass its path."
        ) from error
    return target


def unpack(
    source,
    profile: str = "default",
    *,
    into: Path | None = None,
    sha256: str | None = None,
    fresh: bool = False,
    max_bytes: int = MAX_UNPACKED_BYTES,
) -> Path:
    """Unpack the lab archive ``source`` (a path, or an https URL) into ``into/<profile>/``
    (default :func:`lab_root`, ``build/lab/``) and point ``WORKBOOK_BUILD_DIR`` at ``into``.

    The one call of the lab's first cell. Every member is checked before anything is written
    (:func:`member_problem`, regular files only, ``max_bytes`` in all, every SHA-256 of the
    manifest, and the archive's own SHA-256 when ``sha256`` is given); a bad archive raises
    LabArchiveError and writes nothing. Where ``into/<profile>/`` was already unpacked from the
    same ``source``, it is kept as it is (the student's work in it too) unless ``fresh``; a
    folder from another archive is replaced only with ``fresh=True``. Returns ``into/<profile>/``.
    """
    profile = config.profile_name(profile)
    config.get_profile(profile)  # a typo fails here, with the list of profiles
    into = (Path(into) if into is not None else lab_root()).expanduser().resolve()
    if into.resolve() == (config.REPO_ROOT / "build").resolve():
        raise LabArchiveError(
            "The lab unpacks into its own folder, never build/ itself: give into=build/lab."
        )
    target = into / profile
    record_path = target / UNPACKED_RECORD
    previous = json.loads(record_path.read_text()) if record_path.is_file() else None
    if target.exists() and not fresh:
        if previous and previous.get("source") == str(source):
            os.environ["WORKBOOK_BUILD_DIR"] = str(into)
            print(
                f"The lab's build is already in {target} (from {source}); this kernel now uses it. "
                "fresh=True starts again from the archive."
            )
            return target
        raise LabArchiveError(
            f"{target} holds another lab build ({(previous or {}).get('source', 'not from an archive')}). "
            "Pass fresh=True to replace it with this archive (work done in it is lost)."
        )
    with tempfile.TemporaryDirectory(prefix="lab-archive-") as downloads:
        text = str(source)
        if re.match(r"[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
            archive_path = _download(text, Path(downloads), max_bytes)
        else:
            archive_path = Path(source).expanduser()
            if not archive_path.is_file():
                raise LabArchiveError(
                    f"No lab archive at {archive_path}: give the path or https URL of "
                    "the lecturer's lab-<profile>.tar.gz."
                )
        archive_sha256 = safe_paths.file_sha256(archive_path)
        if sha256 and archive_sha256 != sha256.lower():
            raise LabArchiveError(
                f"{source} has SHA-256 {archive_sha256}, not the {sha256} given: "
                "it is another or a damaged archive."
            )
        try:  # every check first, reading only
            with tarfile.open(archive_path, "r:gz") as archive:
                manifest, files = _check_members(archive, profile, max_bytes)
                _check_hashes(archive, files, manifest)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise LabArchiveError(f"{source} is not a readable .tar.gz lab archive ({error}).") from error
        into.mkdir(parents=True, exist_ok=True)
        # then the files, into a folder beside the target that becomes it in one rename
        with tempfile.TemporaryDirectory(dir=into, prefix=".unpacking-") as scratch:
            scratch = Path(scratch)
            with tarfile.open(archive_path, "r:gz") as archive:
                for member in files:
                    path = scratch.joinpath(*member.name.split("/"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with archive.extractfile(member) as reader, open(path, "xb") as writer:
                        shutil.copyfileobj(reader, writer, _CHUNK)
            (scratch / profile).mkdir(exist_ok=True)
            (scratch / profile / UNPACKED_RECORD).write_text(
                json.dumps(
                    {
                        "source": text,
                        "archive_sha256": archive_sha256,
                        "made": manifest.get("made"),
                        "files": len(files),
                    },
                    indent=1,
                )
            )
            if target.exists():  # fresh=True: the old lab build goes only once the new one is complete
                shutil.rmtree(target)
            os.replace(scratch / profile, target)
    os.environ["WORKBOOK_BUILD_DIR"] = str(into)
    print(
        f"Unpacked {len(files):,} files of the {profile!r} build (made {manifest.get('made')}) "
        f"into {target}; "
        f"this kernel's build folder is now {into} (WORKBOOK_BUILD_DIR), so its runs stay in the lab."
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="archive build/<profile>/ for the lab")
    packing.add_argument("--profile", default="default")
    packing.add_argument("--output", type=Path, default=None)
    unpacking = commands.add_parser("unpack", help="unpack a lab archive into build/lab/<profile>/")
    unpacking.add_argument("source")
    unpacking.add_argument("--profile", default="default")
    unpacking.add_argument("--into", type=Path, default=None)
    unpacking.add_argument("--sha256", default=None)
    unpacking.add_argument("--fresh", action="store_true")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "pack":
            pack(arguments.profile, arguments.output)
        else:
            unpack(
                arguments.source,
                arguments.profile,
                into=arguments.into,
                sha256=arguments.sha256,
                fresh=arguments.fresh,
            )
    except (LabArchiveError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
