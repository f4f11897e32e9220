"""How the final model's members are chosen from the candidates, and how it is calibrated:
on validation only."""

import importlib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from sentiment.final_model import best_prefix, choose_members, fit_calibration
from sentiment.model import build_model, calibrated, end_to_end
from sentiment.model_code import KERAS_ARTIFACT, Calibration, ReviewClassifier
from sentiment.search.noise import SeedNoise
from sentiment.tokens import make_vectorizer
from tests.conftest import tiny_overrides

LABELS = np.array([1, 0, 1, 0, 1, 0])


def test_a_weak_tail_is_left_out():
    strong = np.array([0.9, 0.1, 0.55, 0.45, 0.9, 0.1])
    second = np.array([0.6, 0.4, 0.95, 0.05, 0.7, 0.3])  # sure where the first hesitates
    weak = np.array([0.4, 0.6, 0.5, 0.5, 0.3, 0.7])  # mostly wrong: averaging it in raises the loss
    assert best_prefix(LABELS, [strong, second, weak]) == 2


def test_members_that_fix_each_others_mistakes_are_kept():
    first = np.array([0.9, 0.1, 0.4, 0.2, 0.9, 0.6])
    second = np.array([0.6, 0.4, 0.9, 0.6, 0.7, 0.1])
    third = np.array([0.7, 0.6, 0.8, 0.1, 0.6, 0.2])
    assert best_prefix(LABELS, [first, second, third]) == 3


def test_one_candidate_and_ties_keep_the_fewest():
    same = np.array([0.9, 0.1, 0.8, 0.2, 0.9, 0.1])
    assert best_prefix(LABELS, [same]) == 1
    assert best_prefix(LABELS, [same, same.copy()]) == 1  # an identical copy adds nothing


def _noise(final_sd):
    return SeedNoise("val_loss", {1: final_sd}, final_sd=final_sd, repeats=[0, 1], widths=2.0)


@pytest.fixture
def ensemble_cfg(imdb_dir, tmp_path):
    from sentiment.config import load_config

    return load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.final=ensemble", "sweep.ensemble_noise_widths=1"])


def test_a_mean_that_beats_the_best_trial_beyond_the_noise_is_taken(ensemble_cfg):
    first = np.array([0.9, 0.1, 0.4, 0.2, 0.9, 0.6])
    second = np.array([0.6, 0.4, 0.9, 0.6, 0.7, 0.1])
    gain = _log_loss(first) - _log_loss((first + second) / 2)
    assert gain > 0.02
    n, why = choose_members(ensemble_cfg, LABELS, [first, second], _noise(gain / 2))
    assert n == 2 and f"better on val_loss by {gain:.4f}, beyond the noise margin {gain / 2:.4f}" in why


def test_a_mean_within_the_noise_of_the_best_trial_gives_way_to_the_best_trial(ensemble_cfg):
    first = np.array([0.9, 0.1, 0.4, 0.2, 0.9, 0.6])
    second = np.array([0.6, 0.4, 0.9, 0.6, 0.7, 0.1])
    gain = _log_loss(first) - _log_loss((first + second) / 2)
    n, why = choose_members(ensemble_cfg, LABELS, [first, second], _noise(gain * 2))
    assert n == 1 and "within the noise margin" in why
    # Without a noise estimate the best prefix on validation decides alone.
    assert choose_members(ensemble_cfg, LABELS, [first, second], None)[0] == 2


def _log_loss(probability):
    from sentiment.metrics import classification_metrics

    return classification_metrics(LABELS, probability)["loss"]


