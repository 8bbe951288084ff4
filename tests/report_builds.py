"""Hand-made builds for the scorecard's tests: results rows, per-image predictions, summaries
and facts written with the workbook's own writers into the build folder of the test
(``WORKBOOK_BUILD_DIR``, the ``isolated_build`` fixture). Nothing is trained.

:func:`synthetic_build` is a smoke build in which every claim has its rows and each rule says
"reproduced" (or, where the world was built for it, "by design"); a test changes one thing
and reads the verdict again.
"""

import json

import numpy as np
import pandas as pd

from helpers import config, experiments, metrics, report

DATA = "synthetic images"  # experiments.data_label("smoke")
PHOTOS = "mapillary images"  # experiments.data_label("mapillary")
N_IMAGES = 400  # validation images of every hand-made run
PHOTO_IMAGES = 3000  # enough for an accuracy level to be pinned within the report's 2 points


def write_predictions(profile, experiment, top1, centroid_km=80.0, train_top1=None, offset=0, n=N_IMAGES):
    """Per-image files of one run: ``round(top1 * n)`` validation images right (from ``offset`` on,
    so seeds differ in which images they get), wrong ones ``centroid_km`` apart on average."""
    folder = config.output_dir(profile, "runs") / experiment
    folder.mkdir(parents=True, exist_ok=True)
    right = np.zeros(n, dtype=int)
    right[(offset + np.arange(round(top1 * n))) % n] = 1
    wrong = n - right.sum()
    centroid = np.where(right == 1, 0.0, centroid_km * n / wrong if wrong else 0.0)
    val = pd.DataFrame(
        {
            "image_path": [f"val/{i}.png" for i in range(n)],
            "cell": 0,
            "predicted": 1 - right,
            "correct": right,
            "in_top3": right,
            "error_km": centroid + 5.0,
            "centroid_km": centroid,
            "random_centroid_km": 150.0,
        }
    )
    experiments.write_predictions(folder, "val", val)
    if train_top1 is not None:
        train_right = np.zeros(2 * n, dtype=int)
        train_right[(offset + np.arange(round(train_top1 * 2 * n))) % (2 * n)] = 1
        train = pd.DataFrame(
            {"image_path": [f"train/{i}.png" for i in range(2 * n)], "cell": 0, "predicted": 1 - train_right}
        ).assign(correct=train_right)
        experiments.write_predictions(folder, "train", train)
    return float(val["correct"].mean()), float(val["centroid_km"].mean())


def record_run(
    profile, experiment, top1, data=DATA, seed=0, centroid_km=80.0, train_top1=None, offset=0, n=N_IMAGES
):
    """A validation row of the results table and the per-image files behind it."""
    top1, centroid = write_predictions(profile, experiment, top1, centroid_km, train_top1, offset, n)
    write_summary(profile, experiment, seed=seed, val={"top1": top1, "centroid_mean_km": centroid})
    metrics.record_result(
        profile,
        experiment,
        data=data,
        split="val",
        seed=seed,
        top1=top1,
        train_top1=train_top1 if train_top1 is not None else top1,
        mean_km=centroid + 5.0,
        centroid_mean_km=centroid,
    )


def record_runs(profile, name, top1, train_top1=None, centroid_km=None, data=DATA, n=N_IMAGES):
    """Runs ``<name>_seed<k>`` (``name`` alone when it is notebook 05's "baseline", seed 0)."""
    for seed, value in enumerate(top1):
        experiment = "baseline" if name == "baseline" and seed == 0 else f"{name}_seed{seed}"
        record_run(
            profile,
            experiment,
            value,
            data=data,
            seed=seed,
            centroid_km=(centroid_km or [80.0] * len(top1))[seed],
            train_top1=(train_top1 or [None] * len(top1))[seed] if train_top1 else value,
            offset=7 * seed,
            n=n,
        )


def write_summary(profile, name, **settings):
    """Add ``settings`` to run ``name``'s summary.json (as run_experiment writes it)."""
    path = config.output_dir(profile, "runs") / name / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(path.read_text()) if path.exists() else {"name": name}
    path.write_text(json.dumps({**summary, **settings}))


def add_loss(profile, loss, top1, km=40.0):
    record_run(profile, f"loss_{loss}", top1, centroid_km=km)


def write_sky_attention(profile, shortcut, control, n=100, spread=0.1, pixels=None):
    """Test predictions of runs leak_1.0 and leak_0.0 on the same places, with each image's share of
    attention on the sky around ``shortcut`` and ``control`` (a seeded spread), and, if ``pixels`` is
    given, each image's share of sky pixels (as notebook 09 records them)."""
    rng = np.random.default_rng(1)
    places = pd.DataFrame({"image_path": [f"test/{i}.png" for i in range(n)], "cell": np.arange(n) % 7})
    for run, mean in (("leak_1.0", shortcut), ("leak_0.0", control)):
        folder = config.output_dir(profile, "runs") / run
        folder.mkdir(parents=True, exist_ok=True)
        shares = np.clip(mean + spread * rng.standard_normal(n), 0, 1)
        table = places.assign(predicted=places["cell"], correct=1, sky_attention=shares)
        if pixels is not None:
            table["sky_pixels"] = pixels
        experiments.write_predictions(folder, "test", table)


