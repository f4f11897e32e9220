"""Trials whose worker is gone: recognised at once on this host, by heartbeat elsewhere.

Each trial records who runs it (host, pid and the process's start time, so a recycled pid is
not mistaken for the worker), and the machine: the kernel's boot id with the pid namespace, the
pair that makes a pid name one process (host names repeat across containers and cloned
machines, and two of those would fail each other's live trials). A sweep that starts on the
same machine fails the RUNNING trials whose process no longer exists right away, through the
same callback as a stale heartbeat: the trial is retried with its params and its MLflow run
marked FAILED. Trials of other machines (and records without a machine) are left to heartbeats.
A RUNNING trial with no record at all (its worker died between Optuna's ask() and recording
itself, before any heartbeat) is failed once it is older than the heartbeat grace period.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

WORKER_ATTR = "worker"  # trial system attr: {"host", "machine", "pid", "started"}
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of pid (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat, counted after the command name


def machine_id() -> str | None:
    """This kernel boot and pid namespace ("<boot id>/pid:[<inode>]"); None without /proc."""
    try:
        return f"{BOOT_ID.read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def this_worker() -> dict[str, object]:
    return {"host": socket.gethostname(), "machine": machine_id(), "pid": os.getpid(),
            "started": process_start_time(os.getpid())}


def is_dead(worker: dict | None) -> bool:
    """True only when it is knowable: the worker ran on this machine (boot and pid namespace,
    not just a host of the same name) and its process is gone."""
    here = machine_id()
    if not worker or here is None or worker.get("machine") != here:
        return False
    return process_start_time(int(worker["pid"])) != worker.get("started")


def record_worker(trial: optuna.Trial) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, this_worker())


def is_unclaimed(trial: FrozenTrial, grace_period: float | None) -> bool:
    """A RUNNING trial no worker recorded itself on for grace_period seconds: its worker died
    between Optuna's ask() and record_worker (milliseconds apart in a live one), before it had a
    heartbeat to go stale, so neither rule would ever fail it."""
    if grace_period is None or WORKER_ATTR in trial.system_attrs or trial.datetime_start is None:
        return False
    return (datetime.datetime.now() - trial.datetime_start).total_seconds() > grace_period


def fail_dead_trials(study: optuna.Study, on_failed: Callable[[optuna.Study, FrozenTrial], None],
                     grace_period: float | None = None) -> int:
    """Fail the RUNNING trials of dead workers on this host, and (given grace_period) those no
    worker claimed within it; returns how many."""
    failed = 0
    # optuna.storages.fail_stale_trials does the same through the private storage handle.
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not (is_dead(trial.system_attrs.get(WORKER_ATTR)) or is_unclaimed(trial, grace_period)):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        worker = trial.system_attrs.get(WORKER_ATTR)
        log.warning("trial %d: its worker (%s) is gone; failing it now", trial.number,
                    f"pid {worker['pid']}" if worker else "it never recorded itself")
        on_failed(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
        failed += 1
    return failed
