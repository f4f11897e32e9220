"""Optuna engine: seeded TPE, median pruning on per-epoch val loss, a resumable shared study."""

from __future__ import annotations

import logging
import warnings

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from optuna_integration import KerasPruningCallback

from sentiment import report, tracking
from sentiment.data import TokenizedData
from sentiment.errors import ConfigError, TrackingError
from sentiment.storage import make_storage
from sentiment.trial import BestTrial, SearchOutcome, config_fingerprint, run_tracked_trial

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Trials that count toward n_trials; WAITING ones (queued retries) are work still to do.
TAKEN = (*FINISHED, TrialState.RUNNING)


def sample_params(trial: optuna.Trial, space: DictConfig) -> dict:
    """One value per search dimension, keyed by the config key it replaces."""
    sample = {}
    for name, spec in space.items():
        if spec.type == "int":
            value = trial.suggest_int(name, spec.low, spec.high, step=spec.get("step") or 1, log=bool(spec.get("log")))
        elif spec.type == "float":
            value = trial.suggest_float(name, spec.low, spec.high, log=bool(spec.get("log")))
        else:
            value = trial.suggest_categorical(name, list(spec.choices))
        sample[spec.key] = value
    return sample


def open_study(cfg: DictConfig, worker: int = 0) -> optuna.Study:
    """Create the study, or resume it if it exists and searches the same thing.

    Each worker seeds its sampler differently, or all would propose the same first trials.
    """
    sweep = cfg.sweep
    study = optuna.create_study(
        study_name=sweep.study_name,
        storage=make_storage(sweep, on_stale_trial=lambda study, trial: tracking.fail_orphaned_run(
            trial.user_attrs.get("mlflow_run_id"), "its worker stopped sending heartbeats (killed?)")),
        direction=sweep.direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed + worker),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=sweep.pruner.n_startup_trials, n_warmup_steps=sweep.pruner.n_warmup_steps
        ) if sweep.pruner.enabled else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    fingerprint = config_fingerprint(cfg)
    previous = study.user_attrs.get("config_fingerprint")
    if previous is None:
        study.set_user_attr("config_fingerprint", fingerprint)
        study.set_user_attr("config", OmegaConf.to_container(cfg, resolve=True))
    elif previous != fingerprint:
        raise ConfigError(
            f"study {sweep.study_name!r} in {sweep.storage} was made with a different config; "
            "set sweep.study_name=<new name> to start a new study, or restore the old settings"
        )
    return study


def count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def reconcile(study: optuna.Study) -> None:
    """Make MLflow agree with the study after a crash: dead trials' runs must not stay RUNNING."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB storages: trials of dead workers -> FAIL (+ retry)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        tracking.fail_orphaned_run(trial.user_attrs.get("mlflow_run_id"), "the trial failed while untracked")


class Objective:
    """Trains one sampled config per trial; the value is the configured val metric."""

    def __init__(self, cfg: DictConfig, data: TokenizedData, parent_run_id: str | None = None):
        self.cfg = cfg
        self.data = data
        self.parent_run_id = parent_run_id
        self.tracking_error: Exception | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        if self._surplus(trial):
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is beyond sweep.n_trials={self.cfg.sweep.n_trials}")
        sample = sample_params(trial, self.cfg.sweep.space)
        tags = {"optuna.study": self.cfg.sweep.study_name, "optuna.trial_number": str(trial.number)}
        try:
            result, _ = run_tracked_trial(
                self.cfg, self.data, sample, f"trial-{trial.number:03d}", tags,
                callbacks=[KerasPruningCallback(trial, self.cfg.sweep.objective)],
                on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                parent_run_id=self.parent_run_id,
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
    """Run the trials the study still misses; several processes may do this on one study."""
    study = open_study(cfg, worker)
    reconcile(study)
    remaining = cfg.sweep.n_trials - count(study, TAKEN)
    if remaining <= 0:
        log.info("study %s has all %d trials; nothing to run", study.study_name, cfg.sweep.n_trials)
        return study
    log.info("study %s: %d of %d trials still to run", study.study_name, remaining, cfg.sweep.n_trials)
    objective = Objective(cfg, data, parent_run_id)
    study.optimize(
        objective, n_trials=remaining, timeout=cfg.sweep.timeout, catch=(Exception,),
        show_progress_bar=worker == 0, gc_after_trial=True,
        # Other workers finish trials too: stop once the study holds n_trials.
        callbacks=[MaxTrialsCallback(cfg.sweep.n_trials, states=TAKEN)],
    )
    if objective.tracking_error is not None:
        raise TrackingError(f"lost the MLflow tracking store ({tracking.short_error(objective.tracking_error)}); "
                            "finished trials are kept: re-run the same command once it is back")
    return study


def search(cfg: DictConfig, data: TokenizedData) -> SearchOutcome:
    """Run what is missing, then summarize the whole study on the active (parent) run."""
    study = run_trials(cfg, data)
    report.log_optuna_plots(study)
    return SearchOutcome("optuna", report.optuna_trials_table(study), ranked(study), _counts(study))


def ranked(study: optuna.Study) -> list[BestTrial]:
    """Completed trials, best objective first."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    completed.sort(key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    return [BestTrial(str(t.number), t.user_attrs["mlflow_run_id"], t.params,
                      {k: v for k, v in t.user_attrs.items() if k.startswith("val_")}) for t in completed]


def _counts(study: optuna.Study) -> dict[str, int]:
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    return {name: count(study, (state,)) for state, name in names.items()}
