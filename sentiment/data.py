"""Read aclImdb (directory or .tar.gz), split it, tokenize once and cache the arrays."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from omegaconf import DictConfig, OmegaConf
from platformdirs import user_cache_dir
from sklearn.model_selection import train_test_split

from sentiment.config import TOKEN_KEYS
from sentiment.errors import DatasetError

log = logging.getLogger(__name__)

LABELS = {"neg": 0, "pos": 1}
SPLITS = ("train", "test")
CACHE_FORMAT = 3  # bump when the cached arrays change meaning (e.g. standardization)
SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "aclImdb_labeled.tar.gz"
# Bucketed datasets have no known length, so Keras "runs out of data" at every epoch's end.
warnings.filterwarnings("ignore", message="Your input ran out of data")
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")
_REVIEW_ID = re.compile(r"/(\d+)_\d+\.txt$")  # aclImdb names a review <id>_<rating>.txt
# data.val_split=id_blocks: aclImdb numbers one movie's reviews consecutively (at most 30 per
# movie), so whole blocks of ids go to validation and their movies' reviews of that label are
# never trained on, much as the test movies are not (pos and neg are numbered apart, so a movie's
# reviews of the other label may be). 250 ids per block; fewer on small data, >= 50 blocks a label.
VAL_BLOCK_IDS = 250
MIN_VAL_BLOCKS = 50


@dataclass
class Reviews:
    texts: list[str]
    labels: np.ndarray  # 1 = positive
    ids: np.ndarray     # the <id> of aclImdb's <id>_<rating>.txt (-1 where a file is named otherwise)

    def __len__(self) -> int:
        return len(self.texts)


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


# --- locating the data --------------------------------------------------------------------


def cache_dir(data_cfg: DictConfig) -> Path:
    return Path(data_cfg.cache_dir or user_cache_dir("sentiment-sweep"))


def resolve_source(data_cfg: DictConfig) -> Path:
    """data.path, then $IMDB_DATA, then the shared archive, then the download cache/download."""
    for origin, candidate in (("data.path", data_cfg.path), ("$IMDB_DATA", os.environ.get("IMDB_DATA"))):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.exists():
                raise DatasetError(f"{origin} points to {path}, which does not exist")
            return path
    if SHARED_ARCHIVE.exists():
        return SHARED_ARCHIVE
    downloaded = cache_dir(data_cfg) / Path(data_cfg.url).name
    if downloaded.exists():
        return downloaded
    if data_cfg.download:
        return download(data_cfg.url, data_cfg.sha256, downloaded)
    raise DatasetError(
        "no IMDb data found: set data.path=<aclImdb dir or .tar.gz>, export IMDB_DATA, "
        f"put the archive at {SHARED_ARCHIVE}, or allow data.download=true"
    )


def download(url: str, sha256: str, target: Path) -> Path:
    """Fetch url to target, verifying its sha256 before the file appears under its name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, target)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as err:
            os.unlink(tmp.name)
            raise DatasetError(
                f"could not download {url} ({err}); set data.path or IMDB_DATA to a local copy"
            ) from err
    digest = _sha256(Path(tmp.name))
    if digest != sha256:
        os.unlink(tmp.name)
        raise DatasetError(f"download of {url} has sha256 {digest}, expected {sha256}: try again")
    os.replace(tmp.name, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading the aclImdb layout -------------------------------------------------------------


def read_reviews(source: Path) -> dict[str, Reviews]:
    """All labeled reviews per split, sorted by file name so the order never depends on the disk."""
    items: dict[str, list[tuple[str, str, int]]] = {split: [] for split in SPLITS}
    empty = 0
    for name, raw in _iter_members(source):
        match = _MEMBER.search(name)
        if not match:
            continue
        split, label = match.groups()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(f"{source}: {name} is not UTF-8 text; replace the dataset copy") from None
        if not text.strip():
            empty += 1  # documented skip: an empty review has no label signal
            continue
        items[split].append((name, text, LABELS[label]))
    if empty:
        log.warning("skipped %d empty review files in %s", empty, source)
    for split in SPLITS:
        counts = {lbl: sum(1 for *_, y in items[split] if y == LABELS[lbl]) for lbl in LABELS}
        missing = [lbl for lbl, n in counts.items() if n == 0]
        if missing:
            raise DatasetError(
                f"{source} has no reviews in aclImdb/{split}/{missing[0]}/: expected the official "
                "aclImdb layout (aclImdb/{train,test}/{pos,neg}/*.txt)"
            )
    return {split: _to_reviews(sorted(items[split])) for split in SPLITS}


def _to_reviews(items: list[tuple[str, str, int]]) -> Reviews:
    ids = [int(m.group(1)) if (m := _REVIEW_ID.search(name)) else -1 for name, _, _ in items]
    return Reviews([text for _, text, _ in items], np.array([y for *_, y in items], dtype="int32"),
                   np.array(ids, dtype="int64"))


def _iter_members(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_dir():
        root = source.parent if source.name == "aclImdb" else source
        for path in sorted(root.glob("aclImdb/*/*/*.txt")):
            yield path.relative_to(root).as_posix(), path.read_bytes()
        return
    try:
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                if member.isfile() and _MEMBER.search(member.name):
                    yield member.name, archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DatasetError(
            f"{source} is corrupt or truncated ({type(err).__name__}: {err}); re-download it"
        ) from err


# --- subsampling and splitting --------------------------------------------------------------


def subsample(reviews: Reviews, n: int | None, seed: int) -> Reviews:
    """A seeded subsample with (as near as possible) equal positive and negative reviews."""
    if n is None or n >= len(reviews):
        return reviews
    rng = np.random.default_rng(seed)
    picked = []
    for label, share in ((0, n // 2), (1, n - n // 2)):
        candidates = np.flatnonzero(reviews.labels == label)
        picked.append(rng.choice(candidates, size=min(share, len(candidates)), replace=False))
    return _pick(reviews, np.sort(np.concatenate(picked)))


def _pick(reviews: Reviews, index: np.ndarray) -> Reviews:
    return Reviews([reviews.texts[i] for i in index], reviews.labels[index], reviews.ids[index])


def split_train_val(reviews: Reviews, val_fraction: float, seed: int,
                    method: str = "id_blocks") -> tuple[Reviews, Reviews]:
    """Seeded validation split carved from the training reviews, stratified by label:
    whole blocks of review ids (`id_blocks`, see VAL_BLOCK_IDS) or single reviews (`random`)."""
    index = np.arange(len(reviews))
    if method == "random":
        train_idx, val_idx = train_test_split(
            index, test_size=val_fraction, random_state=seed, stratify=reviews.labels
        )
        return _pick(reviews, np.sort(train_idx)), _pick(reviews, np.sort(val_idx))
    val = np.zeros(len(reviews), dtype=bool)
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        of_label = reviews.labels == label
        blocks = id_blocks(reviews.ids[of_label])
        names = np.unique(blocks)
        chosen = rng.choice(names, size=max(1, round(len(names) * val_fraction)), replace=False)
        val[np.flatnonzero(of_label)[np.isin(blocks, chosen)]] = True
    return _pick(reviews, np.flatnonzero(~val)), _pick(reviews, np.flatnonzero(val))


def id_blocks(ids: np.ndarray) -> np.ndarray:
    """The block of each review id: VAL_BLOCK_IDS consecutive ids, narrower when there are too
    few ids for MIN_VAL_BLOCKS blocks."""
    if (ids < 0).any():
        raise DatasetError("data.val_split=id_blocks needs review files named <id>_<rating>.txt as in "
                           "aclImdb; rename them or set data.val_split=random")
    width = max(1, min(VAL_BLOCK_IDS, (int(ids.max()) + 1) // MIN_VAL_BLOCKS))
    return ids // width


def load_splits(cfg: DictConfig) -> tuple[Reviews, Reviews, Reviews, str]:
    """Raw train/val/test reviews for this config; test is only read for final evaluation."""
    source = resolve_source(cfg.data)
    splits = read_reviews(source)
    train = subsample(splits["train"], cfg.data.train_samples, cfg.seed)
    test = subsample(splits["test"], cfg.data.test_samples, cfg.seed)
    train, val = split_train_val(train, cfg.data.val_fraction, cfg.seed, cfg.data.val_split)
    return train, val, test, str(source)


def load_test_reviews(cfg: DictConfig) -> Reviews:
    """The held-out test reviews as raw text (the same subsample for every model)."""
    return load_splits(cfg)[2]


# --- tokenizing and caching -----------------------------------------------------------------


def make_vectorizer(data_cfg: DictConfig, vocabulary: list[str] | None = None):
    """Raw text -> token ids of every word -> data.sequence_length ids from data.truncate's side.

    Its first layer (the TextVectorization) alone gives a review's whole token stream.
    """
    import keras

    from sentiment.serving import KeepTokens, standardize_review

    text_to_ids = keras.layers.TextVectorization(
        max_tokens=data_cfg.vocab_size, standardize=standardize_review, vocabulary=vocabulary, name="text_to_ids"
    )
    keep = KeepTokens(data_cfg.sequence_length, data_cfg.truncate, name="keep_tokens")
    return keras.Sequential([text_to_ids, keep], name="vectorizer")


def tokenize(cfg: DictConfig) -> TokenizedData:
    """Adapt the vocabulary on the training split only, then turn every split into ids."""
    import tensorflow as tf

    train, val, test, source = load_splits(cfg)
    vectorizer = make_vectorizer(cfg.data)
    text_to_ids = vectorizer.layers[0]
    text_to_ids.adapt(tf.data.Dataset.from_tensor_slices(train.texts).batch(1024))
    ids = lambda r: _vectorize(vectorizer, r.texts)  # noqa: E731
    return TokenizedData(
        ids(train), train.labels, ids(val), val.labels, ids(test), test.labels,
        [str(token) for token in text_to_ids.get_vocabulary()], source,
    )


def token_streams(cfg: DictConfig, vocabulary: list[str]) -> Iterator[list[int]]:
    """Every training review as its full list of token ids (no truncation, no padding)."""
    train = load_splits(cfg)[0]
    text_to_ids = make_vectorizer(cfg.data, vocabulary).layers[0]
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


def load_data(cfg: DictConfig) -> TokenizedData:
    """Tokenized arrays for this data config, computed once and reused from the disk cache."""
    path = cache_dir(cfg.data) / f"imdb-{cache_key(cfg)}.npz"
    cached = _read_cache(path)
    if cached is not None:
        log.info("using tokenized data cached at %s", path)
        return cached
    log.info("tokenizing %s (cached afterwards at %s)", resolve_source(cfg.data), path)
    data = tokenize(cfg)
    _write_cache(path, data)
    return data


def data_for(variant: DictConfig, base: DictConfig, data: TokenizedData) -> TokenizedData:
    """The arrays for `variant` (a trial's or a member's config): `base`'s `data` when they agree
    on every token key, else its own (cached per data config: tokenized once per choice)."""
    same_tokens = all(OmegaConf.select(variant, key) == OmegaConf.select(base, key) for key in TOKEN_KEYS)
    return data if same_tokens else load_data(variant)


def _read_cache(path: Path) -> TokenizedData | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _ARRAYS}
            vocabulary, source = npz["vocabulary"].tolist(), str(npz["source"])
        for split in ("train", "val", "test"):
            if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
                raise ValueError(f"{split} ids and labels differ in length")
    except Exception as err:  # any damage means: rebuild, never train on a broken cache
        log.warning("tokenized cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    return TokenizedData(**arrays, vocabulary=vocabulary, source=source)


def _write_cache(path: Path, data: TokenizedData) -> None:
    # Write then rename, so a concurrent reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **{k: getattr(data, k) for k in _ARRAYS},
                 vocabulary=np.array(data.vocabulary), source=np.array(data.source))
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
