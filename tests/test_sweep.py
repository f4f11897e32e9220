"""Sweeps into a temporary SQLite MLflow store, checked against what the store really holds."""

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from sentiment import tracking
from sentiment.config import load_config
from sentiment.errors import ConfigError, TrackingError
from sentiment.sweep import run_sweep
from sentiment.tokens import load_data
from tests.conftest import tiny_overrides, trial_runs

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast


@pytest.fixture(scope="module")
def _shared_sweep(imdb_dir, tmp_path_factory):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path_factory.mktemp("swept")) + ["sweep.final=ensemble"])
    result = run_sweep(cfg)
    mlflow.end_run()
    return cfg, result


@pytest.fixture
def swept(_shared_sweep):
    """One tiny sweep shared by the tests that only read what it left (pointed at its store)."""
    tracking.connect(_shared_sweep[0].tracking)
    return _shared_sweep


@pytest.fixture
def fresh_sweep(tiny_cfg):
    """A sweep of its own, for a test that changes the study."""
    return tiny_cfg, run_sweep(tiny_cfg)


def _study(cfg):
    return optuna.load_study(study_name=cfg.sweep.study_name, storage=cfg.sweep.storage)


def test_two_trial_sweep_logs_parent_children_and_a_version(swept):
    cfg, result = swept
    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.engine"] == "optuna"
    assert (parent.data.tags["sweep.sampler"], parent.data.tags["sweep.pruner"]) == ("TPESampler", "MedianPruner")
    assert parent.data.metrics["trials_epochs_trained"] == sum(
        len(t.intermediate_values) for t in _study(cfg).trials) >= 2
    children = trial_runs(result.parent_run_id)
    assert len(children) == 2
    trials = {t.user_attrs["mlflow_run_id"]: t for t in _study(cfg).trials}
    for child in children:
        trial = trials[child.info.run_id]
        assert child.info.status == "FINISHED" and child.data.tags["state"] == "complete"
        assert int(child.data.params["model.units"]) == trial.params["units"]
        assert float(child.data.params["regularizer.l2"]) == pytest.approx(trial.params["l2"])
        assert int(child.data.params["train.seed"]) == cfg.seed + trial.number  # sweep.seed_per_trial
        assert 0 <= child.data.metrics["best_val_accuracy"] <= 1
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert len(history) == child.data.metrics["epochs_trained"] >= 1
        assert [m.step for m in history] == list(range(len(history)))
        assert child.data.metrics["best_val_loss"] == pytest.approx(trial.value)
    baselines = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                   filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}' "
                                                 "and tags.role = 'baseline'")
    assert sorted(b.data.tags["baseline.kind"] for b in baselines) == sorted(cfg.baseline.models) == ["nbsvm", "tfidf"]
    assert all(0 <= b.data.metrics["val_accuracy"] <= 1 for b in baselines)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"trials.csv", "trials.json", "summary.md", "best_params.json", "plots", "evaluation"} <= artifacts
    folder = f"evaluation/version-{result.registered_version}"
    assert {a.path for a in client.list_artifacts(result.parent_run_id, "evaluation")} == {folder}
    pictures = {a.path for a in client.list_artifacts(result.parent_run_id, folder)}
    assert pictures == {f"{folder}/{name}" for name in ("confusion_matrix.png", "roc_curve.png",
                                                        "accuracy_by_length.png", "accuracy_by_length.csv")}
    assert 0 <= parent.data.metrics["test_accuracy"] <= 1
    data = load_data(cfg)
    for run in (parent, *children):  # issue 27: the splits in MLflow's own terms, on every run
        contexts = {i.tags[0].value: i.dataset.digest for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
        assert contexts == {"training": data.lineage["train"], "validation": data.lineage["val"],
                            "test": data.lineage["test"]}
    version = client.get_model_version(cfg.tracking.model_name, result.registered_version)
    assert {k: version.tags[f"data.{k}_digest"] for k in ("train", "val", "test")} == data.lineage


def test_registered_version_predicts_from_raw_text(swept):
    cfg, result = swept
    version = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version)
    assert version.tags["study"] == cfg.sweep.study_name
    assert int(version.tags["trial_number"]) == _study(cfg).best_trial.number
    assert 0 <= float(version.tags["test_accuracy"]) <= 1 and version.run_id == result.parent_run_id
    model = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/{result.registered_version}")
    out = model.predict(pd.DataFrame({"text": ["great wonderful<br />film", "awful boring mess", ""]}))
    assert len(out) == 3 and out["probability"].between(0, 1).all()
    assert set(out["label"]) <= {"positive", "negative"}


