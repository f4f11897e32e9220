"""Model Registry: find versions by tags and aliases, move @champion/@previous safely."""

from __future__ import annotations

import logging
import os
import random
import socket
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
LOCK_STALE_S = 600  # a ticket its holder stopped touching: promotions hold the lock for seconds
ACTIVE, RELEASED = "active", "released"  # a ticket's tag `state`


def lock_name(model_name: str) -> str:
    return model_name + LOCK_SUFFIX


@contextmanager
def alias_lock(model_name: str, version: str, wait_s: float = 120.0) -> Iterator[None]:
    """Serialize alias moves in the registry itself, so promotions from any machine (sharing no
    files) never leave a half-moved pair.

    MLflow has no compare-and-set for aliases, but it numbers a registered model's versions in one
    transaction. Each move takes a ticket, a new version of `<model>.promotion-lock` (its source the
    version it would make champion), and holds the lock once no lower ticket is live. A ticket is
    live until its holder tags it released, or until it has gone untouched for LOCK_STALE_S by the
    server's own clock (waiters touch theirs on every poll, so only a dead process's ticket goes
    stale): no client clock is compared with the server's, nothing is deleted (a trainer may not
    delete versions), and each move releases only its own ticket. A holder paused for longer than
    LOCK_STALE_S loses the lock to the next ticket, as with any lease.
    """
    client, lock = MlflowClient(), lock_name(model_name)
    try:
        create_lock_model(client, model_name)
        ticket = client.create_model_version(
            lock, source=f"models:/{model_name}/{version}", tags={"state": ACTIVE, "holder": _holder()},
            description=f"a move of @{CHAMPION} to v{version}")
    except MlflowException as err:
        raise refusal(err, mlflow.get_tracking_uri(), f"take a ticket of the promotion lock {lock}") or err from None
    try:
        _wait_for_turn(client, lock, int(ticket.version), wait_s)
        yield
    finally:
        client.set_model_version_tag(lock, ticket.version, "state", RELEASED)


def create_lock_model(client: MlflowClient, model_name: str) -> None:
    """The registered model whose versions are the promotion tickets of model_name (kept if it exists)."""
    try:
        client.create_registered_model(lock_name(model_name), tags={"purpose": f"promotion lock of {model_name}"},
                                       description=f"One version per move of @{CHAMPION} of {model_name}: "
                                                   "the lowest live one holds the lock.")
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise


def _wait_for_turn(client: MlflowClient, lock: str, ticket: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        # Touching our own ticket keeps it live and reads the server's clock off its timestamp.
        now = client.update_model_version(lock, str(ticket), description=f"waiting since ticket {ticket}")
        ahead = live_tickets(client, lock, now.last_updated_timestamp, below=ticket)
        if not ahead:
            return
        if time.monotonic() > deadline:
            holder = ahead[0].tags.get("holder", "?")
            raise TrackingError(f"another promotion ({holder}, ticket {ahead[0].version} of {lock}) has held the "
                                f"lock for over {wait_s:.0f} s; try again (a dead holder's ticket expires "
                                f"{LOCK_STALE_S // 60} minutes after it was last touched)")
        time.sleep(0.2 + random.random() * 0.3)


def live_tickets(client: MlflowClient, lock: str, server_now_ms: int, below: int) -> list[ModelVersion]:
    """The lock's unreleased tickets below ticket `below` (lowest first), touched within
    LOCK_STALE_S of server_now_ms."""
    tickets = client.search_model_versions(f"name = '{lock}' and tags.state = '{ACTIVE}'")
    live = [t for t in tickets
            if int(t.version) < below and server_now_ms - t.last_updated_timestamp <= LOCK_STALE_S * 1000]
    return sorted(live, key=lambda t: int(t.version))


def _holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


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
