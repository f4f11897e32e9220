"""The model a sweep registers: its best trial, or the mean of its best trials (sweep.final),
each as its trial trained it or refit on train+val for its best epoch count (sweep.refit).

Members are chosen on validation only: for an ensemble, the top `sweep.ensemble_size` trials
by the search objective are the candidates, and the members are the run of them from the top
whose mean scores best on that objective (a weak tail does not dilute a strong head). Where the
search measured its seed noise (search.noise), that mean is taken only when it beats the best
single trial by more than `sweep.ensemble_noise_widths` noise sds; otherwise the best trial is
registered, at a single model's serving cost.
With sweep.calibrate, the mean's probability is Platt-scaled on validation (model_code.Calibration):
on movies it never trained on, a model's decision offset drifts from 0.5, and the movie-disjoint
validation split (data.val_split=id_blocks) measures that drift as the test movies will show it.
Refit members have trained on the validation reviews, so their scaling is the one fitted on their
trial models' validation probabilities: the same recipe's drift on unseen movies, measured out of
sample, carried over to the recipe trained on a quarter more reviews.
With sweep.final=stack, the LSTM part (chosen as for an ensemble) and the study's NBSVM baseline
(fitted on the training split) are combined by a logistic regression on their two logits, fitted
on validation (model_code.Stack): the two make different mistakes (word order vs. exact phrases),
and the fit also does calibration's job, so the stack replaces it. With sweep.refit the stack serves
an NBSVM fitted again on train+val beside the refit LSTM part, its weights the ones fitted on the
training-split models' validation logits (as calibration carries over to refit members).
The result is one raw-text Keras model (vectorizer inside), so serving and `make predict` stay
the same for one member or more.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf
from sklearn.linear_model import LogisticRegression

from sentiment import baseline, tracking
from sentiment.config import OBJECTIVE_METRICS, apply_sample, maximizes
from sentiment.engines import BASELINES, STACKED_BASELINE
from sentiment.metrics import classification_metrics
from sentiment.model import calibrated, end_to_end, ensemble, stacked
from sentiment.model_code import Calibration, Stack
from sentiment.nbsvm import ngram_logit
from sentiment.search.contract import BestTrial, SearchOutcome
from sentiment.search.noise import SeedNoise
from sentiment.search.trial import EpochLog, trial_seed
from sentiment.tokens import TokenizedData, data_for, make_vectorizer
from sentiment.train import predict_proba, refit

log = logging.getLogger(__name__)

REFIT_OF_TAG = "refit.of"  # a refit run's tag: the trial run whose config it retrained


@dataclass
class FinalModel:
    candidates: list[BestTrial]        # the top trials by the search objective
    members: list[BestTrial]           # the run of them from the top that validation chose
    text_model: keras.Model            # raw text in, mean probability of the members out
    val_probability: np.ndarray        # the members' trial models on the validation split: what selection saw
    test_probability: np.ndarray       # on the test split: computed once, after selection
    test_labels: np.ndarray
    refit: bool = False                # members retrained on train+val (val figures are their trial models')
    calibration: Calibration | None = None  # the Platt scaling fitted on val_probability (inside text_model too)
    choice: str = ""                   # why these members, in a sentence (summary.md)
    stack: Stack | None = None         # the stacking fitted on validation (inside text_model too)
    lstm_test_probability: np.ndarray | None = None  # a stack's LSTM part alone on test, reported beside it
    ngram_run_id: str | None = None    # the run of the NBSVM a stack serves (the study's, or its refit)

    @property
    def kind(self) -> str:
        n, of = len(self.members), len(self.candidates)
        kind = "best trial" if n == 1 else f"mean of the top {n} trials"
        if of > 1:
            kind += f" (of {of} candidates)"
        if self.refit:
            kind += ", refit on train+val"
        if self.calibration is not None:
            kind += ", calibrated on validation"
        if self.stack is not None:
            kind += ", stacked with nbsvm on validation"
        return kind


def select_candidates(cfg: DictConfig, outcome: SearchOutcome) -> list[BestTrial]:
    """The best sweep.ensemble_size completed trials (1 when sweep.final is `best`); a stack's
    LSTM part is chosen as an ensemble is."""
    k = cfg.sweep.ensemble_size if cfg.sweep.final in ("ensemble", "stack") else 1
    return outcome.ranked[:k]


def final_model_identity(cfg: DictConfig, candidates: list) -> dict[str, str]:
    """The version tags that identify a sweep's final model: registered once, found again on resume."""
    return {"study": cfg.sweep.study_name, "candidate_run_ids": ",".join(c.run_id for c in candidates),
            "refit": str(cfg.sweep.refit).lower(), "calibrated": str(cfg.sweep.calibrate).lower(),
            "final": cfg.sweep.final}


