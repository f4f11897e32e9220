"""Optuna engine: the configured sampler and pruner, a resumable study shared by workers."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable

import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from sentiment import tracking
from sentiment.config import OBJECTIVE_DIRECTIONS
from sentiment.engines import ENGINES
from sentiment.errors import ConfigError
from sentiment.search.contract import BestTrial, SearchOutcome
from sentiment.search.optuna_report import log_optuna_plots, optuna_trials_table
from sentiment.search.pruning import REPEAT_ATTR, EpochPruningCallback, make_pruner, pruner_name, study_noise
from sentiment.search.recovery import fail_dead_trials, record_worker
from sentiment.search.sampling import configured_values, in_space, make_sampler, sample_params
from sentiment.search.storage import make_storage, stale_trial_callback
from sentiment.search.trial import config_fingerprint, run_tracked_trial
from sentiment.tokens import TokenizedData

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials that count toward n_trials; WAITING ones (queued retries) are work still to do.
TAKEN = (*FINISHED, TrialState.RUNNING)


def _on_dead_worker(live_parent_run_id: str | None) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """What a dead worker's trial gets besides its retry: its MLflow run FAILED, and the sweep
    run too unless that is the live one this process runs trials under."""
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        tracking.fail_orphaned_run(trial.user_attrs.get("mlflow_run_id"),
                                   "its worker died (killed, or stopped sending heartbeats)", live_parent_run_id)
    return callback


FINGERPRINT_WAIT_S = 30  # how long a process that lost the race to create a study waits for its fingerprint


def open_study(cfg: DictConfig, live_parent_run_id: str | None = None) -> optuna.Study:
    """Create the study, or resume it if it exists and searches the same thing.

    Creating a study is atomic in its storage (a unique name), so only the process that created
    it writes the config fingerprint and enqueues the first trials: two workers starting together
    cannot mix two configs in one study or enqueue the configured values twice."""
    sweep = cfg.sweep
    settings = dict(study_name=sweep.study_name, storage=make_storage(sweep, on_stale_trial=_on_dead_worker(live_parent_run_id)),
                    sampler=make_sampler(cfg),  # seeded per trial number: resumes and workers never repeat a sample
                    pruner=make_pruner(cfg))
    fingerprint = config_fingerprint(cfg)
    try:
        study = optuna.create_study(direction=OBJECTIVE_DIRECTIONS[sweep.objective], **settings)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**settings)
        previous = _wait_for_fingerprint(study)
        if previous is not None:
            if previous != fingerprint:
                raise ConfigError(
                    f"study {sweep.study_name!r} in {sweep.storage} was made with a different config; "
                    "set sweep.study_name=<new name> to start a new study, or restore the old settings"
                ) from None
            return study
        log.warning("study %s has no config fingerprint (its first process stopped while starting it): "
                    "this one starts it", sweep.study_name)
    study.set_user_attr("config", OmegaConf.to_container(cfg, resolve=True))
    warm_start(cfg, study)
    start_from_defaults(cfg, study)
    study.set_user_attr("config_fingerprint", fingerprint)  # last: the others wait for the first trials too
    return study


def _wait_for_fingerprint(study: optuna.Study) -> str | None:
    """The study's config fingerprint; its creator writes it once the first trials are queued, so
    a process that lost the race waits for it a while (None: the creator stopped before writing it)."""
    give_up = time.monotonic() + FINGERPRINT_WAIT_S
    while True:
        previous = study.user_attrs.get("config_fingerprint")
        if previous is not None or time.monotonic() > give_up:
            return previous
        time.sleep(0.2)


def warm_start(cfg: DictConfig, study: optuna.Study) -> int:
    """Enqueue the best sweep.warm_start_k configurations of an earlier study (sweep.warm_start),
    so a new study after a data or model change starts from what was learned. Values outside
    today's space are left to the sampler. Returns how many trials were enqueued."""
    sweep = cfg.sweep
    if not sweep.warm_start:
        return 0
    best = ranked_trials(warm_start_source(cfg))[: sweep.warm_start_k]
    for trial in best:
        study.enqueue_trial({name: value for name, value in trial.params.items()
                             if name in sweep.space and in_space(sweep.space[name], value)})
    study.set_user_attr("warm_start", {"study": sweep.warm_start, "trials": [t.number for t in best]})
    log.info("warm start: enqueued the best %d trials of study %s", len(best), sweep.warm_start)
    return len(best)


