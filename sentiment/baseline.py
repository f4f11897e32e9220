"""Bag-of-n-grams linear baselines, logged beside the trials so the UI shows what the LSTM must
beat: tf-idf + logistic regression, and NBSVM (sentiment.nbsvm), the strongest published linear
model on IMDb. Each is one nested run per study (resumed sweeps don't refit), fitted on the same
training split as the trials, scored on validation like them and on the test set as a reference
only. The final model is compared with the baseline that scores best on validation.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.data import ReviewSplits
from sentiment.engines import BASELINES, STACKED_BASELINE
from sentiment.metrics import classification_metrics

log = logging.getLogger(__name__)

TEST_PROBABILITY = "test_probability.npy"  # artifact: the champion is compared on the same reviews
KIND_TAG = "baseline.kind"  # which of engines.BASELINES a run is (runs logged before it was set: tfidf)


def log_baselines(cfg: DictConfig, reviews: ReviewSplits, experiment_id: str) -> None:
    """Log each of baseline.models the study has not logged yet (to its end: a run the server
    went away under is marked FAILED and its baseline logged again)."""
    runs = baseline_runs(experiment_id, cfg.sweep.study_name, finished=False)
    _fail_unfinished(runs)
    logged = {kind_of(run) for run in runs if run.info.status == "FINISHED"}
    for kind in cfg.baseline.models:
        if kind not in logged:
            log_baseline(cfg, reviews, kind)


def log_baseline(cfg: DictConfig, reviews: ReviewSplits, kind: str) -> np.ndarray:
    """Fit one baseline on the training split and log its run. Returns its test probabilities
    (also kept on its run); nothing is selected with them."""
    train, val, test, _ = reviews.get()
    fit = BASELINES[kind]
    params = cfg.baseline[kind]
    start = time.perf_counter()
    fitted = fit(train.texts, train.labels, params)
    metrics = {"fit_seconds": time.perf_counter() - start}
    probabilities = {}
    for name, split in (("val", val), ("test", test)):
        probabilities[name] = fitted.probability(split.texts)
        metrics.update({f"{name}_{k}": v for k, v in classification_metrics(split.labels, probabilities[name]).items()})
    tags = {tracking.ROLE_TAG: tracking.BASELINE, tracking.STUDY_TAG: cfg.sweep.study_name, KIND_TAG: kind}
    with mlflow.start_run(run_name=f"baseline-{kind}", nested=True, tags=tags):
        mlflow.log_params({"model": fitted.description, **OmegaConf.to_container(params),
                           "data.train_samples": cfg.data.train_samples, "seed": cfg.seed})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / TEST_PROBABILITY
            np.save(path, probabilities["test"])
            mlflow.log_artifact(str(path))
        if fitted.keras_model is not None:
            tracking.log_keras_model(fitted.keras_model)
    log.info("baseline %s: val accuracy %.4f (test %.4f), fitted in %.0f s", fitted.description,
             metrics["val_accuracy"], metrics["test_accuracy"], metrics["fit_seconds"])
    return probabilities["test"]


def kind_of(run) -> str:
    return run.data.tags.get(KIND_TAG, "tfidf")


def baseline_runs(experiment_id: str, study: str, finished: bool = True) -> list:
    """The study's baseline runs (one finished run per kind)."""
    return tracking.find_runs(tracking.BASELINE, {tracking.STUDY_TAG: study}, [experiment_id], finished=finished)


def _fail_unfinished(runs: list) -> None:
    """Baselines are logged by the sweep process before any trial, so one still RUNNING when a
    sweep starts was left by a sweep that died or lost the server while logging it."""
    for run in runs:
        if run.info.status == "RUNNING":
            tracking.fail_left_running(run.info.run_id, "it stopped while logging this baseline; logging it again")


def find_baseline_run(experiment_id: str, study: str, kind: str = "tfidf"):
    """The study's baseline run of this kind, if one was logged."""
    return next((run for run in baseline_runs(experiment_id, study) if kind_of(run) == kind), None)


@dataclass
class Baseline:
    """A logged baseline's identity and its stored test probabilities."""

    kind: str
    description: str
    val_accuracy: float
    test_probability: np.ndarray


def strongest_baseline(experiment_id: str, study: str, n_test: int) -> Baseline | None:
    """The study's baseline with the best validation accuracy whose stored test probabilities
    match the test reviews (selection on validation, like the trials')."""
    usable = [b for b in map(_stored, baseline_runs(experiment_id, study)) if b is not None and len(b.test_probability) == n_test]
    return max(usable, key=lambda b: b.val_accuracy, default=None)


def _stored(run) -> Baseline | None:
    try:
        probability = np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=TEST_PROBABILITY))
    except Exception as err:  # an older baseline run without the artifact: no comparison, no failure
        log.warning("baseline run %s has no usable %s (%s)", run.info.run_id, TEST_PROBABILITY, err)
        return None
    return Baseline(kind_of(run), run.data.params.get("model", kind_of(run)),
                    run.data.metrics.get("val_accuracy", float("nan")), probability)


def stacked_baseline_run(experiment_id: str, study: str):
    """The study's NBSVM run (engines.STACKED_BASELINE): the n-gram half of a stack."""
    run = find_baseline_run(experiment_id, study, STACKED_BASELINE)
    if run is None:
        raise LookupError(f"study {study} has no {STACKED_BASELINE} baseline run: add it to baseline.models")
    return run


def ngram_model(experiment_id: str, study: str) -> keras.Model:
    """The study's NBSVM as a raw-text Keras model (text -> logit)."""
    return tracking.load_keras_model(stacked_baseline_run(experiment_id, study).info.run_id)
