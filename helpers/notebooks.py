"""Run the workbook's notebooks headlessly with papermill, and keep the sources clean.

Command line (the Makefile uses it)::

    python -m helpers.notebooks run notebooks/01_locations.ipynb --profile smoke
    python -m helpers.notebooks check      # sources have no outputs and the lecture shape
    python -m helpers.notebooks strip      # remove outputs from the sources in place
    python -m helpers.notebooks rate       # this machine's reference rate (images/s)

An executed copy goes to ``build/<profile>/notebooks/``; the source in ``notebooks/`` is
never written by a run. A failed run leaves ``<name>.failed.ipynb`` beside where the copy
would be, so you can open it and see every cell's output up to the error.

A notebook runs alone: its first helpers cell calls :func:`build_inputs`, which runs the
earlier notebooks it reads when they have not run in this profile (a fresh Colab machine,
a new build folder), with a progress bar and the expected time, and otherwise does nothing.

Times that hold on any machine: :data:`REFERENCE_SECONDS` are the notebooks' times in a
clean build, measured on a machine whose reference rate (``device.reference_rate``, images/s
of a fixed small training workload) was :data:`REFERENCE_RATE`. Before a build the runner
measures this machine's rate (a few seconds; kept for an hour in ``build/<profile>/machine.json``)
and scales the times by the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import colab, config

try:  # Unix only: the runner reports the kernels' peak memory where the platform tells it
    import resource
except ImportError:  # Windows
    resource = None

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"
_APPLY = "run `python -m helpers.colab apply`"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# Seconds per notebook in a clean build, by profile, and the reference rate (images/s of
# device.REFERENCE_WORKLOAD) of the machine they were measured on, by the runner, just before that
# build: 2 cores, no GPU, nothing else running. default: `make all` (README). smoke has no times:
# it is CI's profile, and its bar counts notebooks.
REFERENCE_RATE = 1331.0
REFERENCE_SECONDS = {
    "default": {
        "01_locations": 13, "02_geocells": 14, "03_images": 29, "04_distances": 8, "05_baseline_vit": 96,
        "06_augmentation_and_schedule": 405, "07_distance_losses": 236, "08_evaluation": 18,
        "09_attention": 108, "10_report": 11, "11_beyond_the_report": 55, "12_future_work": 101,
    },
}  # fmt: skip
MACHINE_FILE = "machine.json"
MACHINE_MAX_AGE_S = 3600


class NotebookFailed(RuntimeError):
    """A notebook raised an error; the message names the cell and the error."""


def numbered_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The workbook's notebooks in teaching order: ``NN_name.ipynb`` sorted by number."""
    return sorted(directory.glob("[0-9][0-9]_*.ipynb"))


def _by_stem(stem: str) -> Path:
    found = [path for path in numbered_notebooks() if path.stem == stem]
    if not found:
        known = ", ".join(path.stem for path in numbered_notebooks())
        raise ValueError(f"No notebook {stem!r} in {NOTEBOOK_DIR}; the notebooks are: {known}.")
    return found[0]


def has_run(notebook: str | Path, profile: str | dict) -> bool:
    """Whether ``notebook`` (a path or its stem) has run in ``profile`` in this build folder.

    Run by the runner: its executed copy is in ``build/<profile>/notebooks/``. Run by hand in
    JupyterLab: its figures (``figNN*.png``) are in ``build/<profile>/figures/``; notebook 10
    writes ``report.html`` instead.
    """
    stem = Path(notebook).stem
    build = config.build_dir(profile)
    if (build / "notebooks" / f"{stem}.ipynb").exists():
        return True
    if stem.startswith("10_"):
        return (build / "report.html").exists()
    return any((build / "figures").glob(f"fig{stem[:2]}*.png"))


def dependencies(notebook: str | Path) -> list[Path]:
    """The notebooks ``notebook`` reads from: every earlier one, as ``make all`` orders them."""
    number = Path(notebook).name[:2]
    return [path for path in numbered_notebooks() if path.name[:2] < number]


def machine_rate(profile: str | dict, refresh: bool = False) -> float:
    """This machine's reference rate (images/s, ``device.reference_rate``), measured in a few seconds.

    Measured in a separate process, so a notebook's kernel keeps its random state and memory;
    kept for an hour in ``build/<profile>/machine.json`` so ``make all``, which starts one
    runner per notebook, measures once.
    """
    path = config.build_dir(profile) / MACHINE_FILE
    if path.exists() and not refresh:
        saved = json.loads(path.read_text())
        if time.time() - saved.get("measured_at", 0) < MACHINE_MAX_AGE_S:
            return float(saved["rate"])
    code = "from helpers import device; print(device.reference_rate())"
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


