"""Word vectors trained on the training split: the Embedding they initialise, and their cache."""

from pathlib import Path

import numpy as np

from sentiment.config import apply_sample
from sentiment.embeddings import embedding_matrix
from sentiment.model import build_model
from sentiment.tokens import load_data


def test_word2vec_vectors_initialise_the_embedding_and_are_cached(tiny_cfg):
    cfg = apply_sample(tiny_cfg, {"model.embedding_init": "word2vec"})
    data = load_data(cfg)
    matrix = embedding_matrix(cfg, data)
    assert matrix.shape == (len(data.vocabulary), cfg.model.embedding_dim) and not matrix[0].any()
    cached = list((Path(cfg.data.cache_dir)).glob("word2vec-*.npy"))
    assert len(cached) == 1 and np.array_equal(np.load(cached[0]), matrix)
    model = build_model(cfg, vocab_size=len(data.vocabulary), embeddings=matrix)
    assert np.array_equal(model.get_layer("embedding").get_weights()[0], matrix)
    frozen = build_model(apply_sample(cfg, {"model.embedding_trainable": False}), len(data.vocabulary), matrix)
    assert not frozen.get_layer("embedding").trainable
