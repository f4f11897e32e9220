"""Benchmark numbers are written as JSON under bench/results/, with the machine and the versions
they were measured with."""

import json
import os
import re
from datetime import datetime
from pathlib import Path

import keras
import mlflow
import optuna
import tensorflow as tf

from sentiment.bench import results
from sentiment.bench.results import machine_info, peak_memory_mb, write_results


def test_write_results_writes_json_under_results_dir_and_adds_its_path(tmp_path, monkeypatch):
    folder = tmp_path / "bench" / "results"  # not there yet: write_results creates it
    monkeypatch.setattr(results, "RESULTS_DIR", folder)
    report = {"preset": "small", "throughput": [{"model.units": 32, "reviews_per_s": 812.5}], "race": None}

    written = write_results(report, "small")

    path = Path(written["path"])
    assert path.parent == folder and path.is_file()
    assert re.fullmatch(r"small-\d{8}-\d{6}\.json", path.name)
    assert json.loads(path.read_text()) == {k: v for k, v in written.items() if k != "path"}
    assert written["throughput"] == [{"model.units": 32, "reviews_per_s": 812.5}] and written["race"] is None


def test_write_results_writes_values_json_cannot_hold_as_text(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    started = datetime(2024, 5, 1, 12, 30)
    written = write_results({"started": started, "folder": tmp_path}, "serve")
    assert Path(written["path"]).name.startswith("serve-")
    assert json.loads(Path(written["path"]).read_text()) == {"started": str(started), "folder": str(tmp_path)}


def test_machine_info_names_cpus_and_library_versions():
    info = machine_info()
    assert info["cpus"] == os.cpu_count() and info["cpus"] >= 1
    assert info["tensorflow"] == tf.__version__ and info["keras"] == keras.__version__
    assert info["optuna"] == optuna.__version__ and info["mlflow"] == mlflow.__version__
    assert info["python"].count(".") == 2 and info["platform"]
    assert isinstance(info["intra_op_threads"], int)
    json.dumps(info)  # goes into every report as it is


def _status_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def test_peak_memory_is_at_least_the_current_resident_memory():
    resident = _status_mb("VmRSS")
    peak = peak_memory_mb()
    assert peak > 0 and peak >= resident * 0.99  # the high-water mark of this process, in MB (not KiB, not bytes)
    assert peak <= _status_mb("VmHWM") + 1
