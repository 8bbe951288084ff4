"""The report, regenerated: the original's structure, this build's numbers, and a scorecard of its claims.

Everything is read from ``build/<profile>/``: ``tables/results.csv``, ``tables/facts.json``,
``runs/*/summary.json``, per-image predictions and ``history.csv``, ``geocells/``,
``images/``, ``figures/`` and ``maps/``. Nothing is trained or evaluated again. The only
numbers typed in this package are the original report's own published ones
(:data:`PUBLISHED`, each with the section of the report it is printed in); the text always
labels them as the report's.

The package, by job:

* :mod:`~helpers.report.build`: reading a build (:func:`load_build`), with its damaged tables
  named;
* :mod:`~helpers.report.claims`, :mod:`~helpers.report.claims_training`,
  :mod:`~helpers.report.claims_findings`: the claims, each written once (its words, the two
  quantities, the rule, the judge), and :func:`scorecard`; :mod:`~helpers.report.verdicts`
  (the seven verdicts and the shared rules) and :mod:`~helpers.report.rules` (what the judges
  share);
* :mod:`~helpers.report.document` and :mod:`~helpers.report.contents`: the document, a list
  of blocks (:func:`document`);
* :mod:`~helpers.report.html` and :mod:`~helpers.report.typst`: one self-contained HTML file
  (:func:`write_html`) and an A4 PDF typeset by Typst (:func:`write_pdf`);
* ``python -m helpers.report --profile NAME`` writes both (:mod:`~helpers.report.__main__`).
"""

from __future__ import annotations

from helpers.experiments import SEED_CONFIGURATIONS, seed_scores
from helpers.report.build import PUBLISHED, best_test_row, build_sizes, load_build, published
from helpers.report.claims import CLAIMS, Claim, Judgement, scorecard
from helpers.report.contents import EXTRA_FIGURES, FIGURES, LOSS_EQUATIONS
from helpers.report.document import document, title, verdict_tally
from helpers.report.html import render_html, write_html
from helpers.report.rules import NO_GAIN_POINTS
from helpers.report.typst import render_pdf, write_pdf
from helpers.report.verdicts import (
    BY_DESIGN,
    DAMAGED,
    INCONCLUSIVE,
    MISSING,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    VERDICTS,
)

__all__ = [
    "BY_DESIGN",
    "CLAIMS",
    "DAMAGED",
    "EXTRA_FIGURES",
    "FIGURES",
    "INCONCLUSIVE",
    "LOSS_EQUATIONS",
    "MISSING",
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "NO_GAIN_POINTS",
    "PUBLISHED",
    "REPRODUCED",
    "SEED_CONFIGURATIONS",
    "VERDICTS",
    "Claim",
    "Judgement",
    "best_test_row",
    "build_sizes",
    "document",
    "load_build",
    "published",
    "render_html",
    "render_pdf",
    "scorecard",
    "seed_scores",
    "title",
    "verdict_tally",
    "write_html",
    "write_pdf",
]
