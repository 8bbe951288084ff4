"""The lab: its archive (helpers/lab.py) packed from a small fake build, unpacked into the lab's own
folder, hostile archives refused, a download from a loopback server; and the lab plan of
docs/teaching.md against its own class-time table."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile

import pytest

from helpers import config, lab, notebooks, safe_paths
from tests.loopback import serve

PROFILE = "default"
# every notebook the lab reads must have run; 06 stays unrun: the archive does not need it
RUN = ["01_locations", "02_geocells", "03_images", "04_distances", "05_baseline_vit"]
KEPT_FILES = {
    "geocells/locations.csv": b"lat,lng,cell\n55.7,12.6,0\n",
    "images/dataset.csv": b"path,cell,split\nsynthetic-day0/0/1.png,0,train\n",
    "images/synthetic-day0/0/1.png": b"\x89PNG not really",
    "tables/results.csv": b"experiment,top1\nbaseline,0.3\n",
    "runs/baseline/best.keras": b"weights" * 100,
    "runs/baseline/history.csv": b"epoch,loss\n0,4.1\n",
    "figures/fig04_distance_matrix.png": b"\x89PNG figure",
}
LEFT_OUT_FILES = {
    "report.html": b"<html>",
    "maps/02_geocells.html": b"<html>",
    "machine.json": b"{}",
    "notebooks/01_locations.log": b"log",
    "runs/baseline/last.keras": b"last",
    "runs/baseline/logs/train/events": b"tensorboard",
    "images/synthetic-leak_0.0-day0/0/1.png": b"leak",
    ".runner.lock": b"{}",
}


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """A build folder with finished-looking runs of notebooks 01-05 (the runner's marker over
    each executed copy) and a few files of each kind; no training."""
    root = tmp_path / "build"
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(root))
    folder = config.build_dir(PROFILE)
    for stem in RUN:
        executed = folder / "notebooks" / f"{stem}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        executed.write_text(json.dumps({"cells": [], "stem": stem}))
        marker = executed.with_name(f".{stem}.done.json")
        marker.write_text(json.dumps({"executed_sha256": safe_paths.file_sha256(executed)}))
    for relative, data in {**KEPT_FILES, **LEFT_OUT_FILES}.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    assert all(notebooks.has_run(stem, PROFILE) for stem in RUN)
    return folder


def _tree(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_pack_then_unpack_gives_the_lab_its_own_copy(fake_build, tmp_path, monkeypatch, capsys):
    archive = lab.pack(PROFILE)
    assert archive == fake_build.parent / "lab-default.tar.gz"
    printed = capsys.readouterr().out
    assert "MB" in printed and "left out" in printed and "SHA-256" in printed
    with tarfile.open(archive) as opened:
        names = opened.getnames()
        manifest = json.loads(opened.extractfile(lab.MANIFEST_NAME).read())
    assert set(manifest["files"]) == set(names) - {lab.MANIFEST_NAME}
    for relative in KEPT_FILES:
        entry = manifest["files"][f"{PROFILE}/{relative}"]
        assert entry["sha256"] == hashlib.sha256(KEPT_FILES[relative]).hexdigest()
    for relative in LEFT_OUT_FILES:
        assert f"{PROFILE}/{relative}" not in names
    assert f"{PROFILE}/notebooks/.05_baseline_vit.done.json" in names  # the markers travel

    lecturer = _tree(fake_build)
    into = tmp_path / "lab"
    target = lab.unpack(archive, PROFILE, into=into)
    assert target == into / PROFILE
    assert _tree(fake_build) == lecturer  # the lecturer's build is untouched
    unpacked = _tree(target)
    for relative, data in KEPT_FILES.items():
        assert unpacked[relative] == data
    assert not any(relative in unpacked for relative in LEFT_OUT_FILES)
    # this process now builds into the lab: the notebooks count as run there, and the runs a
    # student trains land in the lab's folder
    assert config.build_dir(PROFILE) == target
    assert all(notebooks.has_run(stem, PROFILE) for stem in RUN)

    # a second call (the next notebook's first cell) keeps the student's work
    (target / "runs" / "baseline" / "history.csv").write_bytes(b"the student's run")
    lab.unpack(archive, PROFILE, into=into)
    assert (target / "runs" / "baseline" / "history.csv").read_bytes() == b"the student's run"
    lab.unpack(archive, PROFILE, into=into, fresh=True)
    assert (target / "runs" / "baseline" / "history.csv").read_bytes() == KEPT_FILES[
        "runs/baseline/history.csv"
    ]
    with pytest.raises(lab.LabArchiveError, match="another lab build"):
        lab.unpack(shutil.copy(archive, tmp_path / "another.tar.gz"), PROFILE, into=into)
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))


def test_pack_refuses_a_build_whose_lab_notebooks_have_not_run(fake_build):
    (fake_build / "notebooks" / ".05_baseline_vit.done.json").unlink()
    with pytest.raises(lab.LabArchiveError, match="05_baseline_vit"):
        lab.pack(PROFILE)
    assert not (fake_build.parent / "lab-default.tar.gz").exists()


def _archive(path, members, manifest_files=None, profile=PROFILE):
    """A .tar.gz of ``members`` (TarInfo, data or None), with a manifest listing
    ``manifest_files`` (default: every regular member, with its true hash)."""
    if manifest_files is None:
        manifest_files = {
            info.name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for info, data in members
            if info.isfile()
        }
    manifest = json.dumps({"format": lab.FORMAT, "profile": profile, "files": manifest_files}).encode()
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(lab.MANIFEST_NAME)
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
        for info, data in members:
            if info.isfile():
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"data"):
    return tarfile.TarInfo(name), data


def _special(name, kind, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, None


GOOD = _file(f"{PROFILE}/tables/results.csv", b"experiment,top1\n")
HOSTILE = {
    "absolute": ([GOOD, _file("/etc/cron.d/evil")], "absolute path"),
    "dot-dot": ([GOOD, _file(f"{PROFILE}/../../evil.py")], r"'\.\.' part"),
    "symlink": ([GOOD, _special(f"{PROFILE}/tables/link", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
    "hard link": ([GOOD, _special(f"{PROFILE}/tables/hard", tarfile.LNKTYPE, "/etc/passwd")], "is a link"),
    "device": ([GOOD, _special(f"{PROFILE}/tables/dev", tarfile.CHRTYPE)], "device"),
    "fifo": ([GOOD, _special(f"{PROFILE}/tables/pipe", tarfile.FIFOTYPE)], "device, pipe"),
    "other profile": ([GOOD, _file("smoke/tables/results.csv")], "not inside default/"),
    "backslash": ([GOOD, _file(f"{PROFILE}/tables\\..\\evil")], "characters"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_member_is_refused_and_nothing_is_written(case, tmp_path):
    members, message = HOSTILE[case]
    archive = _archive(tmp_path / "hostile.tar.gz", members)
    into = tmp_path / "lab"
    with pytest.raises(lab.LabArchiveError, match=message):
        lab.unpack(archive, PROFILE, into=into)
    assert not into.exists()


def test_archives_that_do_not_match_their_manifest_are_refused(tmp_path):
    into = tmp_path / "lab"
    altered = {GOOD[0].name: {"bytes": len(GOOD[1]), "sha256": "0" * 64}}
    cases = [
        (_archive(tmp_path / "hash.tar.gz", [GOOD], altered), "does not match the SHA-256"),
        (_archive(tmp_path / "extra.tar.gz", [GOOD, _file(f"{PROFILE}/x.csv")], {}), "not listed"),
        (_archive(tmp_path / "absent.tar.gz", [], altered), "listed but absent"),
        (_archive(tmp_path / "profile.tar.gz", [], {}, profile="smoke"), "for profile 'smoke'"),
    ]
    no_manifest = tmp_path / "bare.tar.gz"
    with tarfile.open(no_manifest, "w:gz") as opened:
        opened.addfile(GOOD[0], io.BytesIO(GOOD[1]))
    not_gzip = tmp_path / "text.tar.gz"
    not_gzip.write_text("not an archive")
    cases += [(no_manifest, "no lab-manifest.json"), (not_gzip, "not a readable .tar.gz")]
    for archive, message in cases:
        with pytest.raises(lab.LabArchiveError, match=message):
            lab.unpack(archive, PROFILE, into=into)
        assert not into.exists(), archive.name
    large = _archive(tmp_path / "large.tar.gz", [_file(f"{PROFILE}/big.bin", b"x" * 5000)])
    with pytest.raises(lab.LabArchiveError, match="more than 4,000 bytes"):
        lab.unpack(large, PROFILE, into=into, max_bytes=4000)
    with pytest.raises(lab.LabArchiveError, match="not the"):
        lab.unpack(large, PROFILE, into=into, sha256="f" * 64)
    with pytest.raises(lab.LabArchiveError, match="No lab archive"):
        lab.unpack(tmp_path / "missing.tar.gz", PROFILE, into=into)
    assert not into.exists()


def test_the_lab_never_unpacks_into_the_lecturers_build_folder(tmp_path):
    archive = _archive(tmp_path / "good.tar.gz", [GOOD])
    with pytest.raises(lab.LabArchiveError, match="its own folder"):
        lab.unpack(archive, PROFILE, into=config.REPO_ROOT / "build")


def test_unpack_downloads_from_a_loopback_server(fake_build, tmp_path, monkeypatch):
    archive = lab.pack(PROFILE, output=tmp_path / "served.tar.gz")
    data = archive.read_bytes()
    into = tmp_path / "lab"
    with serve({"/lab-default.tar.gz": (200, {"Content-Type": "application/gzip"}, data)}) as server:
        url = server.url + "/lab-default.tar.gz"
        target = lab.unpack(url, PROFILE, into=into, sha256=hashlib.sha256(data).hexdigest())
        assert server.requests == ["/lab-default.tar.gz"]
        assert (target / "runs" / "baseline" / "best.keras").read_bytes() == KEPT_FILES[
            "runs/baseline/best.keras"
        ]
        lab.unpack(url, PROFILE, into=into)  # already there from this address: no second download
        assert server.requests == ["/lab-default.tar.gz"]
        with pytest.raises(lab.LabArchiveError, match="404"):
            lab.unpack(server.url + "/missing.tar.gz", PROFILE, into=tmp_path / "other")
    with pytest.raises(lab.LabArchiveError, match="https://"):
        lab.unpack("http://example.org/lab-default.tar.gz", PROFILE, into=tmp_path / "other")
    assert not (tmp_path / "other").exists()
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))


# ---- the lab plan of docs/teaching.md against its class-time table ----
TEACHING = config.REPO_ROOT / "docs" / "teaching.md"


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after ``heading``."""
    section = text.split(heading, 1)[1]
    rows = re.findall(r"^\|(.+)\|\s*$", section.split("\n## ", 1)[0], flags=re.MULTILINE)
    return [[cell.strip() for cell in row.split("|")] for row in rows[2:]]  # past the header and ---