def _all_runs():
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_one_parent_run_per_study_and_a_rerun_with_nothing_to_do_creates_none(fresh_sweep):
    cfg, first = fresh_sweep
    version = MlflowClient().get_model_version(cfg.tracking.model_name, first.registered_version)
    assert version.tags["final_model"] == "best trial, calibrated on validation" and "," not in version.tags["member_run_ids"]
    before = len(_all_runs())
    second = run_sweep(cfg)
    assert len(_study(cfg).trials) == 2 and len(_all_runs()) == before
    assert (second.parent_run_id, second.registered_version) == (first.parent_run_id, first.registered_version)
    more = run_sweep(load_config(tiny_overrides_from(cfg) + ["sweep.n_trials=3"]))
    assert more.parent_run_id == first.parent_run_id
    assert len(_study(cfg).trials) == 3 and len(trial_runs(first.parent_run_id)) == 3
    parents = [r for r in _all_runs() if r.data.tags.get("role") == "sweep"]
    assert [p.info.run_id for p in parents] == [first.parent_run_id]
    assert parents[0].info.status == "FINISHED"


def test_experiment_opens_as_model_training_and_trial_runs_are_lean(swept):
    cfg, result = swept
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    for child in trial_runs(result.parent_run_id):
        assert not [k for k in child.data.params if k.startswith("optimizer_")]
        assert child.data.params["train.optimizer"] == "Adam"
        assert float(child.data.params["train.learning_rate"]) == cfg.train.learning_rate
    note = client.get_run(result.parent_run_id).data.tags["mlflow.note.content"]
    assert note.startswith("**Final model** (") and "(of 2 candidates), calibrated on validation): test accuracy" in note
    strongest = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version).tags["baseline_model"]
    assert f"; {strongest} baseline " in note and f"Registered as version **{result.registered_version}**" in note
    assert "## Trials" not in note  # the long table stays in summary.md
    summary = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/summary.md")
    assert f"| metric | final model (val) | final model (test) | {strongest} baseline (test) |" in summary
    assert "| shortest quarter |" in summary


def test_registered_ensemble_is_the_calibrated_mean_of_its_members_with_the_baseline_beside_it(swept):
    from sentiment.model import end_to_end
    from sentiment.model_code import Calibration
    from sentiment.tokens import make_vectorizer

    cfg, result = swept
    version = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version)
    members, candidates = (version.tags[key].split(",") for key in ("member_run_ids", "candidate_run_ids"))
    assert len(candidates) == 2 and members == candidates[: len(members)]  # a run from the top, chosen on val
    kind = "best trial" if len(members) == 1 else "mean of the top 2 trials"
    assert version.tags["final_model"] == f"{kind} (of 2 candidates), calibrated on validation"
    assert 0 <= float(version.tags["baseline_test_accuracy"]) <= 1
    reviews = ["great wonderful<br />film", "awful boring mess", "the plot was a story"]
    served = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/{result.registered_version}")
    got = served.predict(pd.DataFrame({"text": reviews}))["probability"].to_numpy()
    vocabulary = load_data(cfg).vocabulary
    text = tf.constant(reviews)[:, tf.newaxis]
    each = [np.asarray(end_to_end(tracking.load_keras_model(run_id), make_vectorizer(cfg.data, vocabulary))(text))
            .reshape(-1) for run_id in members]
    scaling = Calibration(float(version.tags["calibration_slope"]), float(version.tags["calibration_intercept"]))
    assert (scaling.slope, scaling.intercept) != (1.0, 0.0)
    assert got == pytest.approx(np.asarray(scaling(np.mean(each, axis=0).astype("float32"))), abs=1e-5)


