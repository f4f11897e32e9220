"""How a classifier is scored: one definition for the sweep, the baseline and promotion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

METRICS = ("accuracy", "loss", "roc_auc", "f1")
LOWER_IS_BETTER = {"loss"}
LENGTH_BUCKETS = ("shortest quarter", "second quarter", "third quarter", "longest quarter")


def classification_metrics(labels: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """accuracy, loss (log loss), roc_auc and f1 of positive-class probabilities (threshold 0.5)."""
    predicted = (probability >= 0.5).astype(int)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "loss": float(log_loss(labels, np.clip(probability, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "roc_auc": float(roc_auc_score(labels, probability)),
        "f1": float(f1_score(labels, predicted)),
    }


def accuracy_interval(labels: np.ndarray, probability: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of the accuracy (95 % by default): what the test reviews alone
    allow; seed-to-seed spread comes on top of it (search.noise)."""
    n = len(labels)
    correct = float(np.sum((probability >= 0.5).astype(int) == labels))
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(centre - half), float(centre + half)


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same reviews, review by review: what a promotion decides on."""

    reviews: int
    candidate_only: int           # reviews the candidate gets right and the champion wrong
    champion_only: int            # the other way round
    difference: float             # accuracy, candidate minus champion
    interval: tuple[float, float]  # its 95 % interval
    p_value: float                # exact McNemar test on the discordant reviews, two-sided

    def describe(self, first: str = "the candidate", second: str = "the champion") -> str:
        return (f"accuracy difference {self.difference:+.4f} (95 % interval {self.interval[0]:+.4f} to "
                f"{self.interval[1]:+.4f}) on {self.reviews:,} reviews; discordant: {self.candidate_only} right by "
                f"{first} only, {self.champion_only} by {second} only; McNemar p = {self.p_value:.3g}")


def paired_accuracy(labels: np.ndarray, candidate: np.ndarray, champion: np.ndarray, z: float = 1.96) -> PairedComparison:
    """The paired comparison of two models' probabilities on the same labels. Only the reviews
    they disagree on carry evidence: exact McNemar on those, and the interval of the paired
    difference of proportions (its variance counts the discordant pairs, not two samples)."""
    candidate_right = (candidate >= 0.5).astype(int) == labels
    champion_right = (champion >= 0.5).astype(int) == labels
    n = len(labels)
    b = int(np.sum(candidate_right & ~champion_right))
    c = int(np.sum(~candidate_right & champion_right))
    difference = (b - c) / n
    half = z * np.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0)) / n
    return PairedComparison(n, b, c, difference, (difference - half, difference + half), mcnemar_exact(b, c))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, each discordant review is a fair coin
    (a binomial test of min(b, c) in b + c at 1/2, in exact integers)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**m)


def word_counts(texts: list[str]) -> np.ndarray:
    return np.array([len(text.split()) for text in texts])


def accuracy_by_length(labels: np.ndarray, lengths: np.ndarray, **probabilities: np.ndarray) -> pd.DataFrame:
    """Accuracy of each named model per review-length quarter (same reviews for every model).
    Quarters are cut by rank, so they hold equal numbers of reviews even where lengths tie."""
    bucket = np.empty(len(lengths), dtype=int)
    bucket[np.argsort(lengths, kind="stable")] = np.arange(len(lengths)) * len(LENGTH_BUCKETS) // len(lengths)
    rows = []
    for index, name in enumerate(LENGTH_BUCKETS):
        members = bucket == index
        if not members.any():
            continue
        row = {"bucket": name, "words": f"{lengths[members].min()}-{lengths[members].max()}",
               "reviews": int(members.sum())}
        for model, probability in probabilities.items():
            row[model] = float(accuracy_score(labels[members], probability[members] >= 0.5))
        rows.append(row)
    return pd.DataFrame(rows)
