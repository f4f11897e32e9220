"""The model a sweep registers: its best trial, or the mean of its top-k trials (sweep.final).

Members are chosen by the search objective on validation only. The result is one raw-text
Keras model (vectorizer inside), so serving and `make predict` stay the same for k = 1 or more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
from omegaconf import DictConfig

from sentiment import tracking
from sentiment.config import apply_sample
from sentiment.data import TokenizedData, load_data, make_vectorizer
from sentiment.model import end_to_end, ensemble
from sentiment.train import predict_proba
from sentiment.trial import BestTrial, SearchOutcome

log = logging.getLogger(__name__)


@dataclass
class FinalModel:
    members: list[BestTrial]
    text_model: keras.Model            # raw text in, mean probability of the members out
    val_probability: np.ndarray        # on the validation split, for the record
    test_probability: np.ndarray       # on the test split: computed once, after selection
    test_labels: np.ndarray

    @property
    def kind(self) -> str:
        return "best trial" if len(self.members) == 1 else f"mean of the top {len(self.members)} trials"


def select_members(cfg: DictConfig, outcome: SearchOutcome) -> list[BestTrial]:
    """The best sweep.ensemble_size completed trials (1 when sweep.final is `best`)."""
    k = cfg.sweep.ensemble_size if cfg.sweep.final == "ensemble" else 1
    return outcome.ranked[:k]


def member_config(cfg: DictConfig, member: BestTrial) -> DictConfig:
    """The sweep config with the member's sampled values: what it was trained (and tokenized) with."""
    space = cfg.sweep.space
    return apply_sample(cfg, {space[name].key: value for name, value in member.params.items() if name in space})


def build_final_model(cfg: DictConfig, members: list[BestTrial], data: TokenizedData) -> FinalModel:
    """Load each member from its trial run, score it on val and test token ids, and wrap all in one."""
    text_models, val, test = [], [], []
    for index, member in enumerate(members):
        member_cfg = member_config(cfg, member)
        # The sweep's arrays, unless the member searched a data key (truncation, length, vocabulary).
        member_data = data if member_cfg.data == cfg.data else load_data(member_cfg)
        trained = tracking.load_keras_model(member.run_id)
        val.append(predict_proba(trained, member_data.x_val, member_cfg.data.bucket_boundaries))
        test.append(predict_proba(trained, member_data.x_test, member_cfg.data.bucket_boundaries))
        vectorizer = make_vectorizer(member_cfg.data, member_data.vocabulary)
        name = "review_sentiment" if len(members) == 1 else f"member_{index}"
        text_models.append(end_to_end(trained, vectorizer, name=name))
    text_model = ensemble(text_models)
    return FinalModel(members, text_model, np.mean(val, axis=0), np.mean(test, axis=0), data.y_test)