def build_inputs(notebook: str, profile: str | dict) -> list[Path]:
    """Run the earlier notebooks that ``notebook`` (its stem, "09_attention") reads, where missing.

    Every notebook after 01 calls this in its first helpers cell, so it runs alone: opened
    on a fresh machine (Colab, Kaggle, a new build folder), it first runs the notebooks it
    depends on (:func:`dependencies`) that have not run in ``profile`` (:func:`has_run`),
    each in its own process through the runner, under a progress bar with the expected
    time. Where they have run, as in ``make all``, it does nothing. Returns what it ran.
    """
    name = config.profile_name(profile)
    missing = [path for path in dependencies(_by_stem(notebook)) if not has_run(path, name)]
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
        command = [sys.executable, "-m", "helpers.notebooks", "run", str(path), "--profile", name]
        environment = _child_environment()
        result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if result.returncode != 0:
            raise NotebookFailed(f"Building the inputs of {notebook}: {result.stdout}{result.stderr[-3000:]}")

    run_series(missing, name, run_in_a_process, rate)
    return missing


def run_notebook(notebook: Path, profile: str, output: Path | None = None) -> tuple[Path, float]:
    """Execute ``notebook`` with ``PROFILE=profile``; return (executed copy, wall seconds).

    Raises :class:`NotebookFailed` with the failing cell's number, error and traceback.
    """
    import papermill  # imported here: starting papermill is slow and `check` does not need it

    config.get_profile(profile)
    notebook = Path(notebook).resolve()
    output = Path(output) if output else config.output_dir(profile, "notebooks") / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    failed = output.with_name(f"{output.stem}.failed.ipynb")
    # The kernel inherits this process's stderr, where TensorFlow's C++ start-up messages
    # would drown the runner's one line per notebook: send them to <name>.log instead.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    kernel_log = open(output.with_suffix(".log"), "w")  # noqa: SIM115 (closed in finally)
    saved_stderr = os.dup(2)
    os.dup2(kernel_log.fileno(), 2)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial),
            parameters={"PROFILE": profile},
            kernel_name="python3",
            cwd=str(notebook.parent),  # as in JupyterLab, where a notebook runs in its own folder
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as error:
        os.dup2(saved_stderr, 2)
        partial.replace(failed)
        trace = _ANSI.sub("", "\n".join(error.traceback[-12:]))
        raise NotebookFailed(
            f"{notebook.name} failed in cell {error.exec_count} ({error.ename}: "
            f"{_ANSI.sub('', str(error.evalue))}).\n{trace}\n"
            f"The executed copy up to the error is {failed}; the kernel's log {output.with_suffix('.log')}."
        ) from None
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        kernel_log.close()
    partial.replace(output)
    failed.unlink(missing_ok=True)
    return output, time.perf_counter() - start


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
    from helpers import device  # here: it imports Keras, which `check` and `strip` do not need

    return device.REFERENCE_WORKLOAD


def _run_command(targets: list[Path], profile: str, estimate: bool) -> int:
    """``run``: the machine's rate and the plan first, then each notebook with its time and
    memory, the time left in the build, and a progress bar when several run."""
    rate = machine_rate(profile) if estimate and REFERENCE_SECONDS.get(profile) else None
    if rate:
        print(plan(targets, profile, rate), flush=True)

    def run_one(notebook: Path) -> None:
        output, seconds = run_notebook(notebook, profile)
        inside = output.is_relative_to(config.REPO_ROOT)
        shown = output.relative_to(config.REPO_ROOT) if inside else output
        name, peak = Path(notebook).stem, kernels_peak_gb()
        memory = f"{peak:4.1f} GB" if peak is not None else "   - GB"
        expected = expected_seconds(notebook, profile, rate) if rate else None
        against = f" (expected {_minutes(expected)})" if expected else ""
        line = f"{name:<34} {profile:<8} {seconds:7.1f} s{against}  {memory}   {shown}"
        left = [expected_seconds(p, profile, rate) for p in numbered_notebooks() if not has_run(p, profile)]
        if rate and len(targets) == 1 and left and None not in left:  # make all: one notebook per runner
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute notebooks in order, stop at the first failure")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: every numbered notebook")
    run.add_argument("--profile", default="default", choices=list(config.PROFILES))
    run.add_argument("--no-estimate", action="store_true", help="skip measuring the machine's rate")
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
        return _run_command(args.notebooks or numbered_notebooks(), args.profile, not args.no_estimate)
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
