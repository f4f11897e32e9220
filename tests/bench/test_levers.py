"""`make levers`: mean figures per searched categorical choice, test accuracy once Platt-scaled on
validation, and the three tables of a finished study with their JSON."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from sentiment.bench.levers import by_choice, calibrated_accuracy, levers
from sentiment.config import load_config
from sentiment.metrics import classification_metrics
from tests.conftest import STRONG_STUDY, tiny_overrides

SCORES = ["val_accuracy", "val_auc", "test_accuracy", "test_accuracy_calibrated"]
CATEGORICAL = ["+sweep.space.pooling={key: model.pooling, type: categorical, choices: [max, mean]}",
               "+sweep.space.lr_schedule={key: train.lr_schedule, type: categorical, choices: [constant, cosine]}",
               "+sweep.space.truncate={key: data.truncate, type: categorical, choices: [head, tail]}"]  # never sampled


def _trials() -> pd.DataFrame:
    return pd.DataFrame({"trial": [0, 1, 2], "val_accuracy": [0.80, 0.84, 0.82], "val_auc": [0.88, 0.90, 0.86],
                         "test_accuracy": [0.79, 0.83, 0.81], "test_auc": [0.87, 0.91, 0.85],
                         "test_accuracy_calibrated": [0.80, 0.84, 0.83], "units": [4, 8, 8],
                         "pooling": ["max", "mean", "max"], "lr_schedule": ["constant", "constant", "cosine"]})


def test_by_choice_averages_each_choice_of_each_categorical_dimension(imdb_dir, tmp_path):
    space = load_config(tiny_overrides(imdb_dir, tmp_path) + CATEGORICAL).sweep.space
    table = by_choice(_trials(), space)
    expected = pd.DataFrame([
        {"lever": "pooling", "choice": "max", "trials": 2, "val_accuracy": 0.81, "val_auc": 0.87,
         "test_accuracy": 0.80, "test_accuracy_calibrated": 0.815},
        {"lever": "pooling", "choice": "mean", "trials": 1, "val_accuracy": 0.84, "val_auc": 0.90,
         "test_accuracy": 0.83, "test_accuracy_calibrated": 0.84},
        {"lever": "lr_schedule", "choice": "constant", "trials": 2, "val_accuracy": 0.82, "val_auc": 0.89,
         "test_accuracy": 0.81, "test_accuracy_calibrated": 0.82},
        {"lever": "lr_schedule", "choice": "cosine", "trials": 1, "val_accuracy": 0.82, "val_auc": 0.86,
         "test_accuracy": 0.81, "test_accuracy_calibrated": 0.83}])
    pd.testing.assert_frame_equal(table, expected)  # numeric dimensions (units) and unsampled ones: no rows


def test_by_choice_of_a_space_without_categorical_dimensions_is_empty(tiny_cfg):
    assert by_choice(_trials(), tiny_cfg.sweep.space).empty


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_calibrated_accuracy_is_the_accuracy_of_the_platt_scaled_test_probabilities():
    rng = np.random.default_rng(0)
    logits = {split: rng.normal(0, 2, 4000) for split in ("val", "test")}
    labels = {split: (rng.random(4000) < _sigmoid(z)).astype(int) for split, z in logits.items()}
    shifted = {split: _sigmoid(z + 1.5) for split, z in logits.items()}  # a decision offset, as on new movies

    accuracy = calibrated_accuracy(labels["val"], shifted["val"], labels["test"], shifted["test"])

    platt = LogisticRegression(C=1e6).fit(np.log(shifted["val"] / (1 - shifted["val"])).reshape(-1, 1), labels["val"])
    scaled = platt.predict_proba(np.log(shifted["test"] / (1 - shifted["test"])).reshape(-1, 1))[:, 1]
    assert accuracy == pytest.approx(classification_metrics(labels["test"], scaled)["accuracy"], abs=2 / 4000)
    oracle = classification_metrics(labels["test"], _sigmoid(logits["test"]))["accuracy"]
    assert accuracy == pytest.approx(oracle, abs=0.01)  # the offset undone
    assert accuracy > classification_metrics(labels["test"], shifted["test"])["accuracy"] + 0.03


@pytest.fixture(scope="module")
def strong_study(tmp_path_factory, imdb_dir) -> list[str]:
    """One finished tiny study with its registered final model (version 1); its overrides."""
    from sentiment.sweep import run_sweep

    overrides = tiny_overrides(imdb_dir, tmp_path_factory.mktemp("levers")) + ["sweep.n_trials=1", *STRONG_STUDY]
    assert run_sweep(load_config(overrides)).registered_version == "1"
    return overrides


@pytest.mark.sweeps  # the strong_study fixture runs a tiny sweep
def test_levers_of_a_finished_study_prints_three_tables_and_writes_their_json(strong_study, tmp_path, monkeypatch):
    monkeypatch.setattr("sentiment.bench.levers.RESULTS_DIR", tmp_path / "results")
    cfg = load_config(strong_study)  # the study's own overrides: its finished outcome

    text = levers(cfg)

    path = tmp_path / "results" / "levers-strong.json"
    tables, written = text.rsplit("\n", 1)
    assert written == f"written to {path}"
    trials_table, by_lever_table, final_table = tables.split("\n\n")
    record = json.loads(path.read_text())
    assert len(record["trials"]) == 1 and record["by_choice"] == []  # one trial; the tiny space is all numeric
    trial = record["trials"][0]
    assert all(0 <= trial[k] <= 1 for k in SCORES) and trial["units"] in (4, 8)
    assert trials_table.splitlines()[0].split()[:5] == ["trial", "val_accuracy", "val_auc", "test_accuracy", "test_auc"]
    finals = {row["model"]: row for row in record["final"]}
    best = finals["best trial"]
    assert best["test_accuracy"] == trial["test_accuracy"] and best["val_accuracy"] == trial["val_accuracy"]
    assert best["test_accuracy_calibrated"] == trial["test_accuracy_calibrated"]  # the same model, the same reviews
    tags = MlflowClient().get_model_version(cfg.tracking.model_name, "1").tags  # the strong study's version
    assert tags["study"] == "strong" and len(tags["member_run_ids"].split(",")) == 1
    registered = f"registered v1: {tags['final_model']}"
    assert list(finals) == ["best trial", "mean of the top 1 trial models (all candidates)",
                            "mean of the 1 chosen trial models", registered]
    assert {k: finals[registered][k] for k in ("val_accuracy", "test_accuracy", "test_auc")} == {
        "val_accuracy": float(tags["val_accuracy"]), "test_accuracy": float(tags["test_accuracy"]),
        "test_auc": float(tags["test_roc_auc"])}
    assert all(name in final_table for name in finals) and "test_accuracy_calibrated" in final_table
    assert by_lever_table  # printed even when no lever is categorical
