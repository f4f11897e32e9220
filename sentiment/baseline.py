"""A bag-of-words linear baseline, logged beside the trials so the UI shows what the LSTM must beat."""

from __future__ import annotations

import logging
import time

import mlflow
from omegaconf import DictConfig
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline

from sentiment.data import load_splits

log = logging.getLogger(__name__)


def _clean(text: str) -> str:
    return text.replace("<br />", " ")


def log_baseline(cfg: DictConfig, parent_run_id: str | None = None) -> dict[str, float]:
    """TF-IDF of word 1-2 grams + logistic regression, fit on the same training split.

    Scored on validation, like the trials, and on the test set as a reference figure only:
    nothing is selected with it.
    """
    train, val, test, _ = load_splits(cfg)
    start = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(preprocessor=lambda t: _clean(t).lower(), ngram_range=(1, 2), min_df=2,
                        max_features=200_000, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=1000),
    )
    model.fit(train.texts, train.labels)
    metrics = {"fit_seconds": time.perf_counter() - start}
    for name, split in (("val", val), ("test", test)):
        probability = model.predict_proba(split.texts)[:, 1]
        metrics[f"{name}_accuracy"] = accuracy_score(split.labels, probability >= 0.5)
        metrics[f"{name}_auc"] = roc_auc_score(split.labels, probability)
    with mlflow.start_run(run_name="baseline-tfidf-logreg", nested=True, parent_run_id=parent_run_id,
                          tags={"role": "baseline", "sweep.study": cfg.sweep.study_name}):
        mlflow.log_params({"model": "tfidf(1-2 grams)+logistic_regression", "ngram_range": "1,2",
                           "C": 4.0, "data.train_samples": cfg.data.train_samples, "seed": cfg.seed})
        mlflow.log_metrics(metrics)
    log.info("baseline tf-idf + logistic regression: val accuracy %.4f (test %.4f)",
             metrics["val_accuracy"], metrics["test_accuracy"])
    return metrics
