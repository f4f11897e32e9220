"""Keras Tuner engine: the same search space, training function and MLflow layout as Optuna.

Keras Tuner has no MLflow support, so a BaseTuner subclass runs each trial through
`run_tracked_trial`. Hyperband trains each bracket's models from scratch for the bracket's
epoch budget (no warm start from the previous round): simpler, and the same train() as Optuna.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras_tuner as kt
import pandas as pd
from omegaconf import DictConfig

from sentiment.config import maximizes
from sentiment.engines import ENGINES, ORACLES, search_algorithm
from sentiment.errors import ConfigError
from sentiment.search.contract import BestTrial, SearchOutcome
from sentiment.search.trial import config_fingerprint, run_tracked_trial
from sentiment.tokens import TokenizedData

log = logging.getLogger(__name__)

_BOOKKEEPING = "tuner/"  # Hyperband's own entries in a trial's hyperparameters


def hyperparameters(space: DictConfig) -> kt.HyperParameters:
    """The one search space of conf/sweep, as Keras Tuner HyperParameters."""
    hp = kt.HyperParameters()
    for name, spec in space.items():
        if spec.type == "int":
            hp.Int(name, spec.low, spec.high, step=spec.get("step") or 1,
                   sampling="log" if spec.get("log") else "linear")
        elif spec.type == "float":
            hp.Float(name, spec.low, spec.high, step=spec.get("step"), sampling="log" if spec.get("log") else "linear")
        else:
            hp.Choice(name, list(spec.choices))
    return hp


def sample_from(hp: kt.HyperParameters, space: DictConfig) -> dict:
    return {spec.key: hp.get(name) for name, spec in space.items()}


def make_oracle(cfg: DictConfig) -> kt.Oracle:
    sweep = cfg.sweep
    objective = kt.Objective(sweep.objective, direction="max" if maximizes(sweep.objective) else "min")
    common = dict(objective=objective, hyperparameters=hyperparameters(sweep.space), seed=cfg.seed,
                  tune_new_entries=False, allow_new_entries=False,
                  # A failed trial must not end the search (Keras Tuner's default stops after 3).
                  max_consecutive_failed_trials=sweep.n_trials + 1)
    return ORACLES[search_algorithm(cfg)](cfg, common)


class TrackedTuner(kt.engine.base_tuner.BaseTuner):
    """Runs every trial as a nested MLflow run through the shared trial function."""

    def __init__(self, cfg: DictConfig, data: TokenizedData, **kwargs):
        super().__init__(**kwargs)
        self.cfg, self.data = cfg, data
        # trial id -> MLflow run id, kept beside the tuner's own state so it survives restarts
        self.run_ids_file = Path(self.project_dir) / "mlflow_runs.json"
        self.run_ids: dict[str, str] = (
            json.loads(self.run_ids_file.read_text()) if self.run_ids_file.exists() else {}
        )
        self.deadline = time.monotonic() + cfg.sweep.timeout if cfg.sweep.timeout else None

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.deadline and time.monotonic() > self.deadline:
            # sweep.timeout as in Optuna: no new trial starts (a running one stopped at its next
            # epoch end, trial.StopAtDeadline); the oracle stops at its trial count.
            self.oracle.max_trials = len(self.oracle.trials)

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        sample = sample_from(trial.hyperparameters, self.cfg.sweep.space)
        # Hyperband sets each trial's epoch budget; the others use train.max_epochs.
        budget = trial.hyperparameters.values.get("tuner/epochs", self.cfg.train.max_epochs)
        sample["train.max_epochs"] = int(budget)
        tags = {"keras_tuner.project": self.cfg.sweep.study_name, "keras_tuner.trial_id": trial.trial_id}
        try:
            result, run_id = run_tracked_trial(self.cfg, self.data, sample, f"kt-trial-{trial.trial_id}", tags,
                                              number=int(trial.trial_id), deadline=self.deadline)
        except Exception as err:
            raise kt.errors.FailedTrialError(f"{type(err).__name__}: {err}") from err
        self.run_ids[trial.trial_id] = run_id
        self.run_ids_file.write_text(json.dumps(self.run_ids, indent=1))
        return {k: float(v) for k, v in result.metrics.items() if k.startswith("val_") or k == "epochs_trained"}

    def save_model(self, trial_id, model, step=0):
        """Models are kept as MLflow artifacts of the trial runs instead."""

    def load_model(self, trial):
        raise NotImplementedError("load trial models from their MLflow runs")


def search(cfg: DictConfig, data: TokenizedData) -> SearchOutcome:
    """Run (or continue) the tuner project under sweep.keras_tuner_dir/<study_name>."""
    directory = Path(cfg.sweep.keras_tuner_dir).resolve()
    if cfg.sweep.start_from_defaults:
        log.info("sweep.start_from_defaults applies to Optuna: Keras Tuner's oracle draws every trial itself")
    _check_fingerprint(directory / cfg.sweep.study_name, config_fingerprint(cfg))
    tuner = TrackedTuner(cfg, data, oracle=make_oracle(cfg), directory=str(directory),
                         project_name=cfg.sweep.study_name, overwrite=False)
    tuner.search()
    return SearchOutcome("keras_tuner", trials_table(tuner), ranked(tuner), _counts(tuner))


def _check_fingerprint(project: Path, fingerprint: str) -> None:
    marker = project / "sentiment_config_fingerprint.txt"
    if marker.exists() and marker.read_text().strip() != fingerprint:
        raise ConfigError(
            f"Keras Tuner project {project} was made with a different config; "
            "set sweep.study_name=<new name> to start a new one, or restore the old settings"
        )
    project.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def trials_table(tuner: TrackedTuner) -> pd.DataFrame:
    rows = []
    for trial_id, trial in tuner.oracle.trials.items():
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith(_BOOKKEEPING)}
        metrics = {name: trial.metrics.get_best_value(name) for name in trial.metrics.metrics
                   if name.startswith("val_")}
        rows.append({"trial": trial_id, "value": trial.score, "state": trial.status,
                     "epochs": trial.hyperparameters.values.get("tuner/epochs"), **values, **metrics})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ascending = tuner.oracle.objective.direction == "min"
    return frame.sort_values("value", ascending=ascending, na_position="last").reset_index(drop=True)


def ranked(tuner: TrackedTuner) -> list[BestTrial]:
    """Completed trials with a tracked run, best objective first."""
    best_first = tuner.oracle.get_best_trials(len(tuner.oracle.trials))
    return [_as_best_trial(trial, tuner.run_ids[trial.trial_id]) for trial in best_first
            if trial.status == "COMPLETED" and trial.trial_id in tuner.run_ids]


def _as_best_trial(trial, run_id: str) -> BestTrial:
    params = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith(_BOOKKEEPING)}
    val = {name: trial.metrics.get_best_value(name) for name in trial.metrics.metrics if name.startswith("val_")}
    return BestTrial(trial.trial_id, run_id, params, val)


def _counts(tuner: TrackedTuner) -> dict[str, int]:
    trials = tuner.oracle.trials.values()
    statuses = [trial.status for trial in trials]
    epochs = sum(int(t.metrics.get_last_value("epochs_trained") or 0) for t in trials
                 if t.metrics.exists("epochs_trained"))
    return {"complete": statuses.count("COMPLETED"), "pruned": 0,
            "failed": statuses.count("FAILED") + statuses.count("INVALID"), "epochs_trained": epochs}


class KerasTunerEngine:
    """sweep.engine=keras_tuner: a SearchEngine (search.contract). Keras Tuner decides itself
    whether a project is done, so every invocation runs the tuner."""

    spec = ENGINES["keras_tuner"]
    search = staticmethod(search)
