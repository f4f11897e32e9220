"""The search engines: which exist, which algorithms each runs, and the module that runs it.

Config validation, the sweep, its workers and the benchmark all ask here; nothing else names
an engine's module or algorithms.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from omegaconf import DictConfig


@dataclass(frozen=True)
class Engine:
    name: str
    algorithms: tuple[str, ...]  # sweep.algorithm choices; null picks the first
    module: str                  # has search(cfg, data) -> SearchOutcome and finished_outcome(cfg)
    shares_workers: bool         # several worker processes may run one study (its module: run_trials)


ENGINES = {
    # Optuna's samplers are built by sampling.SAMPLERS.
    "optuna": Engine("optuna", ("tpe", "random", "cmaes"), "sentiment.search_optuna", shares_workers=True),
    # Keras Tuner has its own chief/worker mode, which the sweep does not drive.
    "keras_tuner": Engine("keras_tuner", ("hyperband", "bayesian", "random"), "sentiment.search_keras_tuner",
                          shares_workers=False),
}


def engine(cfg: DictConfig) -> Engine:
    return ENGINES[cfg.sweep.engine]


def search_algorithm(cfg: DictConfig) -> str:
    """sweep.algorithm, or the engine's default when it is null."""
    return cfg.sweep.algorithm or engine(cfg).algorithms[0]


def engine_module(cfg: DictConfig) -> ModuleType:
    """The module that runs cfg's engine (imported on use: each pulls in its own library)."""
    return importlib.import_module(engine(cfg).module)
