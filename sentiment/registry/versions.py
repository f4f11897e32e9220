"""Model Registry: find versions by tags and aliases, move @champion/@previous safely."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from sentiment.errors import TrackingError
from sentiment.stores import is_server
from sentiment.tracking import refusal

log = logging.getLogger(__name__)


def find_version(model_name: str, **tags: str) -> ModelVersion | None:
    """The newest version of model_name whose tags include all of `tags`, if any."""
    client = MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        return None
    versions = client.search_model_versions(f"name = '{model_name}'")
    matching = [v for v in versions if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    return max(matching, key=lambda v: int(v.version), default=None)


# Written last, after every other tag and the description: a version without it was cut off
# while it was being tagged (tags are written one call each), and the next sweep completes it.
COMPLETE_TAG, COMPLETE = "registration", "complete"


def register(model_name: str, model_uri: str, identity: dict[str, str]) -> str:
    """Register a logged model as a new version carrying its identity tags from the start (one
    call: no version exists without them). Returns the version number."""
    return str(mlflow.register_model(model_uri, model_name, tags=identity).version)


def complete_version(model_name: str, version: str, tags: dict[str, object], description: str) -> None:
    """Write a version's figures and description, then the tag that says they are all there."""
    tag_version(model_name, version, tags)
    describe_version(model_name, version, description)
    MlflowClient().set_model_version_tag(model_name, version, COMPLETE_TAG, COMPLETE)


def is_complete(version: ModelVersion) -> bool:
    return version.tags.get(COMPLETE_TAG) == COMPLETE


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


def check_can_move_aliases(model_name: str, tracking_uri: str) -> None:
    """On a tracking server, fail in one line before any scoring or locking if this user may not
    move model_name's aliases: its description is written back as it is, which the server
    refuses at once to a user without EDIT on the registered model. (A local store has no users.)"""
    if not is_server(tracking_uri):
        return
    client = MlflowClient()
    try:
        model = client.get_registered_model(model_name)
        client.update_registered_model(model_name, description=model.description or "")
    except MlflowException as err:
        refused = refusal(err, tracking_uri, f"move the aliases of {model_name}")
        if refused is not None:
            raise refused from None
        if "RESOURCE_DOES_NOT_EXIST" not in str(err.error_code):
            raise
        # No such model yet: the caller says so in its own words.


LOCK_SUFFIX = ".promotion-lock"
LOCK_STALE_S = 600  # a holder that died mid-promotion; promotions take seconds


@contextmanager
def alias_lock(model_name: str, wait_s: float = 120.0) -> Iterator[None]:
    """Serialize alias moves in the registry itself, so promotions from any machine (sharing no
    files) never leave a half-moved pair.

    MLflow has no compare-and-set for aliases, but registered-model names are unique in its
    store: creating `<model>.promotion-lock` succeeds for one caller at a time. A lock older than
    LOCK_STALE_S is taken to be left by a dead holder and removed.
    """
    client, name = MlflowClient(), model_name + LOCK_SUFFIX
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(name, tags={"purpose": f"promotion lock of {model_name}"},
                                           description=f"Held while @champion of {model_name} moves; removed after.")
            break
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code) and "already exists" not in str(err):
                raise
        _remove_if_stale(client, name)
        if time.monotonic() > deadline:
            raise TrackingError(f"another promotion of {model_name} holds {name} for over {wait_s:.0f} s; "
                                "try again, or delete that registered model if no promotion is running")
        time.sleep(0.2 + random.random() * 0.3)
    try:
        yield
    finally:
        client.delete_registered_model(name)


def _remove_if_stale(client: MlflowClient, name: str) -> None:
    try:
        lock = client.get_registered_model(name)
    except MlflowException:
        return  # released meanwhile
    if time.time() - lock.creation_timestamp / 1000 > LOCK_STALE_S:
        log.warning("removing the stale promotion lock %s", name)
        try:
            client.delete_registered_model(name)
        except MlflowException:
            pass  # someone else removed it


def move_champion(model_name: str, new_champion: str, old_champion: str | None) -> None:
    """champion -> new_champion; the old champion, if any and different, becomes previous.
    Read back afterwards: a write that did not land is an error, not a silent half-move."""
    client = MlflowClient()
    expected = {CHAMPION: new_champion}
    if old_champion is not None and old_champion != new_champion:
        client.set_registered_model_alias(model_name, PREVIOUS, old_champion)
        expected[PREVIOUS] = old_champion
    client.set_registered_model_alias(model_name, CHAMPION, new_champion)
    for alias, version in expected.items():
        found = alias_version(model_name, alias)
        if found is None or str(found.version) != str(version):
            raise TrackingError(f"@{alias} of {model_name} is not v{version} after moving it; run `make promote` again")
