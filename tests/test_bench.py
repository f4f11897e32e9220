"""The benchmark's race reads its curve back from the trials the tracking store holds."""

import pytest

from sentiment.bench import Preset, _race_one
from sentiment.config import load_config
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast


def test_race_curve_comes_from_finished_trials(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        "sweep.n_trials=3", "sweep.timeout=600", "sweep.baseline=false"])
    result = _race_one(cfg, Preset(train_samples=None, sequence_length=24, vocab_size=100, budget_s=600,
                                   targets=(0.0, 1.01)))
    curve = result["best_so_far"]
    assert len(curve) == result["trials"]["complete"] == 3
    seconds, best = zip(*curve)
    assert list(seconds) == sorted(seconds) and 0 < seconds[0] <= result["wall_s"]
    assert list(best) == sorted(best) and best[-1] == result["best_val_accuracy"]
    assert result["time_to"] == {"0.00": seconds[0], "1.01": None}
