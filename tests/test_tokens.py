"""Reviews -> token ids: the vocabulary, the token cache and the archive read once."""

import numpy as np
import pytest

from sentiment import data, tokens
from sentiment.data import ReviewSplits
from tests.conftest import TEST_ONLY


def test_vocabulary_is_adapted_on_training_split_only(tiny_cfg):
    tokenized = tokens.load_data(tiny_cfg)
    assert TEST_ONLY not in tokenized.vocabulary
    assert "great" in tokenized.vocabulary
    assert tokenized.x_train.shape == (90, 24) and tokenized.x_test.shape == (40, 24)
    # The test-only word is out of vocabulary: it maps to the [UNK] id 1 in every test review.
    assert all(1 in row for row in tokenized.x_test)


def test_tokenized_arrays_are_cached_and_reused(tiny_cfg, monkeypatch):
    first = tokens.load_data(tiny_cfg)
    monkeypatch.setattr(tokens, "tokenize", lambda cfg, reviews: pytest.fail("tokenized twice"))
    second = tokens.load_data(tiny_cfg)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert first.vocabulary == second.vocabulary


def test_corrupt_cache_is_detected_and_rebuilt(tiny_cfg):
    first = tokens.load_data(tiny_cfg)
    (cached,) = data.cache_dir(tiny_cfg.data).glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])
    rebuilt = tokens.load_data(tiny_cfg)
    np.testing.assert_array_equal(first.x_val, rebuilt.x_val)
    assert tokens._read_cache(cached) is not None


def test_the_archive_is_read_once_for_tokens_and_the_raw_reviews(tiny_cfg, monkeypatch):
    reads = []
    read_reviews = data.read_reviews
    monkeypatch.setattr(data, "read_reviews", lambda source: reads.append(source) or read_reviews(source))
    tokenized = tokens.load_data(tiny_cfg, ReviewSplits(tiny_cfg))
    test = tokenized.reviews.get().test  # what the final evaluation reads
    assert len(reads) == 1 and len(test) == len(tokenized.y_test)
    np.testing.assert_array_equal(test.labels, tokenized.y_test)


def test_a_warm_token_cache_reads_no_reviews(tiny_cfg, monkeypatch):
    tokens.load_data(tiny_cfg)
    monkeypatch.setattr(data, "read_reviews", lambda source: pytest.fail("read the archive"))
    again = tokens.load_data(tiny_cfg)
    assert again.x_train.shape == (90, 24) and again.reviews is not None

