"""Run the workbook's notebooks headlessly with papermill, and keep the sources clean.

Command line (the Makefile uses it)::

    python -m helpers.notebooks run notebooks/01_locations.ipynb --profile smoke
    python -m helpers.notebooks check      # sources have no outputs and the lecture shape
    python -m helpers.notebooks strip      # remove outputs from the sources in place
    python -m helpers.notebooks rate       # this machine's reference rate (images/s)
    python -m helpers.notebooks run notebooks/05_baseline_vit.ipynb --cell-timeout 600 --wait 3600

An executed copy goes to ``build/<profile>/notebooks/``; the source in ``notebooks/`` is
never written by a run. A notebook counts as run (:func:`has_run`) only when a run finished:
the runner removes the old copy before it starts, and on success writes a marker
``.<name>.done.json`` (the hashes of the source, the helpers and the copy) and then renames
the executed copy into place, the one step that makes it count. A failed run, one whose
kernel died, and one that ran past the cell limit leave ``<name>.failed.ipynb`` instead, with
every output up to the error, and a message naming the cell. A runner killed before that
rename leaves no copy, so ``make all`` and :func:`build_inputs` run that notebook again.

One runner at a time writes into a build folder: the runner holds ``build/<profile>/``'s lock
(:class:`helpers.safe_paths.FolderLock`) while it runs, and a second runner on the same profile
stops at once with the holder's pid, host and start time (``--wait SECONDS``: wait for it
that long first). The runners a notebook starts to build its inputs run under their parent's
lock (the environment variable ``WORKBOOK_RUNNER_LOCK`` names it, and only a descendant of its
holder may use it). Runners on different profiles never wait for each other.

Every cell has a time limit (:func:`cell_timeout`): ``--cell-timeout SECONDS``, else the
environment variable ``WORKBOOK_CELL_TIMEOUT_S``, else the profile's :data:`CELL_TIMEOUT_S`
(from 30 min in ``smoke`` to 72 h in ``full``, where one cell of notebook 06 trains ten
ViT-B/16 runs). A cell past its limit stops the run with its number, its first line and the
limit; a cell that loops forever no longer hangs ``make all``.

A notebook runs alone: its first helpers cell calls :func:`build_inputs`, which runs the
earlier notebooks it reads when they have not run in this profile (a fresh Colab machine,
a new build folder), with a progress bar and the expected time, and otherwise does nothing.

Times that hold on any machine: :data:`REFERENCE_SECONDS` are the notebooks' times in a
clean build, measured on a machine whose reference rate (``speed.reference_rate``, images/s
of a fixed small training workload) was :data:`REFERENCE_RATE`. Before a build the runner
measures this machine's rate (a few seconds; kept for an hour in ``build/<profile>/machine.json``)
and scales the times by the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from helpers import colab, config, safe_paths

try:  # Unix only: the runner reports the kernels' peak memory where the platform tells it
    import resource
except ImportError:  # Windows
    resource = None

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"
_APPLY = "run `python -m helpers.colab apply`"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# Seconds per notebook in a clean build, by profile, and the reference rate (images/s of
# speed.REFERENCE_WORKLOAD) of the machine they were measured on, by the runner, just before that
# build: 2 cores, no GPU, nothing else running. default: `make all` (README). smoke has no times:
# it is CI's profile, and its bar counts notebooks.
REFERENCE_RATE = 986.0
REFERENCE_SECONDS = {
    "default": {
        "01_locations": 19, "02_geocells": 21, "03_images": 36, "04_distances": 9, "05_baseline_vit": 221,
        "06_augmentation_and_schedule": 616, "07_distance_losses": 264, "08_evaluation": 24,
        "09_attention": 111, "10_report": 13, "11_beyond_the_report": 53, "12_future_work": 96,
    },
}  # fmt: skip
MACHINE_FILE = "machine.json"
MACHINE_MAX_AGE_S = 3600


# Seconds one cell may run, by profile, unless --cell-timeout or WORKBOOK_CELL_TIMEOUT_S says
# otherwise. The longest cell of each profile is notebook 06's, which trains every configuration
# and seed (ten runs): default 405 s for the whole notebook on 2 cores, so 2 h holds on a machine
# ten times slower; full: ViT-B/16, about 30,000 training images (70 % of 42,570), 20 epochs,
# about 1.5 h a run at the README's T4 estimate of 110 images/s, so 15 h for the cell, and 72 h
# leaves room for a slower GPU. A cell that calls build_inputs has no limit (see _limit_of).
CELL_TIMEOUT_S = {
    "smoke": 30 * 60,
    "default": 2 * 3600,
    "rehearsal": 2 * 3600,
    "mapillary": 12 * 3600,
    "full": 72 * 3600,
}
MAX_CELL_TIMEOUT_S = 30 * 24 * 3600
CELL_TIMEOUT_VARIABLE = "WORKBOOK_CELL_TIMEOUT_S"
# Names the build folder whose lock a runner holds, and the holder's pid, for the runners its
# notebook starts (build_inputs): they run under that lock instead of waiting for it forever.
LOCK_VARIABLE = "WORKBOOK_RUNNER_LOCK"


class NotebookFailed(RuntimeError):
    """A notebook raised an error, its kernel died or a cell ran past its limit; the message
    names the cell and the error."""


class RunnerBusy(RuntimeError):
    """Another runner holds the build folder; the message names it (pid, host, start time)."""


def numbered_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The workbook's notebooks in teaching order: ``NN_name.ipynb`` sorted by number."""
    return sorted(directory.glob("[0-9][0-9]_*.ipynb"))


