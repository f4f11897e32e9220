"""The engine contract's runtime checks refuse what misses a member; what an outcome calls its
best trial."""

import pandas as pd
import pytest

from sentiment.engines import ENGINES
from sentiment.search.contract import BestTrial, SearchEngine, SearchOutcome, SharedStudyEngine


class _SpecOnly:
    spec = ENGINES["optuna"]


class _SearchOnly:
    def search(self, cfg, data):
        return None


class _HalfShared(_SpecOnly):
    def search(self, cfg, data):
        return None

    def run_trials(self, cfg, data, parent_run_id=None, worker=0):
        return None


@pytest.mark.parametrize("candidate, search_engine, shared", [
    (_SpecOnly(), False, False),     # no search()
    (_SearchOnly(), False, False),   # no spec
    (_HalfShared(), True, False),    # run_trials but no finished_outcome
])
def test_the_runtime_checks_refuse_what_misses_a_member(candidate, search_engine, shared):
    assert isinstance(candidate, SearchEngine) is search_engine
    assert isinstance(candidate, SharedStudyEngine) is shared


def _trial(trial_id: str, val_loss: float) -> BestTrial:
    return BestTrial(trial_id, f"run-{trial_id}", {"model.units": 4}, {"val_loss": val_loss})


def test_the_best_of_an_outcome_is_its_first_ranked_trial():
    ranked = [_trial("3", 0.31), _trial("0", 0.42)]
    outcome = SearchOutcome("optuna", pd.DataFrame({"number": [3, 0]}), ranked, {"complete": 2})
    assert outcome.best is ranked[0]
    assert outcome.best.run_id == "run-3"


def test_an_outcome_without_completed_trials_has_no_best():
    outcome = SearchOutcome("keras_tuner", pd.DataFrame(), [])
    assert outcome.best is None


def test_outcomes_do_not_share_their_counts():
    first, second = SearchOutcome("optuna", pd.DataFrame(), []), SearchOutcome("optuna", pd.DataFrame(), [])
    first.counts["complete"] = 1
    assert second.counts == {}
