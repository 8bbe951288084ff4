"""The regenerated report as a list of blocks: the original's sections, this build's numbers.

:func:`document` returns the blocks that :mod:`helpers.report.html` renders as one HTML page
and :mod:`helpers.report.typst` as an A4 PDF:

* ``("heading", level, text)``, ``("paragraph", text)``, ``("bullets", [text, ...])``
* ``("table", DataFrame of strings, caption)``, ``("figure", path, label, caption)``
* ``("links", [(text, relative path), ...])``, ``("equations", [{"typst", "text", "explanation"}, ...])``

A table's or figure's caption starts with its label ("Table 2.", "Figure B1"): the renderings
number them with it. Every number in the text is read from the build; the only numbers typed
here are the original report's own (:data:`helpers.report.build.PUBLISHED`), labelled as such.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from helpers import experiments, metrics
from helpers.report import words
from helpers.report.build import as_build, best_name, best_test_row, published, row
from helpers.report.claims import scorecard
from helpers.report.contents import EXTRA_FIGURES, FIGURES, LOSS_EQUATIONS, history_figure
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


def _model_text(settings: dict) -> str:
    shape = (
        f"{words.plural(settings['vit_layers'], 'layer')} of width {settings['vit_width']} with "
        f"{settings['vit_heads']} heads, {settings['patch_size']} px patches of {settings['image_size']} px "
        "images"
    )
    if settings.get("pretrained"):
        return f"a ViT loaded from {settings['pretrained']} ({shape}) and fine-tuned"
    return f"a small ViT trained from scratch ({shape})"


def _short_model(settings: dict) -> str:
    kind = "pretrained" if settings.get("pretrained") else "from scratch"
    return f"a {settings['vit_layers']}-layer ViT ({kind}, {settings['image_size']} px)"


def _shown(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``table`` as text: fractions as percent, km rounded, blanks for missing."""

    def text(column, value):
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return ""
        if column in {"top1", "top3", "train_top1"} or column.startswith("within_"):
            return words.pct(float(value))
        if column.endswith("_km"):
            return f"{float(value):,.1f}"
        if column == "seed":
            return str(int(float(value)))
        return str(value)

    present = [c for c in columns if c in table]
    return pd.DataFrame({c: [text(c, v) for v in table[c]] for c in present})


def _h(level: int, text: str) -> tuple:
    return ("heading", level, text)


def _p(text: str) -> tuple:
    return ("paragraph", text)


def _t(table: pd.DataFrame, caption: str) -> tuple:
    return ("table", table, caption)


def document(profile: str | dict) -> list[tuple]:
    """The report of ``build/<profile>/`` as a list of blocks (see the comment above :data:`FIGURES`)."""
    build = as_build(profile)
    card = scorecard(build)
    return [
        *_damage_banner(build),
        *_abstract(build, card),
        *_data_section(build),
        *_method_section(build),
        *_results_section(build, card),
        _h(1, "4 Discussion"),
        *(_p(text) for text in _discussion(card, build)),
        *_beyond_section(build),
        *_appendix(build),
    ]


def _damage_banner(build: dict) -> list[tuple]:
    """Before anything else: a damaged build says so, file by file, and that nothing was judged."""
    if not build.get("damaged"):
        return []
    return [
        _p(
            f"This build is damaged: {words.plural(len(build['damaged']), 'table')} cannot be trusted, so no "
            "claim is judged on it (every row of Table 1 says “damaged”). Rebuild what is listed, then write "
            "the report again:"
        ),
        ("bullets", list(build["damaged"])),
    ]


def verdict_tally(card: pd.DataFrame) -> str:
    """The verdicts of a scorecard, counted, in the order of :data:`VERDICTS` ("9 reproduced, ...")."""
    counts = card["verdict"].value_counts()
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts.get(v, 0))


