"""What a run records and where: params from the one table of keys, artifacts beside the store."""

from pathlib import Path

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
