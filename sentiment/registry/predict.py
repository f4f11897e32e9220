"""Predict with models:/<name>@champion from command-line text, a file or stdin."""

from __future__ import annotations

import mlflow
import pandas as pd
from omegaconf import DictConfig

from sentiment import tracking
from sentiment.errors import PredictError
from sentiment.model_code import TEXT_COLUMN
from sentiment.registry import versions


def decode_reviews(raw: bytes, origin: str) -> list[str]:
    """One review per non-empty line; binary or non-UTF-8 input is refused with its position."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise PredictError(f"{origin} looks binary (NUL byte at offset {nul}): give review text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PredictError(f"{origin} is not UTF-8 text (bad byte at offset {err.start}): re-encode it as UTF-8") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def collect_reviews(texts: list[str], file: str | None, stdin: bytes | None) -> list[str]:
    if texts:
        reviews = [t.strip() for t in texts if t.strip()]
    elif file:
        try:
            reviews = decode_reviews(open(file, "rb").read(), file)
        except OSError as err:
            raise PredictError(f"cannot read {file}: {err.strerror}") from None
    else:
        reviews = decode_reviews(stdin or b"", "standard input")
    if not reviews:
        raise PredictError('no review text given: use TEXT="...", FILE=<one review per line> or pipe lines in')
    return reviews


def alias_uri(cfg: DictConfig, alias: str = versions.CHAMPION) -> str:
    """models:/<name>@<alias>, after checking the store answers and the alias exists."""
    tracking.connect(cfg.tracking)
    name = cfg.tracking.model_name
    if versions.alias_version(name, alias) is None:
        fix = ("run `make promote` after `make sweep`" if alias == versions.CHAMPION
               else "run `make distil`, or serve another alias")
        raise PredictError(f"{name} has no @{alias} yet: {fix}")
    return f"models:/{name}@{alias}"


def load_champion(cfg: DictConfig):
    uri = alias_uri(cfg)
    with tracking.artifacts_of(uri, tracking.REGISTERED_GONE_FIX):
        return mlflow.pyfunc.load_model(uri)


def predict(cfg: DictConfig, reviews: list[str]) -> pd.DataFrame:
    result = load_champion(cfg).predict(pd.DataFrame({TEXT_COLUMN: reviews}))
    return result.assign(text=reviews)
