"""The logged model code's pieces that need no server: micro-batching, length-sorted scoring, the
choices its layers implement, and a version logged before the package moved still loading."""

import json
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from sentiment.model_code import TEXT_COLUMN, BadInput, MicroBatcher, ReviewClassifier, reviews_from_input


def test_concurrent_calls_share_one_pass_and_each_gets_its_own_rows():
    first_pass_started, release = threading.Event(), threading.Event()
    passes = []

    def score(reviews):
        passes.append(list(reviews))
        if len(passes) == 1:  # hold the first pass so the others queue up behind it
            first_pass_started.set()
            release.wait(10)
        return np.array([float(review.split("-")[1]) for review in reviews])

    batcher = MicroBatcher(score)
    results = {}

    def call(i):
        results[i] = batcher([f"r-{i}", f"r-{i + 0.5}"])

    threads = [threading.Thread(target=call, args=(0,))]
    threads[0].start()
    assert first_pass_started.wait(10)
    threads += [threading.Thread(target=call, args=(i,)) for i in range(1, 8)]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while batcher._queue.qsize() < 7 and time.monotonic() < deadline:  # until all seven wait
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert len(passes) == 2 and len(passes[1]) == 14  # the seven waiting calls in one pass
    for i in range(8):
        assert list(results[i]) == [i, i + 0.5]


def test_an_error_reaches_its_caller_and_the_batcher_keeps_serving():
    calls = []

    def score(reviews):
        calls.append(reviews)
        if len(calls) == 1:
            raise ValueError("broken pass")
        return np.zeros(len(reviews))

    batcher = MicroBatcher(score)
    with pytest.raises(ValueError, match="broken pass"):
        batcher(["a"])
    assert list(batcher(["b", "c"])) == [0.0, 0.0]


def test_one_bad_request_batched_with_good_ones_fails_only_itself():
    first_pass_started, release = threading.Event(), threading.Event()
    passes = []

    def score(reviews):
        passes.append(list(reviews))
        if len(passes) == 1:  # hold the first pass so the next three share one
            first_pass_started.set()
            release.wait(10)
        if "bad" in reviews:
            raise ValueError("cannot score 'bad'")
        return np.array([len(review) for review in reviews], dtype=float)

    batcher = MicroBatcher(score)
    results = {}

    def call(name, reviews):
        try:
            results[name] = list(batcher(reviews))
        except ValueError as err:
            results[name] = str(err)

    threads = [threading.Thread(target=call, args=("first", ["x"]))]
    threads[0].start()
    assert first_pass_started.wait(10)
    for name, reviews in (("good", ["ab"]), ("bad", ["bad"]), ("also good", ["abc", "d"])):
        threads.append(threading.Thread(target=call, args=(name, reviews)))
        threads[-1].start()
    deadline = time.monotonic() + 10
    while batcher._queue.qsize() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert passes[1] == ["ab", "bad", "abc", "d"]  # batched together first, then each alone
    assert results == {"first": [1.0], "good": [2.0], "bad": "cannot score 'bad'", "also good": [3.0, 1.0]}


def test_a_lone_surrogate_is_refused_in_one_line_naming_its_row():
    reviews = json.loads('["fine", "bad \\ud800 half"]')
    with pytest.raises(BadInput, match=r"row 1: the 'text' value is not valid Unicode \(a lone surrogate at character 4\)"):
        reviews_from_input(reviews)
    assert reviews_from_input(["caf\u00e9 \U0001f600"]) == ["caf\u00e9 \U0001f600"]


def test_a_huge_request_does_not_take_the_small_ones_behind_it_into_its_pass(monkeypatch):
    monkeypatch.setattr(MicroBatcher, "MAX_REVIEWS", 4)
    first_pass_started, release = threading.Event(), threading.Event()
    passes = []

    def score(reviews):
        passes.append(len(reviews))
        if len(passes) == 1:
            first_pass_started.set()
            release.wait(10)
        return np.zeros(len(reviews))

    batcher = MicroBatcher(score)
    sizes = [1, 6, 1, 1]  # the first holds the worker; then a big one and two small ones queue
    threads = [threading.Thread(target=batcher, args=(["r"] * n,)) for n in sizes]
    threads[0].start()
    assert first_pass_started.wait(10)
    for thread in threads[1:]:
        thread.start()
        time.sleep(0.2)  # queue them in this order
    release.set()
    for thread in threads:
        thread.join(10)
    assert passes == [1, 6, 2]  # the big one alone (over MAX_REVIEWS), the small ones together


