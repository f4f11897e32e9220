"""Seed noise: how far two trainings of one configuration land apart, measured by the sweep itself.

Before it samples anything, the sweep trains the configured values `sweep.noise_repeats` times,
each with its own init seed and shuffle order (sweep.seed_per_trial), on the same reviews. The
spread of their objective at each epoch is the seed noise there: a difference between two trials
smaller than a few of it is a coin flip, not a finding. The pruner cuts only beyond it
(search.pruning), rankings mark trials within it of the best as tied (report), and a mean of
trials is registered only when it beats the best single trial by more than it (final_model).

The repeats are real trials: they count toward sweep.n_trials, are ranked like any other and may
be ensemble members, so the estimate costs the budget one trial's epochs, not more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# A z of 1.96: the half-width of a 95 % interval, in standard deviations.
Z95 = 1.96


@dataclass(frozen=True)
class SeedNoise:
    """The seed-to-seed standard deviation of the objective, per epoch and at the trials' end."""

    objective: str
    per_epoch: dict[int, float]  # epochs trained -> sd of the objective after that epoch
    final_sd: float              # sd of the trials' values (their best epoch, what ranks them)
    repeats: list[int]           # the trial numbers measured
    widths: float                # sweep.pruner.noise_widths: how many sd make a difference

    @property
    def pooled_sd(self) -> float:
        """The per-epoch sds pooled (root mean square): a few repeats give each epoch's sd only
        a degree of freedom or two, so one lucky near-tie must not shrink a band to nothing."""
        return float(np.sqrt(np.mean(np.square(list(self.per_epoch.values())))))

    def at(self, epoch: int) -> float:
        """The sd that counts after `epoch` epochs: that epoch's (past the last measured one, the
        last one's), or the pooled sd where it is larger; the rules err toward keeping a trial."""
        measured = [e for e in self.per_epoch if e <= epoch] or [min(self.per_epoch)]
        return max(self.per_epoch[max(measured)], self.pooled_sd)

    def band(self, epoch: int) -> float:
        """How far a trial may trail at this epoch before the difference counts."""
        return self.widths * self.at(epoch)

    @property
    def value_sd(self) -> float:
        """The sd of a trial's value (its best epoch): measured at the repeats' end, or pooled."""
        return max(self.final_sd, self.pooled_sd)

    @property
    def final_band(self) -> float:
        """How close to the best value a trial's is still tied with it."""
        return self.widths * self.value_sd

    @property
    def interval(self) -> float:
        """Half-width of a trial value's 95 % interval over seeds."""
        return Z95 * self.value_sd

    def describe(self) -> str:
        epochs = ", ".join(f"epoch {e} {sd:.4f}" for e, sd in sorted(self.per_epoch.items()))
        return (f"seed noise of {self.objective} (sd over {len(self.repeats)} seeds of the configured values, "
                f"trials {', '.join(map(str, self.repeats))}): {epochs}; pooled {self.pooled_sd:.4f}; at the trials' "
                f"end {self.final_sd:.4f}, so a difference counts beyond {self.final_band:.4f} ({self.widths:g} sd)")

    def to_dict(self) -> dict:
        return {**asdict(self), "per_epoch": {str(e): sd for e, sd in self.per_epoch.items()}}

    @classmethod
    def from_dict(cls, stored: dict) -> SeedNoise:
        return cls(stored["objective"], {int(e): float(sd) for e, sd in stored["per_epoch"].items()},
                   float(stored["final_sd"]), [int(n) for n in stored["repeats"]], float(stored["widths"]))

    def flat(self) -> dict[str, float]:
        """As MLflow metrics of the parent run."""
        return {"seed_noise_sd": self.value_sd, "seed_noise_pooled_sd": self.pooled_sd, "seed_noise_band": self.final_band,
                **{f"seed_noise_sd_epoch_{e}": sd for e, sd in self.per_epoch.items()}}


def measure(objective: str, repeats: dict[int, tuple[float, dict[int, float]]], widths: float) -> SeedNoise | None:
    """The noise of repeats {trial number: (value, {epoch: intermediate value})}; None with
    fewer than two. An epoch counts where at least two repeats reached it."""
    if len(repeats) < 2:
        return None
    per_epoch = {}
    for epoch in sorted({e for _, curve in repeats.values() for e in curve}):
        values = [curve[epoch] for _, curve in repeats.values() if epoch in curve]
        if len(values) >= 2:
            per_epoch[epoch] = _sd(values)
    if not per_epoch:
        return None
    return SeedNoise(objective, per_epoch, _sd([value for value, _ in repeats.values()]), sorted(repeats), widths)


def _sd(values: list[float]) -> float:
    sd = float(np.std(values, ddof=1))
    return sd if math.isfinite(sd) else 0.0
