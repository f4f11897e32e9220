"""Optuna storage from `sweep.storage`: SQLite or PostgreSQL with heartbeats, or a journal file.

- sqlite:///optuna.db      one worker (the default)
- postgresql://...         many workers on many machines; the database is created if missing
- journal:optuna.journal   many workers on one machine without a database server (no heartbeats)
"""

from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import urlparse

import optuna
from omegaconf import DictConfig
from optuna.storages import RDBStorage, RetryFailedTrialCallback
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


def make_storage(sweep: DictConfig, on_stale_trial: Callable | None = None) -> optuna.storages.BaseStorage:
    """The study's storage. RDB storages get heartbeats: a trial whose worker died is failed,
    `on_stale_trial` runs for it, and it is retried (up to sweep.max_retry times)."""
    url = str(sweep.storage)
    if url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX).removeprefix("//")))
    if not url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(f"sweep.storage={url!r} is invalid: expected sqlite:///FILE, postgresql://... "
                          "or journal:FILE")
    if url.startswith("postgresql"):
        create_database_if_missing(url)
    retry = RetryFailedTrialCallback(max_retry=sweep.max_retry)

    def failed_trial_callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale_trial:
            on_stale_trial(study, trial)
        retry(study, trial)

    return RDBStorage(url, heartbeat_interval=sweep.heartbeat_interval, grace_period=sweep.grace_period,
                      failed_trial_callback=failed_trial_callback,
                      engine_kwargs={"pool_pre_ping": True} if url.startswith("postgresql") else None)
