"""The configured sampler and pruner are the ones Optuna uses, and resumed studies never repeat."""

import optuna
import pytest

from sentiment.config import load_config
from sentiment.engines import ENGINES, SAMPLERS
from sentiment.errors import ConfigError
from sentiment.search.sampling import configured_values, make_sampler, sample_params
from tests.conftest import tiny_overrides


def test_every_optuna_algorithm_in_the_config_table_has_a_sampler():
    assert set(SAMPLERS) == set(ENGINES["optuna"].algorithms)


@pytest.mark.parametrize("algorithm, sampler", [("tpe", "TPESampler"), ("random", "RandomSampler"),
                                                ("cmaes", "CmaEsSampler")])
def test_sweep_algorithm_picks_the_optuna_sampler(imdb_dir, tmp_path, algorithm, sampler):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.algorithm={algorithm}"])
    assert type(make_sampler(cfg).inner).__name__ == sampler


def test_unsupported_algorithm_is_one_line_before_any_data(imdb_dir, tmp_path):
    with pytest.raises(ConfigError, match="sweep.algorithm='hyperband' is invalid.*engine optuna"):
        load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.algorithm=hyperband"])


def _params(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_a_resumed_study_continues_instead_of_repeating(imdb_dir, tmp_path, algorithm):
    """Two processes one after the other (a crash and a re-run) vs one process: same samples,
    none repeated."""
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.algorithm={algorithm}"])
    storage = f"sqlite:///{tmp_path / 'resume.db'}"

    def run(study_name, n, times):
        for _ in range(times):  # a new Study object each time: what a re-run process builds
            study = optuna.create_study(study_name=study_name, storage=storage, sampler=make_sampler(cfg),
                                        load_if_exists=True)
            study.optimize(lambda t: sum(v for v in sample_params(t, cfg.sweep.space).values()
                                         if isinstance(v, (int, float))), n_trials=n)
        return study

    resumed = _params(run("resumed", 2, 3))
    straight = _params(run("straight", 6, 1))
    assert len(set(resumed)) == 6, "a resumed study proposed the same params twice"
    assert resumed == straight, "the proposals depend only on the storage state"


def test_two_workers_on_one_study_never_propose_the_same_params(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.algorithm=random"])
    storage = f"sqlite:///{tmp_path / 'workers.db'}"
    workers = [optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(cfg), load_if_exists=True)
               for _ in range(2)]
    for _ in range(3):
        for study in workers:  # interleaved, as two processes would
            trial = study.ask()
            sample_params(trial, cfg.sweep.space)
            study.tell(trial, 0.0)
    assert len(set(_params(workers[0]))) == 6


def test_warm_start_enqueues_the_best_trials_of_an_earlier_study(imdb_dir, tmp_path):
    from sentiment.search.optuna_engine import open_study

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.study_name=old"])
    old = open_study(cfg)
    for value in (0.9, 0.1, 0.5):  # trial 1 is the best (val_loss is minimized)
        trial = old.ask()
        sample_params(trial, cfg.sweep.space)
        old.tell(trial, value)
    new = open_study(load_config(tiny_overrides(imdb_dir, tmp_path) + [
        "sweep.study_name=new", "sweep.warm_start=old", "sweep.warm_start_k=2"]))
    queued = [t.system_attrs["fixed_params"] for t in new.trials]
    # what was learned first, then the configured values (sweep.start_from_defaults)
    assert queued == [old.trials[1].params, old.trials[2].params, configured_values(cfg)]
    assert new.user_attrs["warm_start"] == {"study": "old", "trials": [1, 2]}
    first = new.ask()  # the enqueued params are what the first trial samples
    assert sample_params(first, cfg.sweep.space) == {cfg.sweep.space[k].key: v for k, v in old.trials[1].params.items()}


@pytest.mark.parametrize("start_from_defaults", [True, False])
def test_the_first_trial_trains_the_configured_values(imdb_dir, tmp_path, start_from_defaults):
    from sentiment.search.optuna_engine import open_study

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        "model.units=4", "regularizer.dropout=0.25", "regularizer.recurrent_dropout=0.0", "regularizer.l2=0.001",
        f"sweep.start_from_defaults={str(start_from_defaults).lower()}"])
    study = open_study(cfg)
    first = sample_params(study.ask(), cfg.sweep.space)
    configured = {"model.units": 4, "regularizer.dropout": 0.25, "regularizer.recurrent_dropout": 0.0,
                  "regularizer.l2": 0.001}
    assert (first == configured) is start_from_defaults
    assert ("start_from_defaults" in study.user_attrs) is start_from_defaults


