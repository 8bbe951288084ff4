"""The results table and the facts: no writer can lose a row, and a damaged file is named, not read.

Real processes write at once and are killed with SIGKILL; damaged files are made the way a
kill or a full disk makes them (cut short, zero bytes at the end, empty).
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import metrics, results_store

REPO = Path(metrics.__file__).resolve().parents[1]

# a writer process: imports the workbook, says "ready", waits for the start signal (a file), then
# records rows (and every few rows a fact and the row all writers share), saying "done <n>" after each
WRITER = """
import sys, time
from pathlib import Path
from helpers import metrics

worker, rows, go = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
number = 0
while rows < 0 or number < rows:
    metrics.record_result("smoke", f"w{worker}_row{number:03d}", data="d", split="val",
                          top1=number / 1000, seed=worker, notes=f"worker {worker}")
    if number % 5 == 0:
        metrics.record_facts("smoke", **{f"w{worker}_fact{number:03d}": number})
        metrics.record_result("smoke", "shared", data="d", split="val", top1=worker / 10)
    print("done", number, flush=True)
    number += 1
"""


def start_writers(build: Path, workers: int, rows: int, go: Path) -> list[subprocess.Popen]:
    environment = {**os.environ, "WORKBOOK_BUILD_DIR": str(build), "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(worker), str(rows), str(go)],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        for worker in range(workers)
    ]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    return processes


def finished_rows(output: str, worker: int) -> set[str]:
    return {
        f"w{worker}_row{int(line.split()[1]):03d}" for line in output.splitlines() if line.startswith("done")
    }


def derived_table(build: Path) -> pd.DataFrame:
    return pd.read_csv(build / "smoke" / "tables" / "results.csv", keep_default_na=False, na_values=[""])


def leftovers(build: Path) -> list[str]:
    tables = build / "smoke" / "tables"
    return [path.name for path in tables.rglob("*.tmp")]


def test_writers_at_once_lose_and_duplicate_nothing(isolated_build, tmp_path):
    go = tmp_path / "go"
    processes = start_writers(isolated_build, workers=4, rows=30, go=go)
    go.touch()
    for process in processes:
        assert process.wait(timeout=120) == 0
    table = metrics.load_results("smoke")
    expected = {f"w{w}_row{n:03d}" for w in range(4) for n in range(30)} | {"shared"}
    assert sorted(table["experiment"]) == sorted(expected)  # each row once, none lost
    assert table.loc[table["experiment"] == "w2_row017", "top1"].item() == pytest.approx(0.017)
    assert table.loc[table["experiment"] == "w2_row017", "notes"].item() == "worker 2"
    # the derived csv a person opens holds the same rows
    assert sorted(derived_table(isolated_build)["experiment"]) == sorted(expected)
    facts = metrics.load_facts("smoke")
    assert facts == {f"w{w}_fact{n:03d}": n for w in range(4) for n in range(0, 30, 5)}
    assert json.loads(metrics.facts_path("smoke").read_text()) == facts
    assert leftovers(isolated_build) == []


def test_a_writer_killed_mid_write_leaves_every_finished_row_and_nothing_damaged(isolated_build, tmp_path):
    go = tmp_path / "go"
    draw = random.Random()
    processes = start_writers(isolated_build, workers=3, rows=-1, go=go)  # each records until killed
    go.touch()
    finished = set()
    for worker, process in enumerate(processes):
        time.sleep(draw.uniform(0.05, 0.4))
        process.send_signal(signal.SIGKILL)
        output, _ = process.communicate(timeout=30)  # waits: a dead child is not a zombie
        assert process.returncode == -signal.SIGKILL
        finished |= finished_rows(output, worker)
    assert len(finished) >= 3
    # a temporary file the way a killed writer leaves it: named after its (dead) process, half written
    dead = processes[0].pid
    rows_dir = metrics.result_rows_dir("smoke")
    stray = rows_dir / f".w0_row999-0123456789abcdef.json.{results_store.HOST_TAG}.{dead}.0badf00d.tmp"
    stray.write_text('{"recorded_ns": 1, "row": {"experim')
    table = metrics.load_results("smoke")  # no DamagedBuild
    assert finished <= set(table["experiment"])  # an unfinished row may be there too, whole
    assert table["experiment"].is_unique
    metrics.load_facts("smoke")  # the writers record facts too: a kill may leave a fact's temporary file
    assert not stray.exists() and leftovers(isolated_build) == []
    assert metrics.check_build_tables("smoke") == []
    assert sorted(derived_table(isolated_build)["experiment"]) == sorted(table["experiment"])


# --- damage: every probe gives DamagedBuild naming the file, and changes nothing ---------------------


def old_format_build(build: Path, rows: int = 6) -> Path:
    """A build from before the row files: only tables/results.csv (written as the old code did)."""
    table = pd.DataFrame(
        [
            {
                "experiment": f"run_{n}",
                "data": "synthetic images",
                "split": "val",
                "top1": 0.1 + n / 100,
                "mean_km": 40.0 + n,
                "seed": n % 3,
                "notes": "" if n % 2 else "a note",
            }
            for n in range(rows)
        ],
        columns=metrics.RESULT_COLUMNS,
    )
    path = build / "smoke" / "tables" / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def cut(path: Path, share: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])


def zero_tail(path: Path, share: float) -> None:
    data = path.read_bytes()
    keep = int(len(data) * share)
    path.write_bytes(data[:keep] + b"\0" * (len(data) - keep))


def drop_fields(path: Path) -> None:
    """Line 3 cut inside its top1 column (the rest of that row lost, the line end kept)."""
    lines = path.read_text().splitlines(keepends=True)
    row = lines[2]
    lines[2] = row[: row.index(",0.1") + 3] + "\n"
    path.write_text("".join(lines))


def drop_column(path: Path) -> None:
    table = pd.read_csv(path)
    table.drop(columns=["top1"]).to_csv(path, index=False)


CSV_DAMAGE = {
    "cut to 60 %": (lambda path: cut(path, 0.6), "cut short"),
    "zero-byte tail": (lambda path: zero_tail(path, 0.6), "zero bytes"),
    "empty": (lambda path: path.write_bytes(b""), "empty"),
    "row cut inside a column": (drop_fields, "cut short"),
    "missing column": (drop_column, re.escape("lacks the columns ['top1']")),
}


@pytest.mark.parametrize("damage", CSV_DAMAGE)
def test_a_damaged_old_results_csv_is_named_not_read(isolated_build, damage):
    path = old_format_build(isolated_build)
    if damage == "cut to 60 %":
        assert path.read_bytes()[: int(path.stat().st_size * 0.6)][-1:] != b"\n"  # the cut ends inside a row
    make_damage, problem = CSV_DAMAGE[damage]
    make_damage(path)
    before = path.read_bytes()
    with pytest.raises(metrics.DamagedBuild, match=problem) as raised:
        metrics.load_results("smoke")
    message = str(raised.value)
    assert str(path) in message and "make all PROFILE=smoke" in message
    assert raised.value.path == path
    # nothing lost: the file is as it was and no row folder was made from it
    assert path.read_bytes() == before and not metrics.result_rows_dir("smoke").exists()
    with pytest.raises(metrics.DamagedBuild):
        metrics.record_result("smoke", "new", data="d", split="val", top1=0.5)
    assert path.read_bytes() == before


def recorded_build() -> None:
    for number in range(5):
        metrics.record_result("smoke", f"run_{number}", data="d", split="val", top1=number / 10, mean_km=50.0)


ROW_DAMAGE = {
    "cut to 60 %": (lambda path: cut(path, 0.6), "cut short"),
    "zero-byte tail": (lambda path: zero_tail(path, 0.6), "zero bytes"),
    "empty": (lambda path: path.write_bytes(b""), "empty"),
    "missing key": (
        lambda path: path.write_text(
            json.dumps({**json.loads(path.read_text()), "row": {"experiment": "run_2", "split": "val"}})
        ),
        "lacks the keys",
    ),
}


@pytest.mark.parametrize("damage", ROW_DAMAGE)
def test_a_damaged_row_file_is_named_not_read(isolated_build, damage):
    recorded_build()
    path = metrics.result_rows_dir("smoke") / results_store.record_name("run_2", "val")
    make_damage, problem = ROW_DAMAGE[damage]
    make_damage(path)
    before = path.read_bytes()
    with pytest.raises(metrics.DamagedBuild, match=problem) as raised:
        metrics.load_results("smoke")
    assert str(path) in str(raised.value) and raised.value.path == path
    assert path.read_bytes() == before
    problems = metrics.check_build_tables("smoke")
    assert len(problems) == 1 and str(path) in problems[0]


def test_a_damaged_derived_csv_is_rebuilt_from_the_rows(isolated_build):
    recorded_build()
    path = metrics.results_path("smoke")
    whole = path.read_bytes()
    cut(path, 0.6)
    table = metrics.load_results("smoke")  # the rows are the truth: all five, and the csv is whole again
    assert list(table["experiment"]) == [f"run_{n}" for n in range(5)]
    assert path.read_bytes() == whole


@pytest.mark.parametrize(
    "damage",
    [lambda path: cut(path, 0.6), lambda path: path.write_bytes(b""), lambda path: zero_tail(path, 0.5)],
)
def test_a_damaged_old_facts_json_is_named_not_read(isolated_build, damage):
    path = isolated_build / "smoke" / "tables" / "facts.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"neighbour_error_share": 0.4, "cells_tested": 129}, indent=2, sort_keys=True))
    damage(path)
    with pytest.raises(metrics.DamagedBuild) as raised:
        metrics.load_facts("smoke")
    assert str(path) in str(raised.value) and not metrics.fact_files_dir("smoke").exists()


def test_read_json_names_a_damaged_summary(tmp_path):
    path = tmp_path / "runs" / "final_seed0" / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "final_seed0", "val": {"top1": 0.3}}))
    assert metrics.read_json(path, "The summary of run final_seed0", "Run notebook 06 again.", keys=["val"])
    with pytest.raises(metrics.DamagedBuild, match="lacks the keys \\['seconds'\\]"):
        metrics.read_json(path, "The summary", "Run notebook 06 again.", keys=["val", "seconds"])
    cut(path, 0.6)
    with pytest.raises(metrics.DamagedBuild, match="cut short") as raised:
        metrics.read_json(path, "The summary of run final_seed0", "Run notebook 06 again.")
    assert str(path) in str(raised.value) and "Run notebook 06 again." in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_read_csv_names_a_predictions_table_cut_inside_a_column(tmp_path):
    path = tmp_path / "predictions_val.csv"
    path.write_text("image_path,correct,centroid_km\nv0,1,0.0\nv1,0,12.5\n")
    hint = "Run notebook 06 again."
    table = metrics.read_csv(
        path, "The predictions of run final_seed0", hint, columns=["correct"], numeric=["correct"]
    )
    assert list(table["correct"]) == [1, 0]
    path.write_text("image_path,correct,centroid_km\nv0,1,0.0\nv1,x,12.5\n")
    with pytest.raises(metrics.DamagedBuild, match="row 2 holds 'x' in column 'correct', not a number"):
        metrics.read_csv(path, "The predictions", hint, numeric=["correct"])
    path.write_text("image_path,correct,centroid_km\nv0,1,0.0\nv1,0\n")
    with pytest.raises(metrics.DamagedBuild, match="line 3 has 2 fields where the header has 3") as raised:
        metrics.read_csv(path, "The predictions", hint)
    assert str(path) in str(raised.value) and hint in str(raised.value)


# --- the runs on disk against the results -------------------------------------------------------


def write_summary(build: Path, run: str, content) -> Path:
    path = build / "smoke" / "runs" / run / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_check_build_tables_names_runs_and_rows_that_do_not_match(isolated_build):
    metrics.record_result("smoke", "final_seed0", data="d", split="val", top1=0.30)
    metrics.record_result("smoke", "final_seed1", data="d", split="val", top1=0.32)
    metrics.record_facts("smoke", neighbour_error_share=0.4)
    write_summary(isolated_build, "final_seed0", {"val": {"top1": 0.30}})
    write_summary(isolated_build, "final_seed1", {"val": {"top1": 0.32}})
    write_summary(isolated_build, "hybrid", {"head": "hybrid"})  # notebook 11's: no validation row kept
    assert metrics.check_build_tables("smoke") == []

    unrecorded = write_summary(isolated_build, "baseline", {"val": {"top1": 0.2}})
    retrained = write_summary(isolated_build, "final_seed1", {"val": {"top1": 0.35}})
    missing = isolated_build / "smoke" / "runs" / "final_seed2" / "summary.json"
    metrics.record_result("smoke", "final_seed2", data="d", split="val", top1=0.31)
    broken = write_summary(isolated_build, "augment_seed0", '{"val": {"top1": 0.')
    problems = metrics.check_build_tables("smoke")
    assert len(problems) == 4, problems
    by_file = {
        unrecorded: "no validation row",
        retrained: "trained again",
        missing: "does not exist",
        broken: "cut short",
    }
    for path, words in by_file.items():
        assert any(str(path.parent.name) in problem and words in problem for problem in problems), (
            path,
            problems,
        )
    assert all("make all PROFILE=smoke" in problem for problem in problems)


# --- a build from before the row files ------------------------------------------------------------


def test_an_old_build_is_imported_once_and_loses_nothing(isolated_build):
    path = old_format_build(isolated_build, rows=8)
    old_table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    facts_json = path.with_name("facts.json")
    facts_json.write_text(json.dumps({"cells_tested": 129, "neighbour_error_share": 0.41}, indent=2))
    # an import killed earlier left its staging folder, half filled
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    staging = path.parent / f".results.{results_store.HOST_TAG}.{dead.pid}.0badf00d.tmp"
    staging.mkdir()
    (staging / results_store.record_name("run_0", "val")).write_text('{"recorded_ns": 0, "ro')

    loaded = []
    threads = [
        threading.Thread(target=lambda: loaded.append(metrics.load_results("smoke"))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for table in loaded:
        pd.testing.assert_frame_equal(table, old_table, check_dtype=False)
    assert not staging.exists()
    assert len(list(metrics.result_rows_dir("smoke").glob("*.json"))) == 8
    assert metrics.load_facts("smoke") == {"cells_tested": 129, "neighbour_error_share": 0.41}

    # recording after the import keeps every old row, and replaces only its own
    table = metrics.record_result("smoke", "run_3", data="synthetic images", split="val", top1=0.9)
    assert list(table["experiment"]) == [f"run_{n}" for n in (0, 1, 2, 4, 5, 6, 7, 3)]
    assert table.set_index("experiment").loc["run_5", "mean_km"] == 45.0
    assert metrics.record_facts("smoke", sky_attention_share=0.2) == {
        "cells_tested": 129,
        "neighbour_error_share": 0.41,
        "sky_attention_share": 0.2,
    }


def test_record_names_never_collide_and_stay_in_their_folder():
    names = {
        results_store.record_name(*identity)
        for identity in [
            ("a b", "c"),
            ("a", "b c"),
            ("a_b", "c"),
            ("../../x", "val"),
            ("x", "val"),
            ("a__b",),
        ]
    }
    assert len(names) == 6
    assert all("/" not in name and not name.startswith(".") and name.endswith(".json") for name in names)
