"""`make reproduce VERSION=n`: retrain a registered version's members from what their runs
recorded, and check the rebuild against the registered model on the test reviews.

Each member's config is read back from its trial run's params (the model groups and seeds that
tracking.config_params logged, sentiment.config.MODEL_GROUPS), laid over the current config's
operational settings (where the data and the stores are), and checked to log the same params
again. The reviews must be the ones the version recorded (its data.<split>_digest tags). A member
trains as its trial did (train(), capped at the epochs its trial trained, which a sweep.timeout
may have cut short), or as its refit did (refit() for the trial's best epoch count) when the
version was refit. The version's fitted head (Platt scaling or stack weights, its tags) is applied
as recorded, and a stack's n-gram half is the NBSVM run it recorded (the study's, or its refit on
train+val): what is retrained is what
carries the randomness, the LSTMs.

The result is the prediction agreement and the paired accuracy difference (metrics.paired_accuracy)
between the rebuild and the registered model as served, kept as `reproduce.*` version tags.
Word vectors come from the data cache: on another machine they are retrained, and gensim's
multi-threaded word2vec is not bit-reproducible, so agreement there is lower than on the machine
that trained the version.
"""

from __future__ import annotations

import ast
import logging
import time
from dataclasses import dataclass

import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.config import apply_sample
from sentiment.data import ReviewSplits
from sentiment.errors import TrackingError
from sentiment.final_model import recorded_head, served_ngram_run
from sentiment.lineage import digest_tags, disagreeing_splits
from sentiment.metrics import PairedComparison, classification_metrics, paired_accuracy
from sentiment.model_code import Calibration, Stack
from sentiment.nbsvm import ngram_logit
from sentiment.registry import versions
from sentiment.registry.promote import version_scorer
from sentiment.search.trial import EpochLog
from sentiment.tokens import TokenizedData, data_for, load_data
from sentiment.train import predict_proba, refit, train

log = logging.getLogger(__name__)

# Params a trial run logs beside its config (EpochMetricsCallback): not config keys.
NOT_CONFIG_PARAMS = ("train.optimizer",)


@dataclass
class Reproduction:
    model_name: str
    version: str
    members: list[str]             # the trial runs whose configs were retrained
    refit: bool                    # members retrained on train+val, as the version's were
    head: str                      # what sits on the members' mean, as recorded
    registered: dict[str, float]   # the registered model as served, on the test reviews
    reproduced: dict[str, float]   # the rebuild on the same reviews
    agreement: float               # share of test reviews both label alike
    comparison: PairedComparison   # rebuild minus registered, review by review
    seconds: float

    def tags(self) -> dict[str, object]:
        return {"reproduce.agreement": round(self.agreement, 6),
                "reproduce.test_accuracy": round(self.reproduced["accuracy"], 6),
                "reproduce.registered_test_accuracy": round(self.registered["accuracy"], 6),
                "reproduce.difference": round(self.comparison.difference, 6),
                "reproduce.difference_low": round(self.comparison.interval[0], 6),
                "reproduce.difference_high": round(self.comparison.interval[1], 6),
                "reproduce.p_value": self.comparison.p_value,
                "reproduce.test_reviews": self.comparison.reviews, "reproduce.seconds": round(self.seconds)}


def reproduce(cfg: DictConfig, version: str | None = None) -> Reproduction:
    """Retrain version n's members (default: @champion's) and compare the rebuild with it."""
    start = time.perf_counter()
    tracking.connect(cfg.tracking)
    name = cfg.tracking.model_name
    registered = _version(name, version)
    tags, v = registered.tags, str(registered.version)
    member_ids = [run_id for run_id in tags.get("member_run_ids", "").split(",") if run_id]
    if not member_ids:
        raise TrackingError(f"{name} version {v} has no member_run_ids tag (registered by an older sweep): "
                            "it cannot be rebuilt")
    runs = [_run(run_id, name, v) for run_id in member_ids]
    member_cfgs = [recorded_config(cfg, run) for run in runs]
    data = load_data(member_cfgs[0], ReviewSplits(member_cfgs[0]))
    _check_same_reviews(name, registered, data)
    was_refit = tags.get("refit") == "true"
    probabilities = [_retrain(run, member_cfg, data_for(member_cfg, member_cfgs[0], data), was_refit)
                     for run, member_cfg in zip(runs, member_cfgs, strict=True)]
    test = data.reviews.get().test
    head, reproduced = apply_head(tags, np.mean(probabilities, axis=0), test.texts, runs[0].info.experiment_id)
    served = version_scorer(name, v)(test.texts)
    result = Reproduction(name, v, member_ids, was_refit, head, classification_metrics(test.labels, served),
                          classification_metrics(test.labels, reproduced),
                          float(np.mean((served >= 0.5) == (reproduced >= 0.5))),
                          paired_accuracy(test.labels, reproduced, served), time.perf_counter() - start)
    versions.tag_version(name, v, result.tags())
    return result


