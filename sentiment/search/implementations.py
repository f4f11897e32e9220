"""Which class runs each engine that sentiment.engines names: the sweep, its workers and the
benchmark get their engine here. Adding an engine: its name in sentiment.engines, a class that
implements search.contract's SearchEngine, and one entry below."""

from __future__ import annotations

from omegaconf import DictConfig

from sentiment.search.contract import SearchEngine, SharedStudyEngine
from sentiment.search.keras_tuner_engine import KerasTunerEngine
from sentiment.search.optuna_engine import OptunaEngine

IMPLEMENTATIONS: dict[str, SearchEngine] = {engine.spec.name: engine for engine in (OptunaEngine(), KerasTunerEngine())}


def engine_for(cfg: DictConfig) -> SearchEngine:
    return IMPLEMENTATIONS[cfg.sweep.engine]


def shared_study_engine(cfg: DictConfig) -> SharedStudyEngine | None:
    """cfg's engine if its study is shared by workers and knows when it is finished, else None."""
    engine = engine_for(cfg)
    return engine if engine.spec.shares_workers else None
