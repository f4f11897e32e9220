"""The served model's pieces that need no server: micro-batching and length-sorted scoring."""

import threading
import time

import numpy as np
import pytest

from sentiment.model_code import MicroBatcher, ReviewClassifier


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


def test_an_error_reaches_every_caller_of_that_pass_and_the_batcher_keeps_serving():
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
    alive = lambda: [t for t in threading.enumerate() if t.name == "micro-batcher"]  # noqa: E731
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