def _version(name: str, version: str | None):
    if version is not None:
        return versions.get_version(name, version)
    champion = versions.alias_version(name, versions.CHAMPION)
    if champion is None:
        raise TrackingError(f"{name} has no @champion: name a version (VERSION=<n>)")
    return champion


def _run(run_id: str, name: str, version: str):
    try:
        return mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as err:
        raise TrackingError(f"{name} version {version}'s member run {run_id} is gone from the tracking store "
                            f"({tracking.short_error(err)}): it cannot be rebuilt") from err


def recorded_config(cfg: DictConfig, run) -> DictConfig:
    """cfg with every model-defining value and seed the run logged: what the run trained.
    Refused in one line when the run logged keys this code does not know, or the rebuilt config
    would not log the same params (the code that trained it defined its config differently)."""
    recorded = {k: v for k, v in run.data.params.items() if k not in NOT_CONFIG_PARAMS}
    current = tracking.config_params(cfg)
    unknown = sorted(set(recorded) - set(current))
    if unknown:
        raise TrackingError(f"run {run.info.run_id} logged config keys this code does not have ({', '.join(unknown)}): "
                            "it was trained by another version of the project; check that version out to rebuild it")
    rebuilt = apply_sample(cfg, {key: _parse(value, current[key]) for key, value in recorded.items()})
    differ = sorted(k for k, v in tracking.config_params(rebuilt).items() if k in recorded and str(v) != recorded[k])
    if differ:
        raise TrackingError(f"run {run.info.run_id}'s params {', '.join(differ)} do not read back as logged: "
                            "it cannot be rebuilt from its params")
    new = sorted(set(current) - set(recorded))
    if new:
        log.warning("run %s logged no %s (keys added since): the current values are used", run.info.run_id,
                    ", ".join(new))
    return rebuilt


def _parse(logged: str, current: object) -> object:
    """A param as MLflow stored it (str(value)) back to its value: numbers, booleans, None and
    lists by Python's literal syntax; a key whose current value is a string stays a string."""
    if isinstance(current, str):
        return logged
    try:
        return ast.literal_eval(logged)
    except (ValueError, SyntaxError):
        return logged


def _check_same_reviews(name: str, registered, data: TokenizedData) -> None:
    differ = disagreeing_splits(registered.tags, digest_tags(data.lineage))
    if differ:
        raise TrackingError(f"the {' and '.join(differ)} reviews read now differ from those {name} version "
                            f"{registered.version} recorded (tags data.<split>_digest): point data.path at the "
                            "archive it was trained on")


def _retrain(run, member_cfg: DictConfig, data: TokenizedData, was_refit: bool) -> np.ndarray:
    """The member trained again as the registered one was; its test probabilities."""
    metrics, label = run.data.metrics, f"reproduce-{run.info.run_name}"
    if was_refit:
        epochs = int(metrics["best_epoch"])
        log.info("%s: refitting %s's config on train+val for %d epochs", label, run.info.run_id, epochs)
        model = refit(member_cfg, data, epochs, callbacks=[EpochLog(label)])
    else:
        # The trial's own curve stops early stopping at the same epoch; the cap keeps a trial that
        # sweep.timeout stopped from training further than it did.
        capped = OmegaConf.merge(member_cfg, {"train": {"max_epochs": int(metrics["epochs_trained"])}})
        log.info("%s: training %s's config again (seed %s)", label, run.info.run_id, capped.train.seed)
        model = train(capped, data, callbacks=[EpochLog(label)]).model
    return predict_proba(model, data.x_test, member_cfg.data.bucket_boundaries)


def apply_head(tags: dict[str, str], probability: np.ndarray, texts: list[str], experiment_id: str) -> tuple[str, np.ndarray]:
    """The version's recorded head (final_model.recorded_head) on the members' mean: its description and output."""
    head = recorded_head(tags)
    if isinstance(head, Stack):
        ngram = tracking.load_keras_model(served_ngram_run(tags, experiment_id).info.run_id)
        return "stack with its NBSVM (recorded weights)", head.scale(probability, ngram_logit(ngram, texts))
    if isinstance(head, Calibration):
        return "Platt scaling (recorded slope and intercept)", head.scale(probability)
    return "none (the members' mean)", probability
