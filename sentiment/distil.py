"""`make distil`: one BiLSTM (the configured model) trained to say what a registered version says.

The teacher (distil.teacher, default @champion) is scored as it is served on the training
reviews; the student trains on a mix of its probability and the label (distil.teacher_weight)
with early stopping on the validation labels, as every trial does (train.train), is Platt-scaled
on validation like the final models (final_model.fit_calibration), scored on the test reviews
once and registered as a version of its own, tagged with the version it learned from, its
figures beside the teacher's (a paired comparison on the same test reviews) and the alias
distil.alias. Serving it costs one model: `make bench-serve ARGS="serve.alias=<distil.alias>"`.

The teacher has trained on the training reviews, so it is surer of them than of new ones. A
stacked teacher's NBSVM half fits its training reviews all but perfectly, so as served it would
hand the student little more than the labels: with distil.held_out_folds = k its n-gram logit on a
training review comes instead from an NBSVM with the same settings fitted on the other k-1 folds
(k-fold cross-fitting, nbsvm.out_of_fold_logits), recombined by the teacher's own stack weights
with its LSTM part (two epochs leave that part far less sure of its training reviews). What the
student gains over the labels is then the teacher's ranking of easy and hard reviews.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass

import keras
import mlflow
import numpy as np
from keras import ops
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.baseline import strongest_baseline
from sentiment.engines import STACKED_BASELINE
from sentiment.errors import ConfigError
from sentiment.final_model import CALIBRATION_TAGS, fit_calibration, recorded_head, served_ngram_run
from sentiment.lineage import digest_tags, disagreeing_splits
from sentiment.metrics import (
    PairedComparison,
    accuracy_by_length,
    accuracy_interval,
    classification_metrics,
    paired_accuracy,
    word_counts,
)
from sentiment.model import calibrated, compiled, end_to_end
from sentiment.model_code import Stack
from sentiment.nbsvm import out_of_fold_logits
from sentiment.registry import behaviour, versions
from sentiment.registry.promote import load_version, scorer, version_scorer
from sentiment.search.trial import EpochLog
from sentiment.tokens import TokenizedData, load_data, make_vectorizer
from sentiment.train import predict_proba, train

log = logging.getLogger(__name__)

DISTILLED_FROM_TAG = "distilled_from"  # a student's version tag: the teacher's version number


@dataclass
class Distillation:
    model_name: str
    teacher: str                   # version numbers
    student: str
    student_test: dict[str, float]
    teacher_test: dict[str, float]
    comparison: PairedComparison   # student minus teacher, review by review on the test split
    test_interval: tuple[float, float]  # the student's test accuracy, 95 % Wilson interval
    seconds: float
    reused: bool = False           # the student was registered by an earlier run: nothing trained


class OnHardTargets:
    """A metric scored against the target rounded to a label: on the training batches that is the
    teacher's side of 0.5 (Keras's accuracy and AUC expect 0/1 targets); validation labels are 0/1 already."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(ops.round(y_true), y_pred, sample_weight)


class HardTargetAccuracy(OnHardTargets, keras.metrics.BinaryAccuracy):
    pass


class HardTargetAUC(OnHardTargets, keras.metrics.AUC):
    pass


def teacher_version(cfg: DictConfig):
    """The registered version distil.teacher names, else @champion; a one-line error if neither exists."""
    name, wanted = cfg.tracking.model_name, cfg.distil.teacher
    if cfg.distil.alias in (versions.CHAMPION, versions.PREVIOUS):
        raise ConfigError(f"distil.alias={cfg.distil.alias}: only `make promote` moves @{versions.CHAMPION} and "
                          f"@{versions.PREVIOUS}; name another alias, e.g. distilled")
    if wanted is None:
        champion = versions.alias_version(name, versions.CHAMPION)
        if champion is None:
            raise ConfigError(f"{name} has no @{versions.CHAMPION} to distil: `make promote` first, "
                              "or name a version with distil.teacher=<n>")
        return champion
    try:
        return versions.get_version(name, wanted)
    except Exception as err:  # the registry's own message names the version
        raise ConfigError(f"distil.teacher={wanted}: no such version of {name} ({tracking.short_error(err)})") from err


def soft_targets(teacher_probability: np.ndarray, labels: np.ndarray, teacher_weight: float) -> np.ndarray:
    """What the student is trained towards: teacher_weight x the teacher's probability + the rest x the label."""
    return (teacher_weight * teacher_probability + (1 - teacher_weight) * labels).astype("float32")


