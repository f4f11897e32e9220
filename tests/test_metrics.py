import numpy as np
import pytest

from sentiment.metrics import (
    LENGTH_BUCKETS,
    accuracy_by_length,
    classification_metrics,
    word_counts,
)


def test_classification_metrics_are_right_on_a_known_case():
    scores = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    assert scores["accuracy"] == 0.5 and scores["roc_auc"] == 0.75 and scores["f1"] == 0.5
    assert scores["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))


def test_accuracy_by_length_scores_each_quarter_for_every_model():
    texts = [" ".join(["w"] * n) for n in range(1, 9)]  # 1..8 words: two reviews per quarter
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    right_on_short = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])  # right only on the positives
    table = accuracy_by_length(labels, word_counts(texts), short=right_on_short, perfect=labels * 1.0)
    assert table["bucket"].tolist() == list(LENGTH_BUCKETS)
    assert table["reviews"].tolist() == [2, 2, 2, 2]
    assert table["words"].tolist() == ["1-2", "3-4", "5-6", "7-8"]
    assert table["short"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert table["perfect"].tolist() == [1.0] * 4
