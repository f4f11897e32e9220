"""Faults injected on purpose: killed workers, lost tracking servers, several workers at once.

Each test checks that nothing already recorded is lost or left inconsistent.
"""

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from sentiment import tracking
from sentiment.bench.local_servers import free_port, wait_until_answers
from sentiment.config import load_config
from sentiment.errors import TrackingError
from sentiment.search.storage import make_storage
from sentiment.stores import create_database_if_missing
from sentiment.sweep import run_sweep
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


# One storage (one connection pool) per URL in this process: the tests poll studies several
# times a second, and a storage made per poll leaves a pooled PostgreSQL connection open until
# garbage collection, enough to exhaust the server's max_connections in one test.
_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def _trial_count(cfg) -> int:
    try:
        return len(_study(cfg).trials)
    except KeyError:  # no study yet: it is created after the baselines
        return 0


def _study(cfg):
    url = str(cfg.sweep.storage)
    if url not in _STORAGES:
        _STORAGES[url] = make_storage(cfg.sweep)
    return optuna.load_study(study_name=cfg.sweep.study_name, storage=_STORAGES[url])


def _runs(cfg, **filters):
    tracking.connect(cfg.tracking)
    text = " and ".join(f"tags.{k} = '{v}'" for k, v in filters.items())
    return mlflow.search_runs(experiment_names=[cfg.tracking.experiment], filter_string=text, output_format="list")


def _check_one_run_per_trial(cfg):
    """Every trial that ran has exactly one child run, no run is left RUNNING."""
    trials = [t for t in _study(cfg).trials if "mlflow_run_id" in t.user_attrs]
    children = _runs(cfg, role="trial")
    assert sorted(c.info.run_id for c in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    assert len({t.number for t in _study(cfg).trials}) == len(_study(cfg).trials)
    assert not [r for r in _runs(cfg) if r.info.status == "RUNNING"]
    status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
    runs = {c.info.run_id: c for c in children}
    for trial in trials:
        assert runs[trial.user_attrs["mlflow_run_id"]].info.status == status[trial.state]


class MlflowServer:
    """`mlflow server` on a free loopback port; can be stopped and started again on that port."""

    def __init__(self, backend: str, artifacts: Path):
        self.backend, self.artifacts, self.port = backend, artifacts, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.process = subprocess.Popen(
            [Path(sys.executable).with_name("mlflow"), "server", "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_until_answers(f"{self.url}/health", self.process, seconds=120)
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def fail_fast_http(monkeypatch):
    # A stopped server refuses connections at once: no retries makes the sweep notice in seconds.
    # The read timeout stays generous: a loaded test machine can keep a live server busy for a while.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


@pytest.mark.integration
def test_killed_worker_trial_is_failed_retried_and_completed(imdb_dir, tmp_path):
    overrides = tiny_overrides(imdb_dir, tmp_path) + [
        "train.max_epochs=20", "train.early_stopping_patience=20",  # long enough to be killed mid-trial
        "sweep.heartbeat_interval=1", "sweep.grace_period=3"]
    cfg = load_config(overrides)
    worker = subprocess.Popen([sys.executable, "-m", "sentiment", "sweep", *overrides], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not _mid_trial(cfg):
            assert worker.poll() is None, "the worker ended before it could be killed"
            time.sleep(0.5)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        worker.kill()
    (killed,) = [t for t in _study(cfg).trials if t.state == TrialState.RUNNING]
    time.sleep(4)  # past the grace period: the heartbeat is stale

    run_sweep(cfg)
    trials = _study(cfg).trials
    assert [t.state for t in trials].count(TrialState.FAIL) == 1
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 2
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    killed_run = MlflowClient().get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED" and "heartbeat" in killed_run.data.tags["error"]
    _check_one_run_per_trial(cfg)
    (parent,) = _runs(cfg, role="sweep")  # the dead sweep's run, reopened by the re-run and ended
    assert parent.info.status == "FINISHED"


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_sigkill_at_a_random_moment_then_an_immediate_rerun_ends_with_exactly_n_trials(
        imdb_dir, tmp_path, postgres_databases, kind):
    """A grace period far longer than the re-run (900 s): only the same-host check can make it end
    before the grace period (with the default 120 s a slow machine's honest re-run came near it)."""
    import random

    storage = {"sqlite": f"sqlite:///{tmp_path / 'optuna.db'}", "journal": f"journal:{tmp_path / 'optuna.journal'}",
               "postgresql": postgres_databases[0]}[kind]
    overrides = tiny_overrides(imdb_dir, tmp_path) + [f"sweep.storage={storage}", "sweep.n_trials=3",
                                                      "baseline.models=[]", "train.max_epochs=4",
                                                      "sweep.grace_period=900"]
    cfg = load_config(overrides)
    command = [sys.executable, "-m", "sentiment", "sweep", *overrides]
    victim = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _mid_trial(cfg):  # then a random moment of the sweep
        time.sleep(0.2)
    time.sleep(random.uniform(0, 8))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    started = time.monotonic()
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert time.monotonic() - started < 450, "the re-run waited for a heartbeat instead of seeing the dead worker"
    trials = _study(cfg).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 3, "two trials ran the same params"
    tracking.connect(cfg.tracking)
    _check_one_run_per_trial(cfg)


def _mid_trial(cfg) -> bool:
    try:
        trials = _study(cfg).trials
    except KeyError:  # the study is not created yet
        return False
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials)


@pytest.mark.integration
@pytest.mark.parametrize(("phase", "trials_kept"), [(tracking.TRIAL, 1), (tracking.BASELINE, 0)])
def test_tracking_server_lost_mid_sweep_then_resumed(imdb_dir, tmp_path, monkeypatch, fail_fast_http,
                                                     phase, trials_kept):
    """The server goes away while a trial's (or the NBSVM baseline's) model is logged."""
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "served-artifacts").start()
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"tracking.uri={server.url}", "sweep.n_trials=3",
                                                            "baseline.models=[nbsvm]"])
    real_log_model = tracking.log_keras_model

    def server_dies_first(model):  # fault injection: the server goes away in the middle of trial 0
        if mlflow.active_run().data.tags.get(tracking.ROLE_TAG) == phase:
            server.stop()
        real_log_model(model)

    monkeypatch.setattr(tracking, "log_keras_model", server_dies_first)
    try:
        with pytest.raises(TrackingError, match="re-run"):
            run_sweep(cfg)
        assert _trial_count(cfg) == trials_kept  # it stopped instead of failing trial after trial
        monkeypatch.setattr(tracking, "log_keras_model", real_log_model)
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")  # the resumed sweep runs as a user's would
        server.start()
        result = run_sweep(cfg)
        trials = _study(cfg).trials
        assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 3
        assert result.registered_version is not None
        _check_one_run_per_trial(cfg)
        parents = _runs(cfg, role="sweep")
        assert [p.info.status for p in parents] == ["FINISHED"]  # one parent per study, reopened
    finally:
        server.stop()


