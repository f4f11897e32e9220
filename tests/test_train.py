"""train() and refit() on tiny data: what they fit on, and what they return."""

import keras

from sentiment.data import load_data
from sentiment.train import refit, train


class CountBatches(keras.callbacks.Callback):
    """Training batches of the first epoch."""

    def __init__(self):
        super().__init__()
        self.batches, self.epoch = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches += self.epoch == 0


def test_refit_trains_on_train_plus_val_for_exactly_the_epochs_given(tiny_cfg):
    data = load_data(tiny_cfg)
    trial_batches, refit_batches = CountBatches(), CountBatches()
    trained = train(tiny_cfg, data, callbacks=[trial_batches])
    epochs = []
    model = refit(tiny_cfg, data, epochs=3, callbacks=[refit_batches, keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epochs.append(logs))])
    assert len(epochs) == 3 and all("val_loss" not in logs for logs in epochs)  # nothing held out
    n_train, n_val = len(data.x_train), len(data.x_val)
    batch = tiny_cfg.data.batch_size
    assert trial_batches.batches >= -(-n_train // batch) and refit_batches.batches >= -(-(n_train + n_val) // batch)
    assert refit_batches.batches > trial_batches.batches  # the validation reviews were trained on too
    assert model.count_params() == trained.model.count_params()
