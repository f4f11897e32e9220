"""Data and training throughput: load and tokenize, then reviews/s and tokens/s of one epoch."""

from __future__ import annotations

import time
from pathlib import Path

import keras
from omegaconf import DictConfig

from sentiment.config import apply_sample, load_config
from sentiment.model import build_model
from sentiment.tokens import load_data, to_dataset


def time_data(base: list[str], workdir: Path) -> tuple[dict, DictConfig]:
    """Load + tokenize into an empty cache (cold), then again from the cache."""
    cfg = load_config(base + [f"data.cache_dir={workdir / 'cache'}"])
    start = time.perf_counter()
    load_data(cfg)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    load_data(cfg)
    return {"load_tokenize_cold_s": round(cold, 2), "load_cached_s": round(time.perf_counter() - start, 3)}, cfg


def time_epoch(cfg: DictConfig, data, n: int, **overrides) -> dict:
    """Reviews/s and real (non-padding) tokens/s of one training epoch over n reviews."""
    run_cfg = apply_sample(cfg, overrides)
    keras.backend.clear_session()
    model = build_model(run_cfg, len(data.vocabulary))
    x, y = data.x_train[:n], data.y_train[:n]
    ds = to_dataset(x, y, run_cfg.data.batch_size, shuffle_seed=0, bucket_boundaries=run_cfg.data.bucket_boundaries)
    _timed_fit(model, ds)  # a whole epoch first: every batch shape is traced outside the timing
    seconds = min(_timed_fit(model, ds) for _ in range(2))  # best of two: the machine is shared
    return {**{k: v for k, v in overrides.items()}, "reviews_per_s": round(len(x) / seconds, 1),
            "tokens_per_s": round(int((x > 0).sum()) / seconds), "epoch_s": round(seconds, 2)}


def _timed_fit(model, ds) -> float:
    start = time.perf_counter()
    model.fit(ds, shuffle=False, verbose=0)  # the tf.data pipeline shuffles, seeded
    return time.perf_counter() - start


THROUGHPUT_CASES = [
    {"model.units": 32}, {"model.units": 64}, {"model.units": 128},
    {"model.units": 64, "regularizer.recurrent_dropout": 0.2},
    {"model.units": 64, "data.bucket_boundaries": []},      # before padding-aware batching
    {"model.units": 64, "data.batch_size": 64, "data.bucket_boundaries": []},  # the first defaults
]
