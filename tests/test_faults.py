"""Faults injected on purpose: killed workers, lost tracking servers, several workers at once.

Each test checks that nothing already recorded is lost or left inconsistent.
"""

import os
import signal
import subprocess
import sys
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
