"""NBSVM (Wang & Manning 2012): a linear model on which word 1- to n-grams a review holds, each
scaled by its naive-Bayes log-count ratio, with a logistic regression on top (the ratio-scaled
features make it as strong on long reviews as an SVM with NB features; 91.2 % on IMDb in the
paper with bigrams).

The fitted model is a raw-text Keras model (a TextVectorization of n-gram ids and
model_code.NgramLogit): the n-grams are the ones TextVectorization makes, from the same
standardized tokens, so the model that is logged and stacked scores exactly what was fitted.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from sentiment.model_code import NGRAM_MODEL, TEXT_COLUMN, NgramLogit, standardize_review

BATCH = 2000  # reviews per TensorFlow call while tokenizing


def ngram_lists(texts: list[str], ngrams: int) -> list[list[str]]:
    """Each review's word 1- to `ngrams`-grams, made as TextVectorization(ngrams=...) makes them."""
    out = []
    for start in range(0, len(texts), BATCH):
        tokens = tf.strings.split(standardize_review(tf.constant(texts[start : start + BATCH], dtype=tf.string)))
        grams = tf.strings.ngrams(tokens, ngram_width=tuple(range(1, ngrams + 1)), separator=" ")
        out.extend([[gram.decode() for gram in row] for row in grams.to_list()])
    return out


def log_count_ratio(features, labels: np.ndarray, alpha: float) -> np.ndarray:
    """r = log((p / |p|_1) / (q / |q|_1)), p and q the smoothed counts of each feature (columns
    of a sparse binary matrix) over the positive and the negative reviews."""
    p = alpha + np.asarray(features[labels == 1].sum(axis=0)).ravel()
    q = alpha + np.asarray(features[labels == 0].sum(axis=0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum()))


def fit_nbsvm(texts: list[str], labels: np.ndarray, params: DictConfig) -> keras.Model:
    """Fit on the training reviews; returns the raw-text model (one review per row -> logit)."""
    counter, features = _binary_ngrams(texts, params)
    ratio, fit = _fit_scaled(features, labels, params)
    return ngram_model(list(counter.get_feature_names_out()), ratio * fit.coef_[0], float(fit.intercept_[0]),
                       params.ngrams)


def out_of_fold_logits(texts: list[str], labels: np.ndarray, params: DictConfig, folds: int, seed: int) -> np.ndarray:
    """Each review's NBSVM logit from a fit on the other folds (k-fold cross-fitting): what the
    model says of a review it was not fitted on. The n-gram vocabulary (min_df) is counted once
    over all the reviews, which takes no label; the ratios and the regression see only the fold's
    other reviews."""
    _, features = _binary_ngrams(texts, params)
    logits = np.zeros(len(texts))
    for held_out in np.array_split(np.random.default_rng(seed).permutation(len(texts)), folds):
        fitted_on = np.setdiff1d(np.arange(len(texts)), held_out)
        ratio, fit = _fit_scaled(features[fitted_on], labels[fitted_on], params)
        logits[held_out] = fit.decision_function(features[held_out].multiply(ratio).tocsr())
    return logits


def _binary_ngrams(texts: list[str], params: DictConfig):
    """The fitted n-gram counter and the reviews' binary n-gram matrix (rows: reviews)."""
    counter = CountVectorizer(analyzer=lambda grams: grams, binary=True, min_df=params.min_df)
    return counter, counter.fit_transform(ngram_lists(texts, params.ngrams)).tocsr()


def _fit_scaled(features, labels: np.ndarray, params: DictConfig) -> tuple[np.ndarray, LogisticRegression]:
    """The naive-Bayes ratios of these reviews and the logistic regression on the ratio-scaled features."""
    ratio = log_count_ratio(features, labels, params.alpha)
    # liblinear's dual solver visits the reviews in a random order: seeded, a fit is repeatable.
    fit = LogisticRegression(C=params.C, solver="liblinear", dual=True, max_iter=1000, random_state=0)
    return ratio, fit.fit(features.multiply(ratio).tocsr(), labels)


def ngram_model(vocabulary: list[str], weights: np.ndarray, bias: float, ngrams: int) -> keras.Model:
    """Raw text -> bias + the weights of the distinct vocabulary n-grams the review holds."""
    vectorizer = keras.layers.TextVectorization(standardize=standardize_review, ngrams=ngrams, output_mode="int",
                                                vocabulary=vocabulary, name="ngram_ids")
    layer = NgramLogit(vectorizer.vocabulary_size(), name="ngram_weights")
    text = keras.Input(shape=(1,), dtype="string", name=TEXT_COLUMN)
    model = keras.Model(text, layer(vectorizer(text)), name=NGRAM_MODEL)
    layer.weight.assign(np.concatenate([[0.0, 0.0], weights]).astype("float32"))  # ids 0, 1: padding, unknown
    layer.bias.assign(bias)
    return model


def ngram_logit(model: keras.Model, texts: list[str], batch: int = 512) -> np.ndarray:
    """The n-gram model's logit for each review."""
    score = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec([None, 1], tf.string)])
    return np.concatenate([score(tf.constant(texts[start : start + batch])[:, tf.newaxis]).numpy().reshape(-1)
                           for start in range(0, len(texts), batch)] or [np.zeros(0)]).astype("float64")