def _by_stem(stem: str, folder: Path | None = None) -> Path:
    folder = Path(folder) if folder is not None else NOTEBOOK_DIR
    found = [path for path in numbered_notebooks(folder) if path.stem == stem]
    if not found:
        known = ", ".join(path.stem for path in numbered_notebooks(folder))
        raise ValueError(f"No notebook {stem!r} in {folder}; the notebooks are: {known}.")
    return found[0]


def _helpers_sha256() -> str:
    """One SHA-256 over every file of ``helpers/`` (its path and content; subpackages and
    templates included, compiled ``__pycache__`` not), as recorded in the markers."""
    root = config.REPO_ROOT / "helpers"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _done_marker(executed: Path) -> Path:
    """The marker beside an executed copy: ``.<name>.done.json``."""
    return executed.with_name(f".{executed.stem}.done.json")


def run_record(notebook: str | Path, profile: str | dict) -> dict | None:
    """What the runner recorded when ``notebook`` (a path or its stem) last finished in ``profile``.

    The marker ``build/<profile>/notebooks/.<name>.done.json`` (source, helpers and executed
    copy's SHA-256, when it finished, how long it took), or None unless both it and the executed
    copy are there and the copy is the one the marker was written for.
    """
    folder = config.build_dir(profile) / "notebooks"
    executed = folder / f"{Path(notebook).stem}.ipynb"
    try:
        record = json.loads(_done_marker(executed).read_text(encoding="utf-8"))
        copy_hash = safe_paths.file_sha256(executed)
        matches = isinstance(record, dict) and record.get("executed_sha256") == copy_hash
    except (OSError, ValueError):  # no marker or no copy, or a marker that is not JSON
        return None
    return record if matches else None


def has_run(notebook: str | Path, profile: str | dict) -> bool:
    """Whether ``notebook`` (a path or its stem) has finished a run in ``profile`` in this build folder.

    Only the runner's record counts (:func:`run_record`): its executed copy in
    ``build/<profile>/notebooks/`` and the marker written after a successful run. Figures, a
    report.html (notebook 10) or an executed copy alone do not: a run killed halfway leaves
    some of them. A notebook run by hand in JupyterLab therefore runs again through the runner
    when a later notebook needs it. Whether the sources changed since is ``make``'s question
    (it compares times); this one asks only whether the build is whole.
    """
    return run_record(notebook, profile) is not None


def dependencies(notebook: str | Path, folder: Path | None = None) -> list[Path]:
    """The notebooks ``notebook`` reads from: every earlier one in ``folder`` (default
    ``notebooks/``), as ``make all`` orders them."""
    number = Path(notebook).name[:2]
    folder = Path(folder) if folder is not None else NOTEBOOK_DIR
    return [path for path in numbered_notebooks(folder) if path.name[:2] < number]