def lab_minutes(text: str) -> tuple[dict[str, int], int, list[tuple[int, int]]]:
    """From the plan's table: minutes per notebook whose graded cells it assigns (the column
    "notebook" names one notebook, NN), the minutes of the whole plan, and each slot (start, end)."""
    per_notebook, slots = {}, []
    for minutes, notebook, *_ in _table(text, "## A 90-minute lab"):
        start, end = (int(n) for n in re.fullmatch(r"(\d+)-(\d+)", minutes).groups())
        slots.append((start, end))
        if re.fullmatch(r"\d\d", notebook):
            per_notebook[notebook] = per_notebook.get(notebook, 0) + end - start
    return per_notebook, slots[-1][1] - slots[0][0], slots


def doing_minutes(text: str) -> dict[str, int]:
    """The class-time table's doing minutes per notebook (NN)."""
    found = {}
    for notebook, _, doing, *_ in _table(text, "## Class time per notebook"):
        found[notebook[:2]] = int(re.match(r"(\d+) min", doing).group(1))
    return found


def plan_problems(text: str) -> list[str]:
    """What is wrong with the lab plan in ``text`` (docs/teaching.md's words), as sentences."""
    found = []
    per_notebook, total, slots = lab_minutes(text)
    doing = doing_minutes(text)
    if total != 90 or slots[0][0] != 0:
        found.append(f"the plan runs from minute {slots[0][0]} for {total} minutes, not 0-90")
    found += [
        f"slot {a}-{b} does not start where the one before ends"
        for (_, end), (a, b) in zip(slots, slots[1:], strict=False)
        if a != end
    ]
    for notebook, minutes in per_notebook.items():
        if minutes < doing[notebook]:
            found.append(
                f"notebook {notebook} gets {minutes} min in the lab, its doing time is {doing[notebook]} min"
            )
    graded = {row[0] for row in _table(text, '## The graded "Your turn" cells')}
    homework = set(re.findall(r"\b(\d\d)\b", text.split("**Homework", 1)[1].split("\n\n", 1)[0]))
    unassigned = sorted(graded - set(per_notebook) - homework)
    if unassigned:
        found.append(
            f"the graded cells of {', '.join(unassigned)} are assigned neither in class nor as homework"
        )
    if not re.search(r"set-up", text.split("## A 90-minute lab", 1)[1].split("\n## ", 1)[0]):
        found.append("the plan has no set-up")
    return found


