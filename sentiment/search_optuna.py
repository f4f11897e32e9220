"""Optuna engine: seeded TPE, median pruning on per-epoch val loss, a resumable study."""

from __future__ import annotations

import logging

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from optuna_integration import KerasPruningCallback

from sentiment import report
from sentiment.data import TokenizedData
from sentiment.errors import ConfigError
from sentiment.trial import BestTrial, SearchOutcome, config_fingerprint, run_tracked_trial

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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


def open_study(cfg: DictConfig) -> optuna.Study:
    """Create the study, or resume it if it exists and searches the same thing."""
    sweep = cfg.sweep
    study = optuna.create_study(
        study_name=sweep.study_name,
        storage=sweep.storage,
        direction=sweep.direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=sweep.pruner.n_startup_trials, n_warmup_steps=sweep.pruner.n_warmup_steps
        ),
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


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class Objective:
    """Trains one sampled config per trial; the value is the configured val metric."""

    def __init__(self, cfg: DictConfig, data: TokenizedData):
        self.cfg = cfg
        self.data = data

    def __call__(self, trial: optuna.Trial) -> float:
        sample = sample_params(trial, self.cfg.sweep.space)
        tags = {"optuna.study": self.cfg.sweep.study_name, "optuna.trial_number": str(trial.number)}
        result, run_id = run_tracked_trial(
            self.cfg, self.data, sample, f"trial-{trial.number:03d}", tags,
            callbacks=[KerasPruningCallback(trial, self.cfg.sweep.objective)],
            on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
        )
        for name, value in result.metrics.items():
            trial.set_user_attr(name, value)
        return result.metrics[self.cfg.sweep.objective]


def search(cfg: DictConfig, data: TokenizedData) -> SearchOutcome:
    """Run the trials the study still misses (none if it is complete)."""
    study = open_study(cfg)
    remaining = cfg.sweep.n_trials - count_finished(study)
    if remaining > 0:
        log.info("study %s: %d of %d trials still to run", study.study_name, remaining, cfg.sweep.n_trials)
        study.optimize(
            Objective(cfg, data), n_trials=remaining, timeout=cfg.sweep.timeout,
            catch=(Exception,), show_progress_bar=True, gc_after_trial=True,
        )
    else:
        log.info("study %s already has %d finished trials; nothing to run", study.study_name, cfg.sweep.n_trials)
    report.log_optuna_plots(study)
    return SearchOutcome("optuna", report.optuna_trials_table(study), _best(study), _counts(study))


def _best(study: optuna.Study) -> BestTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    val = {k: v for k, v in best.user_attrs.items() if k.startswith("val_")}
    return BestTrial(str(best.number), best.user_attrs["mlflow_run_id"], best.params, val)


def _counts(study: optuna.Study) -> dict[str, int]:
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    return {name: len(study.get_trials(deepcopy=False, states=(state,))) for state, name in names.items()}
