import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from sentiment.config import apply_sample
from sentiment.model import build_model, end_to_end
from sentiment.tokens import make_vectorizer


def _corners(space):
    """Every combination of each dimension's low and high edge."""
    edges = [[(spec.key, spec.low), (spec.key, spec.high)] for spec in space.values()]
    return [dict(combo) for combo in itertools.product(*edges)]


def _lstm(model):
    layer = next(layer for layer in model.layers if isinstance(layer, (keras.layers.LSTM, keras.layers.Bidirectional)))
    return layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer


@pytest.mark.training
def test_model_builds_at_every_corner_of_the_search_space(tiny_cfg):
    x = np.random.default_rng(0).integers(0, 100, size=(3, tiny_cfg.data.sequence_length))
    for sample in _corners(tiny_cfg.sweep.space):
        model = build_model(apply_sample(tiny_cfg, sample), vocab_size=100)
        lstm = _lstm(model)
        assert lstm.units == sample["model.units"]
        assert lstm.recurrent_dropout == pytest.approx(sample["regularizer.recurrent_dropout"])
        probs = model.predict(x, verbose=0)
        assert probs.shape == (3, 1) and np.all((probs >= 0) & (probs <= 1))


def test_l2_penalty_and_dropout_are_wired_in(tiny_cfg):
    cfg = apply_sample(tiny_cfg, {"regularizer.l2": 0.1, "regularizer.dropout": 0.4})
    model = build_model(cfg, vocab_size=100)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0
    dropout = next(layer for layer in model.layers if type(layer) is keras.layers.Dropout)  # not SpatialDropout1D
    assert dropout.rate == pytest.approx(0.4)


def test_end_to_end_model_takes_raw_text(tiny_cfg):
    vectorizer = make_vectorizer(tiny_cfg.data, vocabulary=["", "[UNK]", "great", "awful"])
    model = end_to_end(build_model(tiny_cfg, vocab_size=4), vectorizer)
    probs = np.asarray(model(tf.constant([["Great film!"], ["awful<br />mess"]])))
    assert probs.shape == (2, 1) and np.all((probs >= 0) & (probs <= 1))


def test_wider_family_options_build(tiny_cfg):
    cfg = apply_sample(tiny_cfg, {"model.bidirectional": True, "regularizer.embedding_dropout": 0.2})
    model = build_model(cfg, vocab_size=100)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Bidirectional", "SpatialDropout1D"} <= kinds
    assert model.predict(np.ones((2, 24), dtype="int32"), verbose=0).shape == (2, 1)


@pytest.mark.parametrize("side, expected", [
    ("head", [[1, 2, 3, 4], [7, 8, 0, 0]]),
    ("tail", [[3, 4, 5, 6], [7, 8, 0, 0]]),
    ("head+tail", [[1, 2, 5, 6], [7, 8, 0, 0]]),
])
def test_keep_tokens_keeps_the_configured_side_and_pads_at_the_end(side, expected):
    from sentiment.model_code import KeepTokens

    ids = tf.constant([[1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]])
    assert KeepTokens(4, side)(ids).numpy().tolist() == expected
    assert KeepTokens(4, side)(tf.zeros((1, 0), tf.int64)).numpy().tolist() == [[0, 0, 0, 0]]


def test_the_vectorizer_keeps_the_end_of_a_long_review(tiny_cfg):
    cfg = apply_sample(tiny_cfg, {"data.sequence_length": 2, "data.truncate": "tail"})
    vectorizer = make_vectorizer(cfg.data, vocabulary=["", "[UNK]", "great", "awful", "film"])
    assert vectorizer(tf.constant(["awful film, great!"])).numpy().tolist() == [[4, 2]]


def test_masked_pooling_ignores_padding():
    from sentiment.model_code import MaskedPooling

    steps = tf.constant([[[1.0, -5.0], [3.0, -1.0], [100.0, 100.0]]])  # the last step is padding
    mask = tf.constant([[True, True, False]])
    assert MaskedPooling("max+mean")(steps, mask=mask).numpy().tolist() == [[3.0, -1.0, 2.0, -3.0]]
    assert MaskedPooling("max")(steps, mask=tf.constant([[False, False, False]])).numpy().tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "max+mean"])
def test_every_pooling_builds_and_padding_does_not_change_the_answer(tiny_cfg, pooling):
    model = build_model(apply_sample(tiny_cfg, {"model.pooling": pooling}), vocab_size=100)
    short = np.array([[5, 6, 7]], dtype="int32")
    padded = np.array([[5, 6, 7, 0, 0, 0]], dtype="int32")
    assert model.predict(short, verbose=0) == pytest.approx(model.predict(padded, verbose=0), abs=1e-6)


def test_cosine_schedule_decays_over_max_epochs(tiny_cfg):
    from sentiment.model import learning_rate

    schedule = learning_rate(apply_sample(tiny_cfg, {"train.lr_schedule": "cosine"}).train, steps_per_epoch=10)
    steps = tiny_cfg.train.max_epochs * 10
    assert float(schedule(0)) == pytest.approx(tiny_cfg.train.learning_rate) and float(schedule(steps)) == 0.0