def test_the_lab_plan_fits_its_class_time_table():
    assert plan_problems(TEACHING.read_text(encoding="utf-8")) == []


MADE_UP_PLAN = """
## The graded "Your turn" cells

| notebook | the cell |
|---|---|
| 02 | split_in_two |
| 04 | haversine |

## A 90-minute lab

| minutes | notebook | what the students do | cells |
|---|---|---|---|
| 0-10 | set-up | the lab cell | the first two |
| 10-25 | 04 | haversine | section 1 |
| 30-90 | discussion | questions | none |

**Homework**: exercises of the student's choice.

## Class time per notebook

| notebook | reading | doing | best done |
|---|---|---|---|
| 02 geocells | 20 min | 20 min (split rule, questionnaire) | homework |
| 04 distances | 15 min | 20 min (haversine, questionnaire) | the lab |
"""


def test_the_plan_check_finds_a_plan_that_does_not_fit():
    found = plan_problems(MADE_UP_PLAN)
    assert "notebook 04 gets 15 min in the lab, its doing time is 20 min" in found
    assert "slot 30-90 does not start where the one before ends" in found
    assert "the graded cells of 02 are assigned neither in class nor as homework" in found
    fixed = MADE_UP_PLAN.replace("10-25", "10-30").replace("choice.", "choice, and 02's split_in_two.")
    assert plan_problems(fixed) == []
    assert "the plan has no set-up" in plan_problems(fixed.replace("set-up", "start"))
