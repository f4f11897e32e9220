"""`make reproduce`: a registered version rebuilt from what its runs recorded, on tiny data with
a real SQLite registry: the rebuild agrees with the registered model, and what cannot be
rebuilt (other reviews, unknown config keys) is refused in one line."""

from types import SimpleNamespace

import pytest

from sentiment import tracking
from sentiment.cli import main
from sentiment.config import apply_sample, load_config
from sentiment.errors import TrackingError
from sentiment.registry import versions
from sentiment.registry.reproduce import recorded_config, reproduce
from sentiment.sweep import run_sweep
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast

# Two trials kept to their end; an ensemble or a stack of them, calibrated or refit: each head
# and both ways of training a member.
FINALS = {
    "ensemble, calibrated": ["sweep.final=ensemble", "sweep.calibrate=true"],
    "stack, refit": ["sweep.final=stack", "sweep.refit=true"],
}


@pytest.mark.parametrize("final", FINALS.values(), ids=FINALS.keys())
def test_a_rebuild_agrees_with_the_registered_version(imdb_dir, tmp_path, final, capsys):
    overrides = tiny_overrides(imdb_dir, tmp_path) + ["sweep.n_trials=2", "sweep.ensemble_size=2", *final]
    version = run_sweep(load_config(overrides)).registered_version
    assert main(["reproduce", "--version", version, *overrides]) == 0
    tags = versions.get_version("imdb-sentiment", version).tags
    assert float(tags["reproduce.agreement"]) >= 0.99
    assert abs(float(tags["reproduce.difference"])) <= 0.003
    assert tags["reproduce.registered_test_accuracy"][:6] == tags["test_accuracy"][:6]  # as served = as registered
    out = capsys.readouterr().out
    assert "prediction agreement" in out and f"v{version}:" in out


def test_a_version_tested_on_other_reviews_is_refused(imdb_dir, tmp_path, capsys):
    overrides = tiny_overrides(imdb_dir, tmp_path) + ["sweep.n_trials=1"]
    version = run_sweep(load_config(overrides)).registered_version
    versions.tag_version("imdb-sentiment", version, {"data.test_digest": "0" * 20})
    capsys.readouterr()  # the sweep's own output
    assert main(["reproduce", "--version", version, *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the test reviews read now differ") and "\n" not in err
    assert "reproduce.agreement" not in versions.get_version("imdb-sentiment", version).tags


def _run_that_logged(params: dict) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(params=params))


def test_a_run_config_reads_back_from_its_params(tiny_cfg):
    trained = apply_sample(tiny_cfg, {"model.units": 12, "regularizer.l2": 1e-05, "regularizer.dropout": 0.25,
                                      "data.bucket_boundaries": [8, 16], "train.seed": 7, "model.pooling": "max",
                                      "model.bidirectional": False, "seed": 3})
    logged = {key: str(value) for key, value in tracking.config_params(trained).items()}
    rebuilt = recorded_config(tiny_cfg, _run_that_logged({**logged, "train.optimizer": "AdamW"}))
    assert tracking.config_params(rebuilt) == tracking.config_params(trained)
    assert rebuilt.tracking.uri == tiny_cfg.tracking.uri  # operational settings stay the current ones


def test_a_run_from_other_code_is_refused_in_one_line(tiny_cfg):
    logged = {key: str(value) for key, value in tracking.config_params(tiny_cfg).items()}
    with pytest.raises(TrackingError, match=r"config keys this code does not have \(model.gone\)"):
        recorded_config(tiny_cfg, _run_that_logged({**logged, "model.gone": "1"}))


def test_a_store_without_the_version_says_so(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path))
    with pytest.raises(TrackingError, match="no @champion"):
        reproduce(cfg)
