"""A sweep: one parent MLflow run around a search engine, then its final model evaluated and registered."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from sentiment import report, tracking
from sentiment.baseline import log_baselines, strongest_baseline
from sentiment.data import ReviewSplits
from sentiment.engines import search_algorithm
from sentiment.errors import TrackingError
from sentiment.final_model import FinalModel, build_final_model, final_model_identity, head_tags, select_candidates
from sentiment.lineage import digest_tag, digest_tags, log_data_lineage
from sentiment.metrics import accuracy_by_length, accuracy_interval, classification_metrics, word_counts
from sentiment.registry import behaviour, versions
from sentiment.registry.promote import version_scorer
from sentiment.search.contract import SearchOutcome
from sentiment.search.implementations import engine_for, shared_study_engine
from sentiment.search.workers import check_shareable, run_workers
from sentiment.tokens import TokenizedData, load_data

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    outcome: SearchOutcome
    parent_run_id: str
    experiment_id: str
    registered_version: str | None
    headline: report.Headline | None = None  # the registered model's test figures, with intervals


@dataclass
class Evaluation:
    """The final model and the baseline on the same test reviews."""

    final: FinalModel
    val_metrics: dict[str, float]       # the final model on validation (what selection saw)
    test_metrics: dict[str, float]      # the final model on the test set, computed once
    baseline_metrics: dict[str, float]  # the baseline on the same test reviews; empty if none
    by_length: pd.DataFrame             # accuracy per review-length quarter, both models
    test_interval: tuple[float, float] | None = None      # 95 % Wilson interval of the test accuracy
    baseline_interval: tuple[float, float] | None = None  # the same for the baseline
    baseline_kind: str | None = None    # which baseline: the study's best on validation
    lstm_test_metrics: dict[str, float] = field(default_factory=dict)  # a stack's LSTM part alone, on test

    def interval_tags(self) -> dict[str, float]:
        """The accuracy intervals as version tags (report.Headline reads them back)."""
        tags = {}
        if self.test_interval is not None:
            tags |= {"test_accuracy_low": self.test_interval[0], "test_accuracy_high": self.test_interval[1]}
        if self.baseline_interval is not None:
            tags |= {"baseline_test_accuracy_low": self.baseline_interval[0],
                     "baseline_test_accuracy_high": self.baseline_interval[1]}
        return tags

    def comparison_tags(self) -> dict[str, str | float]:
        """Which baseline the figures are compared with, and a stack's LSTM part alone."""
        tags = {f"lstm_test_{k}": v for k, v in self.lstm_test_metrics.items()}
        return tags | ({"baseline_model": self.baseline_kind} if self.baseline_kind else {})


def run_sweep(cfg: DictConfig, workers: int = 1) -> SweepResult:
    """Run the trials the search still misses, log its summary and register its final model.

    With workers > 1, that many processes share the study and log their trials under this
    invocation's parent run; this process then summarizes and registers.
    """
    check_shareable(cfg, workers)
    experiment_id = tracking.connect(cfg.tracking, write=True)  # fails fast, before any data or training
    engine = shared_study_engine(cfg)
    if engine is not None:
        engine.preflight(cfg)  # so does a search that could not start
    done = _complete_version(cfg, experiment_id)
    if done is not None:
        return done
    # The archive is read at most once, on first use: by the token cache, word2vec, the baseline
    # or the final evaluation, whichever needs the raw reviews first.
    data = load_data(cfg, ReviewSplits(cfg))  # also fills the token cache the workers read
    parent = open_parent_run(cfg, experiment_id)
    try:
        if digest_tag("test") not in parent.data.tags:  # a reopened parent run has its inputs already
            log_data_lineage(data)
        log_baselines(cfg, data.reviews, experiment_id)
        if workers > 1:
            run_workers(cfg, workers, parent.info.run_id)
        outcome = engine_for(cfg).search(cfg, data)
        version, evaluation = register_final(cfg, outcome, experiment_id, data)
        headline = _headline(cfg, version, evaluation)
        report.log_outcome(outcome, cfg.sweep.study_name, cfg.sweep.objective, evaluation, headline)
    except BaseException as err:
        _end_parent_quietly("FAILED")
        if isinstance(err, Exception) and not isinstance(err, TrackingError) and tracking.is_outage(err):
            raise tracking.lost_store(err) from err  # e.g. during the baselines or the registration
        raise
    mlflow.end_run("FINISHED")
    return SweepResult(outcome, parent.info.run_id, experiment_id, version, headline)


