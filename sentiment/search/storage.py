"""Optuna storage from `sweep.storage`: SQLite or PostgreSQL with heartbeats, or a journal file.

- sqlite:///optuna.db      one worker (the default)
- postgresql://...         many workers on many machines; the database is created if missing
- journal:optuna.journal   many workers on one machine without a database server (no heartbeats)

A database restart (or its connections cut) is ridden out: each storage call a trial makes is
retried while the database does not answer, for up to the heartbeat grace period (longer, and the
other workers count the trial dead anyway), and a heartbeat that cannot be written is skipped,
not fatal. Optuna's own heartbeat thread has no error handling: one failed write used to end it,
and the live trial then went stale, was retried while it still ran, and its worker died on
"Cannot tell a FAIL trial".
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable

import optuna
import sqlalchemy
from omegaconf import DictConfig
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from sentiment.errors import ConfigError
from sentiment.stores import (
    create_database_if_missing,
    is_journal,
    is_postgresql,
    is_sqlite,
    journal_file,
    postgresql_connect_args,
)

log = logging.getLogger(__name__)


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
            return _opened_waiting_out_outages(
                url, sweep.grace_period if is_postgresql(url) else 0,  # a SQLite file does not restart
                heartbeat_interval=sweep.heartbeat_interval, grace_period=sweep.grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback(sweep, on_stale_trial),
                engine_kwargs={"pool_pre_ping": True, "connect_args": postgresql_connect_args()}
                if is_postgresql(url) else None)
        except sqlalchemy.exc.DatabaseError as err:
            if not is_sqlite(url):
                raise
            # A damaged file (a disk that filled, a copy cut short): its studies cannot be resumed.
            raise ConfigError(f"sweep.storage={url} is not a readable study database ({type(err.orig).__name__}: "
                              f"{err.orig}): move the file aside and re-run to start the study again (the MLflow "
                              "runs are kept), or point sweep.storage at another file") from None


def is_unreachable(err: BaseException) -> bool:
    """The database did not answer (refused, restarting, connection cut), as opposed to a query
    it answered with an error. Optuna wraps SQLAlchemy's errors in StorageInternalError."""
    cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) else err
    return isinstance(cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
        isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated)


def _opened_waiting_out_outages(url: str, patience_s: float, **settings) -> OutageTolerantStorage:
    """The storage, opened (its tables checked) as soon as the database answers, for up to patience_s."""
    return wait_out_outages(lambda: OutageTolerantStorage(url, **settings), patience_s)


def wait_out_outages(call: Callable, patience_s: float):
    """call(), retried with back-off while the database does not answer, for up to patience_s."""
    give_up = time.monotonic() + patience_s
    pause, retried = 0.5, False
    while True:
        try:
            return call()
        except Exception as err:
            if not is_unreachable(err) or time.monotonic() + pause > give_up:
                raise
            if not retried:
                log.warning("the study database did not answer (%s); retrying for up to %s s",
                            type(err.__cause__ or err).__name__, patience_s)
            retried = True
            time.sleep(pause)
            pause = min(2 * pause, 5.0)


class OutageTolerantStorage(RDBStorage):
    """RDBStorage whose heartbeat survives a database outage, and whose calls wait it out."""

    def record_heartbeat(self, trial_id: int) -> None:
        # Runs in Optuna's heartbeat thread, which ends at the first exception: never raise. A
        # skipped beat is harmless; beats missing for the grace period mark the trial dead.
        try:
            super().record_heartbeat(trial_id)
        except Exception as err:  # noqa: BLE001 - the thread must live on whatever the database said
            log.warning("trial id %d: heartbeat not recorded (%s); trying again in %s s", trial_id,
                        type(err.__cause__ or err).__name__, self.heartbeat_interval)

    def set_trial_state_values(self, trial_id: int, state, values=None) -> bool:
        attempts, commit = [], super().set_trial_state_values

        def attempt() -> bool:
            attempts.append(state)
            return commit(trial_id, state, values)

        try:
            return self._waiting_out_outages(attempt)
        except optuna.exceptions.UpdateFinishedTrialError:
            if len(attempts) < 2 or self.get_trial(trial_id).state != state:
                raise
            return True  # a retry found what was asked: the first attempt's commit, its answer lost

    def _waiting_out_outages(self, call: Callable, *args, **kwargs):
        return wait_out_outages(lambda: call(*args, **kwargs), self.grace_period or 0)


def _waits_out_outages(name: str) -> None:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def waiting(self: OutageTolerantStorage, *args, **kwargs):
        return self._waiting_out_outages(method.__get__(self), *args, **kwargs)

    setattr(OutageTolerantStorage, name, waiting)


# What a study and its trials call on the storage (directly and through Optuna's cache); creating
# a trial could, in the rare case of an answer lost after its commit, make one trial too many,
# which the unclaimed-trial rule (search.recovery) fails after the grace period.
# (The public create_new_trial, set_trial_param and get_all_trials call the private ones listed.)
for _name in ("_create_new_trial", "_set_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
              "set_trial_system_attr", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
              "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_all_studies", "get_trial_id_from_study_id_trial_number",
              "get_trial", "_get_trials", "_get_best_trial_id", "_get_stale_trial_ids"):
    _waits_out_outages(_name)
