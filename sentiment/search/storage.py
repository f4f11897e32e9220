"""Optuna storage from `sweep.storage`: SQLite or PostgreSQL with heartbeats, or a journal file.

- sqlite:///optuna.db      one worker (the default)
- postgresql://...         many workers on many machines; the database is created if missing
- journal:optuna.journal   many workers on one machine without a database server (no heartbeats)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna
import sqlalchemy
from omegaconf import DictConfig
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from sentiment.errors import ConfigError
from sentiment.stores import create_database_if_missing, is_journal, is_postgresql, is_sqlite, journal_file


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
    if is_journal(url):
        return JournalStorage(JournalFileBackend(journal_file(url)))
    if not (is_sqlite(url) or is_postgresql(url)):
        raise ConfigError(f"sweep.storage={url!r} is invalid: expected sqlite:///FILE, postgresql://... "
                          "or journal:FILE")
    if is_postgresql(url):
        create_database_if_missing(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        try:
            return RDBStorage(url, heartbeat_interval=sweep.heartbeat_interval, grace_period=sweep.grace_period,
                              heartbeat_stale_trial_callback=stale_trial_callback(sweep, on_stale_trial),
                              engine_kwargs={"pool_pre_ping": True} if is_postgresql(url) else None)
        except sqlalchemy.exc.DatabaseError as err:
            if not is_sqlite(url):
                raise
            # A damaged file (a disk that filled, a copy cut short): its studies cannot be resumed.
            raise ConfigError(f"sweep.storage={url} is not a readable study database ({type(err.orig).__name__}: "
                              f"{err.orig}): move the file aside and re-run to start the study again (the MLflow "
                              "runs are kept), or point sweep.storage at another file") from None
