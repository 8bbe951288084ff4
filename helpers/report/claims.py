"""The report's claims and the scorecard that judges them on a build.

The claims are written once each, in two modules by what they are about:
:mod:`helpers.report.claims_training` (1-9: the training runs of notebooks 05-07) and
:mod:`helpers.report.claims_findings` (10-16: the final model's numbers and its mistakes and
attention, notebooks 08-09). Each is a :class:`~helpers.report.rules.Claim`: the report's
words (quoted exactly, with the section), its number, the two quantities compared, the rule in
words, and the judge that applies it, registered by a decorator on the judge so that the text
and the code stand together. :data:`CLAIMS` lists them in the report's order;
:func:`scorecard` applies them.
"""

from __future__ import annotations

import pandas as pd

from helpers.report import claims_findings, claims_training
from helpers.report.build import as_build
from helpers.report.rules import NOT_AN_ACCURACY_CLAIM, Claim, Judgement, guarded, measured_on
from helpers.report.verdicts import DAMAGED

CLAIMS: list[Claim] = [*claims_training.CLAIMS, *claims_findings.CLAIMS]


def scorecard(profile) -> pd.DataFrame:
    """One row per claim of the original report, judged on this build.

    Columns: claim (the report's words), report (its number and section), compares (the two
    quantities the rule compares), this build (both, measured here), leak 0 (the same
    comparison on the runs trained at session_leak 0, one seed; accuracy claims only), data
    (profile, image set and split), verdict (one of :data:`verdicts.VERDICTS`), reason (what
    decided it) and rule (the written rule). ``profile`` is a profile name or dict, or a
    :func:`load_build` dictionary. A damaged build is not judged: every row says "damaged",
    with the files and how to rebuild them.
    """
    build = as_build(profile)
    rows = []
    for number, each in enumerate(CLAIMS, start=1):
        if build.get("damaged"):
            found = Judgement("not judged", measured_on(build), DAMAGED, "; ".join(build["damaged"]))
            leak0 = "not judged" if each.shortcut else NOT_AN_ACCURACY_CLAIM
        else:
            found = guarded(each.judge, build)
            leak0 = guarded(each.shortcut, build) if each.shortcut else NOT_AN_ACCURACY_CLAIM
            leak0 = leak0.reason if isinstance(leak0, Judgement) else leak0
        rows.append(
            {
                "claim": f"{number}. {each.claim}",
                "report": each.report,
                "compares": each.compares,
                "this build": found.measured,
                "leak 0": leak0,
                "data": found.data,
                "verdict": found.verdict,
                "reason": found.reason,
                "rule": each.rule,
            }
        )
    return pd.DataFrame(rows)


__all__ = ["CLAIMS", "Claim", "Judgement", "scorecard"]