def _abstract(build: dict, card: pd.DataFrame) -> list[tuple]:
    settings, results = build["profile"], build["results"]
    best, random = best_test_row(results), row(results, "random cell", "all")
    blocks = [
        _h(1, "Abstract"),
        _p(
            "The original report (Csizmadia and Głowaczewski, Aarhus University, 2023) fine-tuned a "
            f"pretrained Vision Transformer to tell which of {published('n_cells')} Danish geocells a Street "
            f"View photo was taken in, and reported {words.pct(published('final_top1'), 0)} top-1 accuracy "
            f"and a mean error of {words.km(published('final_mean_km'))} between the predicted and the true "
            f"cell's centroids. This document repeats its pipeline in the workbook's {settings['name']} "
            f"profile ({settings['description']}): {_sizes_sentence(build['sizes'], build['data'])} The "
            f"model is {_model_text(settings)}."
        ),
    ]
    if best is None:
        blocks.append(
            _p("The best run's test accuracy is not in this build's tables (notebook 08 has not run).")
        )
    else:
        against = f" against {words.km(random['mean_km'])} for a random cell" if random is not None else ""
        centroid = best.get("centroid_mean_km")
        between = (
            f"{words.km(centroid)} between the predicted and the true cell's centroids (the report's "
            "measure) and "
            if words.finite(centroid)
            else ""
        )
        blocks.append(
            _p(
                f"The best run ({best_name(best)}) placed {words.pct(best['top1'])} of the test images in "
                f"the right cell, with a mean error of {between}{words.km(best['mean_km'])} to where the "
                f"photos were taken{against}."
            )
        )
    return [*blocks, _p(f"Of the report's {len(card)} claims scored in Table 1: {verdict_tally(card)}.")]


def _data_section(build: dict) -> list[tuple]:
    sizes, settings = build["sizes"], build["profile"]
    locations = sizes.get("locations")
    if locations:
        found = (
            f"reads {words.count(locations)} locations in {words.count(sizes.get('municipalities', 0))} "
            "municipalities (geocells/locations.csv)."
        )
    else:
        found = "has no geocells/locations.csv: the number of locations is missing (run notebooks 01-02)."
    blocks = [
        _h(1, "1 Data"),
        _h(2, "1.1 Locations"),
        _p(
            f"The report sampled {words.count(published('addresses_sampled'))} addresses from OpenAddresses, "
            f"{published('per_cell')} per geocell, in proportion to where people live (its §3.1). This build "
            f"{found} Figure 1 counts them per municipality."
        ),
        _h(2, "1.2 Geocells"),
    ]
    if sizes.get("cells"):
        points, area = sizes.get("n_points", {}), sizes.get("area_km2", {})
        text = (
            f"Large municipalities are split by K-means until there are {sizes['cells']} cells (the report: "
            f"{published('n_cells')})."
        )
        if points:
            text += (
                f" A cell holds between {points['min']:,.0f} and {points['max']:,.0f} locations (median "
                f"{points['50%']:,.0f})"
            )
        if area:
            text += (
                f"{',' if points else ' A cell'} covers between {area['min']:,.1f} and "
                f"{area['max']:,.0f} km² (median {area['50%']:,.0f} km²)"
            )
        blocks.append(_p(text + " (geocells/geocells.geojson). Figure 2 shows them."))
    else:
        blocks.append(
            _p("The number of geocells is missing: no geocells/geocells.geojson (run notebook 02).")
        )
    blocks += [
        _h(2, "1.3 Images"),
        _p(
            f"The report downloaded Street View images and cropped them to {published('image_px')} px. "
            + _images_sentence(sizes, build["data"], settings)
        ),
    ]
    if not build["real_photos"]:
        blocks.append(
            _p(
                "The images are synthetic scenes drawn by the workbook from each location's geography "
                "(notebook 03): buildings, vegetation and colours vary with the place, the sky with the "
                "capture session. They hold cues to learn, as photos do, but they are not photographs, so "
                "absolute accuracies cannot be compared with the report's."
            )
        )
    return blocks


