"""Every engine sentiment.engines names has one implementation of the search contract
(search.contract), the shared-study contract exactly where the engine shares workers, and a
config gets its own engine; what an outcome calls its best trial."""

import pandas as pd
import pytest

from sentiment.config import load_config
from sentiment.engines import ENGINES
from sentiment.search.contract import BestTrial, SearchEngine, SearchOutcome, SharedStudyEngine
from sentiment.search.implementations import IMPLEMENTATIONS, engine_for, shared_study_engine
from tests.conftest import tiny_overrides


def test_every_engine_has_an_implementation_and_every_implementation_an_engine():
    assert set(IMPLEMENTATIONS) == set(ENGINES)


@pytest.mark.parametrize("name", list(ENGINES))
def test_each_implementation_is_a_search_engine_with_its_own_spec(name):
    engine = IMPLEMENTATIONS[name]
    assert engine.spec is ENGINES[name]
    assert isinstance(engine, SearchEngine)
    assert callable(engine.search)


@pytest.mark.parametrize("name", list(ENGINES))
def test_exactly_the_engines_that_share_workers_implement_the_shared_study_contract(name):
    engine = IMPLEMENTATIONS[name]
    assert isinstance(engine, SharedStudyEngine) is ENGINES[name].shares_workers


def test_both_kinds_of_engine_exist():
    """Otherwise the two tests above would check only one side of the contract."""
    assert {spec.shares_workers for spec in ENGINES.values()} == {True, False}


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


@pytest.mark.parametrize("name", list(ENGINES))
def test_a_config_gets_the_engine_it_names(imdb_dir, tmp_path, name):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.engine={name}"])
    assert engine_for(cfg) is IMPLEMENTATIONS[name]
    assert engine_for(cfg).spec.name == cfg.sweep.engine == name
    shared = shared_study_engine(cfg)
    if ENGINES[name].shares_workers:
        assert shared is IMPLEMENTATIONS[name] and isinstance(shared, SharedStudyEngine)
    else:
        assert shared is None


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