def test_a_stacked_final_model_serves_the_stack_of_its_lstm_part_and_the_nbsvm_baseline(imdb_dir, tmp_path):
    from sentiment.baseline import ngram_model
    from sentiment.model import end_to_end
    from sentiment.model_code import Stack
    from sentiment.nbsvm import ngram_logit
    from sentiment.tokens import make_vectorizer

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.final=stack"])
    result = run_sweep(cfg)
    version = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version)
    assert version.tags["final"] == "stack" and version.tags["final_model"].endswith("stacked with nbsvm on validation")
    assert "calibration_slope" not in version.tags  # the stack's fit on validation does calibration's job
    assert 0 <= float(version.tags["lstm_test_accuracy"]) <= 1
    reviews = ["great wonderful<br />film", "awful boring mess", "the plot was a story", ""]
    served = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/{result.registered_version}")
    got = served.predict(pd.DataFrame({"text": reviews}))["probability"].to_numpy()
    vocabulary = load_data(cfg).vocabulary
    text = tf.constant(reviews)[:, tf.newaxis]
    lstm = np.mean([np.asarray(end_to_end(tracking.load_keras_model(run_id), make_vectorizer(cfg.data, vocabulary))(text))
                    .reshape(-1) for run_id in version.tags["member_run_ids"].split(",")], axis=0)
    nbsvm = ngram_logit(ngram_model(result.experiment_id, cfg.sweep.study_name), reviews)
    layer = Stack(*(float(version.tags[f"stack_{k}"]) for k in ("lstm_weight", "ngram_weight", "intercept")))
    assert layer.ngram_weight != 0.0
    assert got == pytest.approx(layer.scale(lstm, nbsvm), abs=1e-5)
    summary = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/summary.md")
    assert "The LSTM part alone (test): accuracy" in summary


def test_a_refit_stack_serves_the_nbsvm_refit_on_train_plus_val_with_weights_fitted_out_of_sample(imdb_dir, tmp_path):
    from sentiment.baseline import stacked_baseline_run
    from sentiment.final_model import STACK_NGRAM_RUN_TAG, fit_stack
    from sentiment.model import end_to_end
    from sentiment.model_code import Stack
    from sentiment.nbsvm import ngram_logit
    from sentiment.tokens import make_vectorizer
    from sentiment.train import predict_proba

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.final=stack", "sweep.refit=true"])
    result = run_sweep(cfg)
    version = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version)
    fitted = stacked_baseline_run(result.experiment_id, cfg.sweep.study_name)
    served_ngram = MlflowClient().get_run(version.tags[STACK_NGRAM_RUN_TAG])
    assert served_ngram.data.tags["role"] == "refit" and served_ngram.data.tags["refit.of"] == fitted.info.run_id
    data = load_data(cfg)
    reviews = data.reviews.get()
    assert int(served_ngram.data.params["min_df"]) == cfg.baseline.nbsvm.min_df
    # The weights: fitted on what the training-split models say about validation ...
    members = version.tags["member_run_ids"].split(",")
    trial_val = np.mean([predict_proba(tracking.load_keras_model(run_id), data.x_val, cfg.data.bucket_boundaries)
                         for run_id in members], axis=0)
    expected = fit_stack(data.y_val, trial_val, ngram_logit(tracking.load_keras_model(fitted.info.run_id), reviews.val.texts))
    layer = Stack(*(float(version.tags[f"stack_{k}"]) for k in ("lstm_weight", "ngram_weight", "intercept")))
    assert layer.ngram_weight == pytest.approx(expected.ngram_weight, rel=1e-4)
    # ... and served on the refit models: the NBSVM that saw the validation reviews scores them
    # differently from the one that did not.
    refit_ngram = tracking.load_keras_model(served_ngram.info.run_id)
    assert not np.allclose(ngram_logit(refit_ngram, reviews.val.texts[:20]),
                           ngram_logit(tracking.load_keras_model(fitted.info.run_id), reviews.val.texts[:20]))
    texts = ["great wonderful<br />film", "awful boring mess", "the plot was a story"]
    refits = {run.data.tags["refit.of"]: run.info.run_id for run in mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string="tags.role = 'refit'")}
    vectorizer = make_vectorizer(cfg.data, data.vocabulary)
    lstm = np.mean([np.asarray(end_to_end(tracking.load_keras_model(refits[m]), vectorizer)(
        tf.constant(texts)[:, tf.newaxis])).reshape(-1) for m in members], axis=0)
    served = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/{result.registered_version}")
    got = served.predict(pd.DataFrame({"text": texts}))["probability"].to_numpy()
    assert got == pytest.approx(layer.scale(lstm, ngram_logit(refit_ngram, texts)), abs=1e-5)


