"""What a run records and where: params from the one table of keys, artifacts beside the store."""

from pathlib import Path

import mlflow

from sentiment.config import OPERATIONAL_KEYS, load_config
from sentiment.tokens import cache_key
from sentiment.tracking import artifact_location, config_params, runs_table_url
from tests.conftest import tiny_overrides


def test_params_are_the_model_groups_without_operational_keys(tiny_cfg):
    params = config_params(tiny_cfg)
    assert {"model.units", "regularizer.dropout", "train.learning_rate", "data.truncate", "seed"} <= set(params)
    assert not {"data.url", "data.sha256", "data.cache_dir", "data.path"} & set(params)  # no paths, URLs, checksums
    assert not set(params) & set(OPERATIONAL_KEYS)
    assert not any(key.startswith(("sweep.", "tracking.", "promote.")) for key in params)


def test_the_token_cache_key_follows_the_token_keys_only(tiny_cfg, imdb_dir, tmp_path):
    base = tiny_overrides(imdb_dir, tmp_path)
    assert cache_key(load_config(base + ["data.sequence_length=12"])) != cache_key(tiny_cfg)
    assert cache_key(load_config(base + ["data.batch_size=8", "model.units=4"])) == cache_key(tiny_cfg)


def test_a_sqlite_store_keeps_its_artifacts_beside_it(tmp_path):
    cfg = load_config([f"tracking.uri=sqlite:///{tmp_path / 'stores' / 'mlflow.db'}"]).tracking
    assert artifact_location(cfg) == (tmp_path / "stores" / "mlartifacts").as_uri()
    relative = load_config(["tracking.uri=sqlite:///mlflow.db"]).tracking  # relative to the working directory
    assert artifact_location(relative) == (Path.cwd() / "mlartifacts").as_uri()
    explicit = load_config(["tracking.uri=sqlite:///x.db", f"tracking.artifact_location={tmp_path}"]).tracking
    assert artifact_location(explicit) == str(tmp_path)
    assert artifact_location(load_config(["tracking.uri=http://server:5005"]).tracking) is None  # the server decides


def test_runs_table_link_opens_the_model_training_view():
    assert runs_table_url("sqlite:///mlflow.db", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert runs_table_url("http://server:5005", "3").startswith("http://server:5005/#/experiments/3/runs")


def _sweep_with_a_left_running_trial(tiny_cfg) -> tuple[str, str]:
    from sentiment import tracking

    tracking.connect(tiny_cfg.tracking, write=True)
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(tiny_cfg.tracking.experiment).experiment_id
    parent = client.create_run(experiment).info.run_id
    trial = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    return parent, trial


def test_a_dead_workers_run_is_failed_with_its_sweep_run_unless_that_is_the_callers(tiny_cfg):
    """A resumed sweep reopens its study's run and then fails its dead workers' trials: the run it
    is itself running under must stay RUNNING, with no error tag, and a dead sweep's must not."""
    from sentiment.tracking import fail_orphaned_run

    parent, trial = _sweep_with_a_left_running_trial(tiny_cfg)
    client = mlflow.MlflowClient()  # on the store the helper connected to
    fail_orphaned_run(trial, "its worker died", live_parent_run_id=parent)
    assert client.get_run(trial).info.status == "FAILED" and "its worker died" in client.get_run(trial).data.tags["error"]
    assert client.get_run(parent).info.status == "RUNNING" and "error" not in client.get_run(parent).data.tags
    orphaned_parent, orphaned_trial = _sweep_with_a_left_running_trial(tiny_cfg)
    fail_orphaned_run(orphaned_trial, "its worker died")  # no sweep alive: both were left RUNNING
    assert [client.get_run(r).info.status for r in (orphaned_trial, orphaned_parent)] == ["FAILED", "FAILED"]
