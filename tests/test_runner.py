"""The runner (helpers/notebooks.py): a notebook counts as run only when its run finished, one
runner per build folder, and a time limit per cell that names the cell.

Tiny notebooks written into tmp_path (no TensorFlow) run through the real runner, in real
``python3`` kernels, into a temporary build folder. A runner is killed with SIGKILL at three
points: just before its kernel starts and just before the executed copy is renamed into place
(the runner's process kills itself there: the test wraps ``papermill.execute_notebook`` or
``os.replace`` in that process with a kill, and nothing else changes), and in the middle of a
cell (the test kills it once the cell has started).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from helpers import config, notebooks

PROFILE = "smoke"

# A cell that saves a figure, as the workbook's notebooks do, and then, when the environment
# names a file, writes the kernel's pid there and sleeps until the file RELEASE (if named) exists.
HOLDING_CELL = """\
import os, time
from helpers import config
(config.output_dir(PROFILE, "figures") / "fig{number}a_scene.png").write_bytes(b"a figure")
if os.environ.get("TEST_STARTED"):
    with open(os.environ["TEST_STARTED"] + ".part", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(os.environ["TEST_STARTED"] + ".part", os.environ["TEST_STARTED"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not os.path.exists(os.environ.get("TEST_RELEASE", "/nonexistent")):
        time.sleep(0.05)
"""

# Code run in the runner's own process before main(): each kills the runner at one point.
KILL_BEFORE_THE_KERNEL = """\
import os, signal, papermill
def execute_notebook(*args, **kwargs):  # the runner would start the kernel here
    os.kill(os.getpid(), signal.SIGKILL)
papermill.execute_notebook = execute_notebook
"""
KILL_BEFORE_THE_COPY = """\
import os, signal
rename = os.replace
def replace(source, target, *args, **kwargs):  # the rename that would make the run count
    if os.path.basename(target) == os.environ["TEST_KILL_AT"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(source, target, *args, **kwargs)
os.replace = replace
"""


def write_notebook(folder: Path, stem: str, *cells: str) -> Path:
    """A notebook ``folder/stem.ipynb``: a parameters cell setting PROFILE, then ``cells``."""
    folder.mkdir(parents=True, exist_ok=True)
    parameters = nbformat.v4.new_code_cell('PROFILE = "default"', metadata={"tags": ["parameters"]})
    notebook = nbformat.v4.new_notebook(cells=[parameters, *(nbformat.v4.new_code_cell(c) for c in cells)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{stem}.ipynb"
    nbformat.write(notebook, path)
    return path


def runner(*arguments, profile: str = PROFILE, before: str = "") -> list[str]:
    """The command line of a runner (``python -m helpers.notebooks run``), with ``before`` run first."""
    code = f"import sys\n{before}\nfrom helpers.notebooks import main\nraise SystemExit(main(sys.argv[1:]))"
    options = ["--profile", profile, "--no-estimate"]
    return [sys.executable, "-c", code, "run", *map(str, arguments), *options]


def environment(**extra) -> dict:
    """This test's environment (its build folder) for a runner, the workbook's helpers first."""
    return {**os.environ, "PYTHONPATH": str(config.REPO_ROOT), **extra}


def run(command, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=environment(**extra), timeout=180)


def start(command, **extra) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(**extra)
    )


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> str:
    """The content of ``path`` once it exists; fails with the process's output if it ends first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the runner ended ({process.returncode}) before {path.name}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.05)
    return path.read_text()


def stop_kernel(pid_text: str) -> None:
    """End the kernel a killed runner left (ipykernel would notice its parent is gone, later)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid_text), signal.SIGKILL)


@pytest.fixture
def build(tmp_path, monkeypatch):
    """A temporary build folder (its ``smoke`` profile folder is returned), and no runner's
    lock or cell limit inherited from whoever runs the tests."""
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.delenv(notebooks.LOCK_VARIABLE, raising=False)
    monkeypatch.delenv(notebooks.CELL_TIMEOUT_VARIABLE, raising=False)
    folder = tmp_path / "build" / PROFILE
    folder.mkdir(parents=True)
    # build_inputs prints this machine's rate: a recent measurement is read, not made again
    (folder / notebooks.MACHINE_FILE).write_text(json.dumps({"rate": 1000.0, "measured_at": time.time()}))
    return folder


def test_a_runner_killed_at_any_point_leaves_nothing_that_counts_and_the_next_build_redoes_just_that(
    build, tmp_path, capsys
):
    folder = tmp_path / "notebooks"
    sources = {
        stem: write_notebook(folder, stem, HOLDING_CELL.format(number=stem[:2]), f"print('{stem} ran')")
        for stem in ("01_a", "02_b", "03_c", "04_d", "05_e")
    }
    executed = build / "notebooks"

    notebooks.run_notebook(sources["01_a"], PROFILE)
    notebooks.run_notebook(sources["02_b"], PROFILE)
    assert notebooks.has_run("01_a", PROFILE) and notebooks.has_run("02_b", PROFILE)
    first_record = notebooks.run_record("01_a", PROFILE)
    assert first_record["source_sha256"] and first_record["executed_sha256"]

    # 02 again, killed before its kernel starts: the copy of its earlier run no longer counts
    killed = run(runner(sources["02_b"], before=KILL_BEFORE_THE_KERNEL))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (executed / "02_b.ipynb").exists() and not notebooks.has_run("02_b", PROFILE)

    # 03 killed in the middle of a cell, after it saved its first figure
    started = tmp_path / "03_started"
    process = start(runner(sources["03_c"]), TEST_STARTED=str(started))
    kernel = wait_for(started, process)
    process.kill()
    process.wait(timeout=60)
    stop_kernel(kernel)
    assert list((build / "figures").glob("fig03*.png")), "the figure is there, as after a real kill"
    assert not notebooks.has_run("03_c", PROFILE)

    # 04 killed after its run finished and its marker was written, just before the copy's rename
    killed = run(runner(sources["04_d"], before=KILL_BEFORE_THE_COPY), TEST_KILL_AT="04_d.ipynb")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (executed / ".04_d.done.json").exists() and not (executed / "04_d.ipynb").exists()
    assert not notebooks.has_run("04_d", PROFILE)

    # opening 05: exactly the three unfinished notebooks run again, 01 is left as it was
    ran = notebooks.build_inputs("05_e", PROFILE, folder=folder)
    assert [path.name for path in ran] == ["02_b.ipynb", "03_c.ipynb", "04_d.ipynb"]
    assert all(notebooks.has_run(stem, PROFILE) for stem in ("01_a", "02_b", "03_c", "04_d"))
    assert notebooks.run_record("01_a", PROFILE) == first_record
    assert not notebooks.has_run("05_e", PROFILE)
    assert not list(executed.glob(".*partial*")), "the killed runs' partial copies are cleared"
    capsys.readouterr()
    assert notebooks.build_inputs("05_e", PROFILE, folder=folder) == []  # now nothing is missing
    assert capsys.readouterr().out == "", "and it says nothing"
    with pytest.raises(ValueError, match="No notebook '05_x'.*05_e"):
        notebooks.build_inputs("05_x", PROFILE, folder=folder)

    # a copy the runner did not finish does not count: one without its marker, one changed since
    (executed / "05_e.ipynb").write_text("{}")
    (executed / "01_a.ipynb").write_text((executed / "01_a.ipynb").read_text() + " ")
    assert not notebooks.has_run("05_e", PROFILE) and not notebooks.has_run("01_a", PROFILE)


def test_a_failing_run_removes_the_copy_of_the_last_good_one_and_leaves_its_own(build, tmp_path, monkeypatch):
    source = write_notebook(
        tmp_path, "01_a", "import os\nif os.environ.get('TEST_FAIL'):\n    raise ValueError('asked to fail')"
    )
    output, _ = notebooks.run_notebook(source, PROFILE)
    assert notebooks.has_run("01_a", PROFILE)

    monkeypatch.setenv("TEST_FAIL", "1")
    with pytest.raises(notebooks.NotebookFailed) as caught:
        notebooks.run_notebook(source, PROFILE)
    assert not output.exists() and not notebooks.has_run("01_a", PROFILE)
    message = str(caught.value)
    assert "01_a.ipynb failed in cell 3 (`import os`)" in message and "ValueError: asked to fail" in message
    failed = nbformat.read(output.with_name("01_a.failed.ipynb"), as_version=4)
    assert any(out.get("ename") == "ValueError" for cell in failed.cells for out in cell.get("outputs", []))


def test_a_kernel_that_dies_leaves_a_failed_copy_and_a_message_naming_the_cell(build, tmp_path):
    source = write_notebook(
        tmp_path, "01_a", "x = 1", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    with pytest.raises(notebooks.NotebookFailed) as caught:
        notebooks.run_notebook(source, PROFILE)
    assert "01_a.ipynb: the kernel died in cell 4 (`import os, signal`)" in str(caught.value)
    failed = nbformat.read(build / "notebooks" / "01_a.failed.ipynb", as_version=4)
    last = [cell for cell in failed.cells if cell.cell_type == "code"][-1]
    assert [out.get("ename") for out in last.outputs] == ["DeadKernel"]
    assert not notebooks.has_run("01_a", PROFILE)
    assert (
        not list((build / "notebooks").glob(".*partial*"))
        and not (build / "notebooks" / "01_a.ipynb").exists()
    )


def test_a_cell_that_never_ends_stops_at_the_limit_with_its_number_and_first_line(build, tmp_path):
    source = write_notebook(tmp_path, "01_a", "x = 1", "while True:\n    pass", "print('never')")
    begun = time.monotonic()
    with pytest.raises(notebooks.NotebookFailed) as caught:
        notebooks.run_notebook(source, PROFILE, cell_timeout_s=2)
    message = str(caught.value)
    assert "01_a.ipynb stopped in cell 4 (`while True:`)" in message
    assert "the limit of 2 s" in message and "--cell-timeout" in message
    assert time.monotonic() - begun < 90
    failed = nbformat.read(build / "notebooks" / "01_a.failed.ipynb", as_version=4)
    looping = [cell for cell in failed.cells if cell.source.startswith("while")][0]
    assert [out.get("ename") for out in looping.outputs][-1] == "CellTimeout"
    assert not notebooks.has_run("01_a", PROFILE)


def test_the_cell_limit_comes_from_the_option_then_the_environment_then_the_profile(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.delenv(notebooks.CELL_TIMEOUT_VARIABLE, raising=False)
    assert notebooks.cell_timeout("full") == notebooks.CELL_TIMEOUT_S["full"] >= 48 * 3600
    assert notebooks.cell_timeout("smoke") == notebooks.CELL_TIMEOUT_S["smoke"]
    monkeypatch.setenv(notebooks.CELL_TIMEOUT_VARIABLE, "90.5")
    assert notebooks.cell_timeout("full") == 91
    assert notebooks.cell_timeout("full", given="600") == 600
    for wrong in ("soon", "0", "-5", "nan", "inf", str(10**9)):
        monkeypatch.setenv(notebooks.CELL_TIMEOUT_VARIABLE, wrong)
        with pytest.raises(ValueError, match=f"{notebooks.CELL_TIMEOUT_VARIABLE} is '{wrong}'.*seconds"):
            notebooks.cell_timeout("smoke")
    with pytest.raises(SystemExit) as stopped:  # before any notebook runs
        notebooks.main(["run", str(tmp_path / "99_none.ipynb"), "--profile", "smoke", "--cell-timeout", "0"])
    assert (
        stopped.value.code == 2 and "The cell time limit (--cell-timeout) is '0'" in capsys.readouterr().err
    )


def test_a_second_runner_names_the_holder_and_waits_only_when_asked(build, tmp_path):
    folder = tmp_path / "notebooks"
    holding = write_notebook(folder, "01_a", HOLDING_CELL.format(number="01"))
    other = write_notebook(folder, "02_b", "print('b')")
    started, release = tmp_path / "started", tmp_path / "release"
    first = start(runner(holding), TEST_STARTED=str(started), TEST_RELEASE=str(release))
    try:
        wait_for(started, first)

        refused = run(runner(other))
        assert refused.returncode == 1
        assert f"process {first.pid} on host {socket.gethostname()}, started 20" in refused.stderr
        assert "--wait" in refused.stderr
        assert not list((build / "notebooks").glob("02_b*")), "the refused runner wrote nothing"

        notebooks.run_notebook(other, "default")  # another profile, another folder: no waiting
        assert notebooks.has_run("02_b", "default")

        waiting = start(runner(other, "--wait", "120", "--cell-timeout", "600"))
        time.sleep(1.5)
        assert waiting.poll() is None, waiting.communicate()
        release.touch()
        assert first.wait(timeout=120) == 0, first.communicate()
        assert waiting.wait(timeout=120) == 0, waiting.communicate()
        assert notebooks.has_run("01_a", PROFILE) and notebooks.has_run("02_b", PROFILE)
    finally:
        release.touch()
        first.kill()
        if "waiting" in locals():
            waiting.kill()


def test_runners_started_by_a_notebook_run_under_its_lock_and_no_one_else_does(build, tmp_path):
    folder = tmp_path / "notebooks"
    write_notebook(folder, "01_a", "import os\nprint('claim:', os.environ.get('WORKBOOK_RUNNER_LOCK'))")
    parent = write_notebook(
        folder,
        "02_b",
        "from helpers import notebooks\nnotebooks.build_inputs('02_b', PROFILE, folder='.')",
        HOLDING_CELL.format(number="02"),
    )
    started, release = tmp_path / "started", tmp_path / "release"
    holder = start(runner(parent), TEST_STARTED=str(started), TEST_RELEASE=str(release))
    try:
        wait_for(started, holder)  # build_inputs returned: 01 ran in a runner of its own
        assert notebooks.has_run("01_a", PROFILE)
        printed = json.dumps(
            nbformat.read(build / "notebooks" / "01_a.ipynb", as_version=4).cells[-1].outputs
        )
        claim = json.dumps({"folder": str(build.resolve()), "pid": holder.pid})
        assert json.dumps(f"claim: {claim}\n") in printed, printed

        # the same claim in a process that is not the holder's descendant lets nothing in
        stranger = run(runner(folder / "01_a.ipynb"), WORKBOOK_RUNNER_LOCK=claim)
        assert stranger.returncode == 1 and f"process {holder.pid} on host" in stranger.stderr
        assert notebooks.has_run("01_a", PROFILE), "the refused runner removed nothing"

        release.touch()
        assert holder.wait(timeout=120) == 0, holder.communicate()
        assert notebooks.has_run("02_b", PROFILE)
    finally:
        release.touch()
        holder.kill()
