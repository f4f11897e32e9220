"""`make distil`: a student trained on a registered version's probabilities, registered beside it."""

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from sentiment import distil as distil_module
from sentiment import tracking
from sentiment.bench.local_servers import free_port, stop_process_group, wait_until_answers
from sentiment.config import load_config
from sentiment.distil import DISTILLED_FROM_TAG, HardTargetAccuracy, distil, soft_targets, student_identity
from sentiment.errors import ConfigError
from sentiment.final_model import recorded_head, served_ngram_run
from sentiment.nbsvm import ngram_logit
from sentiment.registry.promote import load_version, version_scorer
from sentiment.sweep import run_sweep
from sentiment.tokens import load_data
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.sweeps  # a tiny sweep and a student: not in make test-fast


def test_the_target_mixes_the_teacher_and_the_label_by_the_teacher_weight():
    teacher, labels = np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0])
    assert soft_targets(teacher, labels, 1.0) == pytest.approx(teacher)
    assert soft_targets(teacher, labels, 0.0) == pytest.approx(labels)
    assert soft_targets(teacher, labels, 0.5) == pytest.approx([0.95, 0.1, 0.3])


def test_training_accuracy_counts_the_teachers_side_of_one_half():
    metric = HardTargetAccuracy(name="accuracy")
    metric.update_state(np.array([[0.9], [0.2], [0.7], [0.4]]), np.array([[0.8], [0.3], [0.1], [0.6]]))
    assert float(metric.result()) == pytest.approx(0.5)  # right on the first two, wrong on the last two


@pytest.fixture(scope="module")
def teacher_store(imdb_dir, tmp_path_factory):
    """A store whose version 1 is a tiny sweep's model: the teacher."""
    overrides = tiny_overrides(imdb_dir, tmp_path_factory.mktemp("distil")) + ["sweep.n_trials=1"]
    assert run_sweep(load_config(overrides)).registered_version == "1"
    mlflow.end_run()
    return overrides + ["distil.teacher=1"]


@pytest.fixture(scope="module")
def student(teacher_store):
    captured = {}
    train_student = distil_module.train_student

    def capture(cfg, data):
        captured["targets"] = data.y_train
        return train_student(cfg, data)

    distil_module.train_student = capture
    try:
        result = distil(load_config(teacher_store))
    finally:
        distil_module.train_student = train_student
    return result, captured["targets"]


def test_the_student_learns_the_teachers_probabilities_and_is_registered_with_both_figures(teacher_store, student):
    result, targets = student
    cfg = load_config(teacher_store)
    name = cfg.tracking.model_name
    assert (result.teacher, result.student, result.reused) == ("1", "2", False)
    reviews = load_data(cfg).reviews.get()
    teacher = version_scorer(name, "1")
    assert targets == pytest.approx(teacher(reviews.train.texts), abs=1e-6)
    assert not np.allclose(targets, reviews.train.labels)  # soft, not the labels
    client = MlflowClient()
    version = client.get_model_version(name, "2")
    assert version.tags[DISTILLED_FROM_TAG] == "1" and version.tags["registration"] == "complete"
    assert str(client.get_model_version_by_alias(name, "distilled").version) == "2"
    assert "@champion" not in str(client.get_registered_model(name).aliases)  # promotion is make promote's
    student_test = version_scorer(name, "2")(reviews.test.texts)
    accuracy = float(np.mean((student_test >= 0.5) == reviews.test.labels))
    assert float(version.tags["test_accuracy"]) == pytest.approx(accuracy)
    teacher_accuracy = float(np.mean((teacher(reviews.test.texts) >= 0.5) == reviews.test.labels))
    assert float(version.tags["teacher_test_accuracy"]) == pytest.approx(teacher_accuracy)
    assert float(version.tags["student_minus_teacher_accuracy"]) == pytest.approx(accuracy - teacher_accuracy)
    assert "calibration_slope" in version.tags and "distilled from version 1" in version.tags["final_model"]
    run = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="tags.role = 'distil'")
    assert len(run) == 1 and run[0].data.params["distil.teacher"] == "1" and "val_loss" in run[0].data.metrics
    by_length = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=run[0].info.run_id, artifact_path="evaluation/accuracy_by_length.csv"))
    assert {"student", "teacher"} <= set(by_length.columns) and any(c.startswith("baseline (") for c in by_length)
    assert np.average(by_length["student"], weights=by_length["reviews"]) == pytest.approx(accuracy)
    assert by_length["reviews"].sum() == len(reviews.test.labels)


