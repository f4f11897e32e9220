"""Compare a candidate version with @champion on the same test reviews, then move the aliases."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import pandas as pd
from omegaconf import DictConfig

from sentiment import tracking
from sentiment.config import apply_sample
from sentiment.data import Reviews, load_test_reviews
from sentiment.errors import TrackingError
from sentiment.metrics import LOWER_IS_BETTER, METRICS, classification_metrics
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


def score_version(model_name: str, version: str, reviews: Reviews) -> dict[str, float]:
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    probability = model.predict(pd.DataFrame({TEXT_COLUMN: reviews.texts}))["probability"].to_numpy()
    return {**classification_metrics(reviews.labels, probability), "test_reviews": float(len(reviews.labels))}


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
    versions.check_can_move_aliases(name, cfg.tracking.uri)
    candidate = versions.get_version(name, version) if version else versions.newest_version(name)
    if candidate is None:
        raise TrackingError(f"no registered version of {name!r} yet: run `make sweep` first")
    champion = versions.alias_version(name, versions.CHAMPION)
    cand_v, champ_v = str(candidate.version), (str(champion.version) if champion else None)
    if cand_v == champ_v:
        return Promotion(name, cand_v, champ_v, "already champion", pd.DataFrame(), {})

    reviews = load_test_reviews(apply_sample(cfg, {"data.test_samples": settings.test_samples}))
    scores = {"candidate": score_version(name, cand_v, reviews)}
    if champ_v:
        scores["champion"] = score_version(name, champ_v, reviews)
    decision = _decide(scores, settings, force)
    with versions.alias_lock(name):
        current_v = _champion_now(name, champ_v, force)
        if current_v != champ_v:  # FORCE does not rest on the comparison: whoever is champion now steps down
            decision = "forced" if current_v != cand_v else "already champion"
        if decision in MOVES_ALIASES:
            versions.move_champion(name, cand_v, current_v)
    _record(name, cand_v, champ_v, scores, decision, settings.metric)
    columns = {"candidate": f"candidate v{cand_v}", "champion": f"champion v{champ_v}"}  # for people only
    table = pd.DataFrame(scores).rename(columns=columns, index={"test_reviews": "test reviews"})
    sources = {cand_v: candidate.run_id, **({champ_v: champion.run_id} if champion else {})}
    return Promotion(name, cand_v, champ_v, decision, table, sources)


def _decide(scores: dict, settings: DictConfig, force: bool) -> str:
    if "champion" not in scores:
        return "first champion"
    if is_better(scores["candidate"], scores["champion"], settings.metric, settings.margin):
        return "promoted"
    return "forced" if force else "refused"


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


def _record(name: str, cand_v: str, champ_v: str | None, scores: dict, decision: str, metric: str) -> None:
    """Decision and both sides' metrics as version tags, so the registry keeps the evidence."""
    cand_scores = scores["candidate"]
    tags = {"promotion.decision": decision, "promotion.metric": metric,
            "promotion.compared_with": champ_v or "none",
            **{f"promotion.{k}": round(v, 6) for k, v in cand_scores.items()}}
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