def test_a_missing_warm_start_study_is_refused_before_any_data_is_read(imdb_dir, tmp_path, monkeypatch):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.warm_start=nope"])
    read = []
    monkeypatch.setattr("sentiment.sweep.load_data", lambda *args: read.append(args))
    with pytest.raises(ConfigError, match="sweep.warm_start='nope': no such study"):
        run_sweep(cfg)
    assert not read  # issue 28: it was refused only after the data, the baselines and an empty new study
    assert optuna.get_all_study_names(cfg.sweep.storage) == []
    assert _all_runs() == []


def test_a_registration_cut_off_while_tagging_is_completed_by_the_next_sweep(imdb_dir, tmp_path, monkeypatch):
    from sentiment.registry import versions

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path))
    tag_version = versions.tag_version

    def cut_off_halfway(model_name, version, tags):
        tag_version(model_name, version, dict(list(tags.items())[: len(tags) // 2]))
        raise OSError("No space left on device")

    monkeypatch.setattr(versions, "tag_version", cut_off_halfway)
    with pytest.raises(OSError, match="No space left"):
        run_sweep(cfg)
    client = MlflowClient()
    [half] = client.search_model_versions(f"name = '{cfg.tracking.model_name}'")
    assert half.tags["study"] == cfg.sweep.study_name  # its identity came with the version itself
    assert versions.COMPLETE_TAG not in half.tags and "test_accuracy" not in half.tags
    monkeypatch.setattr(versions, "tag_version", tag_version)
    result = run_sweep(cfg)
    [version] = client.search_model_versions(f"name = '{cfg.tracking.model_name}'")  # completed, not duplicated
    assert result.registered_version == str(version.version) == str(half.version)
    assert version.tags[versions.COMPLETE_TAG] == versions.COMPLETE and 0 <= float(version.tags["test_accuracy"]) <= 1
    assert version.description.startswith("Best trial")
    assert run_sweep(cfg).registered_version == str(version.version)  # now complete: nothing to do


def tiny_overrides_from(cfg):
    from pathlib import Path

    return tiny_overrides(Path(cfg.data.path), Path(cfg.data.cache_dir).parent)


def test_changed_search_space_refuses_to_resume(swept):
    cfg, _ = swept
    with pytest.raises(ConfigError, match="sweep.study_name"):
        run_sweep(load_config(tiny_overrides_from(cfg) + ["model.dense_units=8"]))


def test_exploding_loss_fails_the_trial_and_the_sweep_goes_on(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["train.learning_rate=1e38"])
    result = run_sweep(cfg)
    trials = _study(cfg).trials
    assert {t.state for t in trials} == {optuna.trial.TrialState.FAIL} and len(trials) == 2
    assert {k: result.outcome.counts[k] for k in ("complete", "pruned", "failed")} == {"complete": 0, "pruned": 0, "failed": 2}
    children = trial_runs(result.parent_run_id)
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert all("TrainingDiverged" in c.data.tags["error"] for c in children)
    assert result.registered_version is None
    assert MlflowClient().get_run(result.parent_run_id).info.status == "FINISHED"


def test_unreachable_tracking_server_fails_before_training(imdb_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["tracking.uri=http://127.0.0.1:9"])
    monkeypatch.setattr("sentiment.sweep.load_data", lambda cfg: pytest.fail("loaded data"))
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        run_sweep(cfg)


def test_refit_members_are_trained_on_train_plus_val_and_registered_as_the_calibrated_mean(imdb_dir, tmp_path):
    overrides = tiny_overrides(imdb_dir, tmp_path) + ["sweep.final=ensemble", "baseline.models=[]"]
    first = run_sweep(load_config(overrides))  # the same study's final model without refit
    cfg = load_config(overrides + ["sweep.refit=true"])
    result = run_sweep(cfg)
    assert result.parent_run_id == first.parent_run_id and result.registered_version != first.registered_version
    # Each version keeps its own evaluation on the study's run: the refit one replaced nothing.
    tables = {version: pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=result.parent_run_id, artifact_path=f"evaluation/version-{version}/accuracy_by_length.csv"))
        for version in (first.registered_version, result.registered_version)}
    for version, table in tables.items():
        tags = MlflowClient().get_model_version(cfg.tracking.model_name, version).tags
        assert (table["final model"] * table["reviews"]).sum() / table["reviews"].sum() == pytest.approx(
            float(tags["test_accuracy"]), abs=1e-4)
    version = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version)
    members = version.tags["member_run_ids"].split(",")
    assert version.tags["refit"] == "true"
    assert version.tags["final_model"].endswith("refit on train+val, calibrated on validation")
    refits = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.role = 'refit'")
    assert sorted(run.data.tags["refit.of"] for run in refits) == sorted(members)
    for run in refits:  # each trained for its trial's best epoch count, nothing held out
        trial = MlflowClient().get_run(run.data.tags["refit.of"])
        assert int(run.data.params["refit.epochs"]) == int(trial.data.metrics["best_epoch"])
        assert run.data.params["train.seed"] == trial.data.params["train.seed"]  # the member, retrained
        assert "val_loss" not in run.data.metrics and "loss" in run.data.metrics
    # The registered model is the mean of the refit models, not of the trial models, scaled as
    # Platt scaling fitted on the trial models' validation probabilities (the refit ones saw val).
    from sentiment.final_model import fit_calibration
    from sentiment.model import end_to_end
    from sentiment.tokens import make_vectorizer
    from sentiment.train import predict_proba

    data = load_data(cfg)
    trial_val = np.mean([predict_proba(tracking.load_keras_model(run_id), data.x_val, cfg.data.bucket_boundaries)
                         for run_id in members], axis=0)
    scaling = fit_calibration(data.y_val, trial_val)
    assert float(version.tags["calibration_slope"]) == pytest.approx(scaling.slope, rel=1e-4)
    assert float(version.tags["calibration_intercept"]) == pytest.approx(scaling.intercept, rel=1e-4, abs=1e-6)
    reviews = ["great wonderful<br />film", "awful boring mess"]
    served = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/{result.registered_version}")
    got = served.predict(pd.DataFrame({"text": reviews}))["probability"].to_numpy()
    text, vectorizer = tf.constant(reviews)[:, tf.newaxis], make_vectorizer(cfg.data, data.vocabulary)
    each = [np.asarray(end_to_end(tracking.load_keras_model(run.info.run_id), vectorizer)(text)).reshape(-1)
            for run in refits]
    assert got == pytest.approx(scaling.scale(np.mean(each, axis=0)), abs=1e-5)
    # Re-run: the study and its refit version are complete, so nothing is trained again.
    assert run_sweep(cfg).registered_version == result.registered_version
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="tags.role = 'refit'")) == len(refits)


