"""Build the classifier from config, and wrap it into a model that takes raw text."""

from __future__ import annotations

import math

import keras
import numpy as np
from omegaconf import DictConfig

from sentiment.adversarial import CLASSIFIER, AdversarialTraining
from sentiment.model_code import TEXT_COLUMN, Calibration, MaskedPooling, Stack
from sentiment.weight_averaging import optimizer_options

MODEL_NAME = "lstm_sentiment"


def build_model(cfg: DictConfig, vocab_size: int, embeddings: np.ndarray | None = None,
                steps_per_epoch: int | None = None) -> keras.Model:
    """Embedding -> (Bi)LSTM -> last state or masked pooling -> [Dense relu] -> Dropout -> Dense(sigmoid).

    `embeddings` (vocab_size x embedding_dim) initialise the Embedding when model.embedding_init
    is word2vec; `steps_per_epoch` sizes the learning-rate schedule. With
    train.adversarial_epsilon > 0 it trains adversarially (sentiment.adversarial); train.py hands
    on the plain model of its layers.
    """
    model_cfg = cfg.model
    # Any length: length-bucketed batches are shorter than sequence_length (data.to_dataset).
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    # mask_zero: padding (id 0) is skipped by the LSTM and the pooling instead of being read as words.
    embedding = keras.layers.Embedding(vocab_size, model_cfg.embedding_dim, mask_zero=True,
                                       trainable=model_cfg.embedding_trainable, name="embedding")
    x = embedding(tokens)
    if embeddings is not None:
        embedding.set_weights([embeddings])
    epsilon = cfg.train.adversarial_epsilon
    if epsilon:  # the classifier as a model of its own, so the training step can perturb its input
        embedded = keras.Input(shape=(None, model_cfg.embedding_dim), name="embedded")
        classifier = keras.Model(embedded, _classifier(cfg, embedded), name=CLASSIFIER)
        model = AdversarialTraining(tokens, classifier(x), epsilon=epsilon, name=MODEL_NAME)
    else:
        model = keras.Model(tokens, _classifier(cfg, x), name=MODEL_NAME)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(cfg.train, steps_per_epoch),
                                      **optimizer_options(cfg.train.ema_momentum))
    return compiled(model, optimizer)


def compiled(model: keras.Model, optimizer: keras.optimizers.Optimizer, metrics: list | None = None) -> keras.Model:
    """The model compiled for binary cross-entropy, with accuracy and AUC unless `metrics` says otherwise."""
    model.compile(optimizer=optimizer, loss="binary_crossentropy",
                  metrics=metrics or ["accuracy", keras.metrics.AUC(name="auc")])
    return model


def plain_model(model: keras.Model) -> keras.Model:
    """The model of the same trained layers that is evaluated, logged and served: an adversarially
    trained one without its training step (so nothing of it is saved)."""
    if not isinstance(model, AdversarialTraining):
        return model
    return compiled(keras.Model(model.inputs, model.outputs, name=model.name), model.optimizer)


def _classifier(cfg: DictConfig, x):
    """Everything behind the Embedding: [SpatialDropout1D] -> (Bi)LSTM -> pooling -> [Dense] ->
    Dropout -> Dense(sigmoid), applied to the embedded reviews x (their mask travels with them)."""
    model_cfg, reg = cfg.model, cfg.regularizer
    if reg.embedding_dropout > 0:  # drops whole embedding channels, not single values
        x = keras.layers.SpatialDropout1D(reg.embedding_dropout)(x)
    pooled = model_cfg.pooling != "last"
    lstm = keras.layers.LSTM(model_cfg.units, dropout=reg.dropout, recurrent_dropout=reg.recurrent_dropout,
                             return_sequences=pooled)
    x = (keras.layers.Bidirectional(lstm) if model_cfg.bidirectional else lstm)(x)
    if pooled:
        x = MaskedPooling(model_cfg.pooling, name="pooling")(x)
    l2 = keras.regularizers.L2(reg.l2)
    if model_cfg.dense_units:
        x = keras.layers.Dense(model_cfg.dense_units, activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.Dropout(reg.dropout)(x)
    # With no hidden Dense layer the L2 penalty sits on the output layer's kernel.
    return keras.layers.Dense(1, activation="sigmoid", name="positive",
                              kernel_regularizer=None if model_cfg.dense_units else l2)(x)


def learning_rate(train_cfg: DictConfig, steps_per_epoch: int | None):
    """A float for `constant`; for `cosine`, a decay to 0 over max_epochs (early stopping may cut it)."""
    if train_cfg.lr_schedule == "constant" or not steps_per_epoch:
        return train_cfg.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        train_cfg.learning_rate, decay_steps=max(1, math.ceil(steps_per_epoch * train_cfg.max_epochs))
    )


def end_to_end(model: keras.Model, vectorizer: keras.layers.Layer, name: str = "review_sentiment") -> keras.Model:
    """The trained model behind its vectorizer: one raw review string per row."""
    text = keras.Input(shape=(1,), dtype="string", name=TEXT_COLUMN)
    return keras.Model(text, model(vectorizer(text)), name=name)


def ensemble(members: list[keras.Model]) -> keras.Model:
    """One raw-text model whose probability is the mean of its members' (end-to-end models with
    distinct names)."""
    if len(members) == 1:
        return members[0]
    text = keras.Input(shape=(1,), dtype="string", name=TEXT_COLUMN)
    mean = keras.layers.Average(name="ensemble_mean")([member(text) for member in members])
    return keras.Model(text, mean, name=f"review_sentiment_ensemble_{len(members)}")


def calibrated(model: keras.Model, calibration: Calibration) -> keras.Model:
    """The raw-text model with Platt scaling on its probability (serving.Calibration)."""
    text = keras.Input(shape=(1,), dtype="string", name=TEXT_COLUMN)
    probability = calibration(model(text))
    return keras.Model(text, probability, name=f"{model.name}_calibrated")


def stacked(model: keras.Model, ngram_model: keras.Model, stack: Stack) -> keras.Model:
    """The raw-text model whose probability is the Stack of its own and the n-gram model's logit
    (model_code.Stack; the n-gram model is named model_code.NGRAM_MODEL)."""
    text = keras.Input(shape=(1,), dtype="string", name=TEXT_COLUMN)
    probability = stack([model(text), ngram_model(text)])
    return keras.Model(text, probability, name=f"{model.name}_stacked")
