"""Everything MLflow: the store, runs and their roles, params, per-epoch metrics, artifacts and
logged models, and one-line answers when a tracking server refuses a credential or permission."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import pandas as pd
from mlflow.keras.callback import MlflowCallback
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from omegaconf import DictConfig, OmegaConf

from sentiment import model_code
from sentiment.config import MODEL_GROUPS, OPERATIONAL_KEYS, flatten
from sentiment.errors import TrackingError
from sentiment.model_code import KERAS_ARTIFACT, TEXT_COLUMN
from sentiment.stores import is_server, refuse_password_over_plain_http, sqlite_file

log = logging.getLogger(__name__)

MODEL_CODE = Path(model_code.__file__)  # logged with every raw-text model: the code that serves it
CREDENTIALS_HINT = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"
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
    _refuse_password_over_plain_http(tracking_cfg)
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
    if tracking_cfg.system_metrics_seconds is not None:
        mlflow.set_system_metrics_sampling_interval(tracking_cfg.system_metrics_seconds)
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


def _refuse_password_over_plain_http(tracking_cfg: DictConfig) -> None:
    from mlflow.utils.credentials import read_mlflow_creds

    credentials = read_mlflow_creds()
    has_secret = bool(credentials.password or os.environ.get("MLFLOW_TRACKING_TOKEN"))
    refuse_password_over_plain_http(tracking_cfg.uri, credentials.username, has_secret,
                                    bool(tracking_cfg.allow_plain_http))


def username() -> str | None:
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username


def refusal(err: BaseException, uri: str, action: str, fix: str | None = None) -> TrackingError | None:
    """A one-line error for a refused credential (401) or permission (403), else None. `fix` says
    what to do about a 403 (default: ask the admin for the trainer role)."""
    code = str(getattr(err, "error_code", ""))
    if code == "UNAUTHENTICATED":
        user = username()
        said = f"refused the password of user {user!r}" if user else "needs a user name and password"
        return TrackingError(f"the tracking server {uri} {said}: {CREDENTIALS_HINT}")
    if code == "PERMISSION_DENIED":
        user = username()
        fix = fix or f"the server's admin can allow it with `make user NAME={user} ROLE=trainer`"
        return TrackingError(f"user {user!r} may not {action} on {uri}: {fix}")
    return None


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


def lost_store(err: BaseException) -> TrackingError:
    """The one-line error for a tracking store that went away mid-sweep."""
    return TrackingError(f"lost the MLflow tracking store ({short_error(err)}); "
                         "finished trials are kept: re-run the same command once it is back")


def fail_orphaned_run(run_id: str | None, reason: str, live_parent_run_id: str | None = None) -> None:
    """Mark a run, and its parent sweep run, FAILED if a dead or cut-off worker left them RUNNING;
    never live_parent_run_id, the sweep run the caller itself runs trials under (a resumed sweep
    reopens its study's run)."""
    if not run_id:
        return
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":
        return  # the worker recorded the trial's end itself: its sweep run may still be alive
    parent = run.data.tags.get("mlflow.parentRunId")
    for orphan in (run_id, None if parent == live_parent_run_id else parent):
        if orphan and client.get_run(orphan).info.status == "RUNNING":
            fail_left_running(orphan, reason)


def fail_left_running(run_id: str, reason: str) -> None:
    """End a run that a dead or cut-off process left RUNNING: FAILED, with why in its `error` tag."""
    mark_failed(run_id, f"ended by a later sweep: {reason}")
    log.warning("run %s was left RUNNING (%s): marked FAILED", run_id, reason)


def mark_failed(run_id: str, error: str) -> None:
    """Set a run FAILED, whatever it was, with why in its `error` tag."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, "error", error)
    client.set_terminated(run_id, status="FAILED")


def runs_table_url(tracking_uri: str, experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs table in the model-training view. MLflow 3.17's UI picks GenAI or
    model training from its own toggle (remembered by the browser), which this query sets."""
    base = tracking_uri if is_server(tracking_uri) else ui
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# --- what a run is: its `role` tag, and finding runs by it -------------------------------------

ROLE_TAG = "role"
SWEEP, TRIAL, BASELINE, REFIT, TRAIN, DISTIL = "sweep", "trial", "baseline", "refit", "train", "distil"  # its values
STUDY_TAG = "sweep.study"  # the study a sweep, or its baseline, belongs to


def find_runs(role: str, tags: dict[str, str] | None = None, experiment_ids: list[str] | None = None,
              parent_run_id: str | None = None, finished: bool = False, order_by: list[str] | None = None,
              max_results: int | None = None) -> list:
    """Runs of one role with these tag values, in the given experiments (default: the active one);
    only FINISHED ones with `finished`."""
    clauses = [f"tags.`{name}` = '{value}'" for name, value in {ROLE_TAG: role, **(tags or {})}.items()]
    if parent_run_id:
        clauses.append(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    if finished:
        clauses.append("attributes.status = 'FINISHED'")
    limit = {"max_results": max_results} if max_results else {}
    return mlflow.search_runs(experiment_ids, output_format="list", order_by=order_by,
                              filter_string=" and ".join(clauses), **limit)


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
        mlflow.log_artifact(str(path), artifact_path=KERAS_ARTIFACT)  # a trial run's folder for its token-id model


def load_keras_model(run_id: str) -> keras.Model:
    with artifacts_of(f"run {run_id}'s {KERAS_ARTIFACT}", "restore the run's artifacts and re-run the same "
                      "command, or start afresh with a new sweep.study_name"):
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{KERAS_ARTIFACT}/model.keras")
        return keras.models.load_model(local)


REGISTERED_GONE_FIX = ("`make rollback` to @previous, `make promote VERSION=<n>` another version, or `make sweep` "
                       "to register a new one")


@contextmanager
def artifacts_of(what: str, fix: str) -> Iterator[None]:
    """Artifacts that are gone or unreadable (a deleted artifact folder, a truncated file) are
    a one-line error saying what to do; a refused login or a server away keep their own."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (OSError, ValueError, MlflowException) as err:
        if refusal(err, mlflow.get_tracking_uri(), f"read {what}") is not None or is_outage(err):
            raise
        raise TrackingError(f"the artifacts of {what} are gone or unreadable ({short_error(err)}): {fix}") from err


def end_run(status: str, tags: dict[str, str] | None = None) -> None:
    """Finish the active run with an honest status after its async metrics are written."""
    try:
        mlflow.flush_async_logging()
        if tags:
            mlflow.set_tags(tags)
    finally:  # even when the store fails, the run leaves the active-run stack
        mlflow.end_run(status=status)


TEXT_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label")]),
)


def log_text_model(text_model: keras.Model):
    """Log the raw-text model as a pyfunc "model from code" (model_code.py + the .keras file) on
    the active run; registering it is registry.versions.register's job."""
    import numpy as np
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        text_model.save(path)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={KERAS_ARTIFACT: str(path)},
            signature=TEXT_SIGNATURE,
            input_example=pd.DataFrame({TEXT_COLUMN: EXAMPLE_REVIEWS}),
            pip_requirements=[
                f"tensorflow=={tf.__version__}",
                f"keras=={keras.__version__}",
                f"mlflow=={mlflow.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
