"""How Optuna cuts trials: the pruner named in config, cutting only beyond the seed noise.

Successive halving (the default) compares a trial's first epoch with the others' first epochs;
on the full data most such differences are smaller than two seeds of one configuration differ
(search.noise). NoiseAwarePruner asks the configured pruner first, keeping its warm-up, rungs
and startup rules, and then cuts only when the trial trails the rung's cutoff (the value the
kept fraction of the other trials reached at that epoch) by more than sweep.pruner.noise_widths
seed-noise sds. Until the sweep's repeats have measured the noise it cuts nothing; the repeats
themselves are never cut. Every decision (cut or spared) is kept on the trial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from sentiment.config import maximizes
from sentiment.engines import PRUNERS
from sentiment.search.noise import SeedNoise, measure

log = logging.getLogger(__name__)

REPEAT_ATTR = "noise_repeat"  # a trial's user attr: it is the n-th repeat of the configured values
NOISE_ATTR = "seed_noise"     # the study's user attr: the measured SeedNoise, once its repeats ended
UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


def study_noise(study: optuna.Study, objective: str, widths: float) -> SeedNoise | None:
    """The study's seed noise: measured once all its repeats have ended, then kept on the study."""
    stored = study.user_attrs.get(NOISE_ATTR)
    if stored is not None:
        return SeedNoise.from_dict(stored)
    repeats = [t for t in study.get_trials(deepcopy=False) if REPEAT_ATTR in t.user_attrs]
    if not repeats or any(t.state in UNFINISHED for t in repeats):
        return None
    complete = {t.number: (t.value, dict(t.intermediate_values)) for t in repeats if t.state == TrialState.COMPLETE}
    noise = measure(objective, complete, widths)
    if noise is not None:
        study.set_user_attr(NOISE_ATTR, noise.to_dict())
        log.info("%s", noise.describe())
    return noise


@dataclass(frozen=True)
class Cut:
    """One pruning decision at one epoch: margin > band cuts (margin > 0: worse than the cutoff)."""

    epoch: int
    value: float
    cutoff: float
    margin: float
    band: float

    @property
    def prunes(self) -> bool:
        return self.margin > self.band

    def attrs(self) -> dict[str, float | int]:
        """Kept on the Optuna trial and as tags of its MLflow run."""
        return {"cut_epoch": self.epoch, "cut_value": self.value, "cut_cutoff": self.cutoff,
                "cut_margin": self.margin, "cut_noise_band": self.band}

    def reason(self, objective: str) -> str:
        head = f"{objective} {self.value:.4f} after epoch {self.epoch}"
        if self.margin <= 0:
            return f"kept: {head} is ahead of the rung's cutoff {self.cutoff:.4f} by {-self.margin:.4f}"
        verdict, side = ("cut", "beyond") if self.prunes else ("kept", "within")
        return (f"{verdict}: {head} trails the rung's cutoff {self.cutoff:.4f} by {self.margin:.4f}, "
                f"{side} the noise band {self.band:.4f}")


class NoiseAwarePruner(optuna.pruners.BasePruner):
    """The configured pruner, overruled wherever its cut would fall inside the seed noise."""

    def __init__(self, inner: optuna.pruners.BasePruner, kept_fraction: float, objective: str, widths: float):
        self.inner = inner
        self.kept_fraction = kept_fraction
        self.objective, self.widths = objective, widths
        self.decisions: dict[tuple[int, int], Cut] = {}  # (trial number, epoch) -> what was decided

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        epoch = trial.last_step
        # The inner pruner sees every trial, repeats too: successive halving records each trial's
        # rung values as it decides, and the later trials are compared with those.
        inner_cuts = self.inner.prune(study, trial)
        if epoch is None or REPEAT_ATTR in trial.user_attrs or not inner_cuts:
            return False
        noise = study_noise(study, self.objective, self.widths)
        if noise is None and _repeats_unfinished(study):
            return False  # no verdict before the noise is known
        others = [t.intermediate_values[epoch] for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and epoch in t.intermediate_values]
        if not others:
            return False
        cut = self.decide(trial.intermediate_values[epoch], others, epoch, noise.band(epoch) if noise else 0.0)
        self.decisions[(trial.number, epoch)] = cut
        return cut.prunes

    def decide(self, value: float, others: list[float], epoch: int, band: float) -> Cut:
        """The cutoff is the value the best kept_fraction of the other trials reached at this epoch."""
        maximize = maximizes(self.objective)
        cutoff = float(np.quantile(others, 1 - self.kept_fraction if maximize else self.kept_fraction))
        return Cut(epoch, value, cutoff, (cutoff - value) if maximize else (value - cutoff), band)


def _repeats_unfinished(study: optuna.Study) -> bool:
    return any(REPEAT_ATTR in t.user_attrs and t.state in UNFINISHED for t in study.get_trials(deepcopy=False))


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """sweep.pruner.kind's Optuna pruner (the resource is epochs trained), noise-aware when the
    sweep measures its noise (sweep.noise_repeats >= 2) and the kind cuts at all."""
    kind = PRUNERS[cfg.sweep.pruner.kind]
    inner = kind(cfg.sweep.pruner, cfg.train.max_epochs)
    if cfg.sweep.noise_repeats < 2 or kind.kept_fraction is None:
        return inner
    return NoiseAwarePruner(inner, kind.kept_fraction(cfg.sweep.pruner), cfg.sweep.objective,
                            cfg.sweep.pruner.noise_widths)


def pruner_name(pruner: optuna.pruners.BasePruner) -> str:
    """What actually cuts, by class: NoiseAwarePruner(SuccessiveHalvingPruner), or the plain one."""
    if isinstance(pruner, NoiseAwarePruner):
        return f"{type(pruner).__name__}({type(pruner.inner).__name__})"
    return type(pruner).__name__


class PrunedBeyondNoise(optuna.TrialPruned):
    """A trial cut by the pruner; `tags` say by how much (the trial's MLflow run keeps them)."""

    def __init__(self, message: str, tags: dict[str, str]):
        super().__init__(message)
        self.tags = tags


class EpochPruningCallback(keras.callbacks.Callback):
    """Reports the objective after each epoch, as epochs trained (1, 2, ...): the pruners'
    resource settings then count epochs, so successive halving with min_epochs=1 decides after
    the first. A decision of NoiseAwarePruner is kept on the trial, cut or spared."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        super().__init__()
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"{self.monitor} is not among this epoch's metrics ({', '.join(logs or {})})")
        self.trial.report(float(value), step=epoch + 1)
        prunes = self.trial.should_prune()
        cut = getattr(self.trial.study.pruner, "decisions", {}).get((self.trial.number, epoch + 1))
        if cut is not None:
            for name, figure in cut.attrs().items():
                self.trial.set_user_attr(name, figure)
            log.info("trial %d %s", self.trial.number, cut.reason(self.monitor))
        if prunes:
            reason = cut.reason(self.monitor) if cut else f"cut after epoch {epoch + 1}"
            raise PrunedBeyondNoise(reason, {k: str(v) for k, v in (cut.attrs() if cut else {}).items()})
