"""Run the workbook's notebooks headlessly with papermill, and keep the sources clean.

Command line (the Makefile uses it)::

    python -m helpers.notebooks run notebooks/01_locations.ipynb --profile smoke
    python -m helpers.notebooks check      # sources have no outputs and the lecture shape
    python -m helpers.notebooks strip      # remove outputs from the sources in place

An executed copy goes to ``build/<profile>/notebooks/``; the source in ``notebooks/`` is
never written by a run. A failed run leaves ``<name>.failed.ipynb`` beside where the copy
would be, so you can open it and see every cell's output up to the error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
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


class NotebookFailed(RuntimeError):
    """A notebook raised an error; the message names the cell and the error."""


def numbered_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The workbook's notebooks in teaching order: ``NN_name.ipynb`` sorted by number."""
    return sorted(directory.glob("[0-9][0-9]_*.ipynb"))


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
    ``helpers.colab``, which must be the current one and the first code cell); no absolute paths.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute notebooks in order, stop at the first failure")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: every numbered notebook")
    run.add_argument("--profile", default="default", choices=list(config.PROFILES))
    commands.add_parser("check", help="check the source notebooks against the house rules")
    commands.add_parser("strip", help="remove outputs from the source notebooks")
    args = parser.parse_args(argv)

    if args.command == "run":
        for notebook in args.notebooks or numbered_notebooks():
            try:
                output, seconds = run_notebook(notebook, args.profile)
            except NotebookFailed as error:
                print(f"{Path(notebook).stem:<34} {args.profile:<8} FAILED", flush=True)
                print(error, file=sys.stderr)
                return 1
            inside = output.is_relative_to(config.REPO_ROOT)
            shown = output.relative_to(config.REPO_ROOT) if inside else output
            name, peak = Path(notebook).stem, kernels_peak_gb()
            memory = f"{peak:4.1f} GB" if peak is not None else "   - GB"
            print(f"{name:<34} {args.profile:<8} {seconds:7.1f} s  {memory}   {shown}", flush=True)
        return 0
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
