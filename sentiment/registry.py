"""Model Registry: register the sweep's best model and find versions by their tags."""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)


def find_version(model_name: str, **tags: str) -> ModelVersion | None:
    """The newest version of model_name whose tags include all of `tags`, if any."""
    client = MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        return None
    versions = client.search_model_versions(f"name = '{model_name}'")
    matching = [v for v in versions if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    return max(matching, key=lambda v: int(v.version), default=None)


def tag_version(model_name: str, version: str, tags: dict[str, object]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))


def describe_version(model_name: str, version: str, description: str) -> None:
    MlflowClient().update_model_version(model_name, version, description=description)
