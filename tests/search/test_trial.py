"""The study fingerprint: what a study searches, so a resume after a real change is refused."""

import pytest

from sentiment.config import load_config
from sentiment.search.trial import config_fingerprint
from tests.conftest import tiny_overrides


@pytest.mark.parametrize("override", ["sweep.n_trials=99", "sweep.storage=sqlite:///elsewhere.db",
                                      "data.cache_dir=/tmp/other", "tracking.model_name=other", "sweep.calibrate=false"])
def test_operational_changes_keep_the_study_fingerprint(tiny_cfg, imdb_dir, tmp_path, override):
    changed = load_config(tiny_overrides(imdb_dir, tmp_path) + [override])
    assert config_fingerprint(changed) == config_fingerprint(tiny_cfg)


@pytest.mark.parametrize("override", ["model.units=16", "sweep.space.dropout.high=0.2", "data.truncate=head"])
def test_what_is_trained_or_searched_changes_the_fingerprint(tiny_cfg, imdb_dir, tmp_path, override):
    changed = load_config(tiny_overrides(imdb_dir, tmp_path) + [override])
    assert config_fingerprint(changed) != config_fingerprint(tiny_cfg)