def best_prefix(y_val: np.ndarray, val_probabilities: list[np.ndarray], objective: str = "val_loss") -> int:
    """How many of the ranked candidates to average: the count whose mean scores best on the
    validation objective (the earliest on a tie)."""
    scores = [classification_metrics(y_val, np.mean(val_probabilities[:n], axis=0))[OBJECTIVE_METRICS[objective]]
              for n in range(1, len(val_probabilities) + 1)]
    return int((np.argmax if maximizes(objective) else np.argmin)(scores)) + 1


def choose_members(cfg: DictConfig, y_val: np.ndarray, val_probabilities: list[np.ndarray],
                   noise: SeedNoise | None) -> tuple[int, str]:
    """How many of the ranked candidates the final model averages, and why: the best prefix on
    validation, kept only if it beats the best single trial by more than the noise margin."""
    objective, of = cfg.sweep.objective, len(val_probabilities)
    if of == 1:
        return 1, "the best trial (one candidate)"
    n = best_prefix(y_val, val_probabilities, objective)
    if n == 1:
        return 1, f"the best trial: no mean of the top {of} scores better on {objective}"
    metric = OBJECTIVE_METRICS[objective]
    single, mean = (classification_metrics(y_val, np.mean(val_probabilities[:k], axis=0))[metric] for k in (1, n))
    gain = (mean - single) if maximizes(objective) else (single - mean)
    if noise is None:
        return n, f"the mean of the top {n} of {of} candidates ({objective} better by {gain:.4f})"
    margin = cfg.sweep.ensemble_noise_widths * noise.value_sd
    if gain <= margin:
        return 1, (f"the best trial: the mean of the top {n} is better on {objective} by only {gain:.4f}, "
                   f"within the noise margin {margin:.4f}")
    return n, (f"the mean of the top {n} of {of} candidates: better on {objective} by {gain:.4f}, "
               f"beyond the noise margin {margin:.4f}")


def member_config(cfg: DictConfig, member: BestTrial) -> DictConfig:
    """The sweep config with the member's sampled values and seed: what it was trained (and tokenized) with."""
    space = cfg.sweep.space
    sample = {space[name].key: value for name, value in member.params.items() if name in space}
    return apply_sample(cfg, {**trial_seed(cfg, int(member.trial_id)), **sample})


def build_final_model(cfg: DictConfig, candidates: list[BestTrial], data: TokenizedData,
                      noise: SeedNoise | None = None, experiment_id: str | None = None) -> FinalModel:
    """Score each candidate's trial model on validation, keep the best run of them from the top,
    then load (or refit) each member, score it on test once, and wrap all in one (stacked with the
    study's NBSVM in experiment_id when sweep.final is `stack`)."""
    member_cfgs = [member_config(cfg, candidate) for candidate in candidates]
    member_data = [data_for(member_cfg, cfg, data) for member_cfg in member_cfgs]
    trained = [tracking.load_keras_model(candidate.run_id) for candidate in candidates]
    val = [predict_proba(model, d.x_val, c.data.bucket_boundaries)
           for model, d, c in zip(trained, member_data, member_cfgs, strict=True)]
    n, choice = choose_members(cfg, data.y_val, val, noise)
    log.info("final model: %s", choice)
    text_models, test = [], []
    for index in range(n):
        model, member_cfg, member_data_i = trained[index], member_cfgs[index], member_data[index]
        if cfg.sweep.refit:
            model = refit_member(member_cfg, member_data_i, candidates[index])
        test.append(predict_proba(model, member_data_i.x_test, member_cfg.data.bucket_boundaries))
        vectorizer = make_vectorizer(member_cfg.data, member_data_i.vocabulary)
        text_models.append(end_to_end(model, vectorizer, name="review_sentiment" if n == 1 else f"member_{index}"))
    final = FinalModel(candidates, candidates[:n], ensemble(text_models), np.mean(val[:n], axis=0),
                       np.mean(test, axis=0), data.y_test, refit=bool(cfg.sweep.refit), choice=choice)
    if cfg.sweep.final == "stack":
        fitted = baseline.stacked_baseline_run(experiment_id, cfg.sweep.study_name)
        served = refit_ngram(cfg, data, fitted) if cfg.sweep.refit else fitted
        return stack(final, tracking.load_keras_model(fitted.info.run_id), data,
                     served=(tracking.load_keras_model(served.info.run_id), served.info.run_id))
    return calibrate(final, data.y_val) if cfg.sweep.calibrate else final


