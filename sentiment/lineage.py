"""Which reviews a run saw, in MLflow's terms: the train, validation and test splits as MLflow
datasets (`mlflow.log_input`, the run's Datasets in the UI), each with a digest derived from the
archive's checksum and the split's review ids and labels in order. The digests are computed once,
when the reviews are tokenized (tokens.TokenizedData.lineage, cached with the arrays), so a worker
that never reads the archive logs them too; a registered version carries them as tags, and
`make promote` refuses to compare two versions whose splits disagree.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from sentiment.data import Reviews, Splits, file_sha256

SPLITS = {"train": "training", "val": "validation", "test": "test"}  # split -> MLflow input context


def source_checksum(source: str) -> str:
    """The archive's sha256 (a directory of reviews has none: its ids and labels stand alone)."""
    path = Path(source)
    return file_sha256(path) if path.is_file() else ""


def reviews_digest(checksum: str, reviews: Reviews) -> str:
    """20 hex digits naming these reviews of this archive, in this order."""
    digest = hashlib.sha256(checksum.encode())
    digest.update(np.asarray(reviews.ids, dtype="int64").tobytes())
    digest.update(np.asarray(reviews.labels, dtype="int8").tobytes())
    return digest.hexdigest()[:20]


def split_digests(splits: Splits) -> dict[str, str]:
    checksum = source_checksum(splits.source)
    return {split: reviews_digest(checksum, getattr(splits, split)) for split in SPLITS}


def digest_tag(split: str) -> str:
    """The run or version tag that holds a split's digest: data.train_digest, data.val_digest, ..."""
    return f"data.{split}_digest"


def digest_tags(lineage: dict[str, str]) -> dict[str, str]:
    return {digest_tag(split): digest for split, digest in lineage.items()}


def disagreeing_splits(tags_a: dict[str, str], tags_b: dict[str, str]) -> list[str]:
    """The splits both sets of tags record and name differently."""
    recorded = [(tags_a.get(digest_tag(split)), tags_b.get(digest_tag(split)), split) for split in SPLITS]
    return [split for a, b, split in recorded if a is not None and b is not None and a != b]


def log_data_lineage(data) -> None:
    """A tokens.TokenizedData's splits as MLflow dataset inputs of the active run (their labels are
    the table logged: the reviews stay in the archive), and their digests as its tags."""
    import mlflow  # here: tokens imports this module for split_digests and tokenizes without MLflow
    import pandas as pd

    labels = {"train": data.y_train, "val": data.y_val, "test": data.y_test}
    for split, context in SPLITS.items():
        if split not in data.lineage:
            continue
        frame = pd.DataFrame({"label": np.asarray(labels[split], dtype="int64")})
        with warnings.catch_warnings():  # MLflow's hints on local paths and integer columns: no action here
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=data.source, targets="label", name=f"aclImdb-{split}",
                                              digest=data.lineage[split])
            mlflow.log_input(dataset, context=context)  # the schema is inferred here
    mlflow.set_tags(digest_tags(data.lineage))