def test_the_default_sweep_measures_its_seed_noise_first_and_reports_every_figure_with_it(imdb_dir, tmp_path):
    """sweep.noise_repeats=2 (the default): trials 0 and 1 train the configured values with their
    own seeds; their spread is logged, printed in summary.md, and bounds the rankings."""
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        "sweep.noise_repeats=2", "sweep.final=ensemble", "sweep.ensemble_size=4", "sweep.n_trials=4",
        "sweep.pruner.kind=successive_halving"])
    result = run_sweep(cfg)
    study = _study(cfg)
    repeats = sorted((t for t in study.trials if "noise_repeat" in t.user_attrs), key=lambda t: t.number)
    assert [t.number for t in repeats] == [0, 1] and repeats[0].params == repeats[1].params
    seeds = {int(mlflow.get_run(t.user_attrs["mlflow_run_id"]).data.params["train.seed"]) for t in repeats}
    assert seeds == {cfg.seed, cfg.seed + 1}
    noise = study.user_attrs["seed_noise"]
    assert noise["final_sd"] == pytest.approx(abs(repeats[0].value - repeats[1].value) / np.sqrt(2))
    assert noise["per_epoch"]["1"] == pytest.approx(
        abs(repeats[0].intermediate_values[1] - repeats[1].intermediate_values[1]) / np.sqrt(2))

    parent = MlflowClient().get_run(result.parent_run_id)
    value_sd = max(noise["final_sd"], np.sqrt(np.mean(np.square(list(noise["per_epoch"].values())))))
    assert parent.data.metrics["seed_noise_sd"] == pytest.approx(value_sd)
    assert parent.data.tags["sweep.pruner"] == "NoiseAwarePruner(SuccessiveHalvingPruner)"
    summary = mlflow.artifacts.load_text(f"runs:/{result.parent_run_id}/summary.md")
    assert "Seed noise: seed noise of val_loss (sd over 2 seeds of the configured values, trials 0, 1)" in summary
    assert f"± {1.96 * value_sd:.4f}" in summary and "Chosen on validation:" in summary
    assert "Seed noise:" in parent.data.tags["mlflow.note.content"]
    assert {"interval", "tied_with_best"} <= set(result.outcome.table.columns)

    tags = MlflowClient().get_model_version(cfg.tracking.model_name, result.registered_version).tags
    low, accuracy, high = (float(tags[f"test_accuracy{end}"]) for end in ("_low", "", "_high"))
    assert low < accuracy <= high and high - low > 0.01  # a 95 % Wilson interval on the tiny test set
    for trial in study.trials:  # every pruned trial says by how much it trailed, and the band it beat
        if trial.state == optuna.trial.TrialState.PRUNED:
            run = mlflow.get_run(trial.user_attrs["mlflow_run_id"])
            assert float(run.data.tags["cut_margin"]) > float(run.data.tags["cut_noise_band"])


