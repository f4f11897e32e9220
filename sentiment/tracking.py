"""Everything MLflow: the store, runs, params, per-epoch metrics, artifacts and logged models."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import keras
import mlflow
import pandas as pd
from mlflow.keras.callback import MlflowCallback
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from omegaconf import DictConfig, OmegaConf

from sentiment.config import MODEL_GROUPS, OPERATIONAL_KEYS, flatten, sqlite_file
from sentiment.errors import TrackingError

log = logging.getLogger(__name__)

KERAS_ARTIFACT_DIR = "keras_model"  # per-run artifact: the trained token-id model
SERVING_CODE = Path(__file__).with_name("serving.py")
EXAMPLE_REVIEWS = ["An absolute delight, I loved every minute.", "Dull, predictable and far too long."]


# MLflow 3 opens an experiment in its GenAI view unless this tag names model training.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def connect(tracking_cfg: DictConfig, write: bool = False) -> str:
    """Point MLflow at the store, check it answers (and, with write, that this user may log to
    the experiment), and return the experiment id.

    The experiment is created (or marked) as a model-training experiment, so the UI opens on
    its runs table rather than on GenAI traces. The mark is written again on every write
    connect: a change to nothing that a server refuses at once if the user may only read.
    """
    from sentiment.access import refusal

    mlflow.set_tracking_uri(tracking_cfg.uri)
    client = mlflow.MlflowClient()
    try:
        experiment = mlflow.get_experiment_by_name(tracking_cfg.experiment)
        if experiment is None:
            experiment_id = mlflow.create_experiment(
                tracking_cfg.experiment, artifact_location=artifact_location(tracking_cfg),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
            )
        else:
            experiment_id = experiment.experiment_id
            if write or experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
                client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    except Exception as err:  # network, auth or schema problems all mean: cannot track
        raise refusal(err, tracking_cfg.uri, f"log runs to experiment {tracking_cfg.experiment}") or TrackingError(
            f"cannot use MLflow tracking store {tracking_cfg.uri} ({short_error(err)}); "
            "start the server or fix tracking.uri"
        ) from err
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def artifact_location(tracking_cfg: DictConfig) -> str | None:
    """tracking.artifact_location, else beside a SQLite store (MLflow would use ./mlruns of
    whatever directory the first run started in); a server decides for itself."""
    database = sqlite_file(tracking_cfg.uri)
    if tracking_cfg.artifact_location or database is None:
        return tracking_cfg.artifact_location
    return (database.parent / "mlartifacts").as_uri()


def short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def is_outage(err: BaseException) -> bool:
    """True when err (or what caused it) means the tracking server could not be reached."""
    import requests
    from mlflow.exceptions import MlflowException

    while err is not None:
        if isinstance(err, requests.exceptions.ConnectionError):
            return True
        if isinstance(err, MlflowException) and ("API request to" in str(err) or "Max retries" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def fail_orphaned_run(run_id: str | None, reason: str) -> None:
    """Mark a run, and its parent sweep run, FAILED if a dead or cut-off worker left them RUNNING."""
    if not run_id:
        return
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":
        return  # the worker recorded the trial's end itself: its sweep run may still be alive
    for orphan in (run_id, run.data.tags.get("mlflow.parentRunId")):
        if orphan and client.get_run(orphan).info.status == "RUNNING":
            client.set_tag(orphan, "error", f"ended by a later sweep: {reason}")
            client.set_terminated(orphan, status="FAILED")
            log.warning("run %s was left RUNNING (%s): marked FAILED", orphan, reason)


def runs_table_url(tracking_uri: str, experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs table in the model-training view. MLflow 3.17's UI picks GenAI or
    model training from its own toggle (remembered by the browser), which this query sets."""
    base = tracking_uri if tracking_uri.startswith("http") else ui
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """Flattened model-defining config under the same dotted names in every run."""
    container = OmegaConf.to_container(cfg, resolve=True)
    params = flatten({group: container[group] for group in MODEL_GROUPS})
    params = {k: v for k, v in params.items() if k not in OPERATIONAL_KEYS}
    params["seed"] = cfg.seed
    return params


class EpochMetricsCallback(MlflowCallback):
    """MLflow's Keras callback, minus its per-validation `validation_*` duplicates of val_* and its
    20 `optimizer_*` params (amsgrad, beta_1, ...) that would hide the searched ones."""

    def on_train_begin(self, logs=None):
        mlflow.log_params({"train.optimizer": type(self.model.optimizer).__name__})
        lines: list[str] = []
        self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        mlflow.log_text("\n".join(lines), "model_summary.txt")

    def on_test_end(self, logs=None):
        pass


def log_keras_model(model: keras.Model) -> None:
    """Attach the trained model to the active run so the sweep can reuse it without retraining."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        mlflow.log_artifact(str(path), artifact_path=KERAS_ARTIFACT_DIR)


def load_keras_model(run_id: str) -> keras.Model:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{KERAS_ARTIFACT_DIR}/model.keras")
    return keras.models.load_model(local)


def end_run(status: str, tags: dict[str, str] | None = None) -> None:
    """Finish the active run with an honest status after its async metrics are written."""
    try:
        mlflow.flush_async_logging()
        if tags:
            mlflow.set_tags(tags)
    finally:  # even when the store fails, the run leaves the active-run stack
        mlflow.end_run(status=status)


TEXT_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "text")]),
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label")]),
)


def log_text_model(text_model: keras.Model, registered_model_name: str | None = None):
    """Log the raw-text model as a pyfunc "model from code" (serving.py + the .keras file)."""
    import numpy as np
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        text_model.save(path)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_CODE),
            artifacts={"keras_model": str(path)},
            signature=TEXT_SIGNATURE,
            input_example=pd.DataFrame({"text": EXAMPLE_REVIEWS}),
            pip_requirements=[
                f"tensorflow=={tf.__version__}",
                f"keras=={keras.__version__}",
                f"mlflow=={mlflow.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
            registered_model_name=registered_model_name,
        )
