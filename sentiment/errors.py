"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Base class: the message says what was wrong and how to fix it."""


class ConfigError(UserError):
    """A config value, key or experiment name is invalid."""


class DatasetError(UserError):
    """The dataset is missing, corrupt or not in the aclImdb layout."""


class TrackingError(UserError):
    """The MLflow tracking store or model registry cannot be used."""


class PredictError(UserError):
    """Input to predict is empty or not text, or there is no model to predict with."""
