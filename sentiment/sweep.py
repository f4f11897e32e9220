"""The Optuna study: search space from config, pruning, one nested MLflow run per trial."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import mlflow
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from optuna_integration import KerasPruningCallback

from sentiment import registry, report, tracking
from sentiment.config import apply_sample
from sentiment.data import TokenizedData, load_data, make_vectorizer
from sentiment.errors import ConfigError
from sentiment.model import end_to_end
from sentiment.train import evaluate, train

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Settings that may change between invocations of one study without changing what it searches.
RESUMABLE_KEYS = ("sweep.n_trials", "sweep.timeout", "sweep.storage", "data.path", "data.cache_dir",
                  "data.download", "data.url", "data.sha256", "train.verbose")


@dataclass
class SweepResult:
    study: optuna.Study
    parent_run_id: str
    experiment_id: str
    registered_version: str | None


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


def config_fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that defines what the study searches."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("tracking")
    for key in RESUMABLE_KEYS:
        group, name = key.split(".")
        container[group].pop(name, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def open_study(cfg: DictConfig) -> optuna.Study:
    """Create the study, or resume it if it exists and searches the same thing."""
    sweep = cfg.sweep
    study = optuna.create_study(
        study_name=sweep.study_name,
        storage=sweep.storage,
        direction=sweep.direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=sweep.pruner.n_startup_trials, n_warmup_steps=sweep.pruner.n_warmup_steps
        ),
        load_if_exists=True,
    )
    fingerprint = config_fingerprint(cfg)
    previous = study.user_attrs.get("config_fingerprint")
    if previous is None:
        study.set_user_attr("config_fingerprint", fingerprint)
        study.set_user_attr("config", OmegaConf.to_container(cfg, resolve=True))
    elif previous != fingerprint:
        raise ConfigError(
            f"study {sweep.study_name!r} in {sweep.storage} was made with a different config; "
            "set sweep.study_name=<new name> to start a new study, or restore the old settings"
        )
    return study


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class Objective:
    """Trains one sampled config per trial inside a nested MLflow run with an honest status."""

    def __init__(self, cfg: DictConfig, data: TokenizedData):
        self.cfg = cfg
        self.data = data

    def __call__(self, trial: optuna.Trial) -> float:
        trial_cfg = apply_sample(self.cfg, sample_params(trial, self.cfg.sweep.space))
        run = mlflow.start_run(run_name=f"trial-{trial.number:03d}", nested=True, tags=self._tags(trial))
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        try:
            mlflow.log_params(tracking.config_params(trial_cfg))
            result = train(
                trial_cfg, self.data,
                # Metrics first: the epoch that gets a trial pruned must still be on record.
                callbacks=[tracking.EpochMetricsCallback(), KerasPruningCallback(trial, self.cfg.sweep.objective)],
            )
        except optuna.TrialPruned as pruned:
            tracking.end_run("KILLED", {"state": "pruned", "pruned": "true", "pruned_reason": str(pruned)})
            raise
        except Exception as err:
            tracking.end_run("FAILED", {"state": "failed", "error": f"{type(err).__name__}: {err}"[:5000]})
            raise
        mlflow.log_metrics({f"best_{k}" if k.startswith("val_") else k: v for k, v in result.metrics.items()})
        tracking.log_keras_model(result.model)
        for name, value in result.metrics.items():
            trial.set_user_attr(name, value)
        tracking.end_run("FINISHED", {"state": "complete"})
        return result.metrics[self.cfg.sweep.objective]

    def _tags(self, trial: optuna.Trial) -> dict[str, str]:
        return {"optuna.study": self.cfg.sweep.study_name, "optuna.trial_number": str(trial.number),
                "role": "trial"}


def run_sweep(cfg: DictConfig) -> SweepResult:
    """Run the trials the study still misses, log its summary and register its best model."""
    experiment_id = tracking.connect(cfg.tracking)
    study = open_study(cfg)
    data = load_data(cfg)
    remaining = cfg.sweep.n_trials - count_finished(study)
    with mlflow.start_run(run_name=f"sweep-{cfg.sweep.study_name}", tags=_parent_tags(cfg)) as parent:
        mlflow.log_params({"sweep.n_trials": cfg.sweep.n_trials, "sweep.objective": cfg.sweep.objective,
                           "sweep.space": json.dumps(OmegaConf.to_container(cfg.sweep.space))})
        if remaining > 0:
            log.info("study %s: %d of %d trials still to run", study.study_name, remaining, cfg.sweep.n_trials)
            study.optimize(
                Objective(cfg, data), n_trials=remaining, timeout=cfg.sweep.timeout,
                catch=(Exception,), show_progress_bar=True, gc_after_trial=True,
            )
        else:
            log.info("study %s already has %d finished trials; nothing to run", study.study_name, cfg.sweep.n_trials)
        report.log_study(study)
        version = register_best(cfg, study, data)
    return SweepResult(study, parent.info.run_id, experiment_id, version)


def _parent_tags(cfg: DictConfig) -> dict[str, str]:
    return {"role": "sweep", "optuna.study": cfg.sweep.study_name, "sweep.engine": "optuna",
            "sweep.algorithm": "tpe", "optuna.storage": cfg.sweep.storage}


def register_best(cfg: DictConfig, study: optuna.Study, data: TokenizedData) -> str | None:
    """Test-evaluate the best trial's model once and register it as a raw-text model version."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.warning("no completed trial: nothing to register")
        return None
    best = study.best_trial
    model_name = cfg.tracking.model_name
    existing = registry.find_version(model_name, study=study.study_name, trial_number=str(best.number))
    if existing is not None:
        log.info("best trial %d is already %s version %s", best.number, model_name, existing.version)
        return str(existing.version)
    trained = tracking.load_keras_model(best.user_attrs["mlflow_run_id"])
    test_metrics = {f"test_{k}": v for k, v in evaluate(trained, data.x_test, data.y_test).items()}
    mlflow.log_metrics(test_metrics)
    text_model = end_to_end(trained, make_vectorizer(cfg.data, data.vocabulary))
    info = tracking.log_text_model(text_model, registered_model_name=model_name)
    version = str(info.registered_model_version)
    val_metrics = {k: best.user_attrs[k] for k in ("val_loss", "val_accuracy", "val_auc") if k in best.user_attrs}
    tags = {"study": study.study_name, "trial_number": best.number, "trial_run_id": best.user_attrs["mlflow_run_id"],
            "test_samples": len(data.y_test), **val_metrics, **test_metrics}
    registry.tag_version(model_name, version, tags)
    registry.describe_version(model_name, version, report.version_description(study, best, test_metrics))
    log.info("registered %s version %s (trial %d, test accuracy %.4f)",
             model_name, version, best.number, test_metrics["test_accuracy"])
    return version
