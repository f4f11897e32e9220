import pytest

from sentiment.cli import main
from sentiment.config import apply_sample, list_experiments, load_config
from sentiment.errors import ConfigError


def test_default_config_has_one_option_per_group():
    cfg = load_config()
    assert set(cfg) >= {"data", "model", "regularizer", "train", "tracking", "sweep", "seed"}
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert cfg.tracking.model_name == "imdb-sentiment"
    assert {spec.key for spec in cfg.sweep.space.values()} == {
        "model.units", "regularizer.dropout", "regularizer.recurrent_dropout", "regularizer.l2"}


@pytest.mark.parametrize("name", list_experiments())
def test_every_experiment_composes_and_changes_something(name):
    base, cfg = load_config(), load_config(experiment=name)
    assert cfg != base


def test_quick_experiment_is_a_subsample_with_its_own_study():
    cfg = load_config(experiment="quick")
    assert cfg.data.train_samples and cfg.data.train_samples < 25000
    assert cfg.sweep.study_name != load_config().sweep.study_name


def test_overrides_beat_experiment_values():
    assert load_config(["sweep.n_trials=3"], experiment="quick").sweep.n_trials == 3


@pytest.mark.parametrize("override, key", [
    ("model.units=0", "model.units"),
    ("model.units=-3", "model.units"),
    ("regularizer.dropout=1.0", "regularizer.dropout"),
    ("regularizer.dropout=-0.1", "regularizer.dropout"),
    ("regularizer.recurrent_dropout=1.5", "regularizer.recurrent_dropout"),
    ("regularizer.l2=-0.001", "regularizer.l2"),
    ("sweep.space.units.low=256", "sweep.space.units"),
    ("sweep.space.dropout.high=1.0", "sweep.space.dropout"),
    ("sweep.space.l2.low=-1", "sweep.space.l2"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.val_split=movies", "data.val_split"),
    ("sweep.calibrate=maybe", "sweep.calibrate"),
    ("sweep.seed_per_trial=sometimes", "sweep.seed_per_trial"),
    ("train.seed=-1", "train.seed"),
    ("train.max_epochs=0", "train.max_epochs"),
    ("data.trainsamples=10", "data.trainsamples"),
    ("baseline.models=[tfidf,svm]", "baseline.models"),
    ("tracking.system_metrics_seconds=0", "tracking.system_metrics_seconds"),
    ("serve.reload_seconds=-5", "serve.reload_seconds"),
    ("serve.alias=''", "serve.alias"),
    ("distil.teacher=0", "distil.teacher"),
    ("distil.teacher=v3", "distil.teacher"),
    ("distil.teacher_weight=1.5", "distil.teacher_weight"),
    ("distil.held_out_folds=1", "distil.held_out_folds"),
    ("distil.held_out_folds=0.5", "distil.held_out_folds"),
    ("sweep.final=mean", "sweep.final"),
])
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_the_distil_group_does_not_change_what_a_study_searches():
    from sentiment.search.trial import config_fingerprint

    assert config_fingerprint(load_config(["distil.teacher_weight=0.5"])) == config_fingerprint(load_config())


def test_unknown_experiment_lists_the_choices():
    with pytest.raises(ConfigError, match="quick"):
        load_config(experiment="no-such-experiment")


def test_cli_reports_bad_config_in_one_line(capsys):
    assert main(["sweep", "model.units=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.units=0") and "Traceback" not in err and len(err.splitlines()) == 1


def test_apply_sample_changes_a_copy_only():
    cfg = load_config()
    trial_cfg = apply_sample(cfg, {"model.units": 128, "regularizer.l2": 0.5})
    assert (trial_cfg.model.units, trial_cfg.regularizer.l2) == (128, 0.5)
    assert (cfg.model.units, cfg.regularizer.l2) != (128, 0.5)


def test_a_null_dimension_removes_it_from_the_search_space():
    space = load_config(["sweep.space.recurrent_dropout=null"]).sweep.space
    assert "recurrent_dropout" not in space and "units" in space
    assert "recurrent_dropout" not in load_config(experiment="accuracy").sweep.space


def test_a_split_key_cannot_be_searched():
    with pytest.raises(ConfigError, match="sweep.space.val.key='data.val_fraction' is invalid.*same validation"):
        load_config(["+sweep.space.val={key: data.val_fraction, type: float, low: 0.1, high: 0.3}"])


@pytest.mark.parametrize("overrides, message", [
    (["sweep.noise_repeats=2", "sweep.start_from_defaults=false"],
     "sweep.noise_repeats=2 repeats the configured values .* needs sweep.start_from_defaults=true"),
    (["sweep.noise_repeats=0"], r"sweep.noise_repeats=0 is invalid: expected an integer > 0"),
    (["sweep.pruner.noise_widths=-1"], r"sweep.pruner.noise_widths=-1 is invalid: expected a number >= 0"),
    (["sweep.ensemble_noise_widths=many"], r"sweep.ensemble_noise_widths='many' is invalid"),
])
def test_noise_settings_are_checked_in_one_line(imdb_dir, tmp_path, overrides, message):
    from sentiment.errors import ConfigError
    from tests.conftest import tiny_overrides

    with pytest.raises(ConfigError, match=message):
        load_config(tiny_overrides(imdb_dir, tmp_path) + overrides)


@pytest.mark.parametrize("overrides, message", [
    (["sweep.heartbeat_interval=0"], r"sweep.heartbeat_interval=0 is invalid: expected an integer > 0"),
    (["sweep.heartbeat_interval=60", "sweep.grace_period=60"],
     r"sweep.grace_period=60 is invalid: expected more seconds than sweep.heartbeat_interval=60"),
    (["sweep.max_retry=-1"], r"sweep.max_retry=-1 is invalid: expected an integer >= 0"),
])
def test_heartbeat_settings_are_checked_in_one_line(imdb_dir, tmp_path, overrides, message):
    from sentiment.errors import ConfigError
    from tests.conftest import tiny_overrides

    with pytest.raises(ConfigError, match=message):
        load_config(tiny_overrides(imdb_dir, tmp_path) + overrides)


def test_a_stack_needs_the_nbsvm_baseline():
    with pytest.raises(ConfigError, match=r"baseline.models=\['tfidf'\] is invalid: expected a list with nbsvm"):
        load_config(["sweep.final=stack", "baseline.models=[tfidf]"])
    assert load_config(["sweep.final=ensemble", "baseline.models=[]"]).baseline.models == []
