"""The machines students bring: the runner on Windows (no ``resource``), the device line,
mixed precision on the CPU, the machine's reference rate and the GPU bench in its tiny shape."""

import os
import subprocess
import sys

from helpers import config


def run_python(code: str, **environment) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root, this worktree's helpers first."""
    env = {**os.environ, "PYTHONPATH": str(config.REPO_ROOT), **environment}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=config.REPO_ROOT, env=env, timeout=600
    )


def test_the_runner_imports_and_runs_without_resource_as_on_windows():
    # None in sys.modules makes `import resource` raise ImportError, as on Windows
    code = (
        "import sys; sys.modules['resource'] = None\n"
        "from helpers import notebooks\n"
        "assert notebooks.resource is None\n"
        "assert notebooks.kernels_peak_gb() is None\n"
        "print(notebooks.main(['check']))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0"


def test_where_resource_exists_the_peak_memory_is_a_number():
    from helpers import notebooks

    assert notebooks.resource is not None
    assert notebooks.kernels_peak_gb() >= 0
