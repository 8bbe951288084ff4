"""`make test` and `make test-slow` split the suite in two, and CI runs both halves.

`make test` leaves out the tests marked ``slow`` (the rehearsal series, the worked solutions'
runs) to stay under 10 minutes on 2 cores; nothing may fall between the two targets.
"""

import re
import shlex
import subprocess

from helpers import config


def marker_expression(target: str) -> str:
    """The ``-m`` expression of the pytest command that ``make <target>`` runs."""
    printed = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=config.REPO_ROOT, capture_output=True, text=True,
        check=True,
    ).stdout
    command = next(shlex.split(line) for line in printed.splitlines() if " -m pytest " in line)
    return command[command.index("-m", command.index("pytest")) + 1]


def test_the_two_targets_select_complementary_halves():
    assert marker_expression("test") == "not slow"
    assert marker_expression("test-slow") == "slow"


def test_ci_runs_both_targets():
    script = (config.REPO_ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if re.match(r"\s*make\b", line)]
    assert commands == ["make test", "make test-slow"]

