"""Where benchmark numbers go: JSON under bench/results/ of the repo, with the machine they were
measured on."""

from __future__ import annotations

import json
import os
import platform
import resource
from datetime import datetime

import keras
import mlflow
import optuna
import tensorflow as tf

from sentiment.config import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "optuna": optuna.__version__,
            "mlflow": mlflow.__version__, "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_results(report: dict, prefix: str) -> dict:
    """The report as JSON under bench/results/<prefix>-<time>.json; its path is added to it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    report["path"] = str(path)
    return report
