import numpy as np
import pytest

from sentiment.metrics import (
    LENGTH_BUCKETS,
    accuracy_by_length,
    accuracy_interval,
    classification_metrics,
    mcnemar_exact,
    paired_accuracy,
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


def test_accuracy_interval_is_the_wilson_score_interval():
    labels = np.array([1] * 100)
    probability = np.array([0.9] * 90 + [0.1] * 10)  # 90 of 100 right
    low, high = accuracy_interval(labels, probability)
    assert (low, high) == pytest.approx((0.8256, 0.9448), abs=1e-4)  # the textbook values for 90/100
    all_right = accuracy_interval(labels, np.full(100, 0.9))
    assert all_right[1] == pytest.approx(1.0) and 0.95 < all_right[0] < 0.97  # no width lost at the edge


def _planted(candidate_only: int, champion_only: int, both_wrong: int = 50, reviews: int = 1000):
    """Labels and two models' probabilities with the given agreement counts, review by review."""
    both_right = reviews - candidate_only - champion_only - both_wrong
    right, wrong = 0.9, 0.1  # probabilities of a positive review that are right / wrong for label 1
    groups = [(candidate_only, right, wrong), (champion_only, wrong, right), (both_right, right, right),
              (both_wrong, wrong, wrong)]
    labels = np.ones(sum(n for n, _, _ in groups), dtype=int)
    candidate = np.concatenate([np.full(n, c) for n, c, _ in groups])
    champion = np.concatenate([np.full(n, h) for n, _, h in groups])
    return labels, candidate, champion


def test_the_exact_mcnemar_p_value_is_the_two_sided_binomial_tail():
    assert mcnemar_exact(8, 1) == pytest.approx(20 / 512)  # 2 * (1 + 9) / 2^9
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(10, 10) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_a_model_against_itself_has_no_difference_and_p_one():
    labels, candidate, _ = _planted(0, 0)
    same = paired_accuracy(labels, candidate, candidate.copy())
    assert (same.candidate_only, same.champion_only, same.difference, same.p_value) == (0, 0, 0.0, 1.0)
    assert same.interval == (0.0, 0.0)


def test_a_wide_paired_gain_is_significant_and_its_interval_excludes_zero():
    wide = paired_accuracy(*_planted(40, 10))
    assert wide.difference == pytest.approx(30 / 1000) and wide.p_value < 1e-4
    assert 0 < wide.interval[0] < wide.difference < wide.interval[1]
    assert "40 right by the candidate only, 10 by the champion only" in wide.describe()


def test_a_small_gain_inside_the_noise_is_not_significant():
    small = paired_accuracy(*_planted(12, 8))  # +0.4 points on 1,000 reviews
    assert small.difference == pytest.approx(0.004) and small.p_value > 0.05
    assert small.interval[0] < 0 < small.interval[1]
