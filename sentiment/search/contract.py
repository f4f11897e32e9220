"""What a search engine is to the sweep, and what it hands back: the one contract every engine
implements (search.implementations names them), so adding an engine is a change in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd
from omegaconf import DictConfig

from sentiment.engines import Engine
from sentiment.search.noise import SeedNoise

if TYPE_CHECKING:
    from sentiment.tokens import TokenizedData


@dataclass
class BestTrial:
    trial_id: str                 # Optuna trial number or Keras Tuner trial id
    run_id: str                   # the trial's MLflow child run, which holds its Keras model
    params: dict[str, Any]
    val_metrics: dict[str, float]


@dataclass
class SearchOutcome:
    """What an engine hands back: every trial as a table, and the completed ones best first."""

    engine: str
    table: pd.DataFrame
    ranked: list[BestTrial]
    counts: dict[str, int] = field(default_factory=dict)  # complete / pruned / failed
    noise: SeedNoise | None = None  # the seed noise of the objective, where the engine measured it

    @property
    def best(self) -> BestTrial | None:
        return self.ranked[0] if self.ranked else None


@runtime_checkable
class SearchEngine(Protocol):
    """Runs (or resumes) the configured search under the active parent run."""

    spec: Engine

    def search(self, cfg: DictConfig, data: TokenizedData) -> SearchOutcome: ...


@runtime_checkable
class SharedStudyEngine(SearchEngine, Protocol):
    """An engine whose study lives in shared storage (spec.shares_workers): worker processes run
    its trials, and a finished study is known without running anything."""

    def run_trials(self, cfg: DictConfig, data: TokenizedData, parent_run_id: str | None = None,
                   worker: int = 0) -> Any: ...

    def finished_outcome(self, cfg: DictConfig) -> SearchOutcome | None: ...

    def preflight(self, cfg: DictConfig) -> None:
        """Raise ConfigError, before any data is read, for a search that could not start."""
