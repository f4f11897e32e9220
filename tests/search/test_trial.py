"""One tracked trial: the study fingerprint (what a study searches, so a resume after a real change
is refused), and a run that always ends with an honest status."""

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


@pytest.mark.sweeps  # trains a tiny model
def test_a_failure_after_training_closes_the_run_failed_and_off_the_active_stack(tiny_cfg, monkeypatch):
    import mlflow

    from sentiment import tracking
    from sentiment.search.trial import run_tracked_trial
    from sentiment.tokens import load_data

    def full_disk(model):
        raise OSError(28, "No space left on device")

    tracking.connect(tiny_cfg.tracking)
    monkeypatch.setattr(tracking, "log_keras_model", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_tracked_trial(tiny_cfg, load_data(tiny_cfg), {}, "trial-000", {})
    assert mlflow.active_run() is None
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["error"]
    assert run.data.metrics["best_val_loss"] > 0  # what training measured is kept


@pytest.mark.sweeps  # trains a tiny model
@pytest.mark.parametrize("seconds", [1, None])
def test_a_trial_run_records_its_cpu_and_memory_unless_switched_off(imdb_dir, tmp_path, seconds):
    import mlflow

    from sentiment import tracking
    from sentiment.search.trial import run_tracked_trial
    from sentiment.tokens import load_data

    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"tracking.system_metrics_seconds={seconds or 'null'}",
                                                          "train.max_epochs=4"])
    tracking.connect(cfg.tracking)
    _, run_id = run_tracked_trial(cfg, load_data(cfg), {}, "trial-000", {})
    metrics = mlflow.get_run(run_id).data.metrics
    system = {name for name in metrics if name.startswith("system/")}
    if seconds is None:
        assert not system
    else:  # MLflow's system metrics, sampled each second while the trial trained
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
        assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
        assert len(mlflow.MlflowClient().get_metric_history(run_id, "system/cpu_utilization_percentage")) >= 1