def test_a_configured_value_outside_the_space_is_left_to_the_sampler(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + ["model.units=64"])  # tiny space: 4-8 units
    assert "units" not in configured_values(cfg) and "dropout" in configured_values(cfg)


def test_a_float_dimension_with_a_step_draws_only_the_steps(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        "sweep.space.recurrent_dropout.high=0.2", "sweep.space.recurrent_dropout.step=0.1"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(30):
        drawn.add(sample_params(study.ask(), cfg.sweep.space)["regularizer.recurrent_dropout"])
    assert {round(v, 6) for v in drawn} == {0.0, 0.1, 0.2}


@pytest.mark.parametrize("startup, like_random", [(2, False), (10, True)])
def test_startup_trials_is_when_tpe_stops_drawing_at_random(imdb_dir, tmp_path, startup, like_random):
    """TPE's random phase uses the same draws as RandomSampler: the proposals part once it ends."""
    def proposals(algorithm):
        cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
            f"sweep.algorithm={algorithm}", f"sweep.startup_trials={startup}"])
        study = optuna.create_study(sampler=make_sampler(cfg))
        study.optimize(lambda t: sample_params(t, cfg.sweep.space)["regularizer.dropout"], n_trials=6)
        return _params(study)

    assert (proposals("tpe") == proposals("random")) is like_random


def test_warm_start_from_a_missing_study_is_one_line(imdb_dir, tmp_path):
    from sentiment.search.optuna_engine import open_study

    with pytest.raises(ConfigError, match="sweep.warm_start='nope': no such study"):
        open_study(load_config(tiny_overrides(imdb_dir, tmp_path) + ["sweep.warm_start=nope"]))


@pytest.mark.sweeps
def test_successive_halving_cuts_the_epochs_a_sweep_trains(imdb_dir, tmp_path):
    from sentiment.sweep import run_sweep

    n_trials, max_epochs = 6, 4
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        f"sweep.n_trials={n_trials}", f"train.max_epochs={max_epochs}", "train.early_stopping_patience=10",
        "sweep.pruner.kind=successive_halving", "sweep.pruner.min_epochs=1", "sweep.pruner.reduction_factor=3",
        "baseline.models=[]"])
    counts = run_sweep(cfg).outcome.counts
    study = optuna.load_study(study_name=cfg.sweep.study_name, storage=cfg.sweep.storage)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    # the resource is epochs trained: min_epochs=1 cuts after the first epoch (Keras counts from 0)
    assert min(len(t.intermediate_values) for t in pruned) == 1
    assert all(min(t.intermediate_values) == 1 for t in study.trials)
    assert counts["epochs_trained"] == sum(len(t.intermediate_values) for t in study.trials) < n_trials * max_epochs


def test_neighbouring_root_seeds_do_not_draw_the_same_values_one_trial_apart():
    from sentiment.search.sampling import TrialSeededSampler, sampler_seed

    assert sampler_seed(42, 1) == sampler_seed(42, 1) and sampler_seed(42, 1) != sampler_seed(43, 0)

    def draws(root):
        study = optuna.create_study(sampler=TrialSeededSampler(lambda seed: optuna.samplers.RandomSampler(seed), root))
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=4)
        return [t.params["x"] for t in study.trials]

    assert draws(42) == draws(42)  # still reproducible
    assert not set(draws(42)) & set(draws(43))  # with seed + number, 43's trial n was 42's trial n + 1
