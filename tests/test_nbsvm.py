"""NBSVM: its naive-Bayes ratios, and that the raw-text Keras model scores exactly the n-grams the
fit saw (the model that is logged, stacked and served is the one that was fitted)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from sentiment import nbsvm

PARAMS = OmegaConf.create({"ngrams": 3, "min_df": 1, "alpha": 1.0, "C": 4.0})


def test_the_log_count_ratio_of_a_planted_matrix():
    features = sparse.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 1]]))
    labels = np.array([1, 1, 0, 0])
    ratio = nbsvm.log_count_ratio(features, labels, alpha=1.0)
    p, q = np.array([3.0, 2.0, 1.0]), np.array([2.0, 1.0, 3.0])  # 1 + the column counts of each class
    np.testing.assert_allclose(ratio, np.log((p / p.sum()) / (q / q.sum())))
    assert ratio[1] > 0 > ratio[2]  # a word of positive reviews only, and one of negative ones


def test_ngram_lists_are_the_standardized_1_to_3_grams():
    [grams] = nbsvm.ngram_lists(["Not GOOD,<br />at all"], 3)
    assert sorted(grams) == sorted(["not", "good", "at", "all", "not good", "good at", "at all",
                                    "not good at", "good at all"])


def test_a_repeated_ngram_counts_once_and_an_unknown_one_weighs_nothing():
    model = nbsvm.ngram_model(["good", "not good"], np.array([1.0, -3.0]), 0.25, ngrams=2)
    logits = nbsvm.ngram_logit(model, ["good", "good good good", "not good", "unknown words only", ""])
    np.testing.assert_allclose(logits, [1.25, 1.25, 0.25 + 1.0 - 3.0, 0.25, 0.25], rtol=1e-6)


REVIEWS = ["a great film , truly great", "not great at all", "an awful film", "not awful at all , great",
           "boring and awful", "great acting and a great story", "awful awful awful", "the story was not boring"]
LABELS = np.array([1, 0, 0, 1, 0, 1, 0, 1])


def test_the_keras_model_scores_what_the_fit_saw_and_survives_saving(tmp_path):
    model = nbsvm.fit_nbsvm(REVIEWS, LABELS, PARAMS)
    # The same linear model computed outside Keras, on the features the fit used.
    counter = CountVectorizer(analyzer=lambda grams: grams, binary=True).fit(nbsvm.ngram_lists(REVIEWS, 3))
    layer = model.get_layer("ngram_weights")
    vocabulary = model.get_layer("ngram_ids").get_vocabulary()[2:]
    assert sorted(vocabulary) == sorted(counter.get_feature_names_out())
    weight = dict(zip(vocabulary, np.asarray(layer.weight)[2:], strict=True))
    held_out = ["great great story", "awful and boring , not great", "words it never saw"]
    expected = [float(layer.bias) + sum(weight.get(gram, 0.0) for gram in set(grams))
                for grams in nbsvm.ngram_lists(held_out, 3)]
    np.testing.assert_allclose(nbsvm.ngram_logit(model, held_out), expected, rtol=1e-5, atol=1e-6)
    assert (nbsvm.ngram_logit(model, REVIEWS) > 0).astype(int).tolist() == LABELS.tolist()  # it learned its cues
    path = tmp_path / "nbsvm.keras"
    model.save(path)
    np.testing.assert_allclose(nbsvm.ngram_logit(keras.models.load_model(path), held_out), expected, rtol=1e-5,
                               atol=1e-6)


def test_min_df_drops_the_rare_ngrams():
    model = nbsvm.fit_nbsvm(REVIEWS, LABELS, OmegaConf.merge(PARAMS, {"min_df": 2}))
    vocabulary = set(model.get_layer("ngram_ids").get_vocabulary()[2:])
    assert {"great", "awful", "not", "at all"} <= vocabulary and "truly" not in vocabulary


def test_ngram_logit_of_no_reviews_is_empty():
    model = nbsvm.ngram_model(["good"], np.array([1.0]), 0.0, ngrams=1)
    assert nbsvm.ngram_logit(model, []).shape == (0,)
    assert tf.is_tensor(model(tf.constant([["good"]])))
    assert float(model(tf.constant([["good"]]))[0, 0]) == pytest.approx(1.0)


def test_an_out_of_fold_logit_is_the_fit_on_the_other_folds_and_never_sees_its_own_label():
    held_out = nbsvm.out_of_fold_logits(REVIEWS, LABELS, PARAMS, folds=4, seed=0)
    flipped = LABELS.copy()
    flipped[0] = 1 - flipped[0]
    again = nbsvm.out_of_fold_logits(REVIEWS, flipped, PARAMS, folds=4, seed=0)
    assert again[0] == pytest.approx(held_out[0], rel=1e-9)  # review 0's own label never reaches its logit ...
    assert not np.allclose(np.delete(again, 0), np.delete(held_out, 0))  # ... but the other folds' fits use it
    in_sample = nbsvm.ngram_logit(nbsvm.fit_nbsvm(REVIEWS, LABELS, PARAMS), REVIEWS)
    # Fitted on a review, NBSVM is surer of it than when the review is held out.
    assert np.mean(np.abs(in_sample)) > np.mean(np.abs(held_out))


def test_with_one_review_per_fold_each_logit_is_the_fit_on_all_the_others():
    held_out = nbsvm.out_of_fold_logits(REVIEWS, LABELS, PARAMS, folds=len(REVIEWS), seed=3)
    others = [i for i in range(len(REVIEWS)) if i != 5]
    counter = CountVectorizer(analyzer=lambda grams: grams, binary=True).fit(nbsvm.ngram_lists(REVIEWS, 3))
    features = counter.transform(nbsvm.ngram_lists(REVIEWS, 3)).tocsr()
    ratio = nbsvm.log_count_ratio(features[others], LABELS[others], PARAMS.alpha)
    fit = LogisticRegression(C=PARAMS.C, solver="liblinear", dual=True, max_iter=1000, random_state=0)
    fit.fit(features[others].multiply(ratio).tocsr(), LABELS[others])
    expected = fit.decision_function(features[5].multiply(ratio).tocsr())[0]
    assert held_out[5] == pytest.approx(expected, rel=1e-9)
