"""Adversarial training on the embeddings: the step it takes, and the model it hands on."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sentiment.adversarial import AdversarialTraining
from sentiment.config import apply_sample
from sentiment.model import build_model
from sentiment.tokens import load_data
from sentiment.train import train


def _adversarial(tiny_cfg, epsilon=2.0):
    return apply_sample(tiny_cfg, {"train.adversarial_epsilon": epsilon})


def test_the_step_has_the_configured_size_skips_padding_and_raises_the_loss(tiny_cfg):
    keras.utils.set_random_seed(0)
    model = build_model(_adversarial(tiny_cfg, epsilon=2.0), vocab_size=100)
    assert isinstance(model, AdversarialTraining)
    tokens = tf.constant([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]], dtype="int32")
    labels = tf.constant([[1.0], [0.0]])
    embedded, mask = model.get_layer("embedding")(tokens), tf.not_equal(tokens, 0)
    classifier = model.get_layer("classifier")
    _, clean_loss, step = model._loss_and_step(classifier, embedded, mask, tokens, labels)
    real = mask.numpy()
    spread = np.std(embedded.numpy()[real])  # over the real tokens' values, as the step is scaled
    norms = np.sqrt((step.numpy() ** 2).sum(axis=(1, 2)))
    assert norms == pytest.approx([2.0 * spread] * 2, rel=1e-3)  # one L2 norm per review
    assert not step.numpy()[~real].any()  # padding is never moved
    moved = model.compute_loss(x=tokens, y=labels, y_pred=classifier(embedded + step, mask=mask, training=False))
    still = model.compute_loss(x=tokens, y=labels, y_pred=classifier(embedded, mask=mask, training=False))
    random = tf.random.normal(step.shape) * tf.cast(mask, "float32")[..., None]
    random = random / tf.norm(random, axis=[1, 2], keepdims=True) * norms[:, None, None]
    sideways = model.compute_loss(x=tokens, y=labels, y_pred=classifier(embedded + random, mask=mask, training=False))
    assert float(moved) > float(still) and float(moved) > float(sideways)  # uphill, steeper than at random
    assert float(clean_loss) > 0


def test_the_split_model_answers_as_the_plain_one_with_its_weights_padding_included(tiny_cfg):
    """The mask reaches the LSTM and the pooling inside the nested classifier."""
    split, plain = build_model(_adversarial(tiny_cfg), vocab_size=100), build_model(tiny_cfg, vocab_size=100)
    plain.set_weights(split.get_weights())
    short = np.array([[5, 6, 7]], dtype="int32")
    padded = np.array([[5, 6, 7, 0, 0, 0]], dtype="int32")
    answers = [model.predict(x, verbose=0) for model in (split, plain) for x in (short, padded)]
    assert answers[1:] == [pytest.approx(answers[0], abs=1e-6)] * 3


@pytest.mark.training
def test_adversarial_training_trains_otherwise_and_hands_on_a_plain_model_that_saves(tiny_cfg, tmp_path):
    data = load_data(tiny_cfg)
    plain, adversarial = train(tiny_cfg, data), train(_adversarial(tiny_cfg), data)
    assert not isinstance(adversarial.model, AdversarialTraining)  # nothing of the training step is kept
    assert adversarial.model.count_params() == plain.model.count_params()
    assert adversarial.history["loss"] != plain.history["loss"]  # same seed, another objective
    assert all(np.isfinite(adversarial.history["loss"])) and adversarial.metrics["val_accuracy"] > 0
    path = tmp_path / "model.keras"
    adversarial.model.save(path)
    again = keras.saving.load_model(path)
    x = data.x_val[:8]
    assert again.predict(x, verbose=0) == pytest.approx(adversarial.model.predict(x, verbose=0), abs=1e-6)


def test_a_negative_epsilon_is_one_line_naming_the_key(tiny_cfg, imdb_dir, tmp_path):
    from sentiment.config import load_config
    from sentiment.errors import ConfigError
    from tests.conftest import tiny_overrides

    with pytest.raises(ConfigError, match="train.adversarial_epsilon"):
        load_config(tiny_overrides(imdb_dir, tmp_path) + ["train.adversarial_epsilon=-1"])