def student_settings(cfg: DictConfig) -> dict[str, float | int]:
    """The distil keys that change what the student learns (params of its run, part of its identity)."""
    return {f"distil.{key}": cfg.distil[key] for key in ("teacher_weight", "held_out_folds")}


def teacher_on_training_reviews(cfg: DictConfig, teacher, data: TokenizedData,
                                teacher_model: mlflow.pyfunc.PyFuncModel) -> np.ndarray:
    """The teacher's probability for each training review: as served, or for a stacked teacher with
    distil.held_out_folds = k, with its NBSVM half's logit cross-fitted over k folds (module doc)."""
    texts, folds = data.reviews.get().train.texts, cfg.distil.held_out_folds
    head = recorded_head(teacher.tags)
    if not folds or not isinstance(head, Stack):
        log.info("scoring the teacher on %d training reviews as it is served", len(texts))
        return scorer(teacher_model)(texts)
    classifier = teacher_model.unwrap_python_model()
    if not hasattr(classifier, "lstm_probability"):
        raise ConfigError(f"version {teacher.version} was registered before its LSTM part could be scored alone: "
                          "distil.held_out_folds=0 learns from it as it is served")
    log.info("scoring the teacher's LSTM part on %d training reviews", len(texts))
    lstm_probability = classifier.lstm_probability(texts)
    ngram_run = served_ngram_run(teacher.tags, mlflow.get_run(teacher.run_id).info.experiment_id)
    settings = cfg.baseline[STACKED_BASELINE]  # which settings an NBSVM has; the values are the served one's
    params = OmegaConf.create({key: type(value)(ngram_run.data.params[key]) for key, value in settings.items()})
    log.info("cross-fitting the teacher's %s half over %d folds of the training reviews", STACKED_BASELINE, folds)
    held_out = out_of_fold_logits(texts, data.y_train, params, folds, cfg.seed)
    return head.scale(lstm_probability, held_out)


def student_identity(cfg: DictConfig, teacher) -> dict[str, str]:
    """The version tags that identify a student: its teacher and a hash of what defines its training
    (the model groups, seed and student_settings), so a re-run finds it and a changed config makes another."""
    settings = {**tracking.config_params(cfg), **student_settings(cfg), "sweep.objective": cfg.sweep.objective}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {DISTILLED_FROM_TAG: str(teacher.version), "final": "distilled", "student_config": digest}


def distil(cfg: DictConfig) -> Distillation:
    """Train, score and register the student of distil.teacher (a student of it registered by an
    earlier run with the same settings is scored again, and completed if it was cut off)."""
    start = time.perf_counter()
    tracking.connect(cfg.tracking, write=True)
    name, teacher = cfg.tracking.model_name, teacher_version(cfg)
    identity = student_identity(cfg, teacher)
    data = load_data(cfg)
    _check_same_reviews(teacher, data)
    reviews = data.reviews.get()
    teacher_model = load_version(name, str(teacher.version))
    teacher_scores = scorer(teacher_model)
    log.info("scoring teacher %s version %s on %d test reviews", name, teacher.version, len(reviews.test.texts))
    teacher_test = teacher_scores(reviews.test.texts)
    existing = versions.find_version(name, **identity)
    if existing is not None:
        version = str(existing.version)
        log.info("version %s is already the student of version %s: scoring it", version, teacher.version)
        result = _result(name, teacher, version, data, version_scorer(name, version)(reviews.test.texts),
                         teacher_test, start, reused=True)
        if not versions.is_complete(existing):
            _complete(cfg, result, identity, data, {})
        return result
    teacher_train = teacher_on_training_reviews(cfg, teacher, data, teacher_model)
    targets = soft_targets(teacher_train, data.y_train, cfg.distil.teacher_weight)
    with mlflow.start_run(run_name=f"distil-v{teacher.version}",
                          tags={tracking.ROLE_TAG: tracking.DISTIL, DISTILLED_FROM_TAG: str(teacher.version)}):
        mlflow.log_params({**tracking.config_params(cfg), "distil.teacher": teacher.version, **student_settings(cfg)})
        mlflow.log_metrics({f"teacher_train_{k}": v for k, v in classification_metrics(data.y_train, teacher_train).items()})
        model = train_student(cfg, dataclasses.replace(data, y_train=targets))
        tracking.log_keras_model(model)
        layer = fit_calibration(data.y_val, predict_proba(model, data.x_val, cfg.data.bucket_boundaries))
        student_test = layer.scale(predict_proba(model, data.x_test, cfg.data.bucket_boundaries))
        mlflow.log_metrics({f"test_{k}": v for k, v in classification_metrics(data.y_test, student_test).items()})
        log_accuracy_by_length(teacher, data, student_test, teacher_test)
        text_model = calibrated(end_to_end(model, make_vectorizer(cfg.data, data.vocabulary)), layer)
        version = versions.register(name, tracking.log_text_model(text_model).model_uri, identity)
    result = _result(name, teacher, version, data, student_test, teacher_test, start)
    _complete(cfg, result, identity, data, dict(zip(CALIBRATION_TAGS, (layer.slope, layer.intercept), strict=True)))
    return result