# The fitted head of a registered version, as its tags: written at registration, read back by
# `make reproduce` (registry.reproduce) to rebuild the version.
STACK_TAGS = ("stack_lstm_weight", "stack_ngram_weight", "stack_intercept")
STACK_NGRAM_RUN_TAG = "stack_ngram_run_id"  # the run whose NBSVM the stack serves (absent: the study's)
CALIBRATION_TAGS = ("calibration_slope", "calibration_intercept")


def head_tags(final: FinalModel) -> dict[str, float | str]:
    """The final model's fitted head (its stack or its Platt scaling) as version tags."""
    if final.stack is not None:
        values = (final.stack.lstm_weight, final.stack.ngram_weight, final.stack.intercept)
        served = {STACK_NGRAM_RUN_TAG: final.ngram_run_id} if final.ngram_run_id else {}
        return {**dict(zip(STACK_TAGS, values, strict=True)), **served}
    if final.calibration is None:
        return {}
    return dict(zip(CALIBRATION_TAGS, (final.calibration.slope, final.calibration.intercept), strict=True))


def recorded_head(tags: dict[str, str]) -> Stack | Calibration | None:
    """The head a version's tags record (head_tags), as its layer; None for a bare mean."""
    if STACK_TAGS[0] in tags:
        return Stack(*(float(tags[name]) for name in STACK_TAGS))
    if CALIBRATION_TAGS[0] in tags:
        return Calibration(*(float(tags[name]) for name in CALIBRATION_TAGS))
    return None


def served_ngram_run(tags: dict[str, str], experiment_id: str):
    """The run of the NBSVM a stacked version serves: the one its tags record (STACK_NGRAM_RUN_TAG),
    else, on versions registered before that tag, its study's baseline."""
    served = tags.get(STACK_NGRAM_RUN_TAG)
    return mlflow.get_run(served) if served else baseline.stacked_baseline_run(experiment_id, tags["study"])


def _logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(probability, Calibration.EPSILON, 1 - Calibration.EPSILON)
    return np.log(p / (1 - p))


def fit_stack(labels: np.ndarray, probability: np.ndarray, ngram_logits: np.ndarray) -> Stack:
    """A logistic regression of the labels on the LSTM's logit and the n-gram model's, as the layer."""
    features = np.column_stack([_logit(probability), ngram_logits])
    fit = LogisticRegression(C=1e6).fit(features, labels)  # C: ~no penalty on 3 parameters
    return Stack(float(fit.coef_[0, 0]), float(fit.coef_[0, 1]), float(fit.intercept_[0]), name="stack")


def stack(final: FinalModel, ngram: keras.Model, data: TokenizedData,
          served: tuple[keras.Model, str] | None = None) -> FinalModel:
    """The LSTM final model stacked with the n-gram model: weights fitted on the validation
    reviews (the LSTM part's trial models' and the training-split n-gram model's, as for
    calibration), test scored once with the n-gram model `served` (model, run id): the refit one
    beside refit members, else `ngram` itself."""
    reviews = data.reviews.get()
    served_model, served_run_id = served if served is not None else (ngram, None)
    val_logits, test_logits = ngram_logit(ngram, reviews.val.texts), ngram_logit(served_model, reviews.test.texts)
    layer = fit_stack(data.y_val, final.val_probability, val_logits)
    log.info("stack on validation: %.3f x LSTM logit + %.3f x nbsvm logit + %.3f", layer.lstm_weight,
             layer.ngram_weight, layer.intercept)
    return FinalModel(final.candidates, final.members, stacked(final.text_model, served_model, layer),
                      layer.scale(final.val_probability, val_logits), layer.scale(final.test_probability, test_logits),
                      final.test_labels, refit=final.refit, choice=final.choice, stack=layer,
                      lstm_test_probability=final.test_probability, ngram_run_id=served_run_id)