@pytest.fixture
def postgres_databases():
    names = [f"sentiment_test_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [f"{POSTGRES}/{name}" for name in names]
    yield urls
    import psycopg

    for url in urls:  # close this process's pooled connections to the databases about to go
        storage = _STORAGES.pop(url, None)
        if storage is not None:
            storage.engine.dispose()

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.integration
def test_two_workers_on_postgresql_and_a_tracking_server(imdb_dir, tmp_path, postgres_databases):
    optuna_db, mlflow_db = postgres_databases
    create_database_if_missing(mlflow_db)
    server = MlflowServer(mlflow_db, tmp_path / "served-artifacts").start()
    try:
        cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
            f"tracking.uri={server.url}", f"sweep.storage={optuna_db}", "sweep.n_trials=4"])
        result = run_sweep(cfg, workers=2)
        trials = _study(cfg).trials
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 4 and len({t.number for t in trials}) == len(trials)
        assert len({tuple(t.params.values()) for t in trials}) == len(trials)  # workers sample apart
        children = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list",
                                      filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}' "
                                                    "and tags.role = 'trial'")
        assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == sorted(t.number for t in finished)
        _check_one_run_per_trial(cfg)
        assert result.registered_version == "1"
    finally:
        server.stop()


@pytest.mark.integration
def test_two_local_workers_share_a_journal_file(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        f"sweep.storage=journal:{tmp_path / 'optuna.journal'}", "sweep.n_trials=3"])
    run_sweep(cfg, workers=2)
    assert len([t for t in _study(cfg).trials if t.state == TrialState.COMPLETE]) == 3
    _check_one_run_per_trial(cfg)


def test_sqlite_study_refuses_several_workers(tiny_cfg):
    from sentiment.errors import ConfigError

    with pytest.raises(ConfigError, match="journal"):
        run_sweep(tiny_cfg, workers=2)


