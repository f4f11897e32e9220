"""Model Registry: find versions by tags and aliases, move @champion/@previous safely."""

from __future__ import annotations

import fcntl
import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from platformdirs import user_cache_dir

from sentiment.errors import TrackingError

log = logging.getLogger(__name__)


def find_version(model_name: str, **tags: str) -> ModelVersion | None:
    """The newest version of model_name whose tags include all of `tags`, if any."""
    client = MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        return None
    versions = client.search_model_versions(f"name = '{model_name}'")
    matching = [v for v in versions if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    return max(matching, key=lambda v: int(v.version), default=None)


def tag_version(model_name: str, version: str, tags: dict[str, object]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))


def describe_version(model_name: str, version: str, description: str) -> None:
    MlflowClient().update_model_version(model_name, version, description=description)


# --- aliases: promote and roll back ---------------------------------------------------------

CHAMPION, PREVIOUS = "champion", "previous"


def alias_version(model_name: str, alias: str) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def newest_version(model_name: str) -> ModelVersion | None:
    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def get_version(model_name: str, version: str | int) -> ModelVersion:
    try:
        return MlflowClient().get_model_version(model_name, str(version))
    except MlflowException:
        raise TrackingError(f"{model_name} has no version {version}: see `make ui` for the versions") from None


@contextmanager
def alias_lock(tracking_uri: str, model_name: str) -> Iterator[None]:
    """Serialize alias moves so concurrent promotions never leave a half-moved pair.

    MLflow has no compare-and-set for aliases, so promotions of one store on one machine take
    an exclusive file lock (beside a SQLite store, else in the user cache dir).
    """
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    else:
        folder = Path(user_cache_dir("sentiment-sweep"))
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{tracking_uri}|{model_name}".encode()).hexdigest()[:12]
    with open(folder / f".registry-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def move_champion(model_name: str, new_champion: str, old_champion: str | None) -> None:
    """champion -> new_champion; the old champion, if any and different, becomes previous."""
    client = MlflowClient()
    if old_champion is not None and old_champion != new_champion:
        client.set_registered_model_alias(model_name, PREVIOUS, old_champion)
    client.set_registered_model_alias(model_name, CHAMPION, new_champion)
