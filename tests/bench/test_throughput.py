"""The benchmark's data and training throughput numbers on the tiny data: a cold load fills an
empty cache that the second load reads, and one timed epoch gives reviews/s and tokens/s."""

import logging
from pathlib import Path

import pytest

from sentiment.bench.throughput import time_data, time_epoch
from sentiment.tokens import load_data
from tests.conftest import tiny_overrides


@pytest.fixture
def bench_cfg(imdb_dir, tmp_path):
    """The config time_data returns as `make bench` calls it: base overrides, a fresh working directory."""
    workdir = tmp_path / "bench"
    workdir.mkdir()
    return time_data(tiny_overrides(imdb_dir, tmp_path), workdir)[1]


def test_time_data_loads_cold_into_the_empty_cache_then_from_it(imdb_dir, tmp_path, caplog):
    workdir = tmp_path / "bench"
    workdir.mkdir()
    with caplog.at_level(logging.INFO, logger="sentiment.tokens"):
        timings, cfg = time_data(tiny_overrides(imdb_dir, tmp_path), workdir)

    assert set(timings) == {"load_tokenize_cold_s", "load_cached_s"}
    assert Path(cfg.data.cache_dir) == workdir / "cache"  # the working directory's, not the base overrides' cache
    assert [p.suffix for p in (workdir / "cache").iterdir()] == [".npz"] and not (tmp_path / "cache").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split()[0] for m in messages if m.startswith(("tokenizing", "using tokenized"))] == ["tokenizing", "using"]
    assert timings["load_tokenize_cold_s"] > timings["load_cached_s"] >= 0


@pytest.mark.slow  # trains and times whole epochs: a benchmark's code, not the edit loop's
def test_time_epoch_gives_reviews_and_tokens_per_second_and_echoes_the_case(bench_cfg):
    cfg = bench_cfg
    data = load_data(cfg)
    n = 64
    case = {"model.units": 4, "data.batch_size": 8, "data.bucket_boundaries": []}  # like THROUGHPUT_CASES, tiny

    row = time_epoch(cfg, data, n, **case)

    assert {k: row[k] for k in case} == case
    assert set(row) == {*case, "reviews_per_s", "tokens_per_s", "epoch_s"}
    assert row["reviews_per_s"] > 0 and row["tokens_per_s"] > 0 and row["epoch_s"] > 0
    real_tokens_per_review = (data.x_train[:n] > 0).sum() / n  # padding is not counted
    assert row["tokens_per_s"] / row["reviews_per_s"] == pytest.approx(real_tokens_per_review, rel=0.01)
    assert n / row["reviews_per_s"] == pytest.approx(row["epoch_s"], abs=0.006)  # epoch_s: 2 decimals


@pytest.mark.slow
def test_time_epoch_counts_only_the_reviews_there_are(bench_cfg):
    cfg = bench_cfg
    data = load_data(cfg)
    row = time_epoch(cfg, data, 10_000, **{"model.units": 4})
    available = len(data.y_train)
    assert row["tokens_per_s"] / row["reviews_per_s"] == pytest.approx((data.x_train > 0).sum() / available, rel=0.01)
    assert available / row["reviews_per_s"] == pytest.approx(row["epoch_s"], abs=0.006)