def _complete(cfg: DictConfig, result: Distillation, identity: dict[str, str], data: TokenizedData,
              head: dict[str, float]) -> None:
    """The student's figures, behaviour checks and description as it is served, then distil.alias on it."""
    checks = behaviour.run_checks(version_scorer(result.model_name, result.student))
    versions.complete_version(result.model_name, result.student, {
        **identity, **digest_tags(data.lineage), **_figure_tags(result), **head,
        "final_model": f"one model distilled from version {result.teacher}, calibrated on validation",
        **behaviour.behaviour_tags(checks)}, describe(result))
    MlflowClient().set_registered_model_alias(result.model_name, cfg.distil.alias, result.student)


def log_accuracy_by_length(teacher, data: TokenizedData, student_test: np.ndarray, teacher_test: np.ndarray) -> None:
    """The student's test accuracy per review-length quarter beside its teacher's and the teacher
    study's strongest baseline's (as a sweep's evaluation shows it), on the distil run."""
    probabilities = {"student": student_test, "teacher": teacher_test}
    study = teacher.tags.get("study")
    strongest = study and strongest_baseline(mlflow.get_run(teacher.run_id).info.experiment_id, study, len(data.y_test))
    if strongest:
        probabilities[f"baseline ({strongest.kind})"] = strongest.test_probability
    table = accuracy_by_length(data.y_test, word_counts(data.reviews.get().test.texts), **probabilities)
    log.info("test accuracy by review length:\n%s", table.to_string(index=False))
    mlflow.log_text(table.to_csv(index=False), "evaluation/accuracy_by_length.csv")


def train_student(cfg: DictConfig, data: TokenizedData) -> keras.Model:
    """train.train on the soft targets, with accuracy and AUC of the training batches against the
    teacher's labels; the model handed back is compiled with the usual metrics."""
    def on_hard_targets(model: keras.Model) -> keras.Model:
        return compiled(model, model.optimizer, metrics=[HardTargetAccuracy(name="accuracy"), HardTargetAUC(name="auc")])

    result = train(cfg, data, callbacks=[tracking.EpochMetricsCallback(), EpochLog("student")], prepare=on_hard_targets)
    mlflow.log_metrics(result.metrics)
    return compiled(result.model, result.model.optimizer)


def _check_same_reviews(teacher, data: TokenizedData) -> None:
    disagreeing = disagreeing_splits(teacher.tags, digest_tags(data.lineage))
    if disagreeing:
        raise ConfigError(f"version {teacher.version} was trained on other {', '.join(disagreeing)} reviews than "
                          "these (tags data.<split>_digest): point data.path and data.* at the ones it recorded")


def _result(name, teacher, student: str, data: TokenizedData, student_test: np.ndarray,
            teacher_test: np.ndarray, start: float, reused: bool = False) -> Distillation:
    return Distillation(name, str(teacher.version), student, classification_metrics(data.y_test, student_test),
                        classification_metrics(data.y_test, teacher_test),
                        paired_accuracy(data.y_test, student_test, teacher_test),
                        accuracy_interval(data.y_test, student_test), time.perf_counter() - start, reused)


def _figure_tags(result: Distillation) -> dict[str, float]:
    low, high = result.comparison.interval
    return {**{f"test_{k}": v for k, v in result.student_test.items()},
            **dict(zip(("test_accuracy_low", "test_accuracy_high"), result.test_interval, strict=True)),
            **{f"teacher_test_{k}": v for k, v in result.teacher_test.items()},
            "test_samples": result.comparison.reviews,
            "student_minus_teacher_accuracy": result.comparison.difference,
            "student_minus_teacher_low": low, "student_minus_teacher_high": high}


def describe(result: Distillation) -> str:
    """The version's description and the command's closing line."""
    return (f"One BiLSTM distilled from version {result.teacher}: test accuracy "
            f"{result.student_test['accuracy']:.4f} vs the teacher's {result.teacher_test['accuracy']:.4f}; "
            + result.comparison.describe("the student", "the teacher"))
