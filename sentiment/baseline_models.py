"""How each baseline is fitted: (training texts, labels, baseline.<kind>) -> FittedBaseline.
engines.BASELINES names these functions; sentiment.baseline logs what they fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from omegaconf import DictConfig
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sentiment import nbsvm


@dataclass
class FittedBaseline:
    description: str
    probability: Callable[[list[str]], np.ndarray]  # reviews -> probability of positive
    keras_model: keras.Model | None = None           # raw text -> logit, kept on the run (the stack's input)


def _clean(text: str) -> str:
    return text.replace("<br />", " ")


def fit_tfidf(texts: list[str], labels: np.ndarray, params: DictConfig) -> FittedBaseline:
    """TF-IDF of word 1- to n-grams + logistic regression."""
    model = make_pipeline(
        TfidfVectorizer(preprocessor=lambda t: _clean(t).lower(), ngram_range=(1, params.ngrams),
                        min_df=params.min_df, max_features=params.max_features, sublinear_tf=True),
        LogisticRegression(C=params.C, max_iter=1000),
    )
    model.fit(texts, labels)
    return FittedBaseline(f"tfidf(1-{params.ngrams} grams)+logistic_regression",
                          lambda reviews: model.predict_proba(reviews)[:, 1])


def fit_nbsvm(texts: list[str], labels: np.ndarray, params: DictConfig) -> FittedBaseline:
    """NBSVM: naive-Bayes-scaled binary 1- to n-grams + logistic regression, as a Keras model."""
    model = nbsvm.fit_nbsvm(texts, labels, params)
    return FittedBaseline(f"nbsvm(1-{params.ngrams} grams)+logistic_regression",
                          lambda reviews: 1 / (1 + np.exp(-nbsvm.ngram_logit(model, reviews))), model)