def warm_start_source(cfg: DictConfig) -> optuna.Study:
    """The earlier study sweep.warm_start names; ConfigError if its storage has no such study."""
    sweep = cfg.sweep
    storage = make_storage(OmegaConf.merge(sweep, {"storage": sweep.warm_start_storage or sweep.storage}))
    try:
        return optuna.load_study(study_name=sweep.warm_start, storage=storage)
    except KeyError:
        raise ConfigError(f"sweep.warm_start={sweep.warm_start!r}: no such study in "
                          f"{sweep.warm_start_storage or sweep.storage}") from None


def preflight(cfg: DictConfig) -> None:
    """A new study's warm-start source must exist: checked before the data is read, the
    baselines fitted or the study created (an existing study was warm-started already)."""
    if not cfg.sweep.warm_start:
        return
    try:
        optuna.load_study(study_name=cfg.sweep.study_name, storage=make_storage(cfg.sweep))
    except KeyError:  # a new study: it will need its source
        warm_start_source(cfg)


def start_from_defaults(cfg: DictConfig, study: optuna.Study) -> bool:
    """Enqueue the configured model and regularizer values (sweep.start_from_defaults), after
    any warm-start trials: a known-good configuration ends first, so the search has a good model
    early and a yardstick for the pruner to cut samples against. With sweep.noise_repeats >= 2
    they are enqueued that many times, each trial with its own seed: the seed noise is measured
    on them (search.noise). Returns whether it did."""
    if not cfg.sweep.start_from_defaults:
        return False
    values = configured_values(cfg)
    repeats = min(cfg.sweep.noise_repeats, cfg.sweep.n_trials)  # more would never run
    for repeat in range(repeats):
        study.enqueue_trial(values, user_attrs={REPEAT_ATTR: repeat} if repeats >= 2 else None)
    study.set_user_attr("start_from_defaults", values)
    log.info("start from defaults: enqueued %s%s", values, f" {repeats} times (seed noise)" if repeats >= 2 else "")
    return True


def count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def reconcile(cfg: DictConfig, study: optuna.Study, live_parent_run_id: str | None = None) -> None:
    """Make the study and MLflow agree after a crash: dead workers' trials are failed and retried,
    and no failed trial's run stays RUNNING (nor its sweep run, unless it is live_parent_run_id)."""
    # this host's dead workers: at once; a trial no worker ever claimed: after the grace period
    fail_dead_trials(study, stale_trial_callback(cfg.sweep, _on_dead_worker(live_parent_run_id)),
                     cfg.sweep.grace_period)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB storages, any host: after the grace period
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        tracking.fail_orphaned_run(trial.user_attrs.get("mlflow_run_id"), "the trial failed while untracked",
                                   live_parent_run_id)


