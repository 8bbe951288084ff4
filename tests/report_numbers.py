"""The student report's numbers that the notebooks and solutions may type: each with the report's
exact words it comes from (../shared/seed/report.md, the report the workbook rebuilds).

Kept here, committed, so tests/test_typed_numbers.py runs without ../shared; where the report
is there, a test checks that every quotation below is in it word for word (whitespace aside).
"""

from __future__ import annotations

# number as it may be typed in prose -> the report's words that hold it
REPORT_NUMBERS: dict[str, str] = {
    "129": "It resulted in 129 classes, we can call them geocells.",
    "42,570": "we sampled 42570 (330 for every geocell) addresses from the OpenAddresses database",
    "42570": "we sampled 42570 (330 for every geocell) addresses from the OpenAddresses database",
    "330": "we sampled 42570 (330 for every geocell) addresses from the OpenAddresses database",
    "20": "We decided to train our model for 20 epochs maximum since each epoch took around 1 hour.",
    "32": "Other hyperparameters were: batch size: 32, learning rate: 6e-5, and weight decay rate: 0.1.",
    "0.1": "Other hyperparameters were: batch size: 32, learning rate: 6e-5, and weight decay rate: 0.1.",
    "2": "Through experimentation, we settled on l=2 and m=0.15",
    "0.15": "Through experimentation, we settled on l=2 and m=0.15",
    "16": "We also decreased the batch size to 16, as the new custom model used more memory.",
    "2023": "December, 2023",
    "29": "Data augmentation improved our accuracy from 29% to 35%.",
    "35": "Data augmentation improved our accuracy from 29% to 35%.",
    "37": "As a result, the final accuracy was 37%, which is not as much as we hoped.",
    "10": "it achieved 10% accuracy even after tuning hyperparameters.",
    "62": "It had a mean km error of 251, which is much higher than our model (best: 62km).",
    "150": "our starting mean km error was 150 km when randomly choosing predicted cells",
}
