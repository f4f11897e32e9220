"""What each choice of a finished study moved: validation and test accuracy per trial, grouped by
the searched categorical settings, and the final-model levers (best trial, mean of the top k,
calibration on validation), all on the full test set.

An analysis for the record, run after the study registered its final model: selection never
sees these test numbers. Usage (the same experiment and overrides as the sweep):

    make levers EXP=accuracy ARGS="key=value ..."
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from sentiment import tracking
from sentiment.bench.results import RESULTS_DIR
from sentiment.errors import ConfigError
from sentiment.final_model import final_model_identity, fit_calibration, member_config, select_candidates
from sentiment.metrics import classification_metrics
from sentiment.registry import versions
from sentiment.search.implementations import shared_study_engine
from sentiment.tokens import load_data
from sentiment.train import predict_proba

log = logging.getLogger(__name__)
TOP_K = (10, 20)  # mean-of-top-k rows beyond the sweep's own candidates


def trial_scores(cfg, outcome) -> tuple[pd.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Val and test accuracy and AUC of every completed trial's model, and its test accuracy once
    Platt-scaled on validation (what sweep.calibrate would do with it alone)."""
    rows, probabilities = [], {}
    for trial in outcome.ranked:
        trial_cfg = member_config(cfg, trial)
        data = load_data(trial_cfg)
        model = tracking.load_keras_model(trial.run_id)
        val, test = (predict_proba(model, x, trial_cfg.data.bucket_boundaries) for x in (data.x_val, data.x_test))
        probabilities[trial.run_id] = (val, test)
        val_scores, test_scores = classification_metrics(data.y_val, val), classification_metrics(data.y_test, test)
        rows.append({"trial": trial.trial_id, "val_accuracy": val_scores["accuracy"], "val_auc": val_scores["roc_auc"],
                     "test_accuracy": test_scores["accuracy"], "test_auc": test_scores["roc_auc"],
                     "test_accuracy_calibrated": calibrated_accuracy(data.y_val, val, data.y_test, test),
                     **trial.params})
        log.info("trial %s: val %.4f test %.4f (calibrated %.4f)", trial.trial_id, rows[-1]["val_accuracy"],
                     rows[-1]["test_accuracy"], rows[-1]["test_accuracy_calibrated"])
    return pd.DataFrame(rows), probabilities


def calibrated_accuracy(y_val, val, y_test, test) -> float:
    """Test accuracy after Platt scaling fitted on the validation probabilities."""
    return classification_metrics(y_test, fit_calibration(y_val, val).scale(test))["accuracy"]


def by_choice(trials: pd.DataFrame, space) -> pd.DataFrame:
    """Mean val and test figures per choice of each categorical dimension."""
    scores = ["val_accuracy", "val_auc", "test_accuracy", "test_accuracy_calibrated"]
    parts = []
    for name, spec in space.items():
        if spec.type == "categorical" and name in trials:
            for choice, group in trials.groupby(name):
                parts.append({"lever": name, "choice": choice, "trials": len(group), **group[scores].mean().to_dict()})
    return pd.DataFrame(parts)


def final_levers(cfg, outcome, probabilities: dict[str, tuple[np.ndarray, np.ndarray]], y_val: np.ndarray,
                 y_test: np.ndarray) -> list[dict]:
    """Best trial alone, the mean of the trial models (all candidates, and the members the sweep
    chose), each at 0.5 and Platt-scaled on validation, and the registered final model."""
    candidates = select_candidates(cfg, outcome)
    version = versions.find_version(cfg.tracking.model_name, **final_model_identity(cfg, candidates))
    chosen = version.tags["member_run_ids"].split(",") if version is not None else []

    def row(name: str, run_ids: list[str]) -> dict:
        val, test = (np.mean([probabilities[run_id][part] for run_id in run_ids], axis=0) for part in (0, 1))
        test_scores = classification_metrics(y_test, test)
        return {"model": name, "val_accuracy": classification_metrics(y_val, val)["accuracy"],
                "test_accuracy": test_scores["accuracy"], "test_auc": test_scores["roc_auc"],
                "test_accuracy_calibrated": calibrated_accuracy(y_val, val, y_test, test)}

    rows = [row("best trial", [candidates[0].run_id]),
            row(f"mean of the top {len(candidates)} trial models (all candidates)", [c.run_id for c in candidates])]
    # Larger means than the sweep's candidates: would a bigger sweep.ensemble_size pay? (An
    # analysis: the sweep picks its members on validation alone.)
    ranked = [trial.run_id for trial in outcome.ranked]
    rows += [row(f"mean of the top {k} trial models", ranked[:k]) for k in TOP_K if len(candidates) < k <= len(ranked)]
    if chosen:
        rows.append(row(f"mean of the {len(chosen)} chosen trial models", chosen))
    if version is not None:
        rows.append({"model": f"registered v{version.version}: {version.tags.get('final_model')}",
                     "val_accuracy": float(version.tags["val_accuracy"]),
                     "test_accuracy": float(version.tags["test_accuracy"]),
                     "test_auc": float(version.tags["test_roc_auc"])})
    return rows


def levers(cfg: DictConfig) -> str:
    """The three tables as text; their JSON goes to bench/results/levers-<study>.json."""
    tracking.connect(cfg.tracking)
    engine = shared_study_engine(cfg)
    outcome = engine.finished_outcome(cfg) if engine is not None else None
    if outcome is None:
        raise ConfigError(f"study {cfg.sweep.study_name} is not a finished Optuna study: run its sweep first")
    trials, probabilities = trial_scores(cfg, outcome)
    data = load_data(cfg)
    by_lever = by_choice(trials, cfg.sweep.space)
    finals = final_levers(cfg, outcome, probabilities, data.y_val, data.y_test)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"levers-{cfg.sweep.study_name}.json"
    path.write_text(json.dumps({"trials": trials.to_dict("records"), "by_choice": by_lever.to_dict("records"),
                                "final": finals}, indent=1, default=str))
    with pd.option_context("display.width", 200):
        tables = [frame.round(4).to_string(index=False) for frame in (trials, by_lever, pd.DataFrame(finals))]
    return "\n\n".join(tables) + f"\nwritten to {path}"
