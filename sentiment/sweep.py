"""A sweep: one parent MLflow run around a search engine, then the best model registered."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import mlflow
from omegaconf import DictConfig, OmegaConf

from sentiment import registry, report, tracking
from sentiment.baseline import log_baseline
from sentiment.data import TokenizedData, load_data, make_vectorizer
from sentiment.model import end_to_end
from sentiment.train import evaluate, predict_proba
from sentiment.trial import BestTrial, SearchOutcome
from sentiment.workers import check_shareable, run_workers

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    outcome: SearchOutcome
    parent_run_id: str
    experiment_id: str
    registered_version: str | None


def _engine(name: str):
    """The engine module: each has search(cfg, data) -> SearchOutcome."""
    if name == "keras_tuner":
        from sentiment import search_keras_tuner

        return search_keras_tuner
    from sentiment import search_optuna

    return search_optuna


def run_sweep(cfg: DictConfig, workers: int = 1) -> SweepResult:
    """Run the trials the search still misses, log its summary and register its best model.

    With workers > 1, that many processes share the study and log their trials under this
    invocation's parent run; this process then summarizes and registers.
    """
    check_shareable(cfg, workers)
    experiment_id = tracking.connect(cfg.tracking)  # fails fast, before any data or training
    data = load_data(cfg)  # also fills the token cache the workers read
    parent = mlflow.start_run(run_name=f"sweep-{cfg.sweep.study_name}", tags=_parent_tags(cfg))
    try:
        mlflow.log_params({"sweep.n_trials": cfg.sweep.n_trials, "sweep.objective": cfg.sweep.objective,
                           "sweep.space": json.dumps(OmegaConf.to_container(cfg.sweep.space))})
        if cfg.sweep.baseline and not _has_baseline(parent.info.experiment_id, cfg.sweep.study_name):
            log_baseline(cfg)
        if workers > 1:
            run_workers(cfg, workers, parent.info.run_id)
        outcome = _engine(cfg.sweep.engine).search(cfg, data)
        report.log_outcome(outcome, cfg.sweep.study_name, cfg.sweep.objective)
        version = register_best(cfg, outcome.best, data)
    except BaseException:
        _end_parent_quietly("FAILED")
        raise
    mlflow.end_run("FINISHED")
    return SweepResult(outcome, parent.info.run_id, experiment_id, version)


def _end_parent_quietly(status: str) -> None:
    """End the parent run if the store still answers; a later sweep reconciles it otherwise."""
    try:
        mlflow.end_run(status)
    except Exception as err:  # the store is what failed: the original error matters more
        log.warning("could not end the sweep run (%s); the next sweep will", tracking.short_error(err))


def _has_baseline(experiment_id: str, study: str) -> bool:
    """One baseline per study: resumed sweeps don't fit it again."""
    runs = mlflow.search_runs([experiment_id], output_format="list", max_results=1,
                              filter_string=f"tags.role = 'baseline' and tags.`sweep.study` = '{study}'")
    return bool(runs)


def _parent_tags(cfg: DictConfig) -> dict[str, str]:
    engine = cfg.sweep.engine
    algorithm = cfg.sweep.algorithm or ("tpe" if engine == "optuna" else "hyperband")
    return {"role": "sweep", "sweep.study": cfg.sweep.study_name, "sweep.engine": engine,
            "sweep.algorithm": algorithm}


def register_best(cfg: DictConfig, best: BestTrial | None, data: TokenizedData) -> str | None:
    """Test-evaluate the best trial's model once and register it as a raw-text model version."""
    if best is None:
        log.warning("no completed trial: nothing to register")
        return None
    model_name, study = cfg.tracking.model_name, cfg.sweep.study_name
    existing = registry.find_version(model_name, study=study, trial_run_id=best.run_id)
    if existing is not None:
        log.info("best trial %s is already %s version %s", best.trial_id, model_name, existing.version)
        return str(existing.version)
    trained = tracking.load_keras_model(best.run_id)
    test_scores = evaluate(trained, data.x_test, data.y_test, bucket_boundaries=cfg.data.bucket_boundaries)
    test_metrics = {f"test_{k}": v for k, v in test_scores.items()}
    mlflow.log_metrics(test_metrics)
    report.log_test_evaluation(data.y_test, predict_proba(trained, data.x_test))
    text_model = end_to_end(trained, make_vectorizer(cfg.data, data.vocabulary))
    info = tracking.log_text_model(text_model, registered_model_name=model_name)
    version = str(info.registered_model_version)
    tags = {"study": study, "engine": cfg.sweep.engine, "trial_number": best.trial_id,
            "trial_run_id": best.run_id, "test_samples": len(data.y_test), **best.val_metrics, **test_metrics}
    registry.tag_version(model_name, version, tags)
    registry.describe_version(model_name, version, report.version_description(study, best, test_metrics))
    log.info("registered %s version %s (trial %s, test accuracy %.4f)",
             model_name, version, best.trial_id, test_metrics["test_accuracy"])
    return version
