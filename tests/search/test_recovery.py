"""A trial whose worker process is gone is failed and retried at once on the same machine."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sentiment.search.recovery import (
    WORKER_ATTR,
    fail_dead_trials,
    is_dead,
    machine_id,
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


def test_another_machine_is_left_to_the_heartbeat_even_with_this_host_name():
    pid = _dead_pid()
    # a container or a cloned machine with the same host name: another boot id or pid namespace
    assert not is_dead({**this_worker(), "machine": "another-boot-id/pid:[4026531836]", "pid": pid})
    without_machine = {k: v for k, v in this_worker().items() if k != "machine"}  # recorded before machines were
    assert not is_dead({**without_machine, "pid": pid})
    assert is_dead({**this_worker(), "host": "renamed", "pid": pid})  # one machine: its pids mean its processes


def test_the_machine_is_the_boot_and_the_pid_namespace():
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert machine_id() == f"{boot}/{os.readlink('/proc/self/ns/pid')}" == this_worker()["machine"]


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


def test_a_trial_no_worker_claimed_is_failed_after_the_grace_period(tmp_path):
    """A worker killed between ask() and record_worker leaves no record and no heartbeat."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    unclaimed, claimed = study.ask(), study.ask()
    study._storage.set_trial_system_attr(claimed._trial_id, WORKER_ATTR, this_worker())
    handed = []
    assert fail_dead_trials(study, lambda s, t: handed.append(t.number), grace_period=60) == 0  # not yet
    assert fail_dead_trials(study, lambda s, t: handed.append(t.number)) == 0  # no grace period: never
    assert fail_dead_trials(study, lambda s, t: handed.append(t.number), grace_period=-1) == 1
    assert handed == [unclaimed.number]
    assert {t.number: t.state for t in study.trials} == {unclaimed.number: TrialState.FAIL,
                                                        claimed.number: TrialState.RUNNING}