def _method_section(build: dict) -> list[tuple]:
    return [
        _h(1, "2 Method"),
        _h(2, "2.1 Model"),
        _p(
            "The report fine-tuned google/vit-base-patch16-224 with a softmax classifier over the geocells. "
            f"This build uses {_model_text(build['profile'])}, with one softmax output per geocell."
        ),
        _h(2, "2.2 Training"),
        _p(_training_sentence(build)),
        _h(2, "2.3 Experiments"),
        _p("Each group of runs changes one thing against the base model; Table 0 lists this build's runs."),
        _t(_experiments_table(build), "Table 0. The runs of this build, by notebook."),
        _h(2, "2.4 How the claims are scored"),
        _p(
            "Every comparison of runs has a 95 % Student-t interval for the difference of their mean "
            "validation scores over seeds. It is paired on the same validation images: its standard error "
            "adds each setting's seed variance over its seeds and the variance of the per-image differences, "
            "with Welch-Satterthwaite degrees of freedom (helpers/statistics.py, notebook 06). A setting "
            "trained once borrows the seed noise of one run from the final runs; when both sides borrow it, "
            "the one estimate keeps its own degrees of freedom."
        ),
        _p(
            "Each claim gets one of seven verdicts, always with its reason. Reproduced: the interval lies on "
            "the report's side of zero and, where the report gives a size, reaches it. Not reproduced: it "
            "lies on the other side of zero, or stops short of the report's size (an effect that large would "
            "have shown). Inconclusive: it holds zero (and the report's size): the build cannot tell; the "
            "reason gives the smallest difference the build could have called beyond the noise (the "
            "interval's half-width) and what would settle it (how many times the seeds, or the seeds and "
            "images). By design: the rule holds, but because the workbook chose a setting or built its world "
            "so that it would; the reason names the choice. Not testable: these data cannot test the claim; "
            "the reason says what data would. Missing: the build lacks the rows the rule reads. Damaged: a "
            "table the rule reads cannot be trusted; it is named, with how to rebuild it, and nothing is "
            "judged. A claim that something did not help needs an interval that rules out the smallest gain "
            "the report calls help; claims about one number, and the others, follow the rules listed with "
            "Table 1."
        ),
        _p(
            "The leak-0 column repeats the accuracy claims (1-4, 9) on runs trained where the sky says "
            "nothing about the place (session_leak 0), one seed each with the final runs' seed noise: a "
            "verdict that holds here but not there rests on the capture-session shortcut."
        ),
        *_losses_section(build),
    ]


def _losses_section(build: dict) -> list[tuple]:
    """§2.5: the distance-aware losses of the report's §3.3 as equations, with this build's settings."""
    runs = build["runs"]
    trained = sorted(name for name in runs if name.startswith("loss_"))
    weights = sorted({runs[name].get("ce_weight") for name in trained} - {None})
    tau = next((runs[name]["tau_km"] for name in trained if runs[name].get("tau_km")), None)
    settings = []
    if weights:
        settings.append("lambda = " + ", ".join(f"{w:g}" for w in weights))
    if tau:
        settings.append(f"tau = {tau:g} km")
    here = (
        f"This build trained {words.plural(len(trained), 'run')} with them ({', '.join(trained)}; "
        + ("; ".join(settings) or "settings not recorded")
        + "), listed in Table 4."
        if trained
        else "This build has no runs with them (notebook 07 has not run)."
    )
    return [
        _h(2, "2.5 The distance-aware losses"),
        _p(
            "The report's §3.3 puts the distance between cells into the loss. Below, p_i is the model's "
            "probability of cell i among the n cells, t the true cell, and d(i, t) the distance between the "
            "centroids of cells i and t, divided by the largest such distance (the authors' notebook does so "
            "before training; the report's equations leave the scale open). Cross-entropy is weighted by "
            f"lambda, 1 in the report. {here}"
        ),
        ("equations", LOSS_EQUATIONS),
    ]


