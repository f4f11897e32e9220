"""train() and refit() on tiny data: what they fit on, and what they return."""

import keras
import pytest

from sentiment.tokens import load_data
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


@pytest.mark.training
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


@pytest.mark.training
def test_early_stopping_keeps_the_epoch_the_objective_prefers(tiny_cfg, monkeypatch):
    import numpy as np
    from omegaconf import OmegaConf

    stoppers = []

    class RecordedEarlyStopping(keras.callbacks.EarlyStopping):
        def __init__(self, **kwargs):
            stoppers.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(keras.callbacks, "EarlyStopping", RecordedEarlyStopping)
    cfg = OmegaConf.merge(tiny_cfg, {"sweep": {"objective": "val_auc"},
                                     "train": {"max_epochs": 4, "early_stopping_patience": 4}})
    result = train(cfg, load_data(cfg))
    assert (stoppers[0]["monitor"], stoppers[0]["mode"]) == ("val_auc", "max")
    aucs = result.history["val_auc"]
    assert result.metrics["best_epoch"] == int(np.argmax(aucs)) + 1
    assert abs(result.metrics["val_auc"] - max(aucs)) < 1e-4  # the restored weights are that epoch's


def test_train_seed_sets_the_initial_weights_and_null_falls_back_to_the_root_seed(tiny_cfg):
    import numpy as np
    from omegaconf import OmegaConf

    from sentiment.train import fresh_model

    data = load_data(tiny_cfg)

    def weights(**train):
        cfg = OmegaConf.merge(tiny_cfg, {"train": train})
        return np.concatenate([w.reshape(-1) for w in fresh_model(cfg, data, n_reviews=10).get_weights()])

    root = weights(seed=None)
    assert np.array_equal(root, weights(seed=tiny_cfg.seed))
    assert not np.allclose(root, weights(seed=tiny_cfg.seed + 1))
