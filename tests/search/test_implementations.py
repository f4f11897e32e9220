"""Every engine sentiment.engines names has one implementation of the search contract
(search.contract), the shared-study contract exactly where the engine shares workers, and a
config gets its own engine."""

import pytest

from sentiment.config import load_config
from sentiment.engines import ENGINES
from sentiment.search.contract import SearchEngine, SharedStudyEngine
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
