"""An Optuna study as people see it: the trials table (best first, unfinished last, plain column
names, no run ids) and Optuna's plots logged to the active MLflow run."""

import math
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from sentiment.search.optuna_report import OPTUNA_PLOTS, log_optuna_plots, optuna_trials_table


@pytest.fixture(autouse=True)
def _quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


def _trial(study, value=None, state=TrialState.COMPLETE):
    """One trial by hand: params, the attributes a sweep's trial carries, then its end (None: left running)."""
    trial = study.ask()
    trial.suggest_int("units", 4, 64)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.set_user_attr("mlflow_run_id", f"run-{trial.number}")
    trial.set_user_attr("val_accuracy", 0.5 + trial.number / 10)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    elif state != TrialState.RUNNING:
        study.tell(trial, state=state)
    return trial


def _study(direction="minimize"):
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))
    for value in (0.5, 0.2, 0.4):
        _trial(study, value)
    _trial(study, state=TrialState.RUNNING)
    _trial(study, state=TrialState.FAIL)
    return study


def test_table_lists_the_best_trial_first_and_unfinished_ones_last():
    study = _study()
    table = optuna_trials_table(study)
    assert len(table) == len(study.trials) == 5
    assert list(table["number"][:3]) == [1, 2, 0]  # 0.2 < 0.4 < 0.5: val_loss is minimized
    assert list(table["value"][:3]) == [0.2, 0.4, 0.5]
    assert table["value"][3:].isna().all()
    assert set(table["state"][3:]) == {"RUNNING", "FAIL"}
    assert list(table.index) == list(range(5))


def test_a_maximized_objective_lists_the_highest_value_first():
    table = optuna_trials_table(_study("maximize"))
    assert list(table["number"][:3]) == [0, 2, 1]
    assert list(table["value"][:3]) == [0.5, 0.4, 0.2]


def test_table_columns_are_plain_names_without_run_ids():
    study = _study()
    table = optuna_trials_table(study)
    assert {"number", "value", "state", "duration", "units", "dropout", "val_accuracy"} <= set(table.columns)
    assert not [c for c in table.columns if c.startswith(("params_", "user_attrs_"))]
    assert "mlflow_run_id" not in table.columns
    by_number = table.set_index("number")
    for trial in study.trials:
        assert by_number.loc[trial.number, "units"] == trial.params["units"]
        assert by_number.loc[trial.number, "val_accuracy"] == trial.user_attrs["val_accuracy"]


def test_duration_is_in_seconds():
    study = _study()
    durations = optuna_trials_table(study).set_index("number")["duration"]
    for trial in study.trials:
        if trial.duration is None:  # still running
            assert math.isnan(durations[trial.number])
        else:
            assert durations[trial.number] == round(trial.duration.total_seconds(), 1)


def test_an_empty_study_is_an_empty_table():
    assert optuna_trials_table(optuna.create_study()).empty


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One temporary SQLite store for the module (creating its schema takes seconds)."""
    root = tmp_path_factory.mktemp("plots-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = MlflowClient(uri).create_experiment("plots", artifact_location=(root / "artifacts").as_uri())
    return uri, experiment_id


@pytest.fixture
def mlflow_run(mlflow_store):
    uri, experiment_id = mlflow_store
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        yield run.info.run_id


def _artifacts(run_id, path=None):
    return sorted(a.path for a in MlflowClient().list_artifacts(run_id, path))


def test_plots_are_logged_as_html_and_png_once_two_trials_completed(mlflow_run, tmp_path):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: t.suggest_float("dropout", 0, 0.5) + t.suggest_int("units", 4, 64) / 100, n_trials=4)
    log_optuna_plots(study)
    expected = sorted(f"plots/{name}.{kind}" for name in OPTUNA_PLOTS for kind in ("html", "png"))
    assert _artifacts(mlflow_run, "plots") == expected
    local = Path(mlflow.artifacts.download_artifacts(run_id=mlflow_run, artifact_path="plots",
                                                     dst_path=str(tmp_path / "downloaded")))
    for name in OPTUNA_PLOTS:
        assert "plotly" in (local / f"{name}.html").read_text(encoding="utf-8").lower()
        assert (local / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fewer_than_two_finished_trials_log_no_plots(mlflow_run):
    study = optuna.create_study()
    _trial(study, 0.3)
    _trial(study, state=TrialState.FAIL)
    _trial(study, state=TrialState.RUNNING)
    log_optuna_plots(study)
    assert _artifacts(mlflow_run) == []


def test_one_complete_and_one_pruned_trial_are_enough_for_the_history_plot(mlflow_run):
    study = optuna.create_study()
    _trial(study, 0.3)
    _trial(study, state=TrialState.PRUNED)
    log_optuna_plots(study)
    assert {"plots/optimization_history.html", "plots/optimization_history.png"} <= set(_artifacts(mlflow_run, "plots"))


def test_with_the_seed_noise_each_complete_trial_has_its_interval_and_ties_are_marked():
    from sentiment.search.noise import SeedNoise

    study = optuna.create_study()
    for value in (0.30, 0.305, 0.33):
        _trial(study, value)
    _trial(study, state=TrialState.PRUNED)
    _trial(study, state=TrialState.RUNNING)  # no duration yet: the table still builds
    noise = SeedNoise("val_loss", {1: 0.004}, final_sd=0.004, repeats=[0, 1], widths=2.0)  # tie band 0.008
    table = optuna_trials_table(study, noise).set_index("number")
    assert table.loc[[0, 1, 2], "interval"].tolist() == ["±0.0078"] * 3
    assert table["tied_with_best"].to_dict() == {0: True, 1: True, 2: False, 3: False, 4: False}
    assert table.loc[3, "interval"] == ""
