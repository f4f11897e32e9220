"""The served model: raw review text in, probability of a positive review out.

MLflow logs this file as a "model from code", so it must stay self-contained: it imports
only libraries listed in the model's requirements, never the rest of this package. The
training code imports `standardize_review` from here so both sides clean text the same way.
"""

from __future__ import annotations

import re
import string

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

TEXT_COLUMN = "text"
KERAS_ARTIFACT = "keras_model"
_PUNCTUATION = f"[{re.escape(string.punctuation)}]"


@keras.saving.register_keras_serializable(package="sentiment", name="standardize_review")
def standardize_review(text: tf.Tensor) -> tf.Tensor:
    """Lower-case, turn HTML line breaks (`<br />` in aclImdb) and punctuation into spaces."""
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    return tf.strings.regex_replace(text, _PUNCTUATION, " ")


def reviews_from_input(model_input) -> list[str]:
    """Accept a DataFrame with a `text` column, a Series, or a list of strings."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"input needs a {TEXT_COLUMN!r} column, got {list(model_input.columns)}")
        model_input = model_input[TEXT_COLUMN]
    values = list(model_input)
    bad = [type(v).__name__ for v in values if not isinstance(v, str)]
    if bad:
        raise ValueError(f"every {TEXT_COLUMN!r} value must be a string, got {bad[0]}")
    return values


class ReviewClassifier(mlflow.pyfunc.PythonModel):
    """Wraps the end-to-end Keras model (TextVectorization inside) for pyfunc and serving."""

    def load_context(self, context) -> None:
        self.model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        reviews = reviews_from_input(model_input)
        if not reviews:
            return pd.DataFrame({"probability": [], "label": []})
        scores = self.model(tf.constant(reviews)[:, tf.newaxis], training=False)
        probability = np.asarray(scores, dtype="float64").reshape(-1)
        label = np.where(probability >= 0.5, "positive", "negative")
        return pd.DataFrame({"probability": probability, "label": label})


mlflow.models.set_model(ReviewClassifier())
