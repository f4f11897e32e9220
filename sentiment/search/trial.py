"""One tracked trial, shared by every search engine: a nested MLflow run around train()."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import keras
import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.config import OPERATIONAL_GROUPS, OPERATIONAL_KEYS, apply_sample
from sentiment.lineage import log_data_lineage
from sentiment.tokens import TokenizedData, data_for
from sentiment.train import TrainResult, train

log = logging.getLogger(__name__)


def config_fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that defines what a search searches."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for group in OPERATIONAL_GROUPS:
        container.pop(group, None)
    for key in OPERATIONAL_KEYS:
        *parents, name = key.split(".")
        node = container
        for parent in parents:
            node = node.get(parent, {})
        node.pop(name, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Best-epoch val_* as best_val_*, so they don't mix with the per-epoch val_* curves."""
    return {f"best_{k}" if k.startswith("val_") else k: v for k, v in metrics.items()}


class EpochLog(keras.callbacks.Callback):
    """One short line per epoch instead of Keras's per-batch progress bar."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        shown = [f"{name} {logs[name]:.4f}" for name in ("loss", "val_loss", "val_accuracy") if name in (logs or {})]
        log.info("%s epoch %d: %s", self.label, epoch + 1, " ".join(shown))


class StopAtDeadline(keras.callbacks.Callback):
    """Ends training at the first epoch end past the sweep's deadline (sweep.timeout). Engines
    start no trial after it, but a slow trial that started just before would otherwise run all
    its epochs past it; stopped here, early stopping still restores its best epoch, so it is an
    honest complete trial with fewer epochs."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline  # time.monotonic() value; None: no timeout
        self.stopped_after: int | None = None  # epochs trained when the deadline stopped it

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline and not self.model.stop_training:
            self.stopped_after = epoch + 1
            self.model.stop_training = True


def trial_seed(cfg: DictConfig, number: int | None) -> dict[str, int]:
    """Trial n's own init seed, seed + n, when sweep.seed_per_trial: trials that sample alike then
    still differ, so the mean of the top ones gains (a shared seed made them near-copies)."""
    return {"train.seed": cfg.seed + number} if number is not None and cfg.sweep.seed_per_trial else {}


def run_tracked_trial(cfg: DictConfig, data: TokenizedData, sample: dict[str, Any], run_name: str,
                      tags: dict[str, str], callbacks: list | None = None,
                      on_start: Callable[[str], None] | None = None,
                      parent_run_id: str | None = None, number: int | None = None,
                      deadline: float | None = None) -> tuple[TrainResult, str]:
    """Train cfg with `sample` applied inside a run whose status tells what happened.

    Inside a sweep it is nested under the sweep's run, and `number` is the trial's number in its
    search (with sweep.seed_per_trial its init seed); `make train` calls it with no run active.
    Past `deadline` (the sweep's, time.monotonic()) it trains no further epoch (StopAtDeadline).

    Completed: FINISHED. Pruned (optuna.TrialPruned): KILLED, tagged pruned. Anything else:
    FAILED, tagged with the error, and re-raised for the engine to record. A worker process
    has no active run and names the sweep's parent run instead.
    """
    trial_cfg = apply_sample(cfg, {**trial_seed(cfg, number), **sample})
    data = data_for(trial_cfg, cfg, data)  # its own arrays if it searched truncation, length or vocabulary
    run = mlflow.start_run(run_name=run_name, nested=True, parent_run_id=parent_run_id,
                           tags={tracking.ROLE_TAG: tracking.TRIAL, **tags},
                           log_system_metrics=cfg.tracking.system_metrics_seconds is not None)
    try:
        if on_start:
            on_start(run.info.run_id)
        mlflow.log_params(tracking.config_params(trial_cfg))
        log_data_lineage(data)
        # Metrics first: the epoch that gets a trial pruned must still be on record.
        stopper = StopAtDeadline(deadline)
        result = train(trial_cfg, data,
                       callbacks=[tracking.EpochMetricsCallback(), EpochLog(run_name), *(callbacks or []), stopper])
        # Inside the try: a failed upload or a full disk must close the run FAILED too, or later
        # trials would nest under a run left RUNNING on MLflow's active-run stack.
        _log_result(run_name, result, stopper)
    except optuna.TrialPruned as pruned:
        # An engine's pruning exception may carry by how much the trial was cut (search.pruning).
        tracking.end_run("KILLED", {"state": "pruned", "pruned": "true", "pruned_reason": str(pruned),
                                    **getattr(pruned, "tags", {})})
        raise
    except BaseException as err:  # KeyboardInterrupt too: the run must not stay RUNNING
        tracking.end_run("FAILED", {"state": "failed", "error": f"{type(err).__name__}: {err}"[:5000]})
        raise
    tracking.end_run("FINISHED", {"state": "complete"})
    return result, run.info.run_id


def _log_result(run_name: str, result: TrainResult, stopper: StopAtDeadline) -> None:
    """The trained trial's best-epoch metrics, whether the timeout stopped it, and its model."""
    mlflow.log_metrics(final_metrics(result.metrics))
    if stopper.stopped_after is not None:
        log.info("%s: sweep.timeout passed, stopped after epoch %d", run_name, stopper.stopped_after)
        mlflow.set_tag("stopped_by", "sweep.timeout")
    tracking.log_keras_model(result.model)
