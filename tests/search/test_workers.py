"""Which configs may run several worker processes on one study (check_shareable). Workers that
really run trials are covered end to end by tests/test_faults.py."""

import pytest

from sentiment.config import load_config
from sentiment.engines import ENGINES
from sentiment.errors import ConfigError
from sentiment.search.workers import check_shareable
from tests.conftest import tiny_overrides

SHAREABLE_STORAGES = ["journal:optuna.journal", "postgresql://postgres@127.0.0.1:5432/optuna_workers"]


def _cfg(imdb_dir, tmp_path, *extra):
    return load_config(tiny_overrides(imdb_dir, tmp_path) + list(extra))


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("workers", [0, 1])
def test_one_worker_is_always_fine(imdb_dir, tmp_path, engine, workers):
    """Any engine on the tiny config's SQLite storage: one process needs nothing shared."""
    cfg = _cfg(imdb_dir, tmp_path, f"sweep.engine={engine}")
    assert cfg.sweep.storage.startswith("sqlite:")
    assert check_shareable(cfg, workers) is None


@pytest.mark.parametrize("storage", SHAREABLE_STORAGES)
def test_several_optuna_workers_on_shared_storage_are_fine(imdb_dir, tmp_path, storage):
    assert check_shareable(_cfg(imdb_dir, tmp_path, f"sweep.storage={storage}"), 4) is None


@pytest.mark.parametrize("storage", SHAREABLE_STORAGES)
def test_several_keras_tuner_workers_are_refused_naming_the_engine_to_use(imdb_dir, tmp_path, storage):
    cfg = _cfg(imdb_dir, tmp_path, "sweep.engine=keras_tuner", f"sweep.storage={storage}")
    with pytest.raises(ConfigError) as err:
        check_shareable(cfg, 2)
    shared = [name for name, engine in ENGINES.items() if engine.shares_workers]
    assert shared and "keras_tuner" not in shared
    assert str(err.value) == f"several workers need sweep.engine={' or '.join(shared)} (keras_tuner cannot share a study)"


def test_several_workers_on_sqlite_are_refused_naming_the_storages_to_use(imdb_dir, tmp_path):
    cfg = _cfg(imdb_dir, tmp_path)
    with pytest.raises(ConfigError) as err:
        check_shareable(cfg, 3)
    message = str(err.value)
    assert message.startswith(f"sweep.storage={cfg.sweep.storage} cannot be shared by 3 workers")
    assert "sweep.storage=journal:optuna.journal" in message and "postgresql://" in message and "\n" not in message


def test_keras_tuner_on_sqlite_is_refused_for_its_engine_first(imdb_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^several workers need sweep\.engine="):
        check_shareable(_cfg(imdb_dir, tmp_path, "sweep.engine=keras_tuner"), 2)
