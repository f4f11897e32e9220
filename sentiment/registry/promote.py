"""Compare a candidate version with @champion on the same test reviews, then move the aliases.

Two seeds of one configuration differ by up to ~1 point of accuracy, so a higher number alone
can be seed noise. The gate is paired: both models score the same reviews, and only the reviews
they disagree on carry evidence (metrics.paired_accuracy: exact McNemar, and the interval of
the difference). A candidate is promoted when it beats the champion on `promote.metric` by
`promote.margin` AND its accuracy gain is significant at `promote.alpha`; otherwise it is held.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from sentiment import tracking
from sentiment.config import apply_sample
from sentiment.data import Reviews, load_test_reviews, resolve_source
from sentiment.errors import ConfigError, TrackingError
from sentiment.lineage import disagreeing_splits, reviews_digest, source_checksum
from sentiment.metrics import LOWER_IS_BETTER, METRICS, PairedComparison, classification_metrics, paired_accuracy
from sentiment.model_code import TEXT_COLUMN
from sentiment.registry import versions

log = logging.getLogger(__name__)

MOVES_ALIASES = ("first champion", "promoted", "forced")  # decisions that change @champion


@dataclass
class Promotion:
    model_name: str
    candidate: str
    champion: str | None          # before the decision
    decision: str                 # promoted, forced, refused, already champion
    table: pd.DataFrame           # metrics side by side, one column per version
    source_runs: dict[str, str]   # version -> the run that logged it
    comparison: PairedComparison | None = None  # review by review, when there was a champion
    reason: str = ""              # why PROMOTE or HOLD, in a sentence


def score_version(model_name: str, version: str, reviews: Reviews) -> tuple[dict[str, float], np.ndarray]:
    """The version's metrics on the reviews, and its probability per review (for the paired test)."""
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    probability = model.predict(pd.DataFrame({TEXT_COLUMN: reviews.texts}))["probability"].to_numpy()
    return {**classification_metrics(reviews.labels, probability), "test_reviews": float(len(reviews.labels))}, probability


def is_better(candidate: dict, champion: dict, metric: str, margin: float) -> bool:
    if metric in LOWER_IS_BETTER:
        return champion[metric] - candidate[metric] >= margin
    return candidate[metric] - champion[metric] >= margin


def promote(cfg: DictConfig, version: str | None = None, force: bool = False) -> Promotion:
    """Score candidate and champion on one test subsample; move @champion only if it wins."""
    tracking.connect(cfg.tracking)
    name, settings = cfg.tracking.model_name, cfg.promote
    if settings.metric not in METRICS:
        raise TrackingError(f"promote.metric={settings.metric!r} is invalid: expected one of {', '.join(METRICS)}")
    alpha = settings.alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"promote.alpha={alpha!r} is invalid: expected a significance level in (0, 1], e.g. 0.05")
    versions.check_can_move_aliases(name, cfg.tracking.uri)
    candidate = versions.get_version(name, version) if version else versions.newest_version(name)
    if candidate is None:
        raise TrackingError(f"no registered version of {name!r} yet: run `make sweep` first")
    champion = versions.alias_version(name, versions.CHAMPION)
    cand_v, champ_v = str(candidate.version), (str(champion.version) if champion else None)
    if cand_v == champ_v:
        return Promotion(name, cand_v, champ_v, "already champion", pd.DataFrame(), {})

    _check_same_splits(name, candidate, champion)
    reviews_cfg = apply_sample(cfg, {"data.test_samples": settings.test_samples})
    reviews = load_test_reviews(reviews_cfg)
    scores, probabilities = {}, {}
    for side, side_v in (("candidate", cand_v), ("champion", champ_v)):
        if side_v:
            scores[side], probabilities[side] = score_version(name, side_v, reviews)
    comparison = (paired_accuracy(reviews.labels, probabilities["candidate"], probabilities["champion"])
                  if champ_v else None)
    decision, reason = _decide(scores, comparison, settings, force)
    with versions.alias_lock(name):
        current_v = _champion_now(name, champ_v, force)
        if current_v != champ_v:  # FORCE does not rest on the comparison: whoever is champion now steps down
            decision = "forced" if current_v != cand_v else "already champion"
        if decision in MOVES_ALIASES:
            versions.move_champion(name, cand_v, current_v)
    test_digest = reviews_digest(source_checksum(str(resolve_source(reviews_cfg.data))), reviews)
    _record(name, cand_v, champ_v, scores, decision, settings, comparison, test_digest)
    columns = {"candidate": f"candidate v{cand_v}", "champion": f"champion v{champ_v}"}  # for people only
    table = pd.DataFrame(scores).rename(columns=columns, index={"test_reviews": "test reviews"})
    sources = {cand_v: candidate.run_id, **({champ_v: champion.run_id} if champion else {})}
    return Promotion(name, cand_v, champ_v, decision, table, sources, comparison, reason)


