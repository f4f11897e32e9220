"""Optuna storage from `sweep.storage`: SQLite or PostgreSQL with heartbeats, or a journal file.

- sqlite:///optuna.db      one worker (the default)
- postgresql://...         many workers on many machines; the database is created if missing
- journal:optuna.journal   many workers on one machine without a database server (no heartbeats)
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable
from urllib.parse import urlparse

import optuna
from omegaconf import DictConfig
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from sentiment.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"


def create_database_if_missing(url: str) -> None:
    """PostgreSQL URLs name a database; create it on first use so nobody has to by hand."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(scheme="postgresql", path="/postgres").geturl()
    try:
        connection = psycopg.connect(admin, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as err:
        raise ConfigError(f"cannot reach PostgreSQL at {parsed.hostname}:{parsed.port} for database {name} "
                          f"({str(err).strip().splitlines()[0]}); start it or fix the URL") from None
    with connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            log.info("creating PostgreSQL database %s", name)
            try:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another worker created it first


def stale_trial_callback(sweep: DictConfig, on_stale_trial: Callable | None = None) -> Callable:
    """What happens to a trial whose worker died: `on_stale_trial`, then a retry with the same
    params (up to sweep.max_retry times)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since 2.8
        retry = RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retry)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale_trial:
            on_stale_trial(study, trial)
        retry(study, trial)

    return callback


def make_storage(sweep: DictConfig, on_stale_trial: Callable | None = None) -> optuna.storages.BaseStorage:
    """The study's storage. RDB storages get heartbeats: a trial whose worker died is failed and
    handled by stale_trial_callback."""
    url = str(sweep.storage)
    if url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX).removeprefix("//")))
    if not url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(f"sweep.storage={url!r} is invalid: expected sqlite:///FILE, postgresql://... "
                          "or journal:FILE")
    if url.startswith("postgresql"):
        create_database_if_missing(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        return RDBStorage(url, heartbeat_interval=sweep.heartbeat_interval, grace_period=sweep.grace_period,
                          heartbeat_stale_trial_callback=stale_trial_callback(sweep, on_stale_trial),
                          engine_kwargs={"pool_pre_ping": True} if url.startswith("postgresql") else None)
