"""The model a sweep registers: its best trial, or the mean of its top-k trials (sweep.final),
each as its trial trained it or refit on train+val for its best epoch count (sweep.refit).

Members are chosen by the search objective on validation only. The result is one raw-text
Keras model (vectorizer inside), so serving and `make predict` stay the same for k = 1 or more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.config import TOKEN_KEYS, apply_sample
from sentiment.data import TokenizedData, load_data, make_vectorizer
from sentiment.model import end_to_end, ensemble
from sentiment.train import predict_proba, refit
from sentiment.trial import BestTrial, EpochLog, SearchOutcome

log = logging.getLogger(__name__)


@dataclass
class FinalModel:
    members: list[BestTrial]
    text_model: keras.Model            # raw text in, mean probability of the members out
    val_probability: np.ndarray        # the members' trial models on the validation split: what selection saw
    test_probability: np.ndarray       # on the test split: computed once, after selection
    test_labels: np.ndarray
    refit: bool = False                # members retrained on train+val (their val score is in-sample)

    @property
    def kind(self) -> str:
        kind = "best trial" if len(self.members) == 1 else f"mean of the top {len(self.members)} trials"
        return f"{kind}, refit on train+val" if self.refit else kind


def select_members(cfg: DictConfig, outcome: SearchOutcome) -> list[BestTrial]:
    """The best sweep.ensemble_size completed trials (1 when sweep.final is `best`)."""
    k = cfg.sweep.ensemble_size if cfg.sweep.final == "ensemble" else 1
    return outcome.ranked[:k]


def member_config(cfg: DictConfig, member: BestTrial) -> DictConfig:
    """The sweep config with the member's sampled values: what it was trained (and tokenized) with."""
    space = cfg.sweep.space
    return apply_sample(cfg, {space[name].key: value for name, value in member.params.items() if name in space})


def build_final_model(cfg: DictConfig, members: list[BestTrial], data: TokenizedData) -> FinalModel:
    """Load each member from its trial run (or refit it), score it on val and test token ids, and
    wrap all in one."""
    text_models, val, test = [], [], []
    for index, member in enumerate(members):
        member_cfg = member_config(cfg, member)
        # The sweep's arrays, unless the member searched a token key (truncation, length, vocabulary).
        same_tokens = all(OmegaConf.select(member_cfg, key) == OmegaConf.select(cfg, key) for key in TOKEN_KEYS)
        member_data = data if same_tokens else load_data(member_cfg)
        trained = tracking.load_keras_model(member.run_id)
        val.append(predict_proba(trained, member_data.x_val, member_cfg.data.bucket_boundaries))
        if cfg.sweep.refit:
            trained = refit_member(member_cfg, member_data, member)
        test.append(predict_proba(trained, member_data.x_test, member_cfg.data.bucket_boundaries))
        vectorizer = make_vectorizer(member_cfg.data, member_data.vocabulary)
        name = "review_sentiment" if len(members) == 1 else f"member_{index}"
        text_models.append(end_to_end(trained, vectorizer, name=name))
    text_model = ensemble(text_models)
    return FinalModel(members, text_model, np.mean(val, axis=0), np.mean(test, axis=0), data.y_test,
                      refit=bool(cfg.sweep.refit))


def refit_member(member_cfg: DictConfig, data: TokenizedData, member: BestTrial) -> keras.Model:
    """The member's config trained on train+val for its trial's best epoch count, in a nested
    `refit` run beside the trials. A refit that finished earlier (a sweep cut off before it
    registered) is reused rather than trained again."""
    done = mlflow.search_runs(output_format="list", max_results=1, filter_string=(
        f"tags.role = 'refit' and tags.`refit.of` = '{member.run_id}' and attributes.status = 'FINISHED'"))
    if done:
        log.info("reusing refit run %s of trial %s", done[0].info.run_id, member.trial_id)
        return tracking.load_keras_model(done[0].info.run_id)
    epochs = int(mlflow.get_run(member.run_id).data.metrics["best_epoch"])
    name = f"refit-{member.trial_id}"
    log.info("%s: training trial %s's config on train+val for %d epochs", name, member.trial_id, epochs)
    mlflow.start_run(run_name=name, nested=True, tags={"role": "refit", "refit.of": member.run_id})
    try:
        mlflow.log_params({**tracking.config_params(member_cfg), "refit.epochs": epochs})
        model = refit(member_cfg, data, epochs, callbacks=[tracking.EpochMetricsCallback(), EpochLog(name)])
        tracking.log_keras_model(model)
    except BaseException as err:
        tracking.end_run("FAILED", {"error": f"{type(err).__name__}: {err}"[:5000]})
        raise
    tracking.end_run("FINISHED")
    return model