def test_a_rerun_finds_its_student_and_a_changed_setting_makes_another(teacher_store, student):
    again = distil(load_config(teacher_store))
    assert (again.student, again.reused) == ("2", True)
    assert again.student_test == pytest.approx(student[0].student_test)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", filter_string="tags.role = 'distil'")
    assert len(runs) == 1  # nothing trained again
    other = distil(load_config(teacher_store + ["distil.teacher_weight=0.5"]))
    assert (other.student, other.reused) == ("3", False)


def test_serve_alias_serves_the_student(teacher_store, student, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "serve", "--port", str(port), *teacher_store, "serve.alias=distilled"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/ping", process)
        reply = requests.post(f"{url}/invocations", json={"dataframe_records": [{"text": "great film"}]}, timeout=30)
    finally:
        stop_process_group(process)
    assert reply.status_code == 200
    named = MlflowClient().get_model_version_by_alias(load_config(teacher_store).tracking.model_name, "distilled")
    assert reply.json()["predictions"][0]["model_version"] == str(named.version)


@pytest.mark.parametrize(("override", "message"), [
    ("distil.teacher=9", "distil.teacher=9: no such version"),
    ("distil.alias=champion", "only `make promote` moves @champion"),
])
def test_a_missing_teacher_or_a_promotion_alias_is_a_one_line_error(teacher_store, override, message):
    with pytest.raises(ConfigError, match=message) as raised:
        distil(load_config(teacher_store + [override]))
    assert "\n" not in str(raised.value)


def test_distil_without_a_champion_says_how_to_get_one(imdb_dir, tmp_path):
    cfg = load_config(tiny_overrides(imdb_dir, tmp_path))
    tracking.connect(cfg.tracking, write=True)
    with pytest.raises(ConfigError, match="no @champion to distil"):
        distil(cfg)


@pytest.fixture(scope="module")
def stacked_teacher(imdb_dir, tmp_path_factory):
    """A store whose version 1 is a tiny stack (LSTM + NBSVM), and its loaded pieces."""
    overrides = tiny_overrides(imdb_dir, tmp_path_factory.mktemp("stacked")) + ["sweep.final=stack", "distil.teacher=1"]
    cfg = load_config(overrides)
    result = run_sweep(cfg)
    mlflow.end_run()
    teacher = MlflowClient().get_model_version(cfg.tracking.model_name, "1")
    return overrides, teacher, result.experiment_id


def test_a_stacked_teachers_lstm_part_and_its_nbsvm_make_up_what_it_serves(stacked_teacher):
    overrides, teacher, experiment_id = stacked_teacher
    cfg = load_config(overrides)
    texts = load_data(cfg).reviews.get().train.texts
    classifier = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.model_name}/1").unwrap_python_model()
    ngram = tracking.load_keras_model(served_ngram_run(teacher.tags, experiment_id).info.run_id)
    recombined = recorded_head(teacher.tags).scale(classifier.lstm_probability(texts), ngram_logit(ngram, texts))
    served = version_scorer(cfg.tracking.model_name, "1")(texts)
    assert recombined == pytest.approx(served, abs=1e-5)
    assert not np.allclose(classifier.lstm_probability(texts), served, atol=1e-3)  # the part, not the whole


def test_held_out_targets_take_the_stacks_nbsvm_logits_from_fits_without_each_review(stacked_teacher):
    overrides, teacher, _ = stacked_teacher
    as_served_cfg, held_out_cfg = load_config(overrides + ["distil.held_out_folds=0"]), load_config(overrides)
    data = load_data(held_out_cfg)
    teacher_model = load_version(held_out_cfg.tracking.model_name, "1")
    scorer = version_scorer(held_out_cfg.tracking.model_name, "1")
    as_served = distil_module.teacher_on_training_reviews(as_served_cfg, teacher, data, teacher_model)
    held_out = distil_module.teacher_on_training_reviews(held_out_cfg, teacher, data, teacher_model)
    assert as_served == pytest.approx(scorer(data.reviews.get().train.texts))
    # The NBSVM half is sure of the reviews it was fitted on, less so of held-out ones.
    assert np.mean(np.abs(held_out - 0.5)) < np.mean(np.abs(as_served - 0.5))
    assert student_identity(held_out_cfg, teacher) != student_identity(as_served_cfg, teacher)
