"""Word vectors trained on the training split (gensim word2vec), to initialise the Embedding.

Only the training reviews are read, so no validation or test text leaks into the model. The
matrix is cached per vocabulary and word2vec setting, like the token ids.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from sentiment.config import VOCABULARY_KEYS
from sentiment.data import cache_dir
from sentiment.tokens import TokenizedData, cache_key, token_streams

log = logging.getLogger(__name__)


def embedding_matrix(cfg: DictConfig, data: TokenizedData) -> np.ndarray:
    """(len(data.vocabulary), model.embedding_dim) word2vec vectors; row 0 (padding) is zero."""
    vocabulary = data.vocabulary
    settings = dict(cfg.model.word2vec)
    key = cache_key(cfg, VOCABULARY_KEYS, dim=cfg.model.embedding_dim, **settings)
    path = cache_dir(cfg.data) / f"word2vec-{key}.npy"
    if path.exists():
        try:
            matrix = np.load(path, allow_pickle=False)
            if matrix.shape == (len(vocabulary), cfg.model.embedding_dim):
                log.info("using word2vec embeddings cached at %s", path)
                return matrix
        except (OSError, ValueError) as err:
            log.warning("word2vec cache %s is unreadable (%s); rebuilding it", path, err)
    matrix = train_word2vec(cfg, data)
    _write_atomically(path, matrix)
    return matrix


def train_word2vec(cfg: DictConfig, data: TokenizedData) -> np.ndarray:
    from gensim.models import Word2Vec

    vocabulary = data.vocabulary
    settings = cfg.model.word2vec
    # gensim keys are strings; a token id as text keeps words and ids in one table.
    sentences = [[str(i) for i in ids] for ids in token_streams(cfg, data)]
    start = time.perf_counter()
    log.info("training word2vec (%d-d, skip-gram) on %d training reviews", cfg.model.embedding_dim, len(sentences))
    w2v = Word2Vec(
        sentences, vector_size=cfg.model.embedding_dim, sg=1, window=settings.window, min_count=1,
        negative=settings.negative, epochs=settings.epochs, seed=cfg.seed, workers=os.cpu_count() or 1,
    )
    rng = np.random.default_rng(cfg.seed)
    # Words word2vec never saw (rare in training) start small and random, as Keras would.
    matrix = rng.uniform(-0.05, 0.05, size=(len(vocabulary), cfg.model.embedding_dim)).astype("float32")
    for index in range(2, len(vocabulary)):
        token = str(index)
        if token in w2v.wv.key_to_index:
            matrix[index] = w2v.wv[token]
    matrix[0] = 0.0  # padding
    log.info("word2vec done in %.0f s", time.perf_counter() - start)
    return matrix


def _write_atomically(path: Path, matrix: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
        np.save(tmp, matrix)
    os.replace(tmp.name, path)