def add_frozen(
    profile, top1, budget=4, base_budget=4, data=DATA, n=N_IMAGES, pretrained="workbook:street-mae-vit"
):
    """Notebook 05's frozen run, tuned over ``budget`` runs, against a base model tuned over
    ``base_budget``."""
    record_run(profile, "frozen", top1, data=data, n=n)
    tuning = {
        "grid": {"learning_rate": [1e-3, 3e-3]},
        "chosen": {"learning_rate": 3e-3},
        "budget_runs": budget,
    }
    write_summary(profile, "frozen", freeze_backbone=True, pretrained=pretrained, tuning=tuning)
    metrics.record_facts(profile, base_model_tuning_runs=base_budget)


def synthetic_build(profile="smoke"):
    """A build in which every claim has its rows, and each rule says "reproduced" (claim 16: "by
    design"; claims 9-11 not testable: no frozen run, and the images are not photographs)."""
    metrics.record_result(
        profile, "random cell", data="report locations", split="all", top1=1 / 129, mean_km=136.0
    )
    record_runs(profile, "baseline", [0.10, 0.11, 0.12], train_top1=[0.50, 0.52, 0.54])
    record_runs(profile, "augment", [0.20, 0.21, 0.22])  # +10 points
    record_runs(profile, "betas", [0.10, 0.12, 0.11])
    record_runs(profile, "warmup", [0.11, 0.10, 0.12])
    record_runs(profile, "final", [0.30, 0.3025, 0.305], centroid_km=[40.0, 41.0, 42.0])  # +9 over augment
    # one seed each: loss (1) as accurate as cross-entropy and closer; loss (2) more accurate than (1)
    for loss, top1, km in (
        ("expected_distance_squared", 0.30, 20.0),
        ("distance_plus_cross_entropy", 0.45, 40.0),
        ("log_distance", 0.30, 40.0),
        ("log_distance_plus_cross_entropy", 0.30, 40.0),
    ):
        record_run(profile, f"loss_{loss}", top1, centroid_km=km)
        write_summary(profile, f"loss_{loss}", loss=loss)
    metrics.record_result(profile, "best run (final_seed0)", data=DATA, split="test", top1=0.3, mean_km=45.0)
    metrics.record_facts(
        profile,
        neighbour_error_share=0.4,
        neighbour_error_chance=0.05,
        test_errors=400,
        neighbour_pairs=100,
        neighbour_pairs_higher=80,
        area_accuracy_spearman=-0.3,
        area_accuracy_p=0.001,
        cells_tested=129,
        sky_attention_share=0.5,
        sky_pixel_share=0.3,
        sky_attention_leak_0=0.3,
        sky_attention_leak_1=0.6,
        new_day_drop_leak_1=0.2,
        new_day_drop_leak_0=0.0,
    )
    write_sky_attention(profile, shortcut=0.6, control=0.3)
    return profile


def photo_build(final=(0.37, 0.37, 0.38), centroid_km=(60.0, 61.0, 62.0), frozen=0.10):
    """A mapillary build (real photos) for the claims about one absolute number."""
    record_runs("mapillary", "final", list(final), centroid_km=list(centroid_km), data=PHOTOS, n=PHOTO_IMAGES)
    add_frozen(
        "mapillary", frozen, data=PHOTOS, n=PHOTO_IMAGES, pretrained="hf://google/vit-base-patch16-224"
    )
    return "mapillary"


def leak0_runs(profile="smoke", baseline=0.10, augment=0.20, final=0.30, frozen=0.02):
    """The one-seed counterparts at session_leak 0 (notebooks 05-06)."""
    for name, top1 in (("baseline", baseline), ("augment", augment), ("final", final), ("frozen", frozen)):
        record_run(profile, f"{name}_leak0", top1, train_top1=top1 + 0.3 if name == "baseline" else None)
    write_summary(profile, "frozen_leak0", freeze_backbone=True, pretrained="workbook:street-mae-vit")


def verdicts(profile) -> dict:
    """Claim number -> verdict of the scorecard of ``profile``."""
    card = report.scorecard(profile)
    return dict(zip(card["claim"].str.split(".").str[0].astype(int), card["verdict"], strict=True))


def card_of(profile) -> pd.DataFrame:
    """The scorecard indexed by claim number, no-break spaces made plain."""
    card = report.scorecard(profile).replace("\u00a0", " ", regex=True)
    return card.set_index(card["claim"].str.split(".").str[0].astype(int))
