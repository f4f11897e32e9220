"""Weight averaging (train.ema_momentum): training runs on the raw weights, while validation, early
stopping and the model handed on all see their moving average."""

import numpy as np
import pytest

from sentiment.config import apply_sample, load_config
from sentiment.errors import ConfigError
from sentiment.tokens import load_data
from sentiment.train import evaluate, train
from tests.conftest import tiny_overrides


@pytest.mark.training
def test_the_average_is_validated_and_handed_on_while_training_steps_on_the_raw_weights(tiny_cfg):
    cfg = apply_sample(tiny_cfg, {"train.early_stopping_patience": 5})  # both epochs run; the best is kept
    averaged_cfg = apply_sample(cfg, {"train.ema_momentum": 0.9})
    data = load_data(cfg)
    raw, averaged = train(cfg, data), train(averaged_cfg, data)
    # The same seed and the same raw weights stepped on: the training losses of both epochs agree
    # (epoch 2 only if the raw weights came back after epoch 1's validation of the average) ...
    assert averaged.history["loss"] == pytest.approx(raw.history["loss"], rel=1e-4)
    # ... while validation scored other weights: the average.
    assert averaged.history["val_loss"][0] != pytest.approx(raw.history["val_loss"][0], rel=1e-4)
    # The model handed on is the one validation chose: its score is that epoch's validation score.
    best = averaged.metrics["best_epoch"] - 1
    scores = evaluate(averaged.model, data.x_val, data.y_val, cfg.data.batch_size, cfg.data.bucket_boundaries)
    assert scores["loss"] == pytest.approx(averaged.history["val_loss"][best], rel=1e-4)
    assert np.isfinite(scores["loss"])


@pytest.mark.parametrize("momentum", ["1.0", "0", "-0.5", "fast"])
def test_a_momentum_outside_0_1_is_one_line_naming_the_key(imdb_dir, tmp_path, momentum):
    with pytest.raises(ConfigError, match="train.ema_momentum"):
        load_config(tiny_overrides(imdb_dir, tmp_path) + [f"train.ema_momentum={momentum}"])
