"""Weight averaging (train.ema_momentum): the optimizer keeps an exponential moving average of the
weights (Keras's `use_ema`), and validation, early stopping and the saved model all see the average.

Keras alone swaps the average in only when `fit` ends, after every validation pass: early stopping
would choose its epoch by the raw weights and then restore those, throwing the average away. The
callback below puts the average in the model for each validation pass and leaves it there through
the epoch's end (where EarlyStopping takes its snapshot); training resumes from the raw weights."""

from __future__ import annotations

import keras


def optimizer_options(ema_momentum: float | None) -> dict:
    """Keyword arguments for a Keras optimizer: the moving average of the weights, or none."""
    if ema_momentum is None:
        return {}
    return {"use_ema": True, "ema_momentum": float(ema_momentum)}


class AveragedWeightsForValidation(keras.callbacks.Callback):
    """Validate (and let EarlyStopping snapshot) the moving average, then train on the raw weights.
    List it before EarlyStopping. A no-op for an optimizer without `use_ema`."""

    def __init__(self):
        super().__init__()
        self._raw_weights = None
        self._training = False

    def on_train_begin(self, logs=None):
        self._training = True

    def on_train_end(self, logs=None):
        # fit has already swapped in the final average; EarlyStopping then restores its best one.
        self._training, self._raw_weights = False, None

    def on_test_begin(self, logs=None):
        if not (self._training and self.model.optimizer.use_ema):
            return  # an evaluate() of its own, outside fit: the weights as they are
        variables = self.model.trainable_variables
        self._raw_weights = [variable.numpy() for variable in variables]
        self.model.optimizer.finalize_variable_values(variables)  # with use_ema: the average in place

    def on_epoch_begin(self, epoch, logs=None):
        if self._raw_weights is not None:
            for variable, value in zip(self.model.trainable_variables, self._raw_weights, strict=True):
                variable.assign(value)
            self._raw_weights = None
