import gzip
import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf

from sentiment import data
from sentiment.config import load_config
from sentiment.errors import DatasetError
from sentiment.model_code import standardize_review
from tests.conftest import tiny_overrides, write_archive, write_imdb


def test_directory_and_archive_read_the_same_reviews(imdb_dir, imdb_archive):
    from_dir, from_tar = data.read_reviews(imdb_dir), data.read_reviews(imdb_archive)
    for split in ("train", "test"):
        assert from_dir[split].texts == from_tar[split].texts
        np.testing.assert_array_equal(from_dir[split].labels, from_tar[split].labels)
    assert len(from_dir["train"]) == 120 and from_dir["train"].labels.mean() == 0.5


def test_html_line_breaks_and_case_are_cleaned():
    cleaned = standardize_review(tf.constant(["Great<br /><br />FILM!"])).numpy()[0].decode()
    assert cleaned.split() == ["great", "film"]


def test_subsample_is_balanced_and_seeded(imdb_dir):
    train = data.read_reviews(imdb_dir)["train"]
    a, b = data.subsample(train, 40, seed=1), data.subsample(train, 40, seed=1)
    assert len(a) == 40 and a.labels.sum() == 20
    assert a.texts == b.texts
    assert data.subsample(train, 40, seed=2).texts != a.texts


def test_validation_split_is_stratified_seeded_and_disjoint(tiny_cfg):
    train, val, test, _ = data.load_splits(tiny_cfg)
    again = data.load_splits(tiny_cfg)
    assert len(val) == 30 and val.labels.mean() == 0.5 and train.labels.mean() == 0.5
    assert val.texts == again[1].texts
    assert not set(val.texts) & set(train.texts)
    assert not set(test.texts) & set(train.texts + val.texts)


def test_id_block_validation_keeps_each_block_of_review_ids_on_one_side():
    ids = np.concatenate([np.arange(5000), np.arange(5000)])  # aclImdb numbers pos and neg apart
    labels = np.repeat([1, 0], 5000).astype("int32")
    reviews = data.Reviews([f"review {i}" for i in range(ids.size)], labels, ids)
    blocks = data.id_blocks(ids)  # 50 blocks of 100 ids per label
    train, val = data.split_train_val(reviews, 0.2, seed=3, method="id_blocks")

    def blocks_of(split, label):
        return set(blocks[(labels == label) & np.isin(ids, split.ids[split.labels == label])])

    for label in (0, 1):
        assert not blocks_of(train, label) & blocks_of(val, label) and len(blocks_of(val, label)) == 10
    assert len(val) == 2000 and val.labels.mean() == 0.5
    assert data.split_train_val(reviews, 0.2, seed=3)[1].texts == val.texts  # id_blocks is the default, seeded
    random_val = data.split_train_val(reviews, 0.2, seed=3, method="random")[1]
    assert len(blocks_of(random_val, 1)) > 40  # single reviews land in nearly every block


def test_id_blocks_need_aclimdb_file_names():
    reviews = data.Reviews(["a", "b", "c", "d"], np.array([0, 1, 0, 1]), np.array([0, 1, -1, 2]))
    with pytest.raises(DatasetError, match="<id>_<rating>.txt.*data.val_split=random"):
        data.split_train_val(reviews, 0.5, seed=0)


def test_missing_path_names_it(tmp_path):
    cfg = load_config([f"data.path={tmp_path / 'nowhere.tar.gz'}"])
    with pytest.raises(DatasetError, match="nowhere.tar.gz"):
        data.resolve_source(cfg.data)


def test_no_data_anywhere_lists_the_options(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SHARED_ARCHIVE", tmp_path / "absent.tar.gz")
    cfg = load_config([f"data.cache_dir={tmp_path}", "data.download=false"])
    with pytest.raises(DatasetError) as err:
        data.resolve_source(cfg.data)
    assert "data.path" in str(err.value) and "IMDB_DATA" in str(err.value)


def test_imdb_data_env_var_is_used(imdb_archive, monkeypatch):
    monkeypatch.setenv("IMDB_DATA", str(imdb_archive))
    assert data.resolve_source(load_config().data) == imdb_archive


def test_download_verifies_checksum(imdb_archive, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SHARED_ARCHIVE", tmp_path / "absent.tar.gz")
    digest = hashlib.sha256(imdb_archive.read_bytes()).hexdigest()
    url = imdb_archive.as_uri()
    good = load_config([f"data.cache_dir={tmp_path / 'c'}", f"data.url={url}", f"data.sha256={digest}"])
    path = data.resolve_source(good.data)
    assert path.parent == tmp_path / "c" and path.read_bytes() == imdb_archive.read_bytes()
    bad = load_config([f"data.cache_dir={tmp_path / 'd'}", f"data.url={url}", "data.sha256=00"])
    with pytest.raises(DatasetError, match="sha256"):
        data.resolve_source(bad.data)
    assert not list((tmp_path / "d").iterdir())  # nothing half-downloaded left behind


def test_truncated_archive_is_reported(imdb_archive, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(imdb_archive.read_bytes()[: imdb_archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        data.read_reviews(broken)


def test_not_an_archive_is_reported(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(gzip.compress(b"not a tar file" * 100))
    with pytest.raises(DatasetError, match="junk.tar.gz"):
        data.read_reviews(junk)


def test_wrong_layout_is_reported(tmp_path):
    (tmp_path / "reviews" / "good").mkdir(parents=True)
    (tmp_path / "reviews" / "good" / "1.txt").write_text("fine")
    with pytest.raises(DatasetError, match="aclImdb layout"):
        data.read_reviews(tmp_path)


def test_non_utf8_review_names_the_file(tmp_path):
    root = write_imdb(tmp_path / "d", n_train=3, n_test=3)
    bad = root / "train" / "pos" / "0_9.txt"
    bad.write_bytes(b"\xff\xfe caf\xe9")
    with pytest.raises(DatasetError, match="0_9.txt"):
        data.read_reviews(root)


def test_empty_reviews_are_skipped_with_a_count(tmp_path, caplog):
    root = write_imdb(tmp_path / "d", n_train=3, n_test=3)
    (root / "test" / "neg" / "0_2.txt").write_text("  \n")
    assert len(data.read_reviews(root)["test"]) == 5
    assert "skipped 1 empty review" in caplog.text


def test_archive_with_extra_official_members_reads_the_same(tmp_path, imdb_dir):
    root = write_imdb(tmp_path / "d", n_train=3, n_test=3)
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabeled")
    (root / "train" / "labeledBow.feat").write_text("0:1")
    archive = write_archive(root, tmp_path / "official.tar.gz")
    assert len(data.read_reviews(archive)["train"]) == 6


def test_tiny_overrides_keep_data_out_of_the_user_cache(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path))
    assert str(data.cache_dir(cfg.data)).startswith(str(tmp_path))
    assert os.environ.get("IMDB_DATA") is None
