"""The Optuna storage that sweep.storage names (SQLite with heartbeats, a journal file, or a
one-line error), and what happens to a trial whose heartbeat went stale: the hook, then a retry."""

import time

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from sentiment.config import load_config
from sentiment.errors import ConfigError
from sentiment.search.storage import make_storage, stale_trial_callback
from tests.conftest import tiny_overrides


def _cfg(imdb_dir, tmp_path, *extra):
    return load_config(tiny_overrides(imdb_dir, tmp_path) + list(extra))


def test_sqlite_is_an_rdb_storage_with_the_configured_heartbeat(imdb_dir, tmp_path):
    cfg = _cfg(imdb_dir, tmp_path, "sweep.heartbeat_interval=7", "sweep.grace_period=21")
    storage = make_storage(cfg.sweep)
    assert isinstance(storage, RDBStorage)
    assert storage.get_heartbeat_interval() == 7 and storage.grace_period == 21
    assert storage.get_heartbeat_stale_trial_callback() is not None
    optuna.create_study(study_name="s", storage=storage)
    assert (tmp_path / "optuna.db").is_file()  # the tiny config's sweep.storage


def test_journal_is_a_journal_storage_on_that_file(imdb_dir, tmp_path):
    journal = tmp_path / "shared" / "optuna.journal"
    journal.parent.mkdir()
    cfg = _cfg(imdb_dir, tmp_path, f"sweep.storage=journal:{journal}")
    storage = make_storage(cfg.sweep)
    assert isinstance(storage, JournalStorage)
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 0.5)
    assert journal.is_file() and journal.stat().st_size > 0
    # the same file read by another storage is the same study: that is what workers share
    again = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [t.value for t in again.trials] == [0.5]


def test_journal_with_slashes_names_the_same_file(imdb_dir, tmp_path):
    cfg = _cfg(imdb_dir, tmp_path, "sweep.storage=journal://relative.journal")
    optuna.create_study(study_name="s", storage=make_storage(cfg.sweep))
    assert (tmp_path / "relative.journal").is_file()  # relative to the working directory (tmp_path)


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1/optuna", "optuna.db", "redis://127.0.0.1:6379"])
def test_an_unsupported_storage_is_one_line_naming_the_key(imdb_dir, tmp_path, url):
    cfg = _cfg(imdb_dir, tmp_path, f"sweep.storage={url}")
    with pytest.raises(ConfigError) as err:
        make_storage(cfg.sweep)
    message = str(err.value)
    assert message.startswith(f"sweep.storage={url!r} is invalid") and "\n" not in message
    assert "sqlite:///" in message and "postgresql://" in message and "journal:" in message


def _failed_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    trial.suggest_int("units", 4, 8, step=4)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.set_user_attr("mlflow_run_id", "run-of-the-dead-worker")
    study.tell(trial, state=TrialState.FAIL)
    return study.trials[trial.number]


def test_stale_trial_callback_calls_the_hook_then_retries_with_the_same_params(imdb_dir, tmp_path):
    cfg = _cfg(imdb_dir, tmp_path, "sweep.max_retry=2")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'plain.db'}")
    failed = _failed_trial(study)
    seen = []

    def hook(hook_study, trial):  # what the trials held when the hook ran: the retry comes after it
        seen.append((hook_study, trial.number, [t.state for t in hook_study.trials]))

    stale_trial_callback(cfg.sweep, hook)(study, failed)
    assert seen == [(study, failed.number, [TrialState.FAIL])]
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert retry.system_attrs["failed_trial"] == failed.number


def test_stale_trial_callback_without_a_hook_still_retries(imdb_dir, tmp_path):
    cfg = _cfg(imdb_dir, tmp_path)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'plain.db'}")
    failed = _failed_trial(study)
    stale_trial_callback(cfg.sweep)(study, failed)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]


def test_retries_stop_after_max_retry(imdb_dir, tmp_path):
    cfg = _cfg(imdb_dir, tmp_path, "sweep.max_retry=1")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'plain.db'}")
    calls = []
    callback = stale_trial_callback(cfg.sweep, lambda s, t: calls.append(t.number))
    callback(study, _failed_trial(study))  # the first failure is retried once
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING
    # the retry runs and goes stale too: the hook still hears of it, but no third attempt is queued
    running = study.ask()
    assert running.number == retry.number and running.params == retry.params
    study.tell(running, state=TrialState.FAIL)
    callback(study, study.trials[running.number])
    assert calls == [0, 1]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.training
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # fail_stale_trials, stable since 2.9
def test_a_trial_whose_heartbeat_stops_is_failed_handed_to_the_hook_and_retried(imdb_dir, tmp_path):
    """The heartbeat settings of the config decide when a silent trial is stale (SQLite's clock
    has whole seconds: a 2 s grace period is over after 3.5 s)."""
    cfg = _cfg(imdb_dir, tmp_path, "sweep.heartbeat_interval=1", "sweep.grace_period=2")
    stale = []
    storage = make_storage(cfg.sweep, on_stale_trial=lambda study, trial: stale.append((trial.number, trial.state)))
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("dropout", 0.0, 0.5)
    storage.record_heartbeat(trial._trial_id)  # what a worker's heartbeat thread does, once
    optuna.storages.fail_stale_trials(study)
    assert stale == [] and study.trials[0].state == TrialState.RUNNING  # still within its grace period
    time.sleep(3.5)
    optuna.storages.fail_stale_trials(study)
    assert stale == [(0, TrialState.FAIL)]
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING] and study.trials[1].params == study.trials[0].params


def test_a_damaged_study_database_is_one_line_saying_what_to_do(imdb_dir, tmp_path):
    damaged = tmp_path / "optuna.db"
    damaged.write_bytes(b"this was a study database until the disk filled\x00" * 64)
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.storage=sqlite:///{damaged}"])
    with pytest.raises(ConfigError) as refused:
        make_storage(cfg.sweep)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "not a readable study database" in message
    assert "move the file aside" in message and "MLflow runs are kept" in message


def test_a_finishing_write_whose_answer_was_lost_is_not_retried_into_an_error(imdb_dir, tmp_path, monkeypatch):
    """The database committed the trial's end, then the connection dropped before the answer: the
    retry finds the trial finished as asked, and that counts as done (not UpdateFinishedTrialError)."""
    import sqlalchemy

    cfg = _cfg(imdb_dir, tmp_path, "sweep.heartbeat_interval=1", "sweep.grace_period=10")
    storage = make_storage(cfg.sweep)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    real, calls = RDBStorage.set_trial_state_values, []

    def committed_then_cut(self, trial_id, state, values=None):
        calls.append(state)
        done = real(self, trial_id, state, values)
        if len(calls) == 1:
            cut = sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
            raise optuna.exceptions.StorageInternalError("the answer was lost") from cut
        return done

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", committed_then_cut)
    assert storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5]) is True
    assert calls == [TrialState.COMPLETE] * 2 and storage.get_trial(trial._trial_id).values == [0.5]
    other = study.ask()  # a finished trial asked to finish otherwise is still an error
    storage.set_trial_state_values(other._trial_id, TrialState.COMPLETE, [0.1])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(other._trial_id, TrialState.FAIL)