def _complete_version(cfg: DictConfig, experiment_id: str) -> SweepResult | None:
    """The result of a study that has all its trials and its registered final model, if it has
    (engines whose study is shared know that without running; Keras Tuner decides for itself)."""
    engine = shared_study_engine(cfg)
    outcome = engine.finished_outcome(cfg) if engine is not None else None
    if outcome is None:
        return None
    candidates = select_candidates(cfg, outcome)
    identity = final_model_identity(cfg, candidates)
    version = versions.find_version(cfg.tracking.model_name, **identity) if candidates else None
    parent = find_parent_runs(experiment_id, cfg.sweep.study_name)
    if version is None or not versions.is_complete(version) or not parent:
        return None
    log.info("study complete: %d trials, champion candidate %s v%s; nothing to train",
             cfg.sweep.n_trials, cfg.tracking.model_name, version.version)
    return SweepResult(outcome, parent[0].info.run_id, parent[0].info.experiment_id, str(version.version),
                       _headline(cfg, str(version.version), None))


def find_parent_runs(experiment_id: str, study: str) -> list:
    """The study's sweep runs, oldest first (one, unless two workers raced to create it)."""
    return tracking.find_runs(tracking.SWEEP, {tracking.STUDY_TAG: study}, [experiment_id],
                              order_by=["attributes.start_time ASC"])


def open_parent_run(cfg: DictConfig, experiment_id: str):
    """One parent run per study: the first invocation creates it, later ones (and other machines)
    reopen it. Of two created at once, the older stays and the newer, still empty, steps aside."""
    study = cfg.sweep.study_name
    existing = find_parent_runs(experiment_id, study)
    if not existing:
        run = mlflow.start_run(run_name=f"sweep-{study}", tags=_parent_tags(cfg))
        existing = find_parent_runs(experiment_id, study)  # at once: the race is settled in one request
        if existing[0].info.run_id == run.info.run_id:
            mlflow.log_params({"sweep.objective": cfg.sweep.objective,
                               "sweep.space": json.dumps(OmegaConf.to_container(cfg.sweep.space))})
            return run
        mlflow.end_run("KILLED")
        _retire_duplicate_parent(run.info.run_id)
        log.info("another worker created the sweep run of %s first: using it", study)
    run = mlflow.start_run(run_id=existing[0].info.run_id)
    mlflow.set_tags(_parent_tags(cfg))  # this invocation's engine and algorithm
    return run


DUPLICATE_SWEEP_ROLE = "duplicate-sweep"  # a sweep run that lost the race to be its study's


