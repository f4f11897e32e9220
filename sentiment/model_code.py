"""The served model: raw review text in, probability of a positive review out.

MLflow logs this file as a "model from code" (a copy travels inside every logged model), so it
must stay self-contained: it imports only libraries listed in the model's requirements, never
the rest of this package. It also defines the custom pieces a saved model is made of (text
standardization, token truncation, masked pooling, calibration): the training code imports them
from here, so training and serving share them. Their registered names (`sentiment>KeepTokens`,
...) never change: versions registered earlier name them in their saved configs.
"""

from __future__ import annotations

import queue
import re
import string
import threading
import weakref
from concurrent.futures import Future

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

TEXT_COLUMN = "text"
KERAS_ARTIFACT = "keras_model"
_PUNCTUATION = f"[{re.escape(string.punctuation)}]"


@keras.saving.register_keras_serializable(package="sentiment", name="standardize_review")
def standardize_review(text: tf.Tensor) -> tf.Tensor:
    """Lower-case, turn HTML line breaks (`<br />` in aclImdb) and punctuation into spaces."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    return tf.strings.regex_replace(text, _PUNCTUATION, " ")


@keras.saving.register_keras_serializable(package="sentiment", name="KeepTokens")
class KeepTokens(keras.layers.Layer):
    """Cut padded token ids (padding 0 only trails) to `length`, keeping the review's head,
    its tail, or half of each. Shorter reviews stay whole; the output is padded at the end.

    IMDb reviewers tend to state their verdict last, so which side is kept matters.
    """

    SIDES = ("head", "tail", "head+tail")  # config.TRUNCATION_SIDES offers these to users

    def __init__(self, length: int, side: str, **kwargs):
        super().__init__(**kwargs)
        if side not in self.SIDES:
            raise ValueError(f"unknown truncation side {side!r}")
        self.length, self.side = int(length), side

    def call(self, ids):
        ids = tf.pad(ids, [[0, 0], [0, 1]])  # at least one column, even for empty reviews
        n = tf.math.count_nonzero(ids, axis=1, dtype=tf.int32)[:, tf.newaxis]  # review lengths
        j = tf.range(self.length, dtype=tf.int32)[tf.newaxis, :]
        if self.side == "head":
            source = j + 0 * n
        elif self.side == "tail":
            source = j + tf.maximum(n - self.length, 0)
        else:
            head = self.length // 2
            source = tf.where((n <= self.length) | (j < head), j, n - self.length + j)
        valid = source < n
        source = tf.minimum(source, tf.shape(ids)[1] - 1)
        return tf.where(valid, tf.gather(ids, source, batch_dims=1), tf.zeros_like(source, dtype=ids.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length)

    def get_config(self):
        return {**super().get_config(), "length": self.length, "side": self.side}


@keras.saving.register_keras_serializable(package="sentiment", name="MaskedPooling")
class MaskedPooling(keras.layers.Layer):
    """Max, mean or both (concatenated) over time steps, ignoring masked (padding) steps."""

    MODES = ("max", "mean", "max+mean")  # config.POOLING_MODES offers these, and `last` (no pooling layer)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown pooling mode {mode!r}")
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
        keep = tf.cast(mask, inputs.dtype)[:, :, tf.newaxis]
        pooled = []
        if "max" in self.mode:  # a padded step can never be the maximum; an empty review gives 0
            highest = tf.reduce_max(inputs + (keep - 1.0) * 1e9, axis=1)
            pooled.append(tf.where(tf.reduce_any(mask, axis=1)[:, tf.newaxis], highest, 0.0))
        if "mean" in self.mode:
            pooled.append(tf.reduce_sum(inputs * keep, axis=1) / tf.maximum(tf.reduce_sum(keep, axis=1), 1.0))
        return tf.concat(pooled, axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None  # one vector per review: nothing left to mask

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * (2 if self.mode == "max+mean" else 1))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="sentiment", name="Calibration")
class Calibration(keras.layers.Layer):
    """Platt scaling of a probability: sigmoid(slope * logit(p) + intercept), fitted on validation
    reviews of movies the model never trained on. A model's decision offset differs between the
    movies it trained on and new ones; this moves it back to 0.5."""

    EPSILON = 1e-7  # probabilities are clipped away from 0 and 1 before the logit

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.slope, self.intercept = float(slope), float(intercept)

    def call(self, probability):
        p = tf.clip_by_value(probability, self.EPSILON, 1.0 - self.EPSILON)
        return tf.sigmoid(self.slope * tf.math.log(p / (1.0 - p)) + self.intercept)

    def compute_output_shape(self, input_shape):
        return input_shape

    def scale(self, probability: np.ndarray) -> np.ndarray:
        """The layer on an array of probabilities, for scoring outside a model."""
        return np.asarray(self(np.asarray(probability, dtype="float32"))).astype("float64")

    def get_config(self):
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


@keras.saving.register_keras_serializable(package="sentiment", name="NgramLogit")
class NgramLogit(keras.layers.Layer):
    """A linear model over which word n-grams a review holds (NBSVM's binarized features): the
    bias plus the weight of each distinct n-gram id, from a TextVectorization in `int` mode with
    `ngrams` (ids 0 and 1, padding and out-of-vocabulary, weigh 0). Weights are fitted outside
    Keras (sentiment.nbsvm), so they are not trainable here."""

    def __init__(self, vocabulary_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)

    def build(self, input_shape):
        self.weight = self.add_weight(shape=(self.vocabulary_size,), initializer="zeros", trainable=False,
                                      name="weight")
        self.bias = self.add_weight(shape=(), initializer="zeros", trainable=False, name="bias")

    def call(self, ids):
        ids = tf.sort(ids, axis=1)  # a repeated n-gram counts once: keep the first of each run
        first = tf.concat([tf.ones_like(ids[:, :1], dtype=tf.bool), ids[:, 1:] != ids[:, :-1]], axis=1)
        weights = tf.gather(self.weight, ids) * tf.cast(first, self.weight.dtype)
        return (tf.reduce_sum(weights, axis=1) + self.bias)[:, tf.newaxis]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="sentiment", name="Stack")
class Stack(keras.layers.Layer):
    """The stacked probability sigmoid(lstm_weight * logit(p) + ngram_weight * z + intercept) of
    the LSTM's probability p and the n-gram model's logit z, weights fitted on validation (a
    logistic regression on the two, which also calibrates the LSTM's offset)."""

    def __init__(self, lstm_weight: float = 1.0, ngram_weight: float = 0.0, intercept: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.lstm_weight, self.ngram_weight, self.intercept = float(lstm_weight), float(ngram_weight), float(intercept)

    def call(self, inputs):
        probability, ngram_logit = inputs
        p = tf.clip_by_value(probability, Calibration.EPSILON, 1.0 - Calibration.EPSILON)
        lstm_logit = tf.math.log(p / (1.0 - p))
        return tf.sigmoid(self.lstm_weight * lstm_logit + self.ngram_weight * tf.cast(ngram_logit, p.dtype)
                          + self.intercept)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def scale(self, probability: np.ndarray, ngram_logit: np.ndarray) -> np.ndarray:
        """The layer on arrays, for scoring outside a model."""
        as_column = [np.asarray(a, dtype="float32").reshape(-1, 1) for a in (probability, ngram_logit)]
        return np.asarray(self(as_column)).astype("float64").reshape(-1)

    def get_config(self):
        return {**super().get_config(), "lstm_weight": self.lstm_weight, "ngram_weight": self.ngram_weight,
                "intercept": self.intercept}


class BadInput(MlflowException):
    """A request the model cannot score; the scoring server answers 400 with this one line
    (an MlflowException carries no stack trace into the response, unlike other errors)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def reviews_from_input(model_input) -> list[str]:
    """Accept a DataFrame with a `text` column, a Series, or a list of strings."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise BadInput(f"input needs a {TEXT_COLUMN!r} column, got {list(map(str, model_input.columns))}")
        model_input = model_input[TEXT_COLUMN]
    values = list(model_input)
    for row, value in enumerate(values):
        if not isinstance(value, str):
            shown = "null" if value is None or (isinstance(value, float) and np.isnan(value)) else type(value).__name__
            raise BadInput(f"row {row}: every {TEXT_COLUMN!r} value must be a string, got {shown}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate (JSON "\ud800"): no UTF-8 for TensorFlow
            raise BadInput(f"row {row}: the {TEXT_COLUMN!r} value is not valid Unicode "
                           f"(a lone surrogate at character {err.start})") from None
    return values


NGRAM_MODEL = "ngram_logit"  # the name of a stacked model's n-gram part (raw text -> logit)


def _registered_as(layer: keras.layers.Layer, *classes: type) -> bool:
    """Whether the layer is one of these classes by its registered name, not its identity: a
    process that imported this file twice (as `sentiment.model_code` and, from a logged model's
    code, as `model_code`) loads layers of whichever copy registered last."""
    names = {keras.saving.get_registered_name(cls) for cls in classes}
    return keras.saving.get_registered_name(type(layer)) in names


def _head(model: keras.Model) -> tuple[keras.Model, keras.layers.Layer | None, keras.Model | None]:
    """(the LSTM's raw-text model, the layer on top of its probability, the n-gram model) of a
    calibrated model (model.calibrated: a Calibration on top) or a stacked one (model.stacked:
    a Stack of it and an NgramLogit model); (model, None, None) for a plain one."""
    heads = [layer for layer in model.layers if _registered_as(layer, Calibration, Stack)]
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != NGRAM_MODEL]
    ngram = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name == NGRAM_MODEL]
    if len(heads) == 1 and len(inner) == 1 and len(ngram) == int(_registered_as(heads[0], Stack)):
        return inner[0], heads[0], ngram[0] if ngram else None
    return model, None, None


def _token_parts(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.Model]] | None:
    """(vectorizer, token model) of each member of an uncalibrated raw-text model (an ensemble's
    members are Keras models), or None if it is not made of them."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not any(isinstance(layer, keras.layers.Average) for layer in model.layers):
        members = [model]
    parts = []
    for member in members:
        named = {layer.name: layer for layer in member.layers}
        if "vectorizer" not in named or "lstm_sentiment" not in named:
            return None
        parts.append((named["vectorizer"], named["lstm_sentiment"]))
    return parts


def _trim_padding(ids: tf.Tensor) -> tf.Tensor:
    """Drop the padding columns every review of the batch has: the LSTM needn't step over them."""
    longest = tf.reduce_max(tf.math.count_nonzero(ids, axis=1, dtype=tf.int32))
    return ids[:, : tf.maximum(longest, 1)]


class MicroBatcher:
    """Coalesces concurrent calls into one: the scoring server runs each request in its own
    thread, and one forward pass over 32 waiting reviews costs far less than 32 passes over one.

    A single worker thread takes whatever is queued (up to MAX_REVIEWS per pass, so one huge
    request does not hold up the small ones queued behind it for long), scores it at once and
    hands each caller its own rows; a lone caller waits for nothing but its own pass. The
    thread holds the model only weakly and ends when the batcher is dropped.
    """

    MAX_REVIEWS = 1024
    TIMEOUT_S = 600  # a caller never waits forever (e.g. on a thread lost to a fork)

    def __init__(self, score):
        self._queue = queue.SimpleQueue()
        # A model's bound method is held weakly, so a dropped model is freed; a plain function as is.
        score_ref = weakref.WeakMethod(score) if hasattr(score, "__self__") else (lambda: score)
        threading.Thread(target=self._serve, args=(score_ref, self._queue), name="micro-batcher",
                         daemon=True).start()

    def __del__(self) -> None:
        self._queue.put(None)  # wakes the thread to end it

    def __call__(self, reviews: list[str]) -> np.ndarray:
        done: Future = Future()
        self._queue.put((reviews, done))
        return done.result(timeout=self.TIMEOUT_S)

    @classmethod
    def _serve(cls, score_ref, waiting_calls) -> None:
        carried = None
        while True:
            batch = [carried or waiting_calls.get()]
            carried = None
            while batch[-1] is not None and not waiting_calls.empty():
                if sum(len(reviews) for reviews, _ in batch) >= cls.MAX_REVIEWS:
                    carried = waiting_calls.get_nowait()  # first in the next pass
                    break
                batch.append(waiting_calls.get_nowait())
            score = score_ref()
            if batch[-1] is None or score is None:  # the batcher or the model is gone
                return
            try:
                cls._score_pass(score, batch)
            finally:
                del score

    @staticmethod
    def _score_pass(score, batch) -> None:
        """Score the callers of one pass together; if that fails, each alone, so that one bad
        request fails only itself."""
        try:
            scores = score([review for reviews, _ in batch for review in reviews])
        except BaseException as err:
            if len(batch) == 1:
                batch[0][1].set_exception(err)
                return
            for call in batch:
                MicroBatcher._score_pass(score, [call])
            return
        start = 0
        for reviews, done in batch:
            done.set_result(scores[start : start + len(reviews)])
            start += len(reviews)


class ReviewClassifier(mlflow.pyfunc.PythonModel):
    """Wraps the end-to-end Keras model (vectorizer inside) for pyfunc and serving.

    Calling the Keras model eagerly would run the LSTM loop op by op per request. At load, the
    forward pass is traced once into a graph over any number of strings and warmed up, so no
    request re-traces. Reviews are scored in chunks of similar length, each with its shared
    padding trimmed, so the LSTM steps over little padding; concurrent requests share passes.
    """

    CHUNK = 128  # reviews per graph call, after sorting by length: bounds memory and padding

    def load_context(self, context) -> None:
        self.model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT])
        lstm, head, ngram = _head(self.model)
        parts = _token_parts(lstm)

        def before_head(text):
            if parts is None:  # not built from our pieces: the whole model as one graph
                return lstm(text, training=False)
            scores = [model(_trim_padding(vectorizer(text)), training=False) for vectorizer, model in parts]
            return tf.add_n(scores) / len(scores)

        def forward(text):
            if head is None:
                return before_head(text)
            return head(before_head(text)) if ngram is None else head([before_head(text), ngram(text, training=False)])

        signature = [tf.TensorSpec([None, 1], tf.string)]
        self._forward, self._before_head = (tf.function(f, input_signature=signature) for f in (forward, before_head))
        self._forward(tf.constant([["A warm-up review, traced once."], [""]]))
        self._batched = MicroBatcher(self._score)

    def lstm_probability(self, reviews: list[str]) -> np.ndarray:
        """The LSTM part's probability alone, before the head a calibrated or stacked model puts on
        it (`make distil` recombines a stack's head with other n-gram logits)."""
        return self._score(reviews, self._before_head)

    def _score(self, reviews: list[str], forward=None) -> np.ndarray:
        """Probabilities in input order (of the whole model, or of `forward`), computed over length-sorted chunks."""
        forward = forward or self._forward
        order = np.argsort([len(review) for review in reviews], kind="stable")
        probability = np.empty(len(reviews), dtype="float64")
        for start in range(0, len(order), self.CHUNK):
            rows = order[start : start + self.CHUNK]
            chunk = tf.constant([reviews[i] for i in rows])[:, tf.newaxis]
            probability[rows] = forward(chunk).numpy().reshape(-1)
        return probability

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        reviews = reviews_from_input(model_input)
        probability = self._batched(reviews) if reviews else np.zeros(0, dtype="float64")
        label = np.where(probability >= 0.5, "positive", "negative").astype(object)
        return pd.DataFrame({"probability": probability, "label": label})


mlflow.models.set_model(ReviewClassifier())
