"""Which search engines, Optuna samplers and pruners, Keras Tuner oracles and baselines exist: one table each,
name -> constructor. Config validation, the sweep, its workers and the benchmark ask here; no
other module lists these names.

Each constructor imports its library when called: config validation reads the names before any
command pays for importing Optuna or TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

# --- Optuna samplers: (seed, startup trials) -> sampler ----------------------------------------
# startup trials: how many finished trials a model-based sampler draws at random before it models
# (sweep.startup_trials).


def _tpe(seed: int, startup: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _random(seed: int, startup: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int, startup: int):
    import optuna

    # CMA-ES searches the numeric dimensions; categorical ones fall back to random sampling.
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)


SAMPLERS: dict[str, Callable[[int, int], Any]] = {"tpe": _tpe, "random": _random, "cmaes": _cmaes}


# --- Optuna pruners: (sweep.pruner, train.max_epochs) -> pruner; the resource is epochs trained ---
# kept_fraction: the share of trials a rung keeps (None: the kind never cuts). NoiseAwarePruner
# (search.pruning) puts the rung's cutoff there and cuts only beyond the seed noise.


@dataclass(frozen=True)
class PrunerKind:
    make: Callable[[DictConfig, int], Any]
    kept_fraction: Callable[[DictConfig], float] | None

    def __call__(self, pruner: DictConfig, max_epochs: int):
        return self.make(pruner, max_epochs)


def _median(pruner: DictConfig, max_epochs: int):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps)


def _successive_halving(pruner: DictConfig, max_epochs: int):
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner.min_epochs,
                                                  reduction_factor=pruner.reduction_factor)


def _hyperband(pruner: DictConfig, max_epochs: int):
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=pruner.min_epochs, max_resource=max_epochs,
                                          reduction_factor=pruner.reduction_factor)


def _no_pruning(pruner: DictConfig, max_epochs: int):
    import optuna

    return optuna.pruners.NopPruner()


def _one_in_reduction_factor(pruner: DictConfig) -> float:
    return 1 / pruner.reduction_factor


PRUNERS: dict[str, PrunerKind] = {
    "median": PrunerKind(_median, lambda pruner: 0.5),
    "successive_halving": PrunerKind(_successive_halving, _one_in_reduction_factor),
    "hyperband": PrunerKind(_hyperband, _one_in_reduction_factor),
    "none": PrunerKind(_no_pruning, None),
}


# --- Keras Tuner oracles: (config, the arguments every oracle takes) -> oracle --------------------


def _kt_hyperband(cfg: DictConfig, common: dict):
    import keras_tuner as kt

    oracle = kt.oracles.HyperbandOracle(max_epochs=cfg.train.max_epochs, factor=3, **common)
    oracle.max_trials = cfg.sweep.n_trials  # Hyperband has no such argument: its brackets would run on
    return oracle


def _kt_bayesian(cfg: DictConfig, common: dict):
    import keras_tuner as kt

    return kt.oracles.BayesianOptimizationOracle(max_trials=cfg.sweep.n_trials, **common)


def _kt_random(cfg: DictConfig, common: dict):
    import keras_tuner as kt

    return kt.oracles.RandomSearchOracle(max_trials=cfg.sweep.n_trials, **common)


ORACLES: dict[str, Callable[[DictConfig, dict], Any]] = {
    "hyperband": _kt_hyperband, "bayesian": _kt_bayesian, "random": _kt_random,
}


# --- baselines: (training texts, labels, baseline.<kind>) -> sentiment.baseline_models.FittedBaseline


def _tfidf(texts, labels, params: DictConfig):
    from sentiment.baseline_models import fit_tfidf

    return fit_tfidf(texts, labels, params)


def _nbsvm(texts, labels, params: DictConfig):
    from sentiment.baseline_models import fit_nbsvm

    return fit_nbsvm(texts, labels, params)


BASELINES: dict[str, Callable[..., Any]] = {"tfidf": _tfidf, "nbsvm": _nbsvm}
STACKED_BASELINE = "nbsvm"  # the baseline sweep.final=stack combines with the LSTM


# --- the engines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    name: str
    algorithms: tuple[str, ...]  # sweep.algorithm choices; null picks the first
    shares_workers: bool         # several worker processes may run one study (search.contract.SharedStudyEngine)


ENGINES = {engine.name: engine for engine in (
    Engine("optuna", tuple(SAMPLERS), shares_workers=True),
    # Keras Tuner has its own chief/worker mode, which the sweep does not drive.
    Engine("keras_tuner", tuple(ORACLES), shares_workers=False),
)}


def engine_spec(cfg: DictConfig) -> Engine:
    return ENGINES[cfg.sweep.engine]


def search_algorithm(cfg: DictConfig) -> str:
    """sweep.algorithm, or the engine's default when it is null."""
    return cfg.sweep.algorithm or engine_spec(cfg).algorithms[0]
