"""``python -m helpers.report --profile NAME``: write the report of a build again.

``make all`` calls it after the last notebook, so the report also holds the results of the
notebooks after 10 (beyond the report, future work).
"""

from __future__ import annotations

import argparse

from helpers.report.html import write_html
from helpers.report.typst import write_pdf


def main(argv: list[str] | None = None) -> int:
    """Write ``build/<profile>/report.html`` and ``report.pdf``; print their paths."""
    parser = argparse.ArgumentParser(description="Write build/<profile>/report.html and report.pdf.")
    parser.add_argument("--profile", default="default")
    profile = parser.parse_args(argv).profile
    for path in (write_html(profile), write_pdf(profile)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