def _retire_duplicate_parent(run_id: str) -> None:
    """A sweep run made at the same moment as its study's older one: it stops being a sweep run
    (its role tag), so the study keeps one, and is deleted where this user may delete (a
    trainer, on a server with logins, may not)."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, tracking.ROLE_TAG, DUPLICATE_SWEEP_ROLE)
    try:
        client.delete_run(run_id)
    except MlflowException as err:
        if err.error_code != "PERMISSION_DENIED":
            raise


def _headline(cfg: DictConfig, version: str | None, evaluation: Evaluation | None) -> report.Headline | None:
    if version is None:
        return None
    if evaluation is not None:
        return report.Headline.from_evaluation(evaluation, version)
    # The final model did not change since an earlier invocation: its version holds its result.
    return report.Headline.from_version_tags(version, versions.get_version(cfg.tracking.model_name, version).tags)


def _end_parent_quietly(status: str) -> None:
    """End the parent run if the store still answers; a later sweep reconciles it otherwise."""
    try:
        mlflow.end_run(status)
    except Exception as err:  # the store is what failed: the original error matters more
        log.warning("could not end the sweep run (%s); the next sweep will", tracking.short_error(err))


def _parent_tags(cfg: DictConfig) -> dict[str, str]:
    return {tracking.ROLE_TAG: tracking.SWEEP, tracking.STUDY_TAG: cfg.sweep.study_name, "sweep.engine": cfg.sweep.engine,
            "sweep.algorithm": search_algorithm(cfg)}


def register_final(cfg: DictConfig, outcome: SearchOutcome, experiment_id: str,
                   data: TokenizedData) -> tuple[str | None, Evaluation | None]:
    """Build the final model from the best trials, evaluate it once on test, register it. A
    version of this final model cut off while it was being tagged is completed, not duplicated."""
    candidates = select_candidates(cfg, outcome)
    if not candidates:
        log.warning("no completed trial: nothing to register")
        return None, None
    model_name, study = cfg.tracking.model_name, cfg.sweep.study_name
    identity = final_model_identity(cfg, candidates)
    existing = versions.find_version(model_name, **identity)
    if existing is not None and versions.is_complete(existing):
        log.info("the final model of %s is already %s version %s", study, model_name, existing.version)
        return str(existing.version), None
    final = build_final_model(cfg, candidates, data, outcome.noise, experiment_id)
    evaluation = evaluate_final(cfg, final, experiment_id, data)
    if existing is None:
        version = versions.register(model_name, tracking.log_text_model(final.text_model).model_uri, identity)
    else:
        version = str(existing.version)
        log.info("completing %s version %s: its registration was cut off while it was being tagged", model_name, version)
    # Before the tags that make the version complete: a run cut off here evaluates it again.
    report.log_evaluation(evaluation, version)
    checks = check_behaviour(model_name, version)
    versions.complete_version(model_name, version,
                              version_tags(cfg, identity, evaluation, data.lineage) | behaviour.behaviour_tags(checks),
                              report.version_description(study, evaluation))
    log.info("registered %s version %s (%s, test accuracy %.4f)", model_name, version, final.kind,
             evaluation.test_metrics["accuracy"])
    return version, evaluation


def check_behaviour(model_name: str, version: str):
    """The behaviour checks on the registered version as it is served: a table artifact on the
    sweep run, version tags, and a log line (make promote compares them with the champion's)."""
    checks = behaviour.run_checks(version_scorer(model_name, version))
    mlflow.log_text(checks.to_csv(), behaviour.ARTIFACT)
    log.info("behaviour checks of %s version %s, failure rate: %s", model_name, version,
             ", ".join(f"{check} {rate:.0%}" for check, rate in checks.failure_rate.items()))
    return checks


def version_tags(cfg: DictConfig, identity: dict[str, str], evaluation: Evaluation,
                 lineage: dict[str, str]) -> dict[str, object]:
    """What a registered version records about itself beside its identity: members, figures,
    intervals, and which reviews it was trained, selected and tested on."""
    final, best = evaluation.final, evaluation.final.candidates[0]
    return {**identity, **digest_tags(lineage), "member_run_ids": ",".join(m.run_id for m in final.members),
            "engine": cfg.sweep.engine, "final_model": final.kind,
            "trial_number": best.trial_id, "trial_run_id": best.run_id,
            "test_samples": len(final.test_probability),
            **head_tags(final),
            **{f"val_{k}": v for k, v in evaluation.val_metrics.items()},
            **{f"test_{k}": v for k, v in evaluation.test_metrics.items()},
            **{f"baseline_test_{k}": v for k, v in evaluation.baseline_metrics.items()},
            **evaluation.interval_tags(), **evaluation.comparison_tags()}


def evaluate_final(cfg: DictConfig, final: FinalModel, experiment_id: str, data: TokenizedData) -> Evaluation:
    """Score the final model (and the strongest baseline, from its stored probabilities) on the same reviews."""
    test_reviews = data.reviews.get().test  # the reviews behind data.x_test (tokens.load_data)
    probabilities = {"final model": final.test_probability}
    if final.lstm_test_probability is not None:
        probabilities["LSTM alone"] = final.lstm_test_probability
    baseline = strongest_baseline(experiment_id, cfg.sweep.study_name, len(data.y_test))
    if baseline is not None:
        probabilities[f"baseline ({baseline.kind})"] = baseline.test_probability
    return Evaluation(
        final=final,
        val_metrics=classification_metrics(data.y_val, final.val_probability),
        test_metrics=classification_metrics(data.y_test, final.test_probability),
        baseline_metrics=classification_metrics(data.y_test, baseline.test_probability) if baseline else {},
        by_length=accuracy_by_length(data.y_test, word_counts(test_reviews.texts), **probabilities),
        test_interval=accuracy_interval(data.y_test, final.test_probability),
        baseline_interval=accuracy_interval(data.y_test, baseline.test_probability) if baseline else None,
        baseline_kind=baseline.kind if baseline else None,
        lstm_test_metrics=(classification_metrics(data.y_test, final.lstm_test_probability)
                           if final.lstm_test_probability is not None else {}),
    )
