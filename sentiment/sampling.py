"""How Optuna proposes and cuts trials: the sampler and pruner named in config, the search space.

Samplers are seeded per trial from the seed and the trial's number, so a resumed study
continues its sequence instead of repeating its first samples, two workers (which never get
the same trial number) never propose the same params, and the same storage state gives the
same proposals.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sentiment.engines import search_algorithm

SAMPLERS: dict[str, Callable[[int], BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    # CMA-ES searches the numeric dimensions; categorical ones fall back to random sampling.
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
}


def sample_params(trial: optuna.Trial, space: DictConfig) -> dict:
    """One value per search dimension, keyed by the config key it replaces."""
    sample = {}
    for name, spec in space.items():
        if spec.type == "int":
            value = trial.suggest_int(name, spec.low, spec.high, step=spec.get("step") or 1, log=bool(spec.get("log")))
        elif spec.type == "float":
            value = trial.suggest_float(name, spec.low, spec.high, log=bool(spec.get("log")))
        else:
            value = trial.suggest_categorical(name, list(spec.choices))
        sample[spec.key] = value
    return sample


class TrialSeededSampler(BaseSampler):
    """Wraps a sampler made anew for every trial, seeded with seed + trial number."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    @property
    def inner(self) -> BaseSampler:
        return self._inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state: TrialState, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(cfg: DictConfig) -> TrialSeededSampler:
    return TrialSeededSampler(SAMPLERS[search_algorithm(cfg)], cfg.seed)


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """Optuna's own pruners; the resource is the epoch (reported once per epoch)."""
    pruner, max_epochs = cfg.sweep.pruner, cfg.train.max_epochs
    if pruner.kind == "none":
        return optuna.pruners.NopPruner()
    if pruner.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials,
                                           n_warmup_steps=pruner.n_warmup_steps)
    if pruner.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner.min_epochs, reduction_factor=pruner.reduction_factor)
    return optuna.pruners.HyperbandPruner(min_resource=pruner.min_epochs, max_resource=max_epochs,
                                          reduction_factor=pruner.reduction_factor)

