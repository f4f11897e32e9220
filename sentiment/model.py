"""Build the classifier from config, and wrap it into a model that takes raw text."""

from __future__ import annotations

import keras
from omegaconf import DictConfig


def build_model(cfg: DictConfig, vocab_size: int) -> keras.Model:
    """Embedding -> LSTM -> Dense(relu, L2) -> Dropout -> Dense(sigmoid), compiled."""
    reg = cfg.regularizer
    # Any length: length-bucketed batches are shorter than sequence_length (data.to_dataset).
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    # mask_zero: padding (id 0) is skipped by the LSTM instead of being read as words.
    x = keras.layers.Embedding(vocab_size, cfg.model.embedding_dim, mask_zero=True)(tokens)
    if reg.embedding_dropout > 0:  # drops whole embedding channels, not single values
        x = keras.layers.SpatialDropout1D(reg.embedding_dropout)(x)
    lstm = keras.layers.LSTM(cfg.model.units, dropout=reg.dropout, recurrent_dropout=reg.recurrent_dropout)
    x = (keras.layers.Bidirectional(lstm) if cfg.model.bidirectional else lstm)(x)
    x = keras.layers.Dense(
        cfg.model.dense_units, activation="relu", kernel_regularizer=keras.regularizers.L2(reg.l2)
    )(x)
    x = keras.layers.Dropout(reg.dropout)(x)
    positive = keras.layers.Dense(1, activation="sigmoid", name="positive")(x)
    model = keras.Model(tokens, positive, name="lstm_sentiment")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.train.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model


def end_to_end(model: keras.Model, vectorizer: keras.layers.Layer) -> keras.Model:
    """The trained model behind its TextVectorization: one raw review string per row."""
    text = keras.Input(shape=(1,), dtype="string", name="text")
    return keras.Model(text, model(vectorizer(text)), name="review_sentiment")