def test_calibration_undoes_a_decision_offset():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.02, 0.98, 20000)
    labels = (rng.uniform(size=truth.size) < truth).astype(int)
    shifted = 1 / (1 + np.exp(-(np.log(truth / (1 - truth)) - 1.5)))  # a model too ready to say negative
    scaling = fit_calibration(labels, shifted)
    slope, intercept = scaling.slope, scaling.intercept
    assert slope == pytest.approx(1.0, abs=0.1) and intercept == pytest.approx(1.5, abs=0.1)
    fixed = scaling.scale(shifted)
    assert fixed == pytest.approx(truth, abs=0.03)
    assert ((fixed >= 0.5) == labels).mean() > ((shifted >= 0.5) == labels).mean()


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # untrained: no optimizer state
def test_a_calibrated_model_is_served_calibrated_after_saving(tiny_cfg, tmp_path):
    vocabulary = ["", "[UNK]", "great", "awful", "film"]
    raw = end_to_end(build_model(tiny_cfg, vocab_size=len(vocabulary)), make_vectorizer(tiny_cfg.data, vocabulary))
    path = tmp_path / "model.keras"
    calibrated(raw, Calibration(2.0, -0.5)).save(path)
    reviews = ["great film", "awful awful film, not great", ""]
    expected = np.asarray(Calibration(2.0, -0.5)(raw(tf.constant(reviews)[:, tf.newaxis]))).reshape(-1)
    assert np.asarray(keras.models.load_model(path)(tf.constant(reviews)[:, tf.newaxis])).reshape(-1) \
        == pytest.approx(expected, abs=1e-6)
    classifier = ReviewClassifier()  # the serving path: members' token models, then the calibration
    classifier.load_context(type("Context", (), {"artifacts": {KERAS_ARTIFACT: str(path)}})())
    assert classifier._score(reviews) == pytest.approx(expected, abs=1e-6)


def test_the_stack_recovers_planted_weights_of_the_two_logits():
    from sentiment.final_model import fit_stack

    rng = np.random.default_rng(1)
    lstm_logit, ngram_logit = rng.normal(0, 2, 20000), rng.normal(0, 2, 20000)
    truth = 1 / (1 + np.exp(-(0.5 * lstm_logit + 1.5 * ngram_logit - 0.7)))
    labels = (rng.uniform(size=truth.size) < truth).astype(int)
    layer = fit_stack(labels, 1 / (1 + np.exp(-lstm_logit)), ngram_logit)
    assert (layer.lstm_weight, layer.ngram_weight, layer.intercept) == pytest.approx((0.5, 1.5, -0.7), abs=0.1)
    assert layer.scale(1 / (1 + np.exp(-lstm_logit)), ngram_logit) == pytest.approx(truth, abs=0.03)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # untrained: no optimizer state
def test_a_stacked_model_is_served_as_its_stack_after_saving(tiny_cfg, tmp_path, monkeypatch):
    from sentiment import model_code
    from sentiment.model import stacked
    from sentiment.model_code import Stack, _head
    from sentiment.nbsvm import ngram_logit, ngram_model

    vocabulary = ["", "[UNK]", "great", "awful", "film"]
    raw = end_to_end(build_model(tiny_cfg, vocab_size=len(vocabulary)), make_vectorizer(tiny_cfg.data, vocabulary))
    ngrams = ngram_model(["great", "awful", "not great"], np.array([1.0, -1.0, -2.0]), 0.1, ngrams=2)
    path = tmp_path / "model.keras"
    stacked(raw, ngrams, Stack(0.8, 1.2, -0.3)).save(path)
    reviews = ["great film", "awful awful film, not great", ""]
    lstm = np.asarray(raw(tf.constant(reviews)[:, tf.newaxis])).reshape(-1)
    expected = Stack(0.8, 1.2, -0.3).scale(lstm, ngram_logit(ngrams, reviews))
    assert np.asarray(keras.models.load_model(path)(tf.constant(reviews)[:, tf.newaxis])).reshape(-1) \
        == pytest.approx(expected, abs=1e-6)
    # A process that loaded a logged model has a second copy of model_code (imported from the
    # model's code as `model_code`), and Keras builds the layers of whichever copy registered last.
    monkeypatch.syspath_prepend(str(Path(model_code.__file__).parent))
    importlib.import_module("model_code")
    classifier = ReviewClassifier()  # the serving path: the LSTM's token models and the n-gram model, then the stack
    classifier.load_context(type("Context", (), {"artifacts": {KERAS_ARTIFACT: str(path)}})())
    assert classifier._score(reviews) == pytest.approx(expected, abs=1e-6)
    head = _head(classifier.model)[1]  # served through the fast path, not the fallback
    assert keras.saving.get_registered_name(type(head)) == "sentiment>Stack"
