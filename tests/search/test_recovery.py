"""A trial whose worker process is gone is failed and retried at once on the same host."""

import os
import subprocess
import sys

import optuna
from optuna.trial import TrialState

from sentiment.search.recovery import (
    WORKER_ATTR,
    fail_dead_trials,
    is_dead,
    process_start_time,
    this_worker,
)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_this_process_is_alive_and_a_finished_one_is_dead():
    assert not is_dead(this_worker())
    assert is_dead({**this_worker(), "pid": _dead_pid()})


def test_a_recycled_pid_is_not_the_worker():
    assert process_start_time(os.getpid()) is not None
    assert is_dead({**this_worker(), "started": "0"})  # same pid, another start time


def test_another_host_is_left_to_the_heartbeat():
    assert not is_dead({**this_worker(), "host": "some-other-host", "pid": _dead_pid()})


def test_dead_workers_trial_is_failed_and_handed_to_the_callback(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    alive, dead = study.ask(), study.ask()
    for trial, pid in ((alive, os.getpid()), (dead, _dead_pid())):
        trial.suggest_float("x", 0, 1)
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, {**this_worker(), "pid": pid})
    handed = []
    assert fail_dead_trials(study, lambda s, t: handed.append(t.number)) == 1
    states = {t.number: t.state for t in study.trials}
    assert states == {alive.number: TrialState.RUNNING, dead.number: TrialState.FAIL}
    assert handed == [dead.number]
    assert fail_dead_trials(study, lambda s, t: handed.append(t.number)) == 0  # nothing twice