def _check_same_splits(name: str, candidate, champion) -> None:
    """Refuse to compare versions trained, selected or tested on different reviews (their
    recorded split digests, sentiment.lineage); versions registered before digests pass."""
    if champion is None:
        return
    differ = disagreeing_splits(candidate.tags, champion.tags)
    if differ:
        raise TrackingError(f"{name} versions {candidate.version} and {champion.version} were made from different "
                            f"{' and '.join(differ)} splits (tags data.<split>_digest), so they cannot be compared: "
                            "promote a version made with the champion's data config (VERSION=<n>)")


def _decide(scores: dict, comparison: PairedComparison | None, settings: DictConfig, force: bool) -> tuple[str, str]:
    """promoted only when the candidate is better by the margin and significantly so; the reason."""
    if comparison is None:
        return "first champion", "no champion yet"
    if not is_better(scores["candidate"], scores["champion"], settings.metric, settings.margin):
        reason = f"not better on {settings.metric} by >= {settings.margin}"
    elif comparison.difference <= 0 or comparison.p_value >= settings.alpha:
        reason = (f"better on {settings.metric}, but within the noise: McNemar p = {comparison.p_value:.3g} "
                  f">= alpha {settings.alpha} ({comparison.candidate_only} vs {comparison.champion_only} discordant reviews)")
    else:
        return "promoted", (f"better on {settings.metric} by >= {settings.margin}, and significantly: "
                            f"McNemar p = {comparison.p_value:.3g} < alpha {settings.alpha}")
    return ("forced" if force else "refused"), reason


def _champion_now(name: str, expected: str | None, force: bool) -> str | None:
    """@champion's version under the lock. If it moved while this promotion was scoring, a
    comparison is stale: refused, unless forced."""
    current = versions.alias_version(name, versions.CHAMPION)
    current_v = str(current.version) if current else None
    if current_v != expected and not force:
        raise TrackingError(
            f"@champion of {name} moved to version {current_v} while this promotion was scoring; "
            "run `make promote` again to compare with the new champion"
        )
    return current_v


def _record(name: str, cand_v: str, champ_v: str | None, scores: dict, decision: str, settings: DictConfig,
            comparison: PairedComparison | None, test_digest: str) -> None:
    """Decision, both sides' metrics, the paired test and which test reviews were scored, as
    version tags: the registry keeps the evidence."""
    cand_scores = scores["candidate"]
    tags = {"promotion.decision": decision, "promotion.metric": settings.metric,
            "promotion.compared_with": champ_v or "none", "promotion.test_digest": test_digest,
            **{f"promotion.{k}": round(v, 6) for k, v in cand_scores.items()}}
    if comparison is not None:
        tags |= {"promotion.alpha": settings.alpha, "promotion.margin": settings.margin,
                 "promotion.difference": round(comparison.difference, 6),
                 "promotion.difference_low": round(comparison.interval[0], 6),
                 "promotion.difference_high": round(comparison.interval[1], 6),
                 "promotion.p_value": comparison.p_value, "promotion.candidate_only": comparison.candidate_only,
                 "promotion.champion_only": comparison.champion_only}
    if champ_v:
        champ_scores = scores["champion"]
        tags.update({f"promotion.champion_{k}": round(v, 6) for k, v in champ_scores.items()})
        versions.tag_version(name, champ_v, {f"promotion.{k}": round(v, 6) for k, v in champ_scores.items()})
    versions.tag_version(name, cand_v, tags)


def rollback(cfg: DictConfig) -> tuple[str, str] | None:
    """Swap @champion and @previous; None (nothing changed) when there is no @previous."""
    tracking.connect(cfg.tracking)
    name = cfg.tracking.model_name
    versions.check_can_move_aliases(name, cfg.tracking.uri)
    with versions.alias_lock(name):
        champion = versions.alias_version(name, versions.CHAMPION)
        previous = versions.alias_version(name, versions.PREVIOUS)
        if previous is None or champion is None:
            return None
        versions.move_champion(name, str(previous.version), str(champion.version))
    return str(champion.version), str(previous.version)