def test_a_dropped_batcher_ends_its_thread():
    batcher = MicroBatcher(lambda reviews: np.zeros(len(reviews)))
    assert list(batcher(["a"])) == [0.0]
    def alive():
        return [t for t in threading.enumerate() if t.name == "micro-batcher"]

    before = len(alive())
    del batcher
    deadline = time.monotonic() + 5
    while len(alive()) >= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(alive()) == before - 1


def test_scores_come_back_in_input_order_across_length_sorted_chunks():
    classifier = ReviewClassifier()
    classifier.CHUNK = 2
    seen_chunks = []

    def forward(text):  # the "probability" of a review is its length, so order is checkable
        texts = [t.decode() for t in text.numpy().reshape(-1)]
        seen_chunks.append(texts)
        return _Tensor(np.array([[len(t)] for t in texts], dtype="float32"))

    classifier._forward = forward
    reviews = ["ccc", "a", "eeeee", "bb", "dddd"]
    assert list(classifier._score(reviews)) == [3, 1, 5, 2, 4]
    assert seen_chunks == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]  # similar lengths together


class _Tensor:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


def test_the_layers_implement_exactly_the_choices_config_offers():
    """model_code.py travels alone with every logged model, so it lists its choices itself."""
    from sentiment.config import POOLING_MODES, TRUNCATION_SIDES
    from sentiment.model_code import KeepTokens, MaskedPooling

    assert KeepTokens.SIDES == TRUNCATION_SIDES
    assert set(MaskedPooling.MODES) == set(POOLING_MODES) - {"last"}  # `last`: no pooling layer at all


BEFORE_WINGS = Path(__file__).parent / "fixtures" / "version_before_wings"


def test_a_version_registered_before_the_package_moved_loads_and_predicts_the_same(tmp_path):
    """The fixture was logged by the flat package (its model code was sentiment/serving.py): an
    ensemble of two members behind a calibration layer. Registered now, it must load through the
    registry and give the probabilities it gave then."""
    expected = json.loads((BEFORE_WINGS / "expected.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("before-wings", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(BEFORE_WINGS / "model"), artifact_path="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "before-wings")
    model = mlflow.pyfunc.load_model(f"models:/before-wings/{version.version}")
    result = model.predict(pd.DataFrame({TEXT_COLUMN: expected["reviews"]}))
    np.testing.assert_allclose(result["probability"], expected["probability"], rtol=1e-5, atol=1e-7)
    assert result["label"].tolist() == expected["label"]


@pytest.mark.slow  # a fresh process that imports TensorFlow
def test_a_saved_model_from_before_the_move_loads_with_todays_layers_alone(tmp_path):
    """Trial runs keep bare .keras files (no model code beside them) that a resumed sweep loads
    with the package's own layers: their registered names must not have changed. A fresh process
    that imports only today's model_code loads the fixture's model and scores as it did."""
    import subprocess
    import sys

    expected = json.loads((BEFORE_WINGS / "expected.json").read_text())
    code = ("import json, sys, keras, numpy as np, tensorflow as tf, sentiment.model_code; "
            "model = keras.models.load_model(sys.argv[1]); "
            "print(json.dumps(np.asarray(model(tf.constant([[r] for r in json.loads(sys.argv[2])]))).ravel().tolist()))")
    shown = subprocess.run([sys.executable, "-c", code, str(BEFORE_WINGS / "model" / "artifacts" / "model.keras"),
                            json.dumps(expected["reviews"])], capture_output=True, text=True, check=True, timeout=300)
    np.testing.assert_allclose(json.loads(shown.stdout.strip().splitlines()[-1]), expected["probability"], rtol=1e-4, atol=1e-6)
