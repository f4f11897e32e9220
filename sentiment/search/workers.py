"""Several worker processes on one Optuna study, their trials under one sweep run.

The study's storage coordinates them (PostgreSQL, or a journal file on one machine); each
worker is a plain `run_trials` in a fresh process, so TensorFlow state is never shared.
"""

from __future__ import annotations

import logging
import multiprocessing

from omegaconf import DictConfig, OmegaConf

from sentiment import tracking
from sentiment.engines import ENGINES, engine_spec
from sentiment.errors import ConfigError
from sentiment.search.implementations import shared_study_engine
from sentiment.stores import is_postgresql, is_sqlite, keep_study_database_password
from sentiment.tokens import load_data

log = logging.getLogger(__name__)


def check_shareable(cfg: DictConfig, workers: int) -> None:
    if workers <= 1:
        return
    if not engine_spec(cfg).shares_workers:
        shared = " or ".join(name for name, e in ENGINES.items() if e.shares_workers)
        raise ConfigError(f"several workers need sweep.engine={shared} ({cfg.sweep.engine} cannot share a study)")
    if is_sqlite(cfg.sweep.storage):
        raise ConfigError(
            f"sweep.storage={cfg.sweep.storage} cannot be shared by {workers} workers: use "
            "sweep.storage=journal:optuna.journal (one machine) or postgresql://... (any number)"
        )


def _worker(config: dict, parent_run_id: str, index: int, database_password: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {index} %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    keep_study_database_password(database_password)
    cfg = OmegaConf.create(config)
    tracking.connect(cfg.tracking, write=True)
    # An engine that shares_workers runs trials for a parent run opened elsewhere.
    shared_study_engine(cfg).run_trials(cfg, load_data(cfg), parent_run_id=parent_run_id, worker=index + 1)


def _password_kept_from_workers_environment(cfg: DictConfig) -> str | None:
    """PGPASSWORD for a PostgreSQL study, handed to each worker through its start-up pipe rather
    than its environment (readable in /proc, inherited by all it starts). Left in place when the
    MLflow store is a PostgreSQL URL too: MLflow's own connections read it from there."""
    if not is_postgresql(cfg.sweep.storage) or is_postgresql(cfg.tracking.uri):
        return None
    return keep_study_database_password()


def run_workers(cfg: DictConfig, workers: int, parent_run_id: str) -> list[int]:
    """Start `workers` processes on the study and wait for all; returns their exit codes."""
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
    config = OmegaConf.to_container(cfg, resolve=True)
    password = _password_kept_from_workers_environment(cfg)
    processes = [context.Process(target=_worker, args=(config, parent_run_id, i, password), name=f"worker-{i}")
                 for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    codes = [process.exitcode for process in processes]
    if any(codes):
        log.warning("worker exit codes %s: the sweep runs whatever trials are still missing itself", codes)
    return codes
