"""Keras Tuner engine: same space, same MLflow layout, resumable, registered like Optuna."""

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentiment.config import load_config
from sentiment.search.keras_tuner_engine import hyperparameters
from sentiment.sweep import run_sweep
from tests.conftest import tiny_overrides, trial_runs

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast


def _kt_overrides(imdb_dir, tmp_path, algorithm="random"):
    return tiny_overrides(imdb_dir, tmp_path) + [
        "sweep.engine=keras_tuner", f"sweep.algorithm={algorithm}", "sweep.study_name=kt",
        f"sweep.keras_tuner_dir={tmp_path / 'kt'}"]


def test_search_space_converts_with_the_same_names_and_ranges(tiny_cfg):
    hp = hyperparameters(tiny_cfg.sweep.space)
    by_name = {p.name: p for p in hp.space}
    assert set(by_name) == set(tiny_cfg.sweep.space)
    units = tiny_cfg.sweep.space.units
    assert (by_name["units"].min_value, by_name["units"].max_value, by_name["units"].step) == (
        units.low, units.high, units.step)
    assert by_name["l2"].sampling == "log"


def test_keras_tuner_sweep_matches_the_optuna_layout_and_resumes(imdb_dir, tmp_path):
    cfg = load_config(_kt_overrides(imdb_dir, tmp_path))
    result = run_sweep(cfg)
    parent = MlflowClient().get_run(result.parent_run_id)
    assert parent.data.tags["sweep.engine"] == "keras_tuner" and parent.data.tags["sweep.algorithm"] == "random"
    children = trial_runs(result.parent_run_id)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}

    optuna_cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.n_trials=1"])
    optuna_child = trial_runs(run_sweep(optuna_cfg).parent_run_id)[0]
    for child in children:
        assert set(child.data.params) == set(optuna_child.data.params)
        assert len(MlflowClient().get_metric_history(child.info.run_id, "val_loss")) >= 1

    version = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version)
    assert version.tags["engine"] == "keras_tuner"
    model = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/{result.registered_version}")
    assert model.predict(pd.DataFrame({"text": ["great film"]}))["probability"].between(0, 1).all()

    again = run_sweep(cfg)
    assert again.parent_run_id == result.parent_run_id  # one parent per study, no new trial under it
    assert len(trial_runs(again.parent_run_id)) == 2
    assert again.registered_version == result.registered_version
    assert len(again.outcome.table) == 2


@pytest.mark.parametrize("algorithm", ["hyperband", "bayesian"])
def test_other_keras_tuner_algorithms_run(imdb_dir, tmp_path, algorithm):
    result = run_sweep(load_config(_kt_overrides(imdb_dir, tmp_path, algorithm)))
    assert result.outcome.counts["complete"] >= 1 and result.registered_version is not None
