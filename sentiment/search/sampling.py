"""How Optuna proposes trials: the sampler named in config, the search space (search.pruning cuts them).

Samplers are seeded per trial from the seed and the trial's number, so a resumed study
continues its sequence instead of repeating its first samples, two workers (which never get
the same trial number) never propose the same params, and the same storage state gives the
same proposals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sentiment.engines import SAMPLERS, search_algorithm


def sample_params(trial: optuna.Trial, space: DictConfig) -> dict:
    """One value per search dimension, keyed by the config key it replaces."""
    sample = {}
    for name, spec in space.items():
        if spec.type == "int":
            value = trial.suggest_int(name, spec.low, spec.high, step=spec.get("step") or 1, log=bool(spec.get("log")))
        elif spec.type == "float":
            value = trial.suggest_float(name, spec.low, spec.high, step=spec.get("step"), log=bool(spec.get("log")))
        else:
            value = trial.suggest_categorical(name, list(spec.choices))
        sample[spec.key] = value
    return sample


def sampler_seed(seed: int, number: int) -> int:
    """Trial `number`'s sampler seed: a stream of its own for each (root seed, number) pair. With
    seed + number, root seeds 42 and 43 drew the same values one trial apart."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Wraps a sampler made anew for every trial, seeded from the root seed and the trial number."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    @property
    def inner(self) -> BaseSampler:
        return self._inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._make(sampler_seed(self._seed, trial.number))
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
    make, startup = SAMPLERS[search_algorithm(cfg)], cfg.sweep.startup_trials
    return TrialSeededSampler(lambda seed: make(seed, startup), cfg.seed)


def configured_values(cfg: DictConfig) -> dict[str, Any]:
    """The config's own value of each search dimension (conf/model, conf/regularizer), by
    dimension name, where it lies inside the searched range: sweep.start_from_defaults's trial."""
    values = {name: OmegaConf.select(cfg, spec.key) for name, spec in cfg.sweep.space.items()}
    return {name: value for name, value in values.items() if in_space(cfg.sweep.space[name], value)}


def in_space(spec: DictConfig, value) -> bool:
    if spec.type == "categorical":
        return value in list(spec.choices)
    return spec.low <= value <= spec.high
