"""One Optuna trial through the Objective: what the pruner and the sweep's deadline do to its run."""

import time

import mlflow
import optuna
import pytest
from omegaconf import OmegaConf

from sentiment import tracking
from sentiment.search.optuna_engine import Objective
from sentiment.tokens import load_data
from tests.conftest import trial_runs

pytestmark = pytest.mark.sweeps  # trains trials through the sweep's objective: not in make test-fast


def _run_objective(cfg, pruner, n_trials=1, deadline=None):
    tracking.connect(cfg.tracking)
    study = optuna.create_study(pruner=pruner, sampler=optuna.samplers.TPESampler(seed=0))
    with mlflow.start_run() as parent:
        study.optimize(Objective(cfg, load_data(cfg), deadline=deadline), n_trials=n_trials, catch=(Exception,))
    return study, trial_runs(parent.info.run_id)


def test_a_trial_running_past_the_sweep_timeout_stops_at_its_next_epoch_end(tiny_cfg):
    cfg = OmegaConf.merge(tiny_cfg, {"train": {"max_epochs": 4, "early_stopping_patience": 4}})
    _, (on_time,) = _run_objective(cfg, optuna.pruners.NopPruner())
    study, (late,) = _run_objective(cfg, optuna.pruners.NopPruner(), deadline=time.monotonic())
    assert on_time.data.metrics["epochs_trained"] == 4 and "stopped_by" not in on_time.data.tags
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE  # a complete trial, only shorter
    assert late.data.metrics["epochs_trained"] == 1 and late.data.tags["stopped_by"] == "sweep.timeout"
    assert late.info.status == "FINISHED" and study.trials[0].value == late.data.metrics["best_val_loss"]


def test_pruned_trial_shows_as_pruned(tiny_cfg):
    # Any val_loss above 0 crosses this threshold, so the first report prunes.
    study, (child,) = _run_objective(tiny_cfg, optuna.pruners.ThresholdPruner(upper=0.0))
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert child.info.status == "KILLED"
    assert child.data.tags["pruned"] == "true" and child.data.tags["state"] == "pruned"
    assert "val_loss" in child.data.metrics  # the epoch that was judged is recorded


def test_trials_queued_beyond_n_trials_are_not_waited_for_and_the_study_is_complete(tiny_cfg):
    """Warm-start and configured trials can queue more than sweep.n_trials: the run returns once
    the study holds n_trials, and the finished study is recognised despite the leftover queue."""
    from sentiment.search.optuna_engine import finished_outcome, open_study, run_trials

    cfg = OmegaConf.merge(tiny_cfg, {"sweep": {"n_trials": 1, "timeout": None, "study_name": "queued"}})
    study = open_study(cfg)  # enqueues the configured values
    for dropout in (0.1, 0.2):
        study.enqueue_trial({"dropout": dropout})
    tracking.connect(cfg.tracking)
    with mlflow.start_run():
        started = time.monotonic()
        study = run_trials(cfg, load_data(cfg))
    assert time.monotonic() - started < 120  # it used to spin here until sweep.timeout, forever without one
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1 and states.count(optuna.trial.TrialState.WAITING) == 2
    assert finished_outcome(cfg) is not None


def test_a_trial_failed_by_another_worker_while_it_runs_is_dropped_and_its_retry_runs(tiny_cfg):
    """Another worker judged the trial stale (its heartbeats missed the grace period) and retried
    it; Optuna then refuses this worker's result ("Cannot tell a FAIL trial"), which used to end it."""
    import concurrent.futures

    from sentiment.search.optuna_engine import open_study, run_trials
    from sentiment.search.storage import stale_trial_callback

    running = optuna.trial.TrialState.RUNNING
    cfg = OmegaConf.merge(tiny_cfg, {"sweep": {"n_trials": 1, "timeout": None, "study_name": "judged-stale"},
                                     "train": {"max_epochs": 20, "early_stopping_patience": 20}})
    study = open_study(cfg)

    def another_worker_judges_it_stale():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            live = [t for t in study.get_trials(states=(running,)) if t.intermediate_values]
            if live:
                study._storage.set_trial_state_values(live[0]._trial_id, optuna.trial.TrialState.FAIL)
                stale_trial_callback(cfg.sweep)(study, study.get_trials()[live[0].number])  # queues its retry
                return live[0].number
            time.sleep(0.05)
        raise AssertionError("no trial reached its first epoch end")

    tracking.connect(cfg.tracking)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, mlflow.start_run():
        judged = pool.submit(another_worker_judges_it_stale)
        study = run_trials(cfg, load_data(cfg))
        assert judged.result(timeout=60) == 0
    first, retry = study.trials
    assert (first.state, retry.state) == (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE)
    assert retry.params == first.params
    dropped = mlflow.MlflowClient().get_run(first.user_attrs["mlflow_run_id"])
    assert dropped.info.status == "FAILED" and "another worker" in dropped.data.tags["error"]
