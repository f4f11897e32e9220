"""Reviews -> token ids: the vectorizer (adapted on the training split only), the token cache
(computed once per data config) and the length-bucketed tf.data pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sentiment.config import TOKEN_KEYS
from sentiment.data import ReviewSplits, cache_dir, resolve_source
from sentiment.lineage import split_digests

log = logging.getLogger(__name__)

CACHE_FORMAT = 4  # bump when the cached arrays change meaning (e.g. standardization); 4: with their lineage
# Bucketed datasets have no known length, so Keras "runs out of data" at every epoch's end.
warnings.filterwarnings("ignore", message="Your input ran out of data")


@dataclass
class TokenizedData:
    """Padded token ids per split plus the vocabulary that produced them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    vocabulary: list[str]
    source: str
    # The raw reviews behind the arrays, read on first use (word2vec, the baseline, the final
    # evaluation); never cached with them.
    reviews: ReviewSplits | None = None
    lineage: dict[str, str] = field(default_factory=dict)  # split -> digest of its reviews (sentiment.lineage)


def make_vectorizer(data_cfg: DictConfig, vocabulary: list[str] | None = None):
    """Raw text -> token ids of every word -> data.sequence_length ids from data.truncate's side.

    Its first layer (the TextVectorization) alone gives a review's whole token stream.
    """
    import keras

    from sentiment.model_code import KeepTokens, standardize_review

    text_to_ids = keras.layers.TextVectorization(
        max_tokens=data_cfg.vocab_size, standardize=standardize_review, vocabulary=vocabulary, name="text_to_ids"
    )
    keep = KeepTokens(data_cfg.sequence_length, data_cfg.truncate, name="keep_tokens")
    return keras.Sequential([text_to_ids, keep], name="vectorizer")


def tokenize(cfg: DictConfig, reviews: ReviewSplits) -> TokenizedData:
    """Adapt the vocabulary on the training split only, then turn every split into ids."""
    import tensorflow as tf

    train, val, test, source = reviews.get()
    vectorizer = make_vectorizer(cfg.data)
    text_to_ids = vectorizer.layers[0]
    text_to_ids.adapt(tf.data.Dataset.from_tensor_slices(train.texts).batch(1024))
    return TokenizedData(
        *(array for split in (train, val, test) for array in (_vectorize(vectorizer, split.texts), split.labels)),
        vocabulary=[str(token) for token in text_to_ids.get_vocabulary()], source=source, reviews=reviews,
        lineage=split_digests(reviews.get()),
    )


def token_streams(cfg: DictConfig, data: TokenizedData) -> Iterator[list[int]]:
    """Every training review as its full list of token ids (no truncation, no padding)."""
    train = (data.reviews or ReviewSplits(cfg)).get().train
    text_to_ids = make_vectorizer(cfg.data, data.vocabulary).layers[0]
    for start in range(0, len(train), 1024):
        for row in text_to_ids(train.texts[start:start + 1024]).numpy():
            yield row[row > 0].tolist()


def _vectorize(vectorizer, texts: list[str], batch: int = 2048) -> np.ndarray:
    import tensorflow as tf

    parts = [vectorizer(tf.constant(texts[i : i + batch])).numpy().astype("int32")
             for i in range(0, len(texts), batch)]
    return np.concatenate(parts)


def cache_key(cfg: DictConfig, keys: tuple[str, ...] = TOKEN_KEYS, **extra) -> str:
    """Names what a cached file was computed from: the data file, the seed and the data `keys`."""
    source = resolve_source(cfg.data)
    stat = source.stat()
    fields = {
        "format": CACHE_FORMAT,
        "source": str(source.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "seed": cfg.seed,
        **{key.removeprefix("data."): OmegaConf.select(cfg, key) for key in keys},
        **extra,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_data(cfg: DictConfig, reviews: ReviewSplits | None = None) -> TokenizedData:
    """Tokenized arrays for this data config, computed once and reused from the disk cache.
    `reviews` (cfg's splits, read on first use) is handed on, so the archive is read once."""
    reviews = reviews or ReviewSplits(cfg)
    path = cache_dir(cfg.data) / f"imdb-{cache_key(cfg)}.npz"
    cached = _read_cache(path)
    if cached is not None:
        log.info("using tokenized data cached at %s", path)
        cached.reviews = reviews
        return cached
    log.info("tokenizing %s (cached afterwards at %s)", resolve_source(cfg.data), path)
    data = tokenize(cfg, reviews)
    _write_cache(path, data)
    return data


def data_for(variant: DictConfig, base: DictConfig, data: TokenizedData) -> TokenizedData:
    """The arrays for `variant` (a trial's or a member's config): `base`'s `data` when they agree
    on every token key, else its own (cached per data config: tokenized once per choice). The
    reviews are the same either way: split keys are never searched."""
    same_tokens = all(OmegaConf.select(variant, key) == OmegaConf.select(base, key) for key in TOKEN_KEYS)
    return data if same_tokens else load_data(variant, data.reviews)


def _read_cache(path: Path) -> TokenizedData | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _ARRAYS}
            vocabulary, source = npz["vocabulary"].tolist(), str(npz["source"])
            lineage = json.loads(str(npz["lineage"]))
        for split in ("train", "val", "test"):
            if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
                raise ValueError(f"{split} ids and labels differ in length")
    except Exception as err:  # any damage means: rebuild, never train on a broken cache
        log.warning("tokenized cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    return TokenizedData(**arrays, vocabulary=vocabulary, source=source, lineage=lineage)


def _write_cache(path: Path, data: TokenizedData) -> None:
    # Write then rename, so a concurrent reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **{k: getattr(data, k) for k in _ARRAYS},
                 vocabulary=np.array(data.vocabulary), source=np.array(data.source),
                 lineage=np.array(json.dumps(data.lineage)))
    os.replace(tmp.name, path)
def to_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None,
               bucket_boundaries: list[int] | None = None):
    """tf.data pipeline over in-memory arrays; shuffles (seeded) for training only.

    With bucket_boundaries, reviews are grouped by length and each batch is padded only up to
    its bucket's bound, so the LSTM steps over far less padding (the order of rows changes).
    Fixed bounds keep the number of batch shapes small: with a new shape per batch, TensorFlow
    falls back to a shape-generic graph that runs ~1.6x slower on CPU.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("float32")))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    bounds = [b for b in (bucket_boundaries or []) if b < x.shape[1]]
    if not bounds:
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    # Padding (id 0) only trails a review, so its length is its count of non-zero ids (at least 1).
    ds = ds.map(lambda ids, label: (ids[: tf.maximum(tf.math.count_nonzero(ids, dtype=tf.int32), 1)], label),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.bucket_by_sequence_length(
        lambda ids, label: tf.shape(ids)[0],
        # A bucket [a, b) is padded to b - 1; the last one to the full sequence length.
        bucket_boundaries=[b + 1 for b in bounds] + [x.shape[1] + 1],
        bucket_batch_sizes=[batch_size] * (len(bounds) + 2),
        pad_to_bucket_boundary=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE)
