"""Compare a candidate version with @champion on the same test reviews, then move the aliases.

Two seeds of one configuration differ by up to ~1 point of accuracy, so a higher number alone
can be seed noise. The gate is paired: both models score the same reviews, and only the reviews
they disagree on carry evidence (metrics.paired_accuracy: exact McNemar, and the interval of
the difference). A candidate is promoted when it beats the champion on `promote.metric` by
`promote.margin` AND its accuracy gain is significant at `promote.alpha` AND it fails no behaviour
check (registry.behaviour) on more cases than the champion beyond `promote.behaviour_tolerance`;
otherwise it is held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

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
from sentiment.registry import behaviour, versions

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
    behaviour: pd.DataFrame = field(default_factory=pd.DataFrame)  # failure rate per check, one column per version


@dataclass
class Scored:
    """One version on the test reviews and on the behaviour checks."""
    metrics: dict[str, float]
    probability: np.ndarray       # per test review, for the paired test
    behaviour: pd.DataFrame       # behaviour.run_checks


def load_version(model_name: str, version: str) -> mlflow.pyfunc.PyFuncModel:
    """The registered version as it is served (a one-line error if its artifacts are gone)."""
    with tracking.artifacts_of(f"{model_name} version {version}", tracking.REGISTERED_GONE_FIX):
        return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")


def scorer(model: mlflow.pyfunc.PyFuncModel) -> Callable[[list[str]], np.ndarray]:
    """A loaded version as a function: reviews -> probability of positive."""
    def probability(texts: list[str]) -> np.ndarray:
        return model.predict(pd.DataFrame({TEXT_COLUMN: texts}))["probability"].to_numpy()

    return probability


def version_scorer(model_name: str, version: str) -> Callable[[list[str]], np.ndarray]:
    """The registered version as it is served: reviews -> probability of positive."""
    return scorer(load_version(model_name, version))


def score_version(model_name: str, version: str, reviews: Reviews) -> Scored:
    probability = version_scorer(model_name, version)
    test_probability = probability(reviews.texts)
    metrics = {**classification_metrics(reviews.labels, test_probability), "test_reviews": float(len(reviews.labels))}
    return Scored(metrics, test_probability, behaviour.run_checks(probability))


def is_better(candidate: dict, champion: dict, metric: str, margin: float) -> bool:
    if metric in LOWER_IS_BETTER:
        return champion[metric] - candidate[metric] >= margin
    return candidate[metric] - champion[metric] >= margin


def check_settings(settings: DictConfig) -> None:
    if settings.metric not in METRICS:
        raise ConfigError(f"promote.metric={settings.metric!r} is invalid: expected one of {', '.join(METRICS)}")
    for key, expected, low_open in (("alpha", "a significance level in (0, 1], e.g. 0.05", True),
                                    ("behaviour_tolerance", "a fraction of a check's cases in [0, 1], e.g. 0.1", False)):
        value = settings[key]
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not number or not (0 < value <= 1 if low_open else 0 <= value <= 1):
            raise ConfigError(f"promote.{key}={value!r} is invalid: expected {expected}")


def promote(cfg: DictConfig, version: str | None = None, force: bool = False) -> Promotion:
    """Score candidate and champion on one test subsample and the behaviour checks; move
    @champion only if the candidate wins."""
    tracking.connect(cfg.tracking)
    name, settings = cfg.tracking.model_name, cfg.promote
    check_settings(settings)
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
    scored = {side: score_version(name, side_v, reviews)
              for side, side_v in (("candidate", cand_v), ("champion", champ_v)) if side_v}
    comparison = (paired_accuracy(reviews.labels, scored["candidate"].probability, scored["champion"].probability)
                  if champ_v else None)
    decision, reason = _decide(scored, comparison, settings, force)
    with versions.alias_lock(name, cand_v):
        current_v = _champion_now(name, champ_v, force)
        if current_v != champ_v:  # FORCE does not rest on the comparison: whoever is champion now steps down
            decision = "forced" if current_v != cand_v else "already champion"
        if decision in MOVES_ALIASES:
            versions.move_champion(name, cand_v, current_v)
    test_digest = reviews_digest(source_checksum(str(resolve_source(reviews_cfg.data))), reviews)
    _record(name, cand_v, champ_v, scored, decision, settings, comparison, test_digest)
    columns = {"candidate": f"candidate v{cand_v}", "champion": f"champion v{champ_v}"}  # for people only
    table = pd.DataFrame({side: s.metrics for side, s in scored.items()})
    table = table.rename(columns=columns, index={"test_reviews": "test reviews"})
    checks = behaviour.side_by_side({columns[side]: s.behaviour for side, s in scored.items()})
    sources = {cand_v: candidate.run_id, **({champ_v: champion.run_id} if champion else {})}
    return Promotion(name, cand_v, champ_v, decision, table, sources, comparison, reason, checks)


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


def _decide(scored: dict[str, Scored], comparison: PairedComparison | None, settings: DictConfig,
            force: bool) -> tuple[str, str]:
    """promoted only when the candidate is better by the margin, significantly so, and fails no
    behaviour check on more cases than the champion beyond the tolerance; the reason."""
    if comparison is None:
        return "first champion", "no champion yet"
    candidate, champion = scored["candidate"], scored["champion"]
    holds = []
    worse = behaviour.regressions(candidate.behaviour, champion.behaviour, settings.behaviour_tolerance)
    if worse:
        holds.append(f"fails more behaviour cases than the champion, beyond the tolerance of "
                     f"{settings.behaviour_tolerance:.0%}: {', '.join(worse)}")
    if not is_better(candidate.metrics, champion.metrics, settings.metric, settings.margin):
        holds.append(f"not better on {settings.metric} by >= {settings.margin}")
    elif comparison.difference <= 0 or comparison.p_value >= settings.alpha:
        holds.append(f"better on {settings.metric}, but within the noise: McNemar p = {comparison.p_value:.3g} "
                     f">= alpha {settings.alpha} ({comparison.candidate_only} vs {comparison.champion_only} "
                     "discordant reviews)")
    if holds:
        return ("forced" if force else "refused"), "; ".join(holds)
    return "promoted", (f"better on {settings.metric} by >= {settings.margin}, and significantly: "
                        f"McNemar p = {comparison.p_value:.3g} < alpha {settings.alpha}; no behaviour check worse")


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


def _record(name: str, cand_v: str, champ_v: str | None, scored: dict[str, Scored], decision: str,
            settings: DictConfig, comparison: PairedComparison | None, test_digest: str) -> None:
    """Decision, both sides' metrics and behaviour failure rates, the paired test and which test
    reviews were scored, as version tags: the registry keeps the evidence."""
    candidate = scored["candidate"]
    tags = {"promotion.decision": decision, "promotion.metric": settings.metric,
            "promotion.compared_with": champ_v or "none", "promotion.test_digest": test_digest,
            **{f"promotion.{k}": round(v, 6) for k, v in candidate.metrics.items()},
            **behaviour.behaviour_tags(candidate.behaviour)}
    if comparison is not None:
        tags |= {"promotion.alpha": settings.alpha, "promotion.margin": settings.margin,
                 "promotion.behaviour_tolerance": settings.behaviour_tolerance,
                 "promotion.difference": round(comparison.difference, 6),
                 "promotion.difference_low": round(comparison.interval[0], 6),
                 "promotion.difference_high": round(comparison.interval[1], 6),
                 "promotion.p_value": comparison.p_value, "promotion.candidate_only": comparison.candidate_only,
                 "promotion.champion_only": comparison.champion_only}
    if champ_v:
        champion = scored["champion"]
        tags.update({f"promotion.champion_{k}": round(v, 6) for k, v in champion.metrics.items()})
        versions.tag_version(name, champ_v, {**{f"promotion.{k}": round(v, 6) for k, v in champion.metrics.items()},
                                             **behaviour.behaviour_tags(champion.behaviour)})
    versions.tag_version(name, cand_v, tags)


def rollback(cfg: DictConfig) -> tuple[str, str] | None:
    """Swap @champion and @previous; None (nothing changed) when there is no @previous."""
    tracking.connect(cfg.tracking)
    name = cfg.tracking.model_name
    versions.check_can_move_aliases(name, cfg.tracking.uri)
    previous = versions.alias_version(name, versions.PREVIOUS)
    if previous is None:
        return None
    with versions.alias_lock(name, str(previous.version)):
        champion = versions.alias_version(name, versions.CHAMPION)
        previous = versions.alias_version(name, versions.PREVIOUS)
        if previous is None or champion is None:
            return None
        versions.move_champion(name, str(previous.version), str(champion.version))
    return str(champion.version), str(previous.version)
