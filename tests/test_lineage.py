"""Which reviews a run saw: digests of the splits, logged as MLflow dataset inputs and tags."""

import mlflow
import numpy as np

from sentiment import tracking
from sentiment.data import Reviews
from sentiment.lineage import digest_tags, disagreeing_splits, log_data_lineage, reviews_digest
from sentiment.tokens import load_data


def _reviews(ids, labels):
    return Reviews([""] * len(ids), np.array(labels), np.array(ids))


def test_a_digest_names_the_archive_the_ids_the_labels_and_their_order():
    base = reviews_digest("abc", _reviews([1, 2, 3], [1, 0, 1]))
    assert base == reviews_digest("abc", _reviews([1, 2, 3], [1, 0, 1])) and len(base) == 20
    others = [reviews_digest("abd", _reviews([1, 2, 3], [1, 0, 1])), reviews_digest("abc", _reviews([1, 2, 4], [1, 0, 1])),
              reviews_digest("abc", _reviews([1, 2, 3], [1, 1, 1])), reviews_digest("abc", _reviews([2, 1, 3], [0, 1, 1]))]
    assert base not in others and len(set(others)) == 4


def test_disagreeing_splits_compares_only_what_both_recorded():
    a = digest_tags({"train": "t1", "val": "v1", "test": "x1"})
    assert disagreeing_splits(a, digest_tags({"train": "t2", "val": "v1", "test": "x1"})) == ["train"]
    assert disagreeing_splits(a, {}) == [] and disagreeing_splits(a, a) == []


def test_a_run_gets_its_three_splits_as_dataset_inputs_and_digest_tags(tiny_cfg):
    data = load_data(tiny_cfg)
    assert set(data.lineage) == {"train", "val", "test"} and len(set(data.lineage.values())) == 3
    assert load_data(tiny_cfg).lineage == data.lineage  # read back from the token cache
    tracking.connect(tiny_cfg.tracking)
    with mlflow.start_run() as run:
        log_data_lineage(data)
    logged = mlflow.get_run(run.info.run_id)
    inputs = {i.tags[0].value: i.dataset for i in logged.inputs.dataset_inputs}  # mlflow.data.context tag
    assert set(inputs) == {"training", "validation", "test"}
    assert {inputs[c].digest for c in ("training", "validation", "test")} == set(data.lineage.values())
    assert inputs["training"].name == "aclImdb-train" and inputs["test"].digest == data.lineage["test"]
    assert logged.data.tags["data.val_digest"] == data.lineage["val"]
