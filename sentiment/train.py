"""Train one config: the single code path behind `make train`, every sweep trial and the tests."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
from omegaconf import DictConfig

from sentiment.config import maximizes
from sentiment.embeddings import embedding_matrix
from sentiment.model import build_model, plain_model
from sentiment.tokens import TokenizedData, to_dataset
from sentiment.weight_averaging import AveragedWeightsForValidation

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial is recorded as failed."""


@dataclass
class TrainResult:
    model: keras.Model
    metrics: dict[str, float]  # val_* of the restored best epoch, plus epoch counts
    history: dict[str, list[float]] = field(default_factory=dict)


def train(cfg: DictConfig, data: TokenizedData, callbacks: list | None = None,
          prepare: Callable[[keras.Model], keras.Model] | None = None) -> TrainResult:
    """Fit with early stopping (best weights restored) and score the result. The epoch is chosen
    by the validation metric the search optimizes (sweep.objective): one measure picks both.
    `prepare` may recompile the fresh model before it is fitted (distil: metrics for soft targets)."""
    model = fresh_model(cfg, data, n_reviews=len(data.x_train))
    if prepare is not None:
        model = prepare(model)
    monitor, maximize = cfg.sweep.objective, maximizes(cfg.sweep.objective)
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode="max" if maximize else "min",
                                            patience=cfg.train.early_stopping_patience, restore_best_weights=True)
    buckets = cfg.data.bucket_boundaries
    history = model.fit(
        to_dataset(data.x_train, data.y_train, cfg.data.batch_size, shuffle_seed=init_seed(cfg), bucket_boundaries=buckets),
        validation_data=to_dataset(data.x_val, data.y_val, cfg.data.batch_size, bucket_boundaries=buckets),
        epochs=cfg.train.max_epochs,
        # The averaged weights (train.ema_momentum) are what validation scores and the stopper keeps.
        callbacks=[keras.callbacks.TerminateOnNaN(), AveragedWeightsForValidation(), stopper, *(callbacks or [])],
        shuffle=False,  # the tf.data pipeline already shuffles, seeded
        verbose=0,  # progress is one log line per epoch (trial.EpochLog), not Keras's bars
    ).history
    _raise_if_diverged(history)
    model = plain_model(model)
    val_scores = evaluate(model, data.x_val, data.y_val, cfg.data.batch_size, buckets)
    metrics = {f"val_{k}": v for k, v in val_scores.items()}
    metrics["epochs_trained"] = len(history["loss"])
    metrics["best_epoch"] = int((np.argmax if maximize else np.argmin)(history[monitor])) + 1
    return TrainResult(model, metrics, history)


def refit(cfg: DictConfig, data: TokenizedData, epochs: int, callbacks: list | None = None) -> keras.Model:
    """Train cfg afresh on train+val for a fixed number of epochs (its trial's best epoch count):
    a quarter more reviews, and nothing held out, so no early stopping and no validation score."""
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    model = fresh_model(cfg, data, n_reviews=len(x))
    history = model.fit(
        to_dataset(x, y, cfg.data.batch_size, shuffle_seed=init_seed(cfg), bucket_boundaries=cfg.data.bucket_boundaries),
        epochs=epochs, callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])], shuffle=False, verbose=0,
    ).history
    _raise_if_diverged(history)
    return plain_model(model)


def fresh_model(cfg: DictConfig, data: TokenizedData, n_reviews: int) -> keras.Model:
    """A new compiled model, seeded; n_reviews per epoch sizes the learning-rate schedule."""
    keras.backend.clear_session()  # trials must not accumulate graph state or layer names
    keras.utils.set_random_seed(init_seed(cfg))
    return build_model(cfg, vocab_size=len(data.vocabulary), embeddings=initial_embeddings(cfg, data),
                       steps_per_epoch=steps_per_epoch(cfg, n_reviews))


def init_seed(cfg: DictConfig) -> int:
    """The seed of the weight init and the shuffle order: train.seed, else the root seed (which
    also fixes the data split, so trials with different init seeds share their reviews)."""
    return cfg.seed if cfg.train.seed is None else int(cfg.train.seed)


def initial_embeddings(cfg: DictConfig, data: TokenizedData) -> np.ndarray | None:
    if cfg.model.embedding_init == "random":
        return None
    return embedding_matrix(cfg, data)


def steps_per_epoch(cfg: DictConfig, n_reviews: int) -> int:
    # Length buckets flush one partial batch each, hence the extra steps.
    return math.ceil(n_reviews / cfg.data.batch_size) + len(cfg.data.bucket_boundaries or [])


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
             bucket_boundaries: list[int] | None = None) -> dict[str, float]:
    """loss, accuracy and auc of model on (x, y)."""
    dataset = to_dataset(x, y, batch_size, bucket_boundaries=bucket_boundaries)
    scores = model.evaluate(dataset, verbose=0, return_dict=True)
    return {name: float(value) for name, value in scores.items()}


def predict_proba(model: keras.Model, x: np.ndarray, bucket_boundaries: list[int] | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """Probability of a positive review per row, in row order. Rows are grouped by length bucket
    and cut to its bound: far less padding than the full length, and one graph per bucket."""
    lengths = np.maximum((x > 0).sum(axis=1), 1)
    bounds = [b for b in (bucket_boundaries or []) if b < x.shape[1]] + [x.shape[1]]
    bucket = np.searchsorted(bounds, lengths)  # index of the first bound >= length
    probability = np.empty(len(x), dtype="float64")
    for index, bound in enumerate(bounds):
        rows = np.flatnonzero(bucket == index)
        if len(rows):
            probability[rows] = model.predict(x[rows, :bound], batch_size=batch_size, verbose=0).reshape(-1)
    return probability


def _raise_if_diverged(history: dict[str, list[float]]) -> None:
    for name in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(name, []), start=1):
            if not math.isfinite(value):
                raise TrainingDiverged(f"{name} became {value} at epoch {epoch}")
