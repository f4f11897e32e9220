"""Compose and validate the Hydra config; apply search-space samples to copies of it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sentiment.engines import BASELINES, ENGINES, PRUNERS, STACKED_BASELINE
from sentiment.errors import ConfigError
from sentiment.stores import reject_password_in_url

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
# The choices of the categorical settings. The layers of model_code.py implement them and list
# them too (that file travels alone with every logged model); a test holds the two lists together.
TRUNCATION_SIDES = ("head", "tail", "head+tail")
VAL_SPLITS = ("id_blocks", "random")
POOLING_MODES = ("last", "max", "mean", "max+mean")
EMBEDDING_INITS = ("random", "word2vec")
LR_SCHEDULES = ("constant", "cosine")
FINAL_MODELS = ("best", "ensemble", "stack")
# Keys an experiment may add rather than only change: new search dimensions.
EXTENSIBLE_PREFIXES = ("sweep.space.",)

# --- what each setting is for: every list of keys in the code derives from these ------------
# The groups that define a trained model: every run logs them as params.
MODEL_GROUPS = ("data", "model", "regularizer", "train")
# Where things live, how long to run, what to do with the result: never what is trained or
# searched. A study resumes across changes to them, and runs do not log them as params.
OPERATIONAL_GROUPS = ("tracking", "promote", "baseline", "serve", "distil")
OPERATIONAL_KEYS = ("sweep.n_trials", "sweep.timeout", "sweep.storage", "sweep.keras_tuner_dir",
                    "sweep.warm_start", "sweep.warm_start_storage", "sweep.warm_start_k",
                    "sweep.final", "sweep.ensemble_size", "sweep.ensemble_noise_widths", "sweep.refit", "sweep.calibrate",
                    "sweep.heartbeat_interval", "sweep.grace_period", "sweep.max_retry",
                    "data.path", "data.cache_dir", "data.download", "data.url", "data.sha256")
# The data settings that decide which reviews are trained, validated and tested on: never a search
# dimension, or trials would be compared on different validation reviews.
SPLIT_KEYS = ("data.train_samples", "data.val_fraction", "data.val_split", "data.test_samples")
# The data settings that change the vocabulary, and with it every token id (word vectors' cache key) ...
VOCABULARY_KEYS = ("data.train_samples", "data.val_fraction", "data.val_split", "data.vocab_size")
# ... and those that also change the token arrays a model reads (the token cache's key).
TOKEN_KEYS = (*VOCABULARY_KEYS, "data.test_samples", "data.sequence_length", "data.truncate")


def list_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load_config(overrides: Iterable[str] = (), experiment: str | None = None) -> DictConfig:
    """Compose conf/config.yaml, then the experiment file, then command-line overrides."""
    overrides = list(overrides)
    if experiment and experiment not in list_experiments():
        raise ConfigError(
            f"unknown experiment {experiment!r}: choose one of {', '.join(list_experiments())} "
            f"(files in {EXPERIMENTS_DIR})"
        )
    extra = [f"+experiments={experiment}"] if experiment else []
    cfg = _compose(extra + overrides)
    _reject_unknown_keys(cfg, _compose([]), experiment)
    _drop_removed_dimensions(cfg)
    validate(cfg)
    return cfg


def _drop_removed_dimensions(cfg: DictConfig) -> None:
    """`sweep.space.NAME: null` (in an experiment or an override) removes a default dimension."""
    space = cfg.sweep.space
    cfg.sweep.space = {name: spec for name, spec in space.items() if spec is not None}


def _compose(overrides: list[str]) -> DictConfig:
    # The repo root on the search path makes experiments/ a Hydra config group.
    searchpath = f"hydra.searchpath=[file://{REPO_ROOT}]"
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[searchpath, *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"bad config override: {_first_line(err)}") from err


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _flat_keys(cfg: DictConfig) -> set[str]:
    return set(flatten(OmegaConf.to_container(cfg, resolve=False)))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; the names MLflow params and search keys use."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _reject_unknown_keys(cfg: DictConfig, base: DictConfig, experiment: str | None) -> None:
    known = _flat_keys(base)
    unknown = sorted(
        k for k in _flat_keys(cfg) - known if not k.startswith(EXTENSIBLE_PREFIXES)
    )
    if unknown:
        where = f"experiments/{experiment}.yaml or the overrides" if experiment else "the overrides"
        raise ConfigError(f"unknown config key {unknown[0]!r} in {where}: check its spelling")


def apply_sample(cfg: DictConfig, sample: dict[str, Any]) -> DictConfig:
    """A copy of cfg with each dotted key replaced by its sampled value."""
    trial_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in sample.items():
        if OmegaConf.select(trial_cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(f"sweep.space key {key!r} is not a config key")
        OmegaConf.update(trial_cfg, key, value, merge=False)
    return trial_cfg


_MISSING = object()


# --- validation: every check names the key and the accepted range -----------------------


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(cfg: DictConfig, key: str, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return
    _check(_is_int(value) and value > 0, key, value, "an integer > 0" + (" or null" if allow_none else ""))


def _fraction(cfg: DictConfig, key: str, low_open: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = _is_number(value) and (0 < value < 1 if low_open else 0 <= value < 1)
    _check(ok, key, value, "a number in (0, 1)" if low_open else "a number in [0, 1)")


def _one_of(cfg: DictConfig, key: str, choices: tuple) -> None:
    value = OmegaConf.select(cfg, key)
    _check(value in choices, key, value, "one of " + ", ".join(map(str, choices)))


def _validate_model(cfg: DictConfig) -> None:
    for key in ("model.units", "model.embedding_dim"):
        _positive_int(cfg, key)
    dense = cfg.model.dense_units
    _check(_is_int(dense) and dense >= 0, "model.dense_units", dense, "an integer >= 0 (0: no hidden layer)")
    _one_of(cfg, "model.pooling", POOLING_MODES)
    _one_of(cfg, "model.embedding_init", EMBEDDING_INITS)
    _check(isinstance(cfg.model.embedding_trainable, bool), "model.embedding_trainable",
           cfg.model.embedding_trainable, "true or false")
    for key in ("model.word2vec.window", "model.word2vec.negative", "model.word2vec.epochs"):
        _positive_int(cfg, key)
    _fraction(cfg, "regularizer.dropout")
    _fraction(cfg, "regularizer.recurrent_dropout")
    _fraction(cfg, "regularizer.embedding_dropout")
    _check(isinstance(cfg.model.bidirectional, bool), "model.bidirectional", cfg.model.bidirectional, "true or false")
    l2 = cfg.regularizer.l2
    _check(_is_number(l2) and l2 >= 0, "regularizer.l2", l2, "a number >= 0")


def _validate_data(cfg: DictConfig) -> None:
    for key in ("data.train_samples", "data.test_samples"):
        _positive_int(cfg, key, allow_none=True)
    train_samples = cfg.data.train_samples
    _check(train_samples is None or train_samples >= 10, "data.train_samples", train_samples,
           "null or at least 10 reviews (both classes in both splits)")
    _fraction(cfg, "data.val_fraction", low_open=True)
    _one_of(cfg, "data.val_split", VAL_SPLITS)
    _one_of(cfg, "data.truncate", TRUNCATION_SIDES)
    for key in ("data.vocab_size", "data.sequence_length", "data.batch_size"):
        _positive_int(cfg, key)
    bounds = list(cfg.data.bucket_boundaries or [])
    _check(all(_is_int(b) and b > 0 for b in bounds) and bounds == sorted(set(bounds)),
           "data.bucket_boundaries", bounds, "a strictly increasing list of positive lengths, or []")


def _validate_train(cfg: DictConfig) -> None:
    _positive_int(cfg, "train.max_epochs")
    lr = cfg.train.learning_rate
    _check(_is_number(lr) and lr > 0, "train.learning_rate", lr, "a number > 0")
    _one_of(cfg, "train.lr_schedule", LR_SCHEDULES)
    _non_negative(cfg, "train.adversarial_epsilon")
    momentum = cfg.train.ema_momentum
    _check(momentum is None or (_is_number(momentum) and 0 < momentum < 1), "train.ema_momentum", momentum,
           "null (off) or a number in (0, 1), e.g. 0.99")
    patience = cfg.train.early_stopping_patience
    _check(_is_int(patience) and patience >= 0, "train.early_stopping_patience", patience, "an integer >= 0")
    seed = cfg.train.seed
    _check(seed is None or (_is_int(seed) and seed >= 0), "train.seed", seed, "null or an integer >= 0")


OBJECTIVE_DIRECTIONS = {"val_loss": "minimize", "val_accuracy": "maximize", "val_auc": "maximize"}
# The same measures in metrics.classification_metrics (how an ensemble's members are chosen).
OBJECTIVE_METRICS = {"val_loss": "loss", "val_accuracy": "accuracy", "val_auc": "roc_auc"}


def maximizes(objective: str) -> bool:
    """Whether a higher value of the objective is better (early stopping, Keras Tuner, ensembles)."""
    return OBJECTIVE_DIRECTIONS[objective] == "maximize"


def _validate_sweep(cfg: DictConfig) -> None:
    sweep = cfg.sweep
    _positive_int(cfg, "sweep.n_trials")
    _check(sweep.engine in ENGINES, "sweep.engine", sweep.engine, " or ".join(ENGINES))
    algorithms = ENGINES[sweep.engine].algorithms
    _check(sweep.algorithm is None or sweep.algorithm in algorithms, "sweep.algorithm", sweep.algorithm,
           f"null or one of {', '.join(algorithms)} for engine {sweep.engine}")
    _one_of(cfg, "sweep.pruner.kind", tuple(PRUNERS))
    for key in ("sweep.pruner.min_epochs", "sweep.pruner.reduction_factor"):
        _positive_int(cfg, key)
    _check(sweep.timeout is None or (_is_number(sweep.timeout) and sweep.timeout > 0),
           "sweep.timeout", sweep.timeout, "null or a number of seconds > 0")
    _check(sweep.objective in OBJECTIVE_DIRECTIONS, "sweep.objective", sweep.objective,
           " or ".join(OBJECTIVE_DIRECTIONS))
    _check(bool(sweep.study_name), "sweep.study_name", sweep.study_name, "a non-empty name")
    _one_of(cfg, "sweep.final", FINAL_MODELS)
    _positive_int(cfg, "sweep.warm_start_k")
    _positive_int(cfg, "sweep.startup_trials")
    _check(isinstance(sweep.start_from_defaults, bool), "sweep.start_from_defaults", sweep.start_from_defaults,
           "true or false")
    _positive_int(cfg, "sweep.ensemble_size")
    _check(isinstance(sweep.refit, bool), "sweep.refit", sweep.refit, "true or false")
    _check(isinstance(sweep.calibrate, bool), "sweep.calibrate", sweep.calibrate, "true or false")
    _check(isinstance(sweep.seed_per_trial, bool), "sweep.seed_per_trial", sweep.seed_per_trial, "true or false")
    _validate_noise(cfg)
    _validate_heartbeat(cfg)
    _validate_baselines(cfg)
    _validate_tracking(cfg)
    _validate_distil(cfg)
    for name, spec in sweep.space.items():
        _validate_dimension(cfg, f"sweep.space.{name}", spec)


def _non_negative(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    _check(_is_number(value) and value >= 0, key, value, "a number >= 0")


def _validate_tracking(cfg: DictConfig) -> None:
    seconds = cfg.tracking.system_metrics_seconds
    _check(seconds is None or (_is_number(seconds) and seconds > 0), "tracking.system_metrics_seconds", seconds,
           "null (off) or a number of seconds > 0")
    reload = cfg.serve.reload_seconds
    _check(reload is None or (_is_number(reload) and reload > 0), "serve.reload_seconds", reload,
           "null (never) or a number of seconds > 0")
    _check(isinstance(cfg.serve.alias, str) and bool(cfg.serve.alias), "serve.alias", cfg.serve.alias,
           "an alias of the registered model, e.g. champion")


def _validate_distil(cfg: DictConfig) -> None:
    teacher = cfg.distil.teacher
    _check(teacher is None or (_is_int(teacher) and teacher >= 1), "distil.teacher", teacher,
           "null (@champion) or a version number >= 1")
    weight = cfg.distil.teacher_weight
    _check(_is_number(weight) and 0 <= weight <= 1, "distil.teacher_weight", weight, "a number in [0, 1]")
    folds = cfg.distil.held_out_folds
    _check(_is_int(folds) and (folds == 0 or folds >= 2), "distil.held_out_folds", folds,
           "0 (the teacher as served) or a number of folds >= 2")
    _check(isinstance(cfg.distil.alias, str) and bool(cfg.distil.alias), "distil.alias", cfg.distil.alias,
           "an alias name such as distilled")


def _validate_baselines(cfg: DictConfig) -> None:
    models = cfg.baseline.models
    _check(OmegaConf.is_list(models) and all(m in BASELINES for m in models), "baseline.models", models,
           f"a list of {', '.join(BASELINES)} (or [])")
    _check(cfg.sweep.final != "stack" or STACKED_BASELINE in models, "baseline.models", models,
           f"a list with {STACKED_BASELINE}: sweep.final=stack combines it with the LSTM")


def _validate_heartbeat(cfg: DictConfig) -> None:
    """A trial silent for the grace period is failed and retried: the period must outlast beats."""
    for key in ("sweep.heartbeat_interval", "sweep.grace_period"):
        _positive_int(cfg, key)
    _check(_is_int(cfg.sweep.max_retry) and cfg.sweep.max_retry >= 0, "sweep.max_retry", cfg.sweep.max_retry,
           "an integer >= 0")
    interval, grace = cfg.sweep.heartbeat_interval, cfg.sweep.grace_period
    _check(grace > interval, "sweep.grace_period", grace,
           f"more seconds than sweep.heartbeat_interval={interval}, or live trials would be failed between beats")


def _validate_noise(cfg: DictConfig) -> None:
    """The seed-noise repeats train the configured values, each with its own seed (search.noise)."""
    sweep = cfg.sweep
    _positive_int(cfg, "sweep.noise_repeats")
    _non_negative(cfg, "sweep.pruner.noise_widths")
    _non_negative(cfg, "sweep.ensemble_noise_widths")
    if sweep.noise_repeats >= 2 and not (sweep.start_from_defaults and sweep.seed_per_trial):
        raise ConfigError(f"sweep.noise_repeats={sweep.noise_repeats} repeats the configured values with a seed "
                          "each: it needs sweep.start_from_defaults=true and sweep.seed_per_trial=true "
                          "(or set sweep.noise_repeats=1: no noise estimate)")


def _validate_dimension(cfg: DictConfig, prefix: str, spec: DictConfig) -> None:
    kind = spec.get("type")
    _check(kind in ("int", "float", "categorical"), f"{prefix}.type", kind, "int, float or categorical")
    target = spec.get("key")
    _check(OmegaConf.select(cfg, str(target), default=_MISSING) is not _MISSING,
           f"{prefix}.key", target, "an existing config key such as model.units")
    _check(target not in SPLIT_KEYS, f"{prefix}.key", target,
           "a key that keeps the same validation reviews for every trial (not " + ", ".join(SPLIT_KEYS) + ")")
    if kind == "categorical":
        choices = spec.get("choices")
        _check(bool(choices), f"{prefix}.choices", choices, "a non-empty list")
        edges = list(choices)
    else:
        low, high = spec.get("low"), spec.get("high")
        _check(_is_number(low) and _is_number(high), f"{prefix}.low/high", (low, high), "two numbers")
        _check(low < high, f"{prefix}.low/high", (low, high), "low < high (the range is inverted or empty)")
        _check(not spec.get("log") or low > 0, f"{prefix}.low", low, "> 0 with log: true")
        step = spec.get("step")
        _check(step is None or (_is_number(step) and step > 0), f"{prefix}.step", step, "null or a number > 0")
        edges = [low, high]
    # Every edge of the range must itself be a valid config: units 0 or dropout 1 fail here.
    for edge in edges:
        try:
            _validate_values(apply_sample(cfg, {target: edge}))
        except ConfigError as err:
            raise ConfigError(f"{prefix} reaches an invalid value: {err}") from None


def _validate_values(cfg: DictConfig) -> None:
    _validate_model(cfg)
    _validate_data(cfg)
    _validate_train(cfg)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first invalid key; runs before any data or training."""
    _validate_values(cfg)
    _validate_sweep(cfg)
    for key in ("tracking.uri", "sweep.storage", "sweep.warm_start_storage"):
        reject_password_in_url(key, OmegaConf.select(cfg, key))