class Objective:
    """Trains one sampled config per trial; the value is the configured val metric."""

    def __init__(self, cfg: DictConfig, data: TokenizedData, parent_run_id: str | None = None,
                 deadline: float | None = None):
        self.cfg = cfg
        self.data = data
        self.parent_run_id = parent_run_id
        self.deadline = deadline  # sweep.timeout as time.monotonic(): a running trial stops at it too
        self.tracking_error: Exception | None = None
        self.trial: optuna.Trial | None = None  # the one running, or last run, here

    def __call__(self, trial: optuna.Trial) -> float:
        self.trial = trial
        if self._surplus(trial):
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is beyond sweep.n_trials={self.cfg.sweep.n_trials}")
        record_worker(trial)  # so a re-run on this host can tell at once if this process died
        sample = sample_params(trial, self.cfg.sweep.space)
        tags = {"optuna.study": self.cfg.sweep.study_name, "optuna.trial_number": str(trial.number)}
        try:
            result, _ = run_tracked_trial(
                self.cfg, self.data, sample, f"trial-{trial.number:03d}", tags,
                callbacks=[EpochPruningCallback(trial, self.cfg.sweep.objective)],
                on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                parent_run_id=self.parent_run_id, number=trial.number, deadline=self.deadline,
            )
        except Exception as err:
            if tracking.is_outage(err):  # no point training on without a place to record it
                self.tracking_error = err
                trial.study.stop()
            raise
        for name, value in result.metrics.items():
            trial.set_user_attr(name, value)
        return result.metrics[self.cfg.sweep.objective]

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Workers race for the last trials; the loser of a race gives its trial back."""
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=TAKEN) if t.number < trial.number]
        return len(earlier) >= self.cfg.sweep.n_trials


class SurplusTrial(RuntimeError):
    """Started by a worker after the study already had all its trials: recorded as failed, never run."""


def run_trials(cfg: DictConfig, data: TokenizedData, parent_run_id: str | None = None,
               worker: int = 0) -> optuna.Study:
    """Run the trials the study still misses; several processes may do this on one study.

    Returns when the study holds sweep.n_trials finished trials, or the timeout has passed. Trials
    RUNNING elsewhere are waited for: they finish, or go stale and are retried here.
    """
    active = mlflow.active_run()  # the sweep process runs its trials under its own (parent) run
    live_parent = parent_run_id or (active.info.run_id if active else None)
    study = open_study(cfg, live_parent)
    deadline = time.monotonic() + cfg.sweep.timeout if cfg.sweep.timeout else None
    objective = Objective(cfg, data, parent_run_id, deadline)
    reconcile(cfg, study, live_parent)
    _optimize(cfg, study, objective, deadline, show_progress=worker == 0)
    while True:
        reconcile(cfg, study, live_parent)
        # Queued trials are run while the study lacks trials; beyond n_trials they are left queued.
        wanted = count(study, TAKEN) < cfg.sweep.n_trials
        if wanted and count(study, (TrialState.WAITING,)) and (deadline is None or time.monotonic() < deadline):
            _optimize(cfg, study, objective, deadline, show_progress=worker == 0)  # retries of dead workers' trials
            continue
        running = count(study, (TrialState.RUNNING,))
        if running == 0 or worker > 0:  # workers leave the waiting to the sweep process
            return study
        log.info("study %s: waiting for %d trial(s) running elsewhere to finish or go stale (heartbeat "
                 "grace period %s s)", study.study_name, running, cfg.sweep.grace_period)
        time.sleep(min(cfg.sweep.heartbeat_interval, 30))


def _optimize(cfg: DictConfig, study: optuna.Study, objective: Objective, deadline: float | None,
              show_progress: bool) -> None:
    remaining = cfg.sweep.n_trials - count(study, TAKEN)
    if remaining <= 0:
        log.info("study %s has all %d trials; nothing to run", study.study_name, cfg.sweep.n_trials)
        return
    log.info("study %s: %d of %d trials still to run", study.study_name, remaining, cfg.sweep.n_trials)
    try:
        study.optimize(
            objective, n_trials=remaining, catch=(Exception,), show_progress_bar=show_progress, gc_after_trial=True,
            timeout=None if deadline is None else max(1.0, deadline - time.monotonic()),
            # Other workers finish trials too: stop once the study holds n_trials. The seed noise is
            # measured (and printed) as soon as the last repeat ends, not when a pruner first asks.
            callbacks=[MaxTrialsCallback(cfg.sweep.n_trials, states=TAKEN),
                       lambda study, trial: study_noise(study, cfg.sweep.objective, cfg.sweep.pruner.noise_widths)],
        )
    except ValueError:  # "Cannot tell a FAIL trial": see failed_while_running
        if not failed_while_running(cfg, study, objective.trial):
            raise
    if objective.tracking_error is not None:
        raise tracking.lost_store(objective.tracking_error)


def failed_while_running(cfg: DictConfig, study: optuna.Study, trial: optuna.Trial | None) -> bool:
    """Whether the trial this process just ran had been failed by another worker meanwhile (its
    heartbeats missed the grace period, e.g. the database was down longer): Optuna then refuses
    to record the result. Its retry runs in its place; its MLflow run is marked FAILED to match."""
    if trial is None or study._storage.get_trial(trial._trial_id).state != TrialState.FAIL:
        return False
    log.warning("trial %d was failed by another worker while it ran here (its heartbeat was stale for "
                "sweep.grace_period=%s s): its result is dropped, its retry counts instead",
                trial.number, cfg.sweep.grace_period)
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        tracking.mark_failed(run_id, "failed by another worker while it ran (its heartbeat was stale); retried")
    return True


def finished_outcome(cfg: DictConfig) -> SearchOutcome | None:
    """The outcome of a study that already holds sweep.n_trials finished trials, without running any."""
    try:
        study = optuna.load_study(study_name=cfg.sweep.study_name, storage=make_storage(cfg.sweep))
    except KeyError:  # no such study yet
        return None
    if study.user_attrs.get("config_fingerprint") != config_fingerprint(cfg):
        return None  # open_study explains the difference
    reconcile(cfg, study)
    if count(study, FINISHED) < cfg.sweep.n_trials or count(study, (TrialState.RUNNING,)):
        return None
    return outcome(cfg, study)


def search(cfg: DictConfig, data: TokenizedData) -> SearchOutcome:
    """Run what is missing, then summarize the whole study on the active (parent) run."""
    study = run_trials(cfg, data)
    # What actually ran, by class: a config typo can never silently fall back to a default.
    mlflow.set_tags({"sweep.sampler": type(study.sampler.inner).__name__, "sweep.pruner": pruner_name(study.pruner)})
    if "warm_start" in study.user_attrs:
        mlflow.set_tag("sweep.warm_start", json.dumps(study.user_attrs["warm_start"]))
    if "start_from_defaults" in study.user_attrs:
        mlflow.set_tag("sweep.start_from_defaults", json.dumps(study.user_attrs["start_from_defaults"]))
    result = outcome(cfg, study)
    if result.noise is not None:
        mlflow.log_metrics(result.noise.flat())
        mlflow.log_dict(result.noise.to_dict(), "seed_noise.json")
    log_optuna_plots(study)
    return result


def outcome(cfg: DictConfig, study: optuna.Study) -> SearchOutcome:
    """The study as the sweep reports it: its trials (with their noise band), ranked, counted."""
    noise = study_noise(study, cfg.sweep.objective, cfg.sweep.pruner.noise_widths)
    return SearchOutcome("optuna", optuna_trials_table(study, noise), ranked(study), _counts(study), noise)


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best objective first."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(completed, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def ranked(study: optuna.Study) -> list[BestTrial]:
    """Completed trials as BestTrial records, best objective first."""
    completed = ranked_trials(study)
    return [BestTrial(str(t.number), t.user_attrs["mlflow_run_id"], t.params,
                      {k: v for k, v in t.user_attrs.items() if k.startswith("val_")}) for t in completed]


def _counts(study: optuna.Study) -> dict[str, int]:
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    counts = {name: count(study, (state,)) for state, name in names.items()}
    # One intermediate value is reported per trained epoch: the budget the search actually spent.
    counts["epochs_trained"] = sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))
    return counts


class OptunaEngine:
    """sweep.engine=optuna: a SharedStudyEngine (search.contract) made of this module's functions."""

    spec = ENGINES["optuna"]
    search = staticmethod(search)
    run_trials = staticmethod(run_trials)
    finished_outcome = staticmethod(finished_outcome)
    preflight = staticmethod(preflight)