def test_a_sweep_run_that_lost_the_race_stops_counting_even_where_it_may_not_be_deleted(tiny_cfg, monkeypatch):
    """Two workers opened the study's sweep run at the same moment; the newer one steps aside. A
    trainer may not delete runs on a server with logins: it used to crash there, and left the
    study with two sweep runs."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from sentiment import sweep

    experiment_id = tracking.connect(tiny_cfg.tracking, write=True)
    study = tiny_cfg.sweep.study_name
    older = MlflowClient().create_run(experiment_id, tags={tracking.ROLE_TAG: tracking.SWEEP,
                                                           tracking.STUDY_TAG: study}).info.run_id
    real_find = sweep.find_parent_runs
    looks = []

    def none_yet_at_first_look(experiment, name):  # the other worker's run appears just after this look
        looks.append(name)
        return [] if len(looks) == 1 else real_find(experiment, name)

    def refused(self, run_id):
        raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)  # what a 403 becomes

    monkeypatch.setattr(sweep, "find_parent_runs", none_yet_at_first_look)
    monkeypatch.setattr(MlflowClient, "delete_run", refused)
    opened = sweep.open_parent_run(tiny_cfg, experiment_id)
    mlflow.end_run()
    assert opened.info.run_id == older
    assert [run.info.run_id for run in real_find(experiment_id, study)] == [older]
    (stepped_aside,) = [run for run in mlflow.search_runs([experiment_id], output_format="list")
                        if run.info.run_id != older]
    assert stepped_aside.info.status == "KILLED" and stepped_aside.data.tags[tracking.ROLE_TAG] == "duplicate-sweep"