def _results_section(build: dict, card: pd.DataFrame) -> list[tuple]:
    results, settings = build["results"], build["profile"]
    blocks = [
        _h(1, "3 Results"),
        _h(2, "3.1 The scorecard"),
        _p(f"The verdicts: {verdict_tally(card)}."),
        _t(
            card[["claim", "compares", "this build", "leak 0", "verdict", "reason"]],
            "Table 1. Each claim of the original report: the two quantities its rule compares, both as "
            "measured here, the same comparison at session_leak 0 (accuracy claims, one seed), the verdict "
            "and its reason.",
        ),
        _p("The report's own number, the data and the rule, claim by claim:"),
        (
            "bullets",
            [
                f"{claim.claim.split('.')[0]}. The report: {claim.report}. Data: {claim.data}. Rule: "
                f"{claim.rule}."
                for claim in card.itertuples()
            ],
        ),
        _h(2, "3.2 Test accuracy and distance"),
    ]
    tested = results[results["split"].isin(["all", "test", "test_new_day"])]
    if tested.empty:
        blocks.append(_p("No baselines or test rows in this build's results table (notebooks 04 and 08)."))
    else:
        columns = ["experiment", "data", "split", "top1", "top3", "mean_km", "median_km", "within_25km"]
        blocks += [
            _p("The baselines need no model (notebook 04); the best run is scored once on the test split."),
            _t(_shown(tested, [*columns, "within_200km"]), "Table 2. Baselines and test results."),
        ]
    blocks.append(_h(2, "3.3 Training runs"))
    seeds = experiments.seed_scores(results, build["data"])
    if seeds.empty:
        blocks.append(_p("No seed runs of notebook 06 in this build."))
    else:
        caption = "Table 3. Notebook 06's configurations over seeds, validation split: mean ± sd."
        blocks.append(_t(_seed_table(seeds), caption))
    others = results[
        (results["split"] == "val") & results["experiment"].astype(str).str.match(r"^(loss_|leak_)|.*_leak0$")
    ]
    if not others.empty:
        columns = ["experiment", "data", "top1", "top3", "mean_km", "median_km", "train_top1"]
        caption = (
            "Table 4. Distance losses (notebook 07), sky-shortcut runs (notebook 09) and the runs at "
            "session_leak 0 (notebooks 05-06, one seed), validation split."
        )
        blocks.append(_t(_shown(others, columns), caption))
    blocks.append(_h(2, "3.4 Figures 1-9 of the original, regenerated"))
    history_path, history_run = history_figure(build)
    figures = build["root"] / "figures"
    fill = {
        "model": _short_model(settings),
        "data": build["data"],
        "epochs": words.plural(settings["epochs"], "epoch"),
        "run": history_run,
        "report_epochs": published("epochs"),
    }
    missing = []
    for number, file, caption, difference in FIGURES:
        path = history_path if number == "5-6" else figures / file
        label = f"Figure{'s' if '-' in number else ''} {number}"
        if path is None or not path.exists():
            missing.append(f"{label} ({file})")
            continue
        text = f"{caption.format(**fill)} {difference.format(**fill)}"
        blocks.append(("figure", path, label, text))
    if missing:
        blocks.append(
            _p("Not in this build (the notebook that draws it has not run): " + "; ".join(missing) + ".")
        )
    maps = sorted((build["root"] / "maps").glob("*.html"))
    if maps:
        blocks += [
            _h(2, "3.5 Interactive maps"),
            _p("Maps to open in a browser; they sit next to this file, in maps/:"),
            ("links", [(path.stem.replace("_", " "), f"maps/{path.name}") for path in maps]),
        ]
    return blocks


def _beyond_section(build: dict) -> list[tuple]:
    results, figures = build["results"], build["root"] / "figures"
    blocks = [_h(1, "5 Beyond the report"), _h(2, "5.1 Further figures of this build")]
    extra = [(file, caption) for file, caption in EXTRA_FIGURES if (figures / file).exists()]
    for letter, (file, caption) in enumerate(extra, start=1):
        blocks.append(("figure", figures / file, f"Figure B{letter}", caption))
    if not extra:
        blocks.append(_p("None in this build."))
    blocks.append(_h(2, "5.2 Future work (notebooks 11 and 12)"))
    future = results[results["experiment"].str.match(r"^(beyond|future): ")]
    future_figures = sorted(figures.glob("fig11*.png")) + sorted(figures.glob("fig12*.png"))
    if future.empty and not future_figures:
        blocks.append(_p("No results of notebooks 11 or 12 in this build."))
    if not future.empty:
        columns = ["experiment", "data", "split", "top1", "top3", "mean_km", "median_km", "notes"]
        caption = "Table 5. The report's future-work ideas, tried: the rows named beyond: and future:."
        blocks.append(_t(_shown(future, columns), caption))
    for number, path in enumerate(future_figures, start=1):
        topic = path.stem.split("_", 1)[-1].replace("_", " ")
        blocks.append(("figure", path, f"Figure C{number}", f"Notebook {path.stem[3:5]}: {topic}."))
    return blocks


