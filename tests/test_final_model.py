"""How the final model's members are chosen from the candidates: on validation only."""

import numpy as np

from sentiment.final_model import best_prefix

LABELS = np.array([1, 0, 1, 0, 1, 0])


def test_a_weak_tail_is_left_out():
    strong = np.array([0.9, 0.1, 0.55, 0.45, 0.9, 0.1])
    second = np.array([0.6, 0.4, 0.95, 0.05, 0.7, 0.3])  # sure where the first hesitates
    weak = np.array([0.4, 0.6, 0.5, 0.5, 0.3, 0.7])  # mostly wrong: averaging it in raises the loss
    assert best_prefix(LABELS, [strong, second, weak]) == 2


def test_members_that_fix_each_others_mistakes_are_kept():
    first = np.array([0.9, 0.1, 0.4, 0.2, 0.9, 0.6])
    second = np.array([0.6, 0.4, 0.9, 0.6, 0.7, 0.1])
    third = np.array([0.7, 0.6, 0.8, 0.1, 0.6, 0.2])
    assert best_prefix(LABELS, [first, second, third]) == 3


def test_one_candidate_and_ties_keep_the_fewest():
    same = np.array([0.9, 0.1, 0.8, 0.2, 0.9, 0.1])
    assert best_prefix(LABELS, [same]) == 1
    assert best_prefix(LABELS, [same, same.copy()]) == 1  # an identical copy adds nothing
