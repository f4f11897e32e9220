"""Find and read aclImdb (directory or .tar.gz), subsample it and split off validation.

sentiment.tokens turns the reviews into token ids; a sweep reads the archive once (ReviewSplits)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from omegaconf import DictConfig
from platformdirs import user_cache_dir
from sklearn.model_selection import train_test_split

from sentiment.errors import DatasetError

log = logging.getLogger(__name__)

LABELS = {"neg": 0, "pos": 1}
SPLITS = ("train", "test")
SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "aclImdb_labeled.tar.gz"
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
    digest = file_sha256(Path(tmp.name))
    if digest != sha256:
        os.unlink(tmp.name)
        raise DatasetError(f"download of {url} has sha256 {digest}, expected {sha256}: try again")
    os.replace(tmp.name, target)
    return target


def file_sha256(path: Path) -> str:
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


class Splits(NamedTuple):
    train: Reviews
    val: Reviews
    test: Reviews  # read only for the final evaluation of a chosen model
    source: str    # the directory or archive they came from


def load_splits(cfg: DictConfig) -> Splits:
    """Raw train/val/test reviews for this config; test is only read for final evaluation."""
    source = resolve_source(cfg.data)
    splits = read_reviews(source)
    train = subsample(splits["train"], cfg.data.train_samples, cfg.seed)
    test = subsample(splits["test"], cfg.data.test_samples, cfg.seed)
    train, val = split_train_val(train, cfg.data.val_fraction, cfg.seed, cfg.data.val_split)
    return Splits(train, val, test, str(source))


def load_test_reviews(cfg: DictConfig) -> Reviews:
    """The held-out test reviews as raw text (the same subsample for every model)."""
    return load_splits(cfg).test


class ReviewSplits:
    """cfg's splits, read from the archive on first use and kept: a sweep hands one to the token
    cache, word2vec, the baseline and the final evaluation, so it reads the archive at most once
    (not at all when the caches are warm and the baseline is logged). Trial variants share it:
    the keys that choose the reviews (config.SPLIT_KEYS) are never searched."""

    def __init__(self, cfg: DictConfig):
        self._cfg = cfg
        self._splits: Splits | None = None

    def get(self) -> Splits:
        if self._splits is None:
            self._splits = load_splits(self._cfg)
        return self._splits