def _appendix(build: dict) -> list[tuple]:
    results, facts = build["results"], build["facts"]
    blocks = [_h(1, "Appendix: the results table")]
    if results.empty:
        return [*blocks, _p("The results table of this build is empty.")]
    accuracy = ["experiment", "data", "split", "seed", "top1", "top3", "train_top1", "notes"]
    distance = [
        "experiment",
        "split",
        "mean_km",
        "median_km",
        *[f"within_{t}km" for t in metrics.THRESHOLDS_KM],
    ]
    blocks += [
        _t(_shown(results, accuracy), "Table A1. Every row of tables/results.csv: accuracies."),
        _t(_shown(results, distance), "Table A2. The same rows: distances (km) and the shares within them."),
    ]
    if facts:
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in facts.values()]
        blocks.append(
            _t(pd.DataFrame({"fact": list(facts), "value": values}), "Table A3. tables/facts.json.")
        )
    return blocks


def _sizes_sentence(sizes: dict, data: str) -> str:
    parts = []
    if sizes.get("cells"):
        parts.append(f"{sizes['cells']} geocells")
    if sizes.get("locations"):
        parts.append(f"from {words.count(sizes['locations'])} locations")
    if sizes.get("images"):
        parts.append(f"and {words.count(sizes['images'])} {data}")
    if not parts:
        return "the sizes of its data are missing (notebooks 01-03 have not run)."
    return " ".join(parts) + "."


def _images_sentence(sizes: dict, data: str, settings: dict) -> str:
    if not sizes.get("images"):
        return "This build's image table is missing (images/dataset.csv; run notebook 03)."
    splits = sizes.get("splits", {})
    per_cell = sizes.get("images_per_cell", {})
    text = (
        f"This build uses {words.count(sizes['images'])} {data} of {settings['image_size']} px"
        + (f", {per_cell['50%']:,.0f} per cell (median)" if per_cell else "")
        + ": "
        + ", ".join(f"{words.count(splits.get(s, 0))} {s}" for s in ("train", "val", "test"))
        + " (images/dataset.csv)."
    )
    if sizes.get("new_day_images"):
        text += (
            f" The {words.count(sizes['new_day_images'])} test places were also rendered on a second capture "
            "day (images/dataset_new_day.csv)."
        )
    return text


def _training_sentence(build: dict) -> str:
    settings, runs = build["profile"], build["runs"]
    # a summary without its settings (hand-written, or of an older build) counts as missing
    base, final = (
        runs.get(name) if "betas" in runs.get(name, {}) else None for name in ("baseline", "final_seed0")
    )
    epochs = (base or final or {}).get("epochs", settings["epochs"])
    text = (
        f"The report trained for {published('epochs')} epochs, batch {published('batch_size')}, learning "
        f"rate {published('learning_rate'):g} and weight decay {published('weight_decay'):g}. This build: "
        f"{words.plural(epochs, 'epoch')}, batch {settings['batch_size']}, peak learning rate "
        f"{settings['learning_rate']:g}, weight decay {settings['weight_decay']:g}, AdamW with linear decay. "
    )
    if base:
        text += (
            f"The base model (notebook 05) has no augmentation and no warm-up, betas "
            f"{'/'.join(f'{b:g}' for b in base['betas'])}. "
        )
    else:
        text += "The base model's settings are missing (runs/baseline/summary.json; notebook 05). "
    if final:
        text += (
            f"The final configuration adds RandAugment ({settings['randaugment_ops']} operations at "
            f"magnitude {settings['randaugment_factor']:g}; the report {published('randaugment_ops')} at "
            f"{published('randaugment_magnitude'):g}), warm-up and betas "
            f"{'/'.join(f'{b:g}' for b in final['betas'])}. "
        )
    else:
        text += (
            "The final configuration's settings are missing (runs/final_seed0/summary.json; notebook 06). "
        )
    return text + (
        "Every run keeps the epoch with the best validation top-1 accuracy, and its training accuracy is "
        "measured on a clean pass over the training images."
    )


