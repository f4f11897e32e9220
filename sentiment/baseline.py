"""A bag-of-words linear baseline, logged beside the trials so the UI shows what the LSTM must beat."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from omegaconf import DictConfig
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sentiment import tracking
from sentiment.data import ReviewSplits
from sentiment.metrics import classification_metrics

log = logging.getLogger(__name__)

TEST_PROBABILITY = "test_probability.npy"  # artifact: the champion is compared on the same reviews


def _clean(text: str) -> str:
    return text.replace("<br />", " ")


def log_baseline(cfg: DictConfig, reviews: ReviewSplits) -> np.ndarray:
    """TF-IDF of word 1-2 grams + logistic regression, fit on the same training split.

    Scored on validation, like the trials, and on the test set as a reference figure only:
    nothing is selected with it. Returns its test probabilities (also kept on its run).
    """
    train, val, test, _ = reviews.get()
    start = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(preprocessor=lambda t: _clean(t).lower(), ngram_range=(1, 2), min_df=2,
                        max_features=200_000, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=1000),
    )
    model.fit(train.texts, train.labels)
    metrics = {"fit_seconds": time.perf_counter() - start}
    probabilities = {}
    for name, split in (("val", val), ("test", test)):
        probabilities[name] = model.predict_proba(split.texts)[:, 1]
        metrics.update({f"{name}_{k}": v for k, v in classification_metrics(split.labels, probabilities[name]).items()})
    with mlflow.start_run(run_name="baseline-tfidf-logreg", nested=True,
                          tags={tracking.ROLE_TAG: tracking.BASELINE, tracking.STUDY_TAG: cfg.sweep.study_name}):
        mlflow.log_params({"model": "tfidf(1-2 grams)+logistic_regression", "ngram_range": "1,2",
                           "C": 4.0, "data.train_samples": cfg.data.train_samples, "seed": cfg.seed})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / TEST_PROBABILITY
            np.save(path, probabilities["test"])
            mlflow.log_artifact(str(path))
    log.info("baseline tf-idf + logistic regression: val accuracy %.4f (test %.4f)",
             metrics["val_accuracy"], metrics["test_accuracy"])
    return probabilities["test"]


def find_baseline_run(experiment_id: str, study: str):
    """The study's baseline run, if one was logged (one per study: resumed sweeps don't refit)."""
    runs = tracking.find_runs(tracking.BASELINE, {tracking.STUDY_TAG: study}, [experiment_id], max_results=1)
    return runs[0] if runs else None


def baseline_test_probability(experiment_id: str, study: str, n_test: int) -> np.ndarray | None:
    """The stored test probabilities of the study's baseline, if they match the test reviews."""
    run = find_baseline_run(experiment_id, study)
    if run is None:
        return None
    try:
        probability = np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=TEST_PROBABILITY))
    except Exception as err:  # an older baseline run without the artifact: no comparison, no failure
        log.warning("baseline run %s has no usable %s (%s)", run.info.run_id, TEST_PROBABILITY, err)
        return None
    return probability if len(probability) == n_test else None
