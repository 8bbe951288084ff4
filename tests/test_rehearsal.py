"""The report's real path, rehearsed offline: every notebook in the ``rehearsal`` profile.

Notebook 03 downloads through the real Street View client from the loopback stand-in (with
its faults), and every model starts from a checkpoint in the Hugging Face layout loaded by
keras-hub's converter. Afterwards the build must show that the downloaded images, and only
they, were trained on.
"""

import json

import pandas as pd
import pytest

from helpers import collect, config, model, notebooks, pretrain

# `make test-slow` and CI run this series; `make test` leaves it out (its 10 minutes on 2 cores)
pytestmark = pytest.mark.slow

NOTEBOOKS = notebooks.numbered_notebooks()


@pytest.fixture(scope="module")
def rehearsal_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBOOK_BUILD_DIR", str(root))
        yield root / "rehearsal"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_runs_in_the_rehearsal_profile(path, rehearsal_build):
    output, _ = notebooks.run_notebook(path, "rehearsal")
    assert output == rehearsal_build / "notebooks" / path.name


@pytest.mark.notebooks
def test_the_models_trained_on_the_downloaded_images(rehearsal_build):
    images = rehearsal_build / "images"
    dataset = pd.read_csv(images / "dataset.csv")
    manifest = pd.DataFrame(collect.read_manifest(images / "streetview" / "manifest.csv"))
    ok = set("streetview/" + manifest.loc[manifest["status"] == "ok", "image_path"])
    per_cell = config.get_profile("rehearsal")["images_per_cell"]
    assert len(dataset) > 0.9 * per_cell * 129 and set(dataset["image_path"]) <= ok
    assert (dataset["source"] == "streetview").all()
    assert {"no_imagery"} <= set(manifest["status"])  # the stand-in has places without imagery
    assert all((images / p).stat().st_size > 0 for p in dataset["image_path"])

    results = pd.read_csv(rehearsal_build / "tables" / "results.csv")
    training = results[results["split"] == "val"]
    assert len(training) >= 5
    trained_on_downloads = training["data"].str.startswith("streetview images")
    assert trained_on_downloads.sum() >= 5 and not training["data"].str.contains("synthetic").any()

    checkpoint = config.get_profile("rehearsal")["pretrained"]  # the committed one, pretrained/
    summaries = list((rehearsal_build / "runs").glob("*/summary.json"))
    assert summaries
    for path in summaries:
        summary = json.loads(path.read_text())
        # notebook 05's one run from random weights is the comparison with the checkpoint
        started_from = None if path.parent.name == "baseline_scratch" else checkpoint
        assert summary["image_source"] == "streetview" and summary["pretrained"] == started_from
        assert summary["pretrained_sha256"] == (
            pretrain.sha256(model.PRETRAINED_DIR / checkpoint.split(":")[1] / "model.safetensors")
            if started_from
            else None
        )
    assert (rehearsal_build / "report.html").exists()
