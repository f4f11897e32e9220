"""Tiny generated aclImdb data and one shrunk config that every test starts from."""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import mlflow
import pytest

from sentiment.config import load_config

POSITIVE = "great wonderful superb loved brilliant moving delight excellent".split()
NEGATIVE = "awful boring terrible hated dull mess waste poor".split()
NEUTRAL = "the movie film plot actor scene story was and a of it".split()
# Words that appear only outside the training split: they must never reach the vocabulary.
VAL_ONLY, TEST_ONLY = "valonlyword", "testonlyword"


def _review(rng: random.Random, words: list[str], n: int = 12) -> str:
    tokens = rng.choices(NEUTRAL, k=n) + rng.choices(words, k=4)
    rng.shuffle(tokens)
    return " ".join(tokens[:6]) + "<br /><br />" + " ".join(tokens[6:]) + "."


def write_imdb(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt with learnable word cues."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, words, rating in (("pos", POSITIVE, 9), ("neg", NEGATIVE, 2)):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                text = _review(rng, words)
                if split == "test":
                    text += f" {TEST_ONLY}"
                (folder / f"{i}_{rating}.txt").write_text(text, encoding="utf-8")
    (root / "aclImdb" / "imdb.vocab").write_text("\n".join(POSITIVE + NEGATIVE + NEUTRAL))
    return root / "aclImdb"


def write_archive(directory: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(directory, arcname="aclImdb")
    return target


@pytest.fixture(scope="session")
def imdb_dir(tmp_path_factory) -> Path:
    return write_imdb(tmp_path_factory.mktemp("imdb"))


@pytest.fixture(scope="session")
def imdb_archive(imdb_dir, tmp_path_factory) -> Path:
    return write_archive(imdb_dir, tmp_path_factory.mktemp("archive") / "aclImdb_v1.tar.gz")


def tiny_overrides(data_path: Path, tmp: Path) -> list[str]:
    """The project's config shrunk to seconds: small vocab, short reviews, tiny layers."""
    return [
        f"data.path={data_path}", f"data.cache_dir={tmp / 'cache'}",
        "data.sequence_length=24", "data.vocab_size=100", "data.batch_size=16", "data.val_fraction=0.25",
        "model.embedding_dim=8", "model.units=8", "model.dense_units=4",
        "train.max_epochs=2", "train.learning_rate=0.01",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"tracking.artifact_location={tmp / 'artifacts'}",
        f"sweep.storage=sqlite:///{tmp / 'optuna.db'}", "sweep.n_trials=2",
        "sweep.pruner.kind=median",  # never cuts before 3 trials finished: a 2-trial sweep keeps both models
        # One trial of the configured values and the best trial registered: what these tests were
        # written for; the seed-noise repeats and the noise-gated ensemble have tests of their own.
        "sweep.noise_repeats=1", "sweep.final=best", "sweep.ensemble_size=3",
        "sweep.space.units.low=4", "sweep.space.units.high=8", "sweep.space.units.step=4",
        "sweep.space.recurrent_dropout.high=0.1",
    ]


@pytest.fixture
def tiny_cfg(imdb_dir, tmp_path):
    return load_config(tiny_overrides(imdb_dir, tmp_path))


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch, tmp_path):
    """No test touches the user's stores or leaves an active run behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMDB_DATA", raising=False)
    yield
    while mlflow.active_run():
        mlflow.end_run()


def trial_runs(parent_run_id: str) -> list:
    """The trial runs nested under a sweep's parent run, in any experiment."""
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.role = 'trial'")


WEAK_STUDY = ["sweep.study_name=weak", "train.learning_rate=1e-6", "train.max_epochs=1"]
STRONG_STUDY = ["sweep.study_name=strong", "train.learning_rate=0.02", "train.max_epochs=4",
                "sweep.space.dropout.high=0.1"]


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory, imdb_dir):
    """A store with two registered versions: v1 barely trained, v2 trained properly.

    Returns the overrides that point any command at this store.
    """
    from sentiment.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("registry")
    # The barely trained v1 says nearly the same about every review, so it passes the invariance
    # checks by saying nothing and v2 (which learned the cue words, not negation) would be held on
    # behaviour: these tests are about the accuracy gate, so the behaviour gate is off here and
    # tested on its own (registry/test_behaviour.py, test_promote's gate tests).
    base = tiny_overrides(imdb_dir, tmp) + ["sweep.n_trials=1", "promote.test_samples=null",
                                            "promote.behaviour_tolerance=1.0"]
    for extra in (WEAK_STUDY, STRONG_STUDY):
        assert run_sweep(load_config(base + extra)).registered_version is not None
    mlflow.end_run()
    return base


# Tests that open many PostgreSQL connections (server processes with connection pools) run in
# one process, one after the other, so two of them never exhaust the server's max_connections
# together: test_tracking_server (its module fixtures serve a server on PostgreSQL) and every test that
# asks for fresh PostgreSQL databases. The other fault tests share nothing, so each is a group
# of its own and the two workers balance them; every other file is one group (its module
# fixtures stay in one process). `make test` runs pytest with --dist loadgroup; pyproject.toml
# keeps pytest below 9.2, which ignores the group suffix xdist adds to node ids.
POSTGRESQL_FILES = {"test_tracking_server"}
INDEPENDENT_FILES = {"test_faults"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into node id suffixes
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))


def _xdist_group(item) -> str:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module in POSTGRESQL_FILES or "postgres_databases" in item.fixturenames:
        return "postgresql"
    return item.name if module in INDEPENDENT_FILES else module