def fit_calibration(labels: np.ndarray, probability: np.ndarray) -> Calibration:
    """Platt scaling: a logistic regression of the labels on logit(probability), as the layer."""
    fit = LogisticRegression(C=1e6).fit(_logit(probability).reshape(-1, 1), labels)  # C: ~no penalty
    return Calibration(float(fit.coef_[0, 0]), float(fit.intercept_[0]), name="calibration")


def calibrate(final: FinalModel, y_val: np.ndarray) -> FinalModel:
    """The final model Platt-scaled on its validation probabilities, which are always the trial
    models' (2 parameters fitted on val, so its val score is slightly in-sample; test is untouched
    by the fit; refit members get the scaling of their trial models)."""
    layer = fit_calibration(y_val, final.val_probability)
    log.info("calibration on validation: slope %.3f, intercept %.3f", layer.slope, layer.intercept)
    return FinalModel(final.candidates, final.members, calibrated(final.text_model, layer),
                      layer.scale(final.val_probability), layer.scale(final.test_probability), final.test_labels,
                      refit=final.refit, calibration=layer, choice=final.choice)


def refit_member(member_cfg: DictConfig, data: TokenizedData, member: BestTrial) -> keras.Model:
    """The member's config trained on train+val for its trial's best epoch count, in a nested
    `refit` run beside the trials. A refit that finished earlier (a sweep cut off before it
    registered) is reused rather than trained again."""
    done = _finished_refit(member.run_id)
    if done is not None:
        log.info("reusing refit run %s of trial %s", done.info.run_id, member.trial_id)
        return tracking.load_keras_model(done.info.run_id)
    epochs = int(mlflow.get_run(member.run_id).data.metrics["best_epoch"])
    name = f"refit-{member.trial_id}"
    log.info("%s: training trial %s's config on train+val for %d epochs", name, member.trial_id, epochs)
    with _refit_run(name, member.run_id, {**tracking.config_params(member_cfg), "refit.epochs": epochs}):
        model = refit(member_cfg, data, epochs, callbacks=[tracking.EpochMetricsCallback(), EpochLog(name)])
        tracking.log_keras_model(model)
    return model


def refit_ngram(cfg: DictConfig, data: TokenizedData, fitted):
    """The study's NBSVM baseline run `fitted`, fitted again on train+val in a nested `refit` run
    (or the one an earlier sweep finished); returns that run."""
    done = _finished_refit(fitted.info.run_id)
    if done is not None:
        log.info("reusing refit run %s of the %s baseline", done.info.run_id, STACKED_BASELINE)
        return done
    reviews, params = data.reviews.get(), cfg.baseline[STACKED_BASELINE]
    texts, labels = reviews.train.texts + reviews.val.texts, np.concatenate([reviews.train.labels, reviews.val.labels])
    log.info("refit-%s: fitting the stack's n-gram half on train+val (%d reviews)", STACKED_BASELINE, len(texts))
    with _refit_run(f"refit-{STACKED_BASELINE}", fitted.info.run_id, dict(OmegaConf.to_container(params))) as run:
        start = time.perf_counter()
        model = BASELINES[STACKED_BASELINE](texts, labels, params).keras_model
        mlflow.log_metric("fit_seconds", time.perf_counter() - start)
        tracking.log_keras_model(model)
    return mlflow.get_run(run.info.run_id)


def _finished_refit(of_run_id: str):
    done = tracking.find_runs(tracking.REFIT, {REFIT_OF_TAG: of_run_id}, finished=True, max_results=1)
    return done[0] if done else None


@contextmanager
def _refit_run(name: str, of_run_id: str, params: dict):
    """A nested `refit` run of run `of_run_id`: FINISHED when its body returns, FAILED with the error if not."""
    run = mlflow.start_run(run_name=name, nested=True, tags={tracking.ROLE_TAG: tracking.REFIT, REFIT_OF_TAG: of_run_id})
    try:
        mlflow.log_params(params)
        yield run
    except BaseException as err:
        tracking.end_run("FAILED", {"error": f"{type(err).__name__}: {err}"[:5000]})
        raise
    tracking.end_run("FINISHED")
