"""The tables of engines, samplers, pruners and oracles are what config validation accepts."""

import pytest

from sentiment import engines
from sentiment.config import load_config
from sentiment.errors import ConfigError
from tests.conftest import tiny_overrides


@pytest.mark.parametrize("engine", sorted(engines.ENGINES))
def test_every_algorithm_of_every_engine_is_a_valid_config(imdb_dir, tmp_path, engine):
    for algorithm in engines.ENGINES[engine].algorithms:
        cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.engine={engine}", f"sweep.algorithm={algorithm}"])
        assert engines.search_algorithm(cfg) == algorithm


def test_an_algorithm_of_another_engine_is_refused(imdb_dir, tmp_path):
    foreign = next(a for a in engines.ORACLES if a not in engines.SAMPLERS)
    with pytest.raises(ConfigError, match=f"sweep.algorithm='{foreign}' is invalid.*engine optuna"):
        load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.algorithm={foreign}"])


def test_the_engine_names_are_the_table(imdb_dir, tmp_path):
    with pytest.raises(ConfigError, match="sweep.engine='nope' is invalid: expected " + " or ".join(engines.ENGINES)):
        load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.engine=nope"])


@pytest.mark.parametrize("kind", sorted(engines.PRUNERS))
def test_every_pruner_is_a_valid_config_and_builds(imdb_dir, tmp_path, kind):
    import optuna

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.pruner.kind={kind}"])
    assert isinstance(engines.PRUNERS[kind](cfg.sweep.pruner, cfg.train.max_epochs), optuna.pruners.BasePruner)


def test_a_pruner_outside_the_table_is_refused(imdb_dir, tmp_path):
    with pytest.raises(ConfigError, match="sweep.pruner.kind='patient' is invalid: expected one of "
                                          + ", ".join(engines.PRUNERS)):
        load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.pruner.kind=patient"])


@pytest.mark.parametrize("name", sorted(engines.SAMPLERS))
def test_every_sampler_builds_seeded(name):
    import optuna

    assert isinstance(engines.SAMPLERS[name](7, 2), optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", sorted(engines.ORACLES))
def test_every_oracle_builds_with_the_trial_count(imdb_dir, tmp_path, name):
    import keras_tuner as kt

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.engine=keras_tuner", f"sweep.algorithm={name}"])
    common = dict(objective=kt.Objective("val_loss", direction="min"), hyperparameters=kt.HyperParameters(), seed=0)
    oracle = engines.ORACLES[name](cfg, common)
    assert isinstance(oracle, kt.Oracle) and oracle.max_trials == cfg.sweep.n_trials


def test_the_names_load_without_importing_the_libraries():
    """Config validation reads the tables before any command pays for Optuna or TensorFlow."""
    import subprocess
    import sys

    code = ("import sys, sentiment.engines, sentiment.config; "
            "print(sorted(m for m in ('optuna', 'keras_tuner', 'tensorflow') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"
