"""The benchmark's race reads its curve back from the trials the tracking store holds."""

import json

import mlflow
import pytest

from sentiment.bench.race import Preset, _race_one, headline, log_race, plot_race
from sentiment.cli import main
from sentiment.config import load_config
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast


def test_race_curve_comes_from_finished_trials(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path) + [
        "sweep.n_trials=3", "sweep.timeout=600", "baseline.models=[]"])
    result = _race_one(cfg, Preset(train_samples=None, sequence_length=24, vocab_size=100, budget_s=600,
                                   targets=(0.0, 1.01)))
    curve = result["best_so_far"]
    counts = result["trials"]
    assert len(curve) == counts["complete"] >= 1 and counts["complete"] + counts["pruned"] == 3  # pruned: no model
    seconds, best = zip(*curve, strict=True)
    assert list(seconds) == sorted(seconds) and 0 < seconds[0] <= result["wall_s"]
    assert list(best) == sorted(best) and best[-1] == pytest.approx(result["best_val_accuracy"], abs=1e-4)  # curve: 4 digits
    assert result["time_to"] == {"0.00": seconds[0], "1.01": None}
    assert 0 <= result["test_accuracy_of_registered"] <= 1  # the best trial, scored on test once
    assert result["trials"]["epochs_trained"] >= 3


def test_race_headline_plot_and_mlflow_run(tmp_path):
    race = {"default": {"best_so_far": [[10, 0.85], [40, 0.891]], "time_to": {"0.89": 40}, "best_val_accuracy": 0.891,
                        "test_accuracy_of_registered": 0.88, "trials": {"epochs_trained": 7}},
            "keras_tuner_hyperband": {"best_so_far": [[30, 0.86], [100, 0.89]], "time_to": {"0.89": 100},
                                      "best_val_accuracy": 0.89, "test_accuracy_of_registered": 0.87,
                                      "trials": {"epochs_trained": 9}}}
    assert headline(race, "0.89")["ratio"] == 0.4 and headline(race, "0.95")["ratio"] is None
    unreached = {**race, "keras_tuner_hyperband": {"time_to": {"0.89": None}, "wall_s": 1000}}
    assert headline(unreached, "0.89") == {"target": "0.89", "of": "default/keras_tuner_hyperband",
                                           "ratio": None, "at_most": 0.04}  # 40 s vs more than 1,000 s
    preset = Preset(train_samples=None, sequence_length=24, vocab_size=100, budget_s=120, targets=(0.89,))
    plot = plot_race(race, preset, tmp_path / "race.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = {"preset": "small", "settings": {"budget_s": 120}, "race": race}
    (tmp_path / "race.json").write_text(json.dumps(report))
    run_id = log_race(report, tmp_path / "race.json", plot)  # into the configured store (cwd: tmp_path)
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["default.seconds_to_0.89"] == 40
    assert run.data.metrics["keras_tuner_hyperband.test_accuracy"] == 0.87
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "race")}
    assert names == {"race/race.json", "race/race.png"}


def test_unknown_contestant_is_refused_in_one_line_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("sentiment.bench.results.RESULTS_DIR", tmp_path)  # nothing may be written either
    assert main(["bench", "--contestants", "default", "grid_search"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown race contestant 'grid_search'") and "keras_tuner_hyperband" in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.iterdir())
