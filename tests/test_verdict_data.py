"""What notebooks 05-09 record for the scorecard's verdicts: a tuned run kept by validation,
the counterparts at session_leak 0, and the base model's learning-rate search."""

import json

import pandas as pd
import pytest

from helpers import config, experiments, metrics, model


def finished_candidate(profile, run, top1, mean_km, marker):
    """A finished run's folder as run_experiment leaves it, with ``marker`` in its checkpoint file."""
    folder = model.run_dir(profile, run)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.keras").write_text(marker)
    (folder / "backup").mkdir(exist_ok=True)  # a resumable run's state: not part of a finished run
    (folder / "backup" / "training_metadata.json").write_text("{}")
    pd.DataFrame({"epoch": [0], "val_accuracy": [top1]}).to_csv(folder / "history.csv", index=False)
    experiments.write_predictions(folder, "val", pd.DataFrame({"image_path": ["a", "b"], "correct": [1, 0]}))
    model.write_summary(
        folder,
        {
            "name": run,
            "profile": "smoke",
            "freeze_backbone": True,
            "seed": 0,
            "val": {"top1": top1, "mean_km": mean_km, "train_top1": top1 + 0.1},
        },
    )
    return run


def test_the_best_candidate_by_validation_becomes_the_run_with_its_tuning(isolated_build):
    grid = {"learning_rate": [1e-4, 3e-4, 1e-3]}
    candidates = {
        finished_candidate("smoke", "frozen_tuning_a", 0.10, 200.0, "a"): {"learning_rate": 1e-4},
        finished_candidate("smoke", "frozen_tuning_b", 0.30, 150.0, "b"): {"learning_rate": 3e-4},
        # the same top-1 as b, closer on average: the tie goes to it (the rule of best_run)
        finished_candidate("smoke", "frozen_tuning_c", 0.30, 120.0, "c"): {"learning_rate": 1e-3},
    }
    kept = experiments.keep_best_candidate("smoke", "frozen", candidates, grid)

    folder = model.run_dir("smoke", "frozen")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["name"] == "frozen" and summary["val"]["mean_km"] == 120.0
    assert summary["tuning"] == {"grid": grid, "chosen": {"learning_rate": 1e-3}, "budget_runs": 3}
    assert (folder / "best.keras").read_text() == "c"
    assert not (folder / "backup").exists()
    assert experiments.load_predictions("smoke", "frozen")["correct"].tolist() == [1, 0]
    row = metrics.load_results("smoke").set_index("experiment").loc["frozen"]
    assert row["top1"] == 0.30 and row["data"] == experiments.data_label("smoke") and row["split"] == "val"
    assert kept["tuning"] == summary["tuning"] and kept["candidates"].loc["frozen_tuning_a", "top1"] == 0.10
    assert list(kept["history"]["val_accuracy"]) == [0.30]
    # nothing staged is left beside runs/, and the candidates are untouched
    assert not [path for path in config.build_dir("smoke").iterdir() if path.name.startswith(".frozen")]
    assert (model.run_dir("smoke", "frozen_tuning_c") / "backup").exists()


def test_keeping_again_replaces_the_earlier_run_whole(isolated_build):
    grid = {"learning_rate": [1e-4, 1e-3]}
    candidates = {
        finished_candidate("smoke", "frozen_tuning_a", 0.10, 200.0, "a"): {"learning_rate": 1e-4},
        finished_candidate("smoke", "frozen_tuning_b", 0.20, 150.0, "b"): {"learning_rate": 1e-3},
    }
    experiments.keep_best_candidate("smoke", "frozen", candidates, grid)
    (model.run_dir("smoke", "frozen") / "left_over.txt").write_text("from the earlier tuning")
    finished_candidate("smoke", "frozen_tuning_a", 0.40, 90.0, "a, trained again")
    experiments.keep_best_candidate("smoke", "frozen", candidates, grid)
    folder = model.run_dir("smoke", "frozen")
    assert (folder / "best.keras").read_text() == "a, trained again"
    assert not (folder / "left_over.txt").exists()
    assert json.loads((folder / "summary.json").read_text())["tuning"]["chosen"] == {"learning_rate": 1e-4}
    assert metrics.load_results("smoke").query("experiment == 'frozen'")["top1"].tolist() == [0.40]


def test_a_missing_candidate_is_named_and_nothing_is_written(isolated_build):
    candidates = {
        finished_candidate("smoke", "frozen_tuning_a", 0.1, 200.0, "a"): {"learning_rate": 1e-4},
        "frozen_tuning_never_trained": {"learning_rate": 1e-3},
    }
    with pytest.raises(LookupError, match="frozen_tuning_never_trained"):
        experiments.keep_best_candidate("smoke", "frozen", candidates, {"learning_rate": [1e-4, 1e-3]})
    assert not model.run_dir("smoke", "frozen").exists()


def test_an_empty_or_unknown_grid_is_refused_before_training(isolated_build):
    with pytest.raises(ValueError, match="learning_rate"):
        experiments.tune_run("smoke", "frozen", {"learning_rate": []}, freeze_backbone=True)
    with pytest.raises(ValueError, match="learning_rat"):
        experiments.tune_run("smoke", "frozen", {"learning_rat": [1e-3]}, freeze_backbone=True)
    assert not (config.build_dir("smoke") / "runs").exists()


def test_the_learning_rate_grid_is_the_default_base_models_search():
    # helpers/config.py: the default profile's rate was chosen among 3e-4, 1e-3 and 3e-3
    assert experiments.learning_rate_grid("default") == [3e-4, 1e-3, 3e-3]
    assert experiments.learning_rate_grid("default")[-1] == config.get_profile("default")["learning_rate"]
    the_reports_rate = config.get_profile("smoke", learning_rate=6e-5)
    assert experiments.learning_rate_grid(the_reports_rate) == [6e-6, 2e-5, 6e-5]


def test_real_photos_have_no_session_to_switch_off(isolated_build):
    with pytest.raises(ValueError, match="no capture session"):
        experiments.images_at_leak("rehearsal", experiments.LEAK_FREE)


def test_leak_counterparts_are_never_candidates_for_the_best_run():
    assert experiments.leak_data_label(0) == "synthetic images, session_leak=0.0"  # notebook 09's label
    assert experiments.leak_data_label(0) != experiments.data_label("smoke")