def machine_rate(profile: str | dict, refresh: bool = False) -> float:
    """This machine's reference rate (images/s, ``speed.reference_rate``), measured in a few seconds.

    Measured in a separate process, so a notebook's kernel keeps its random state and memory;
    kept for an hour in ``build/<profile>/machine.json`` so ``make all``, which starts one
    runner per notebook, measures once.
    """
    path = config.build_dir(profile) / MACHINE_FILE
    if path.exists() and not refresh:
        saved = json.loads(path.read_text())
        if time.time() - saved.get("measured_at", 0) < MACHINE_MAX_AGE_S:
            return float(saved["rate"])
    code = "from helpers import speed; print(speed.reference_rate())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_child_environment(), check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"Measuring this machine's reference rate failed:\n{result.stderr[-2000:]}")
    rate = float(result.stdout.strip().splitlines()[-1])
    with config.atomic_target(path) as temporary:
        temporary.write_text(json.dumps({"rate": rate, "measured_at": time.time()}))
    return rate


def _child_environment() -> dict:
    """This process's environment for a child Python: the workbook's helpers first on the path
    (a Colab kernel found them through sys.path only), TensorFlow's start-up messages off."""
    paths = [str(config.REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def expected_seconds(notebook: str | Path, profile: str | dict, rate: float) -> float | None:
    """Expected wall seconds of ``notebook`` in ``profile`` on a machine of reference ``rate``.

    The measured time scaled by ``REFERENCE_RATE / rate``; None where no time was measured
    for the profile (the GPU profiles: their times depend on the GPU, see the README).
    """
    measured = REFERENCE_SECONDS.get(config.profile_name(profile), {}).get(Path(notebook).stem)
    return None if measured is None else measured * REFERENCE_RATE / rate


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _duration(seconds: float) -> str:
    """A time limit in words: '30 s', '30 min', '72 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:g} h"


def plan(notebooks: list[Path], profile: str | dict, rate: float) -> str:
    """A few lines: this machine's rate against the reference, each notebook's expected time, the total."""
    times = {path.stem: expected_seconds(path, profile, rate) for path in notebooks}
    known = [t for t in times.values() if t is not None]
    lines = [
        f"This machine: {rate:,.0f} images/s on the reference workload (the times were measured at "
        f"{REFERENCE_RATE:,.0f}), so it runs at {rate / REFERENCE_RATE:.2f}x the reference."
    ]
    if not known:
        return lines[0] + f"\nNo measured times for profile {config.profile_name(profile)!r}."
    shown = ", ".join(f"{stem[:2]} {_minutes(t)}" for stem, t in times.items() if t is not None)
    lines.append(f"Expected: {shown}; in all about {_minutes(sum(known))}.")
    return "\n".join(lines)


def run_series(notebooks: list[Path], profile: str | dict, run_one, rate: float | None = None, file=None):
    """Run ``run_one(notebook)`` for each notebook under one progress bar of expected seconds.

    The bar moves every second while a notebook runs (up to its expected time) and jumps to
    the end of each notebook when it finishes, so its "time left" is the expected remaining
    time on this machine. Without measured times it counts notebooks.
    """
    from tqdm import tqdm

    file = file or sys.stdout
    expected = [expected_seconds(path, profile, rate) if rate else None for path in notebooks]
    timed = all(t is not None for t in expected)
    total = sum(expected) if timed else len(notebooks)
    unit = "s" if timed else "notebook"
    bar_format = "{desc} {percentage:3.0f}%|{bar}| {elapsed} so far, about {remaining} left"
    with tqdm(total=total, unit=unit, file=file, bar_format=bar_format, mininterval=1.0) as bar:
        done = 0.0
        for path, seconds in zip(notebooks, expected, strict=True):
            bar.set_description_str(f"{path.stem[:2]}/{notebooks[-1].stem[:2]} {path.stem}")
            stop = threading.Event()

            def tick(seconds=seconds, start=done, stop=stop):
                begun = time.perf_counter()
                while not stop.wait(1.0):
                    if seconds:  # move along this notebook's expected time, never past it
                        bar.n = start + min(time.perf_counter() - begun, 0.98 * seconds)
                        bar.refresh()

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                run_one(path)
            finally:
                stop.set()
                ticker.join()
            done += seconds if timed else 1
            bar.n = done
            bar.refresh()


def build_inputs(notebook: str, profile: str | dict, folder: Path | None = None) -> list[Path]:
    """Run the earlier notebooks that ``notebook`` (its stem, "09_attention") reads, where missing.

    Every notebook after 01 calls this in its first helpers cell, so it runs alone: opened
    on a fresh machine (Colab, Kaggle, a new build folder), it first runs the notebooks it
    depends on (:func:`dependencies`) that have not run in ``profile`` (:func:`has_run`),
    each in its own process through the runner, under a progress bar with the expected
    time. Where they have run, as in ``make all``, it does nothing. Returns what it ran.
    ``folder``: where the notebooks are (default ``notebooks/``).

    Called by a notebook that a runner runs, the runners it starts work under that runner's
    lock on the build folder; called from a notebook opened by hand, each takes the lock itself
    and stops with the holder's name if another runner is building this profile.
    """
    name = config.profile_name(profile)
    missing = [path for path in dependencies(_by_stem(notebook, folder), folder) if not has_run(path, name)]
    if not missing:
        return []
    print(
        f"{notebook} reads what notebooks {missing[0].stem[:2]}-{missing[-1].stem[:2]} write, and they have "
        f"not run in profile {name!r} here ({config.build_dir(name)}): running them first.",
        flush=True,
    )
    rate = machine_rate(name)
    print(plan(missing, name, rate), flush=True)

    def run_in_a_process(path: Path) -> None:
        command = [sys.executable, "-m", "helpers.notebooks", "run", str(path.resolve()), "--profile", name]
        environment = _child_environment()
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if result.returncode != 0:
            raise NotebookFailed(f"Building the inputs of {notebook}: {result.stdout}{result.stderr[-3000:]}")

    run_series(missing, name, run_in_a_process, rate)
    return missing


def _checked_cell_timeout(value, what: str) -> int:
    """``value`` (seconds: a number or its text) as whole seconds from 1 to MAX_CELL_TIMEOUT_S;
    anything else raises ValueError naming ``what`` (where the value came from)."""
    try:
        seconds = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and 1 <= seconds <= MAX_CELL_TIMEOUT_S):
        raise ValueError(
            f"{what} is {value!r}: give the seconds one notebook cell may run, a number from 1 to "
            f"{MAX_CELL_TIMEOUT_S:,} (30 days), for example 7200 for two hours."
        )
    return math.ceil(seconds)


def cell_timeout(profile: str | dict, given: float | str | None = None) -> int:
    """Seconds one cell of a notebook may run before the runner stops the notebook.

    ``given`` (the runner's ``--cell-timeout``) first, then the environment variable
    ``WORKBOOK_CELL_TIMEOUT_S``, then the profile's :data:`CELL_TIMEOUT_S`. A value that is not a
    number of seconds from 1 to :data:`MAX_CELL_TIMEOUT_S` raises ValueError naming its source.
    """
    if given is not None:
        return _checked_cell_timeout(given, "The cell time limit (--cell-timeout)")
    from_environment = os.environ.get(CELL_TIMEOUT_VARIABLE, "").strip()
    if from_environment:
        return _checked_cell_timeout(from_environment, f"The environment variable {CELL_TIMEOUT_VARIABLE}")
    return CELL_TIMEOUT_S[config.profile_name(profile)]


def _limit_of(cell, limit: int) -> int | None:
    """The time limit (s) of one cell: ``limit``, but none for the cell that calls build_inputs,
    whose time is that of the whole notebooks it runs, each in a runner under ``limit`` per cell."""
    return None if "build_inputs(" in cell.get("source", "") else limit


@contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the block (and the processes it starts), then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# its own lock file: a download in the same folder (safe_paths.LOCK_NAME) is another job
RUNNER_LOCK_NAME = ".runner.lock"


def _lock_holder(folder: Path) -> dict:
    """What ``folder``'s lock file says about its holder (pid, host, started); {} if unreadable."""
    path = Path(folder) / RUNNER_LOCK_NAME
    try:
        if path.is_symlink():  # never a lock file the workbook wrote
            return {}
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _ancestor_pids() -> set[int] | None:
    """The pids of this process's parent, grandparent and so on; None where they cannot be known."""
    try:
        import psutil  # installed with ipykernel
    except ImportError:
        return None
    try:
        return {parent.pid for parent in psutil.Process().parents()}
    except psutil.Error:
        return None


def _held_by_an_ancestor(folder: Path) -> bool:
    """Whether this process or one of its ancestors holds ``folder``'s runner lock.

    The holder names itself in the environment (LOCK_VARIABLE) of the processes it starts; the
    claim counts only while the lock file still names that holder, on this host, and the holder
    is this process or an ancestor of it: a runner that has finished, or a copy of the variable
    in an unrelated shell, does not let anyone in.
    """
    try:
        claim = json.loads(os.environ.get(LOCK_VARIABLE) or "null")
    except ValueError:
        return False
    if not isinstance(claim, dict) or claim.get("folder") != str(Path(folder).resolve()):
        return False
    pid, holder = claim.get("pid"), _lock_holder(folder)
    if not isinstance(pid, int) or holder.get("pid") != pid or holder.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return True
    ancestors = _ancestor_pids()
    return ancestors is None or pid in ancestors


@contextmanager
def build_lock(profile: str | dict, wait_s: float = 0.0):
    """Hold ``build/<profile>/``'s lock while a runner writes there; yields the folder.

    A second runner on the same profile waits up to ``wait_s`` seconds, then raises RunnerBusy
    naming the holder (pid, host, start time). The runners started by the holder's notebooks
    (:func:`build_inputs`) run under its lock (:func:`_held_by_an_ancestor`), as does a nested
    call in the holder itself. The lock is the operating system's (safe_paths.FolderLock), so a
    runner killed with SIGKILL holds it no longer.
    """
    folder = config.build_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    if _held_by_an_ancestor(folder):
        yield folder
        return
    try:
        lock = safe_paths.FolderLock(folder, wait_s=wait_s, name=RUNNER_LOCK_NAME, purpose="runner").acquire()
    except safe_paths.FolderLocked:
        holder = safe_paths.describe_holder(_lock_holder(folder))
        waited = f" (waited {wait_s:g} s)" if wait_s else ""
        raise RunnerBusy(
            f"Another runner is building profile {config.profile_name(profile)!r} in {folder}: {holder}"
            f"{waited}. Wait for it to finish (or stop it), or run with --wait SECONDS to start when it "
            "is done; two runners in one build folder would overwrite each other's notebooks and results."
        ) from None
    try:
        claim = json.dumps({"folder": str(folder.resolve()), "pid": os.getpid()})
        with _environment({LOCK_VARIABLE: claim}):
            yield folder
    finally:
        lock.release()


def _first_line(cell) -> str:
    lines = [line.strip() for line in "".join(cell.get("source", "")).splitlines() if line.strip()]
    first = lines[0] if lines else "(empty)"
    return first if len(first) <= 80 else first[:77] + "..."


def _describe(cell, position: int) -> str:
    """'cell 5 (`first line`)': the number is the executed copy's In [5] (its position among the
    copy's code cells, which is the same number, where the kernel died before numbering it)."""
    number = cell.get("execution_count") or position
    return f"cell {number} (`{_first_line(cell)}`)"


def _read_executed(partial: Path):
    import nbformat

    try:
        return nbformat.read(str(partial), as_version=4)
    except (OSError, ValueError):  # the kernel never started: nothing was written
        return None


def _failed_cell(partial: Path, execution_count) -> str:
    """The cell of the executed copy whose In [] is ``execution_count``, described."""
    executed = _read_executed(partial)
    code = [cell for cell in executed.cells if cell.cell_type == "code"] if executed else []
    for position, cell in enumerate(code, start=1):
        if cell.get("execution_count") == execution_count:
            return _describe(cell, position)
    return f"cell {execution_count}"


def _mark_stopped_cell(partial: Path, ename: str, evalue: str) -> str:
    """Describe the cell that was running when the run stopped (the last one started), and add an
    error output saying why to it in the executed copy, so the failed copy shows where it stopped."""
    import nbformat

    executed = _read_executed(partial)
    if executed is None:
        return "its start, before any cell ran"
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    started = [
        (position, cell)
        for position, cell in enumerate(code, start=1)
        if cell.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return "its start, before any cell ran"
    position, cell = started[-1]
    cell.outputs.append(
        nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
    )
    with config.atomic_target(partial) as temporary:
        nbformat.write(executed, str(temporary))
    return _describe(cell, position)


def _execute(notebook: Path, partial: Path, profile: str, limit: int, log: Path) -> str | None:
    """Run ``notebook`` into ``partial`` with papermill; None on success, else what went wrong
    (the cell and the error), with ``partial`` holding every output up to it."""
    import papermill  # imported here: starting papermill is slow and `check` does not need it
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    # The kernel inherits this process's stderr, where TensorFlow's C++ start-up messages
    # would drown the runner's one line per notebook: send them to <name>.log instead.
    kernel_log = open(log, "w")  # noqa: SIM115 (closed in finally)
    saved_stderr = os.dup(2)
    os.dup2(kernel_log.fileno(), 2)
    try:
        # the runners this notebook starts (build_inputs) keep this limit
        with _environment({CELL_TIMEOUT_VARIABLE: str(limit)}):
            papermill.execute_notebook(
                str(notebook),
                str(partial),
                parameters={"PROFILE": profile},
                kernel_name="python3",
                cwd=str(notebook.parent),  # as in JupyterLab, where a notebook runs in its own folder
                progress_bar=False,
                execution_timeout=limit,
                timeout_func=lambda cell: _limit_of(cell, limit),
            )
    except papermill.PapermillExecutionError as error:
        trace = _ANSI.sub("", "\n".join(error.traceback[-12:]))
        return (
            f"{notebook.name} failed in {_failed_cell(partial, error.exec_count)}: {error.ename}: "
            f"{_ANSI.sub('', str(error.evalue))}\n{trace}"
        )
    except CellTimeoutError:
        where = _mark_stopped_cell(partial, "CellTimeout", f"stopped after {limit:,} s, the limit per cell")
        return (
            f"{notebook.name} stopped in {where}: it ran longer than the limit of {limit:,} s "
            f"({_duration(limit)}) per cell. A loop that never ends stops here; if the cell is only "
            "slow on this machine, raise the limit: --cell-timeout SECONDS or "
            f"{CELL_TIMEOUT_VARIABLE}=SECONDS."
        )
    except DeadKernelError:
        where = _mark_stopped_cell(partial, "DeadKernel", "the kernel died while this cell ran")
        return (
            f"{notebook.name}: the kernel died in {where}: it was killed from outside or ran out of "
            "memory (the kernel's log may say which); run the notebook again."
        )
    except Exception as error:  # the kernel did not start or answer, the copy could not be written, ...
        where = _mark_stopped_cell(partial, type(error).__name__, str(error))
        return f"{notebook.name} stopped in {where}: {type(error).__name__}: {error}"
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        kernel_log.close()
    return None


def run_notebook(
    notebook: Path,
    profile: str,
    output: Path | None = None,
    cell_timeout_s: float | None = None,
    lock_wait_s: float = 0.0,
) -> tuple[Path, float]:
    """Execute ``notebook`` with ``PROFILE=profile``; return (executed copy, wall seconds).

    Holds the build folder's lock (:func:`build_lock`: RunnerBusy if another runner holds it
    after ``lock_wait_s`` seconds); each cell may run :func:`cell_timeout` seconds
    (``cell_timeout_s`` first). The old executed copy, its marker and failed copy are removed
    first; on success the marker is written, then the copy renamed into place (the moment the
    run counts, :func:`has_run`). Otherwise raises :class:`NotebookFailed` naming the cell
    (its number and first line) and the error, the timeout or the kernel's death, and leaves
    ``<name>.failed.ipynb`` with every output up to it.
    """
    config.get_profile(profile)
    notebook = Path(notebook).resolve()
    if not notebook.is_file():  # before anything of an earlier run is removed
        raise FileNotFoundError(f"No notebook at {notebook}: give the path of one (notebooks/NN_name.ipynb).")
    limit = cell_timeout(profile, cell_timeout_s)
    with build_lock(profile, lock_wait_s):
        output = Path(output) if output else config.output_dir(profile, "notebooks") / notebook.name
        output.parent.mkdir(parents=True, exist_ok=True)
        marker, failed, log = (
            _done_marker(output),
            output.with_name(f"{output.stem}.failed.ipynb"),
            output.with_suffix(".log"),
        )
        partial = output.with_name(f".{output.stem}.{os.getpid()}.partial.ipynb")
        # Nothing of an earlier run may count while this one runs, nor after it fails or is
        # killed. The copy goes first: make reads its time, and a marker alone counts for nothing.
        # Partial copies of killed runs go too: holding the lock, no other run is writing one.
        for stale in (output, marker, failed, *output.parent.glob(f".{output.stem}.*partial.ipynb")):
            stale.unlink(missing_ok=True)
        source_sha256 = safe_paths.file_sha256(notebook)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        start = time.perf_counter()
        try:
            failure = _execute(notebook, partial, profile, limit, log)
        except BaseException:  # Ctrl-C: keep what ran, as a failed run
            if partial.exists():
                os.replace(partial, failed)
            raise
        seconds = time.perf_counter() - start
        if failure is not None:
            if partial.exists():
                os.replace(partial, failed)
            raise NotebookFailed(
                f"{failure}\nThe executed copy up to there is {failed}; the kernel's log {log}."
            ) from None
        with open(partial, "rb+") as handle:  # its bytes are on disk before the rename that makes it count
            os.fsync(handle.fileno())
        record = {
            "notebook": notebook.name,
            "profile": config.profile_name(profile),
            "source_sha256": source_sha256,
            "helpers_sha256": _helpers_sha256(),
            "executed_sha256": safe_paths.file_sha256(partial),
            "seconds": round(seconds, 1),
            "cell_timeout_s": limit,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "runner": {"pid": os.getpid(), "host": socket.gethostname()},
        }
        with config.atomic_target(marker) as temporary:
            temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, output)  # the run counts from here
    return output, seconds


def _code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def problems(path: Path) -> list[str]:
    """What is wrong with a source notebook, as sentences (empty when it is fine).

    The house rules: no outputs or execution counts; one code cell tagged ``parameters``
    that sets ``PROFILE``; a markdown title and "What you will learn" at the top; a summary
    and exercises at the end; no ``pip install`` (but in the Colab/Kaggle setup cell of
    ``helpers.colab``, which must be the current one and the first code cell); no absolute paths;
    after notebook 01, a call ``build_inputs("NN_name", PROFILE)`` (:func:`build_inputs`).
    """
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for number, cell in enumerate(_code_cells(notebook), start=1):
        if cell.get("outputs") or cell.get("execution_count"):
            found.append(f"code cell {number} has outputs (run `make strip`)")
        source = "".join(cell["source"])
        if colab.SETUP_TAG in cell.get("metadata", {}).get("tags", []):
            # the one cell allowed to pip install: the workbook itself, on Colab or Kaggle only
            if number != 1 or source != colab.setup_cell():
                found.append(f"code cell {number} is a stale or misplaced Colab setup cell ({_APPLY})")
        elif "pip install" in source:
            found.append(f"code cell {number} runs pip install; dependencies belong in pyproject.toml")
        if re.search(r"""["'](/|[A-Za-z]:\\)(home|Users|work|tmp)""", source):
            found.append(f"code cell {number} hard-codes an absolute path; use helpers.config")
    stem = Path(path).stem
    call = f'build_inputs("{stem}", PROFILE)'
    if stem[:2] != "01" and not any(call in "".join(c["source"]) for c in _code_cells(notebook)):
        found.append(f"needs `{call}` in its first helpers cell, so that it runs alone")
    tagged = [c for c in _code_cells(notebook) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1 or "PROFILE" not in "".join(tagged[0]["source"]):
        found.append("needs exactly one code cell tagged `parameters` that sets PROFILE")
    markdown = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    if not markdown or not markdown[0].lstrip().startswith("# "):
        found.append("the first markdown cell should be the title (`# ...`)")
    if not any("what you will learn" in text.lower() for text in markdown[:3]):
        found.append("a 'What you will learn' section belongs near the top")
    tail = "\n".join(markdown[-3:]).lower()
    if "summary" not in tail or "exercise" not in tail:
        found.append("the notebook should end with a summary and exercises")
    return found


def strip(path: Path) -> bool:
    """Remove outputs and execution counts from a notebook in place; True if it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    for cell in _code_cells(notebook):
        cell["outputs"] = []
        cell["execution_count"] = None
    cleaned = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if cleaned != text:
        with config.atomic_target(path) as temporary:
            temporary.write_text(cleaned, encoding="utf-8")
        return True
    return False


def kernels_peak_gb() -> float | None:
    """The peak resident memory (GB) of the largest kernel this process has run so far.

    ``make all`` starts one runner per notebook, so there it is that notebook's peak. None
    where the platform does not report it (Windows has no ``resource`` module).
    """
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _reference_workload() -> str:
    from helpers import speed  # here: it imports Keras, which `check` and `strip` do not need

    return speed.REFERENCE_WORKLOAD


def _run_command(
    targets: list[Path],
    profile: str,
    estimate: bool,
    cell_timeout_s: float | None = None,
    wait_s: float = 0.0,
) -> int:
    """``run``: under the build folder's lock, the machine's rate and the plan first, then each
    notebook with its time and memory, the time left in the build, and a progress bar when
    several run."""
    try:
        with build_lock(profile, wait_s):
            return _run_locked(targets, profile, estimate, cell_timeout_s)
    except RunnerBusy as error:
        print(error, file=sys.stderr)
        return 1


def _run_locked(targets: list[Path], profile: str, estimate: bool, cell_timeout_s: float | None) -> int:
    rate = machine_rate(profile) if estimate and REFERENCE_SECONDS.get(profile) else None
    if rate:
        print(plan(targets, profile, rate), flush=True)

    def run_one(notebook: Path) -> None:
        output, seconds = run_notebook(notebook, profile, cell_timeout_s=cell_timeout_s)
        inside = output.is_relative_to(config.REPO_ROOT)
        shown = output.relative_to(config.REPO_ROOT) if inside else output
        name, peak = Path(notebook).stem, kernels_peak_gb()
        memory = f"{peak:4.1f} GB" if peak is not None else "   - GB"
        expected = expected_seconds(notebook, profile, rate) if rate else None
        against = f" (expected {_minutes(expected)})" if expected else ""
        line = f"{name:<34} {profile:<8} {seconds:7.1f} s{against}  {memory}   {shown}"
        unfinished = [p for p in numbered_notebooks() if not has_run(p, profile)] if rate else []
        left = [expected_seconds(p, profile, rate) for p in unfinished]  # none without a rate (--no-estimate)
        if len(targets) == 1 and left and None not in left:  # make all: one notebook per runner
            line += f"   about {_minutes(sum(left))} left in the build"
        if len(targets) > 1:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    try:
        if len(targets) > 1:
            run_series(list(targets), profile, run_one, rate, file=sys.stderr)
        else:
            run_one(targets[0])
    except NotebookFailed as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _seconds_to_wait(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute notebooks in order, stop at the first failure")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: every numbered notebook")
    run.add_argument("--profile", default="default", choices=list(config.PROFILES))
    run.add_argument("--no-estimate", action="store_true", help="skip measuring the machine's rate")
    defaults = ", ".join(f"{name} {_duration(seconds)}" for name, seconds in CELL_TIMEOUT_S.items())
    run.add_argument(
        "--cell-timeout",
        metavar="SECONDS",
        help=f"stop a notebook, naming the cell, when one cell runs longer than this; default: the "
        f"environment variable {CELL_TIMEOUT_VARIABLE}, else by profile ({defaults})",
    )
    run.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds_to_wait,
        default=0.0,
        help="when another runner is building the same profile, wait up to this long for it "
        "(default 0: stop at once, naming it)",
    )
    commands.add_parser("check", help="check the source notebooks against the house rules")
    commands.add_parser("strip", help="remove outputs from the source notebooks")
    rate = commands.add_parser("rate", help="measure this machine's reference rate (images/s)")
    rate.add_argument("--profile", default="default", choices=list(config.PROFILES))
    args = parser.parse_args(argv)

    if args.command == "rate":
        measured = machine_rate(args.profile, refresh=True)
        print(
            f"reference rate: {measured:,.0f} images/s ({_reference_workload()}); the README's times: "
            f"{REFERENCE_RATE:,.0f} images/s"
        )
        return 0
    if args.command == "run":
        try:  # a wrong limit stops here, before any notebook starts
            cell_timeout(args.profile, args.cell_timeout)
        except ValueError as error:
            parser.error(str(error))
        targets = args.notebooks or numbered_notebooks()
        missing = [str(path) for path in targets if not Path(path).is_file()]
        if missing:
            parser.error(f"no notebook at {', '.join(missing)}")
        return _run_command(targets, args.profile, not args.no_estimate, args.cell_timeout, args.wait)
    if args.command == "check":
        bad = {path: problems(path) for path in numbered_notebooks()}
        for path, found in bad.items():
            for problem in found:
                print(f"{path.relative_to(config.REPO_ROOT)}: {problem}")
        return 1 if any(bad.values()) else 0
    changed = [path for path in numbered_notebooks() if strip(path)]
    for path in changed:
        print(f"stripped {path.relative_to(config.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
