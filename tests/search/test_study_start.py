"""Two processes that start one study at the same moment: one of them starts it."""

import json
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from sentiment.config import load_config
from tests.conftest import tiny_overrides

# Waits for a shared start time (the barrier), then opens the study; prints what happened.
OPEN_AT = """
import json, sys, time
from sentiment.config import load_config
from sentiment.errors import ConfigError
from sentiment.search.optuna_engine import open_study
cfg = load_config(json.loads(sys.argv[1]))
while time.time() < float(sys.argv[2]):
    pass
try:
    open_study(cfg)
    print("opened")
except ConfigError:
    print("refused")
"""


def _open_together(overrides: list[list[str]]) -> list[str]:
    # The storage's tables exist before (two processes creating one SQLite schema race in alembic):
    # the race under test is the study's.
    optuna.storages.RDBStorage(str(load_config(overrides[0]).sweep.storage))
    start = time.time() + 20  # after both have imported TensorFlow
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_AT, json.dumps(o), str(start)], stdout=subprocess.PIPE,
                                text=True) for o in overrides]
    return sorted(w.communicate(timeout=120)[0].strip().splitlines()[-1] for w in workers)


@pytest.mark.training  # waits on a clock
def test_two_processes_starting_one_study_enqueue_the_configured_values_once(imdb_dir, tmp_path):
    overrides = tiny_overrides(imdb_dir, tmp_path)
    assert _open_together([overrides, overrides]) == ["opened", "opened"]
    study = optuna.load_study(study_name=load_config(overrides).sweep.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.WAITING]  # sweep.noise_repeats=1: one queued trial


@pytest.mark.training
def test_two_processes_with_different_configs_cannot_share_a_new_study(imdb_dir, tmp_path):
    overrides = tiny_overrides(imdb_dir, tmp_path)
    assert _open_together([overrides, overrides + ["train.max_epochs=3"]]) == ["opened", "refused"]