@contextlib.contextmanager
def _database_down(url: str):
    """What a PostgreSQL restart looks like to its clients: every connection to the database cut,
    and new ones refused, until the block ends."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _heartbeat_age_s(url: str, trial_id: int) -> float:
    """Seconds since the trial's last heartbeat, by the database's clock (as staleness is judged)."""
    import psycopg

    with psycopg.connect(url) as connection:
        (age,) = connection.execute("SELECT EXTRACT(EPOCH FROM now() - heartbeat) FROM trial_heartbeats "
                                    "WHERE trial_id = %s", (trial_id,)).fetchone()
    return float(age)


@pytest.mark.integration
def test_a_heartbeat_and_a_trials_writes_ride_out_a_database_outage(imdb_dir, tmp_path, postgres_databases):
    """Optuna's own heartbeat thread ends at its first failed write: after a restart the live trial
    would go stale and be retried while it still ran."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    url = postgres_databases[0]
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.storage={url}", "sweep.heartbeat_interval=1",
                                                            "sweep.grace_period=30"])
    study = optuna.create_study(study_name="s", storage=make_storage(cfg.sweep))
    trial = study.ask()
    heartbeat = get_heartbeat_thread(trial._trial_id, study._storage)  # what study.optimize runs
    with heartbeat, concurrent.futures.ThreadPoolExecutor(1) as pool:
        with _database_down(url):
            time.sleep(3)  # three beats fail
            report = pool.submit(trial.report, 0.25, 0)  # an epoch ends while the database is down
            time.sleep(1)
            assert report.running(), "the report failed instead of waiting for the database"
        report.result(timeout=30)
        time.sleep(2.5)
        assert heartbeat._thread.is_alive()
        assert _heartbeat_age_s(url, trial._trial_id) < 2  # beating again, once a second
    study.tell(trial, 0.25)
    assert [(t.state, t.intermediate_values) for t in study.trials] == [(TrialState.COMPLETE, {0: 0.25})]


@pytest.mark.integration
def test_opening_the_study_storage_waits_for_a_restarting_database(imdb_dir, tmp_path, postgres_databases):
    """A worker (re)started while PostgreSQL restarts: found by the soak, where one died on it."""
    url = postgres_databases[0]
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.storage={url}", "sweep.heartbeat_interval=1",
                                                            "sweep.grace_period=30"])
    make_storage(cfg.sweep).engine.dispose()  # the database and its tables exist
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with _database_down(url):
            opening = pool.submit(make_storage, cfg.sweep)
            time.sleep(3)
            assert opening.running(), "opening the storage failed instead of waiting for the database"
        storage = opening.result(timeout=30)
    assert optuna.create_study(study_name="after-the-restart", storage=storage).study_name == "after-the-restart"


@pytest.mark.integration
def test_a_database_outage_mid_trial_fails_no_live_trial(imdb_dir, tmp_path, postgres_databases):
    """Two workers; every study connection cut and refused for longer than a heartbeat interval
    while trials train. Nothing is failed or retried: the study ends with exactly n_trials."""
    url = postgres_databases[0]
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        f"sweep.storage={url}", "sweep.n_trials=3", "baseline.models=[]",
        "train.max_epochs=20", "train.early_stopping_patience=20",  # trials long enough to be cut mid-way
        "sweep.heartbeat_interval=1", "sweep.grace_period=12"])
    outages = []

    def cut_mid_trial():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _mid_trial(cfg):
            time.sleep(0.2)
        with _database_down(url):
            outages.append(time.monotonic())
            time.sleep(5)  # past four beats, inside the grace period

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        cutter = pool.submit(cut_mid_trial)
        result = run_sweep(cfg, workers=2)
        cutter.result(timeout=60)
    assert outages, "the sweep ended before the database could be cut"
    trials = _study(cfg).trials
    assert [t.state for t in trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)] == []
    assert len(trials) == 3 and len({tuple(sorted(t.params.items())) for t in trials}) == 3
    _check_one_run_per_trial(cfg)
    (parent,) = _runs(cfg, role="sweep")
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"


@pytest.mark.integration
def test_workers_get_the_study_databases_password_but_not_in_their_environment(imdb_dir, tmp_path,
                                                                                 postgres_databases, monkeypatch):
    """/proc/PID/environ is readable by the user's every process, and everything a worker starts
    inherits it: PGPASSWORD reaches the workers' storage through their start-up pipe instead."""
    import multiprocessing

    from sentiment import stores

    monkeypatch.setenv("PGPASSWORD", "the-study-password")  # trust auth here: any password is accepted
    monkeypatch.setattr(stores, "_study_database_password", None)
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [f"sweep.storage={postgres_databases[0]}",
                                                            "sweep.n_trials=2", "baseline.models=[]"])
    environments = {}

    def watch_workers(done):
        while not done.is_set():
            for child in multiprocessing.active_children():
                with contextlib.suppress(OSError):
                    environments[child.pid] = Path(f"/proc/{child.pid}/environ").read_bytes()
            time.sleep(0.2)

    done = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        watcher = pool.submit(watch_workers, done)
        try:
            run_sweep(cfg, workers=2)
        finally:
            done.set()
            watcher.result(timeout=10)
    assert len(environments) >= 2 and all(b"PGPASSWORD" not in env for env in environments.values())
    assert len([t for t in _study(cfg).trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 2
    with make_storage(cfg.sweep).engine.connect() as connection:  # still given to each connection itself
        assert connection.connection.driver_connection.info.password == "the-study-password"
    assert "PGPASSWORD" not in os.environ
