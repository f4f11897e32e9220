"""promote and rollback against a real SQLite registry with tiny trained models: each decision,
the aliases it moves and the evidence it leaves as version tags (the aliases under concurrent
promotions: test_versions.py)."""

import numpy as np
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from sentiment.cli import main
from sentiment.config import load_config
from sentiment.errors import ConfigError
from sentiment.metrics import paired_accuracy
from sentiment.registry import behaviour
from sentiment.registry.promote import check_settings, promote, rollback
from tests.conftest import tiny_overrides
from tests.registry.test_behaviour import keyword_scorer
from tests.registry.test_versions import NAME, _aliases
from tests.test_metrics import _planted

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast


def test_promotion_workflow(registry_store):
    """first champion -> better candidate moves both aliases -> worse refused -> rollback swaps."""
    cfg = load_config(registry_store)
    first = promote(cfg, version="1")
    assert first.decision == "first champion" and _aliases() == {"champion": "1", "previous": None}

    better = promote(cfg)  # the newest version: v2, the properly trained one
    assert better.decision == "promoted", (better.reason, better.behaviour)
    assert _aliases() == {"champion": "2", "previous": "1"}
    assert better.table.loc["accuracy", "candidate v2"] > better.table.loc["accuracy", "champion v1"]
    assert better.table.loc["test reviews"].tolist() == [40.0, 40.0]  # same reviews for both
    client = MlflowClient()
    assert better.source_runs == {v: client.get_model_version(NAME, v).run_id for v in ("1", "2")}
    tags = MlflowClient().get_model_version(NAME, "2").tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.compared_with"] == "1"
    assert len(tags["promotion.test_digest"]) == 20  # which test reviews it scored (sentiment.lineage)
    assert float(tags["promotion.accuracy"]) == pytest.approx(better.table.loc["accuracy", "candidate v2"], abs=1e-6)

    worse = promote(cfg, version="1")
    assert worse.decision == "refused" and _aliases() == {"champion": "2", "previous": "1"}
    assert MlflowClient().get_model_version(NAME, "1").tags["promotion.decision"] == "refused"

    assert rollback(cfg) == ("2", "1") and _aliases() == {"champion": "1", "previous": "2"}
    assert rollback(cfg) == ("1", "2") and _aliases() == {"champion": "2", "previous": "1"}

    forced = promote(cfg, version="1", force=True)
    assert forced.decision == "forced" and _aliases() == {"champion": "1", "previous": "2"}
    assert promote(cfg, version="1").decision == "already champion"


def test_versions_made_from_different_splits_are_refused_in_one_line(registry_store):
    from sentiment.errors import TrackingError

    cfg = load_config(registry_store)
    client = MlflowClient()
    promote(cfg, version="2", force=True)
    original = client.get_model_version(NAME, "1").tags["data.train_digest"]
    assert original == client.get_model_version(NAME, "2").tags["data.train_digest"]  # one data config
    client.set_model_version_tag(NAME, "1", "data.train_digest", "0" * 20)
    try:
        with pytest.raises(TrackingError, match="versions 1 and 2 were made from different train splits"):
            promote(cfg, version="1")
    finally:
        client.set_model_version_tag(NAME, "1", "data.train_digest", original)
    assert _aliases()["champion"] == "2"


def test_rollback_without_previous_changes_nothing(imdb_dir, tmp_path, capsys):
    overrides = tiny_overrides(imdb_dir, tmp_path)
    assert main(["rollback", *overrides]) == 0
    assert "nothing changed" in capsys.readouterr().out


def test_promote_without_versions_says_run_sweep(imdb_dir, tmp_path, capsys):
    assert main(["promote", *tiny_overrides(imdb_dir, tmp_path)]) == 2
    assert "make sweep" in capsys.readouterr().err


def _gate(comparison, candidate_accuracy, champion_accuracy, force=False, candidate_favourite=None):
    """The decision for two models with these accuracies and this paired comparison; the
    behaviour checks of both are the keyword model's, the candidate's with a favourite name if
    one is given (see test_behaviour.keyword_scorer)."""
    from sentiment.registry.promote import Scored, _decide

    settings = OmegaConf.create({"metric": "accuracy", "margin": 0.0, "alpha": 0.05, "behaviour_tolerance": 0.1})
    scored = {side: Scored({"accuracy": accuracy}, np.array([]), behaviour.run_checks(keyword_scorer(favourite)))
              for side, accuracy, favourite in (("candidate", candidate_accuracy, candidate_favourite),
                                                ("champion", champion_accuracy, None))}
    return _decide(scored, comparison, settings, force)


def test_the_gate_holds_a_copy_of_the_champion_promotes_a_wide_gain_and_holds_one_inside_the_noise():
    labels, candidate, _ = _planted(0, 0)
    itself = paired_accuracy(labels, candidate, candidate.copy())
    assert _gate(itself, 0.9, 0.9)[0] == "refused"

    wide = paired_accuracy(*_planted(40, 10))
    decision, reason = _gate(wide, 0.94, 0.91)
    assert decision == "promoted" and "McNemar p = " in reason and wide.p_value < 0.05
    assert reason.endswith("no behaviour check worse")

    small = paired_accuracy(*_planted(12, 8))
    decision, reason = _gate(small, 0.916, 0.912)
    assert decision == "refused" and f"within the noise: McNemar p = {small.p_value:.3g} >= alpha 0.05" in reason
    assert _gate(small, 0.916, 0.912, force=True)[0] == "forced"  # FORCE=1 still overrides, and says so


def test_a_significant_gain_with_a_behaviour_regression_is_held_with_both_reasons():
    wide = paired_accuracy(*_planted(40, 10))
    decision, reason = _gate(wide, 0.94, 0.91, candidate_favourite="Tom Hanks")
    assert decision == "refused"
    assert reason == "fails more behaviour cases than the champion, beyond the tolerance of 10%: names 67% vs 0%"
    decision, reason = _gate(paired_accuracy(*_planted(12, 8)), 0.916, 0.912, candidate_favourite="Tom Hanks")
    assert decision == "refused" and "names 67% vs 0%" in reason and "within the noise" in reason


@pytest.mark.parametrize(("key", "value"), [("alpha", 0), ("alpha", 1.5), ("alpha", True), ("behaviour_tolerance", -0.1),
                                            ("behaviour_tolerance", "high"), ("metric", "recall")])
def test_promote_settings_out_of_range_are_one_line_config_errors(key, value):
    settings = OmegaConf.create({"metric": "accuracy", "margin": 0.0, "alpha": 0.05, "behaviour_tolerance": 0.1})
    settings[key] = value
    with pytest.raises(ConfigError, match=rf"^promote\.{key}={value!r} is invalid: expected "):
        check_settings(settings)