def _experiments_table(build: dict) -> pd.DataFrame:
    results = build["results"]
    val = results[results["split"] == "val"]
    groups = [
        ("04", "baselines without a model", results[results["split"] == "all"]),
        ("05", "the base model", val[val["experiment"] == "baseline"]),
        (
            "06",
            "baseline, augment, betas, warmup, final over seeds",
            val[val["experiment"].str.contains(r"_seed\d+$")],
        ),
        (
            "05-06",
            "the accuracy runs again at session_leak 0, one seed",
            val[val["experiment"].astype(str).str.endswith("_leak0")],
        ),
        ("07", "distance-aware losses", val[val["experiment"].str.startswith("loss_")]),
        ("08", "the best run on the test split", results[results["experiment"].str.startswith("best run")]),
        ("09", "sky-shortcut runs (session_leak)", val[val["experiment"].str.startswith("leak_")]),
        (
            "11-12",
            "beyond the report, future work",
            results[results["experiment"].str.match(r"^(beyond|future): ")],
        ),
    ]
    return pd.DataFrame(
        [
            {
                "notebook": notebook,
                "what": what,
                "rows": str(len(rows)),
                "experiments": ", ".join(rows["experiment"].astype(str)) or "none in this build",
            }
            for notebook, what, rows in groups
        ]
    )


def _seed_table(seeds: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for run in [r for r in experiments.SEED_CONFIGURATIONS if r in set(seeds["run"])]:
        part = seeds[seeds["run"] == run]

        def spread(column, part=part):
            sd = part[column].std() if len(part) > 1 else math.nan
            return words.pct(part[column].mean()) + (f" ± {100 * sd:.1f}" if np.isfinite(sd) else "")

        rows.append(
            {
                "configuration": run,
                "seeds": ", ".join(str(s) for s in sorted(part["seed"])),
                "validation top-1": spread("top1"),
                "train top-1": spread("train_top1"),
                "gap": spread("gap"),
                "mean km": f"{part['mean_km'].mean():,.1f}",
            }
        )
    return pd.DataFrame(rows)


def _discussion(card: pd.DataFrame, build: dict) -> list[str]:
    settings = build["profile"]
    paragraphs = []
    openings = {
        REPRODUCED: "Reproduced on this build",
        NOT_REPRODUCED: "Not reproduced",
        INCONCLUSIVE: "Inconclusive (this build cannot tell; Table 1 says what would settle each)",
        BY_DESIGN: "Holding by design (the workbook chose it so; not evidence for the report)",
        NOT_TESTABLE: "Not testable on these data",
        MISSING: "Missing from this build",
        DAMAGED: "Not judged, the build being damaged",
    }
    for verdict in VERDICTS:
        claims = card.loc[card["verdict"] == verdict, "claim"]
        if len(claims):
            paragraphs.append(f"{openings[verdict]}: " + "; ".join(claims) + ".")
    if build["real_photos"]:
        paragraphs.append(
            f"These verdicts were measured on {build['data']} with {_short_model(settings)}, so they bear on "
            "the report directly, within the limits of this profile's size and training time."
        )
    else:
        paragraphs.append(
            f"These verdicts are about the workbook's synthetic world and {_short_model(settings)}, not "
            "about Street View. An effect that needs a large pretrained model overfitting on real photos "
            "(augmentation, the schedule) may fail here for reasons that say nothing about the report; the "
            "full profile is where the report's own numbers can be put to the test. What does transfer is "
            "the method: several seeds, a noise rule, and a baseline next to every number."
        )
    if settings["epochs"] <= 1:
        paragraphs.append(
            f"This profile trains for {settings['epochs']} epoch: it checks that the pipeline runs end to "
            "end, and a model this short-trained is not expected to learn; read its verdicts as a dry run."
        )
    return paragraphs


# ---------------------------------------------------------------------------------------------
# Rendering: HTML through the Jinja2 template (helpers.report_html), PDF through Typst (helpers.report_typst)


def title(build: dict) -> tuple[str, str]:
    """The report's title and subtitle (profile, description, when it was built, UTC)."""
    settings = build["profile"]
    return (
        "Image geolocation in Denmark with Vision Transformers, regenerated",
        f"A reproduction of Csizmadia and Głowaczewski (2023) by the workbook. Profile {settings['name']}: "
        f"{settings['description']}. Built {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    )
