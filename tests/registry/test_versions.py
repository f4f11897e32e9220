"""The registry's aliases and the promotion lock that keeps @champion/@previous consistent under
concurrent promotions, and predict on @champion, against a real SQLite registry with tiny trained
models (promote's and rollback's decisions: test_promote.py; predict's input handling without a
registry: test_predict.py)."""

import contextlib
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from sentiment.cli import main
from sentiment.config import load_config
from sentiment.errors import TrackingError
from sentiment.registry import versions
from sentiment.registry.promote import promote

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast

NAME = "imdb-sentiment"


def _aliases():
    return {a: str(versions.alias_version(NAME, a).version) if versions.alias_version(NAME, a) else None
            for a in (versions.CHAMPION, versions.PREVIOUS)}


def _active_tickets(name=NAME):
    found = MlflowClient().search_model_versions(f"name = '{versions.lock_name(name)}' and tags.state = 'active'")
    return sorted(int(t.version) for t in found)


def test_a_client_clock_far_ahead_does_not_take_over_a_live_lock(registry_store, monkeypatch):
    load_config(registry_store)  # the store's tracking URI, as every command sets it
    with versions.alias_lock(NAME, "1"):  # a live holder
        held = _active_tickets()
        # This client's clock 30 minutes fast; the store keeps the true time (its own clock).
        fast = types.SimpleNamespace(time=lambda: time.time() + 3 * versions.LOCK_STALE_S,
                                     monotonic=time.monotonic, sleep=time.sleep)
        monkeypatch.setattr(versions, "time", fast)
        with pytest.raises(TrackingError, match="another promotion .* has held the lock"):
            with versions.alias_lock(NAME, "2", wait_s=1.5):
                pytest.fail("a live lock was taken over by a client whose clock is ahead")
        monkeypatch.undo()
        assert _active_tickets() == held  # the waiter released its own ticket, not the holder's
    assert _active_tickets() == []


HOLDER = """
import sys
from sentiment.config import load_config
from sentiment.registry import versions
load_config(sys.argv[1:])
with versions.alias_lock("imdb-sentiment", "1"):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_a_stopped_holder_is_passed_after_the_stale_time_and_releases_only_its_own_ticket(registry_store, monkeypatch):
    load_config(registry_store)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, *registry_store], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)  # alive, holding, touching nothing
        monkeypatch.setattr(versions, "LOCK_STALE_S", 2)
        with pytest.raises(TrackingError, match="another promotion"):  # not stale yet: waited for
            with versions.alias_lock(NAME, "2", wait_s=0.5):
                pass
        time.sleep(2.5)
        with versions.alias_lock(NAME, "2", wait_s=10):
            mine = _active_tickets()[-1]
            holder.send_signal(signal.SIGCONT)
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released" and holder.wait(timeout=60) == 0
            assert _active_tickets() == [mine]  # the woken holder released its own ticket only
    finally:
        holder.kill()
    assert _active_tickets() == []


def test_concurrent_promotions_leave_consistent_aliases(registry_store):
    cfg = load_config(registry_store)
    errors = []

    def run(version):
        try:
            promote(cfg, version=version, force=True)
        except TrackingError as err:  # the loser may be told the champion moved under it
            errors.append(err)

    threads = [threading.Thread(target=run, args=(v,)) for v in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    aliases = _aliases()
    assert aliases["champion"] in {"1", "2"} and aliases["previous"] in {"1", "2"}
    assert aliases["champion"] != aliases["previous"]
    assert all("moved" in str(e) for e in errors)


@pytest.mark.integration
def test_promotions_from_two_processes_sharing_no_files_are_serialized_by_the_server(registry_store, tmp_path):
    import subprocess
    import sys

    from tests.test_faults import MlflowServer

    db = next(o.split("=", 1)[1] for o in registry_store if o.startswith("tracking.uri="))
    server = MlflowServer(db, tmp_path / "served-artifacts").start()
    try:
        overrides = [o for o in registry_store if not o.startswith("tracking.uri=")] + [f"tracking.uri={server.url}"]
        machines = {v: tmp_path / f"machine-{v}" for v in ("1", "2")}  # separate working directories
        workers = []
        for version, folder in machines.items():
            folder.mkdir()
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "sentiment", "promote", "--force", "--version", version, *overrides],
                cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs  # forced: neither waits on a stale comparison
        mlflow.set_tracking_uri(server.url)
        aliases = _aliases()
        assert {aliases["champion"], aliases["previous"]} == {"1", "2"}, outputs
        assert _active_tickets() == []
    finally:
        server.stop()


def test_predict_prints_label_and_probability(registry_store, tmp_path, capsys):
    promote(load_config(registry_store), version="2", force=True)
    long_review = "great wonderful " * 5000
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("awful boring terrible mess\n\n" + long_review + "\n", encoding="utf-8")
    assert main(["predict", "--file", str(reviews), *registry_store]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        label, probability, _ = line.split(maxsplit=2)
        assert label in {"positive", "negative"} and 0 <= float(probability) <= 1


@contextlib.contextmanager
def _artifacts_gone(local_uri: str):
    """The folder of a local artifact URI moved away for the test, and back after."""
    folder = Path(local_uri.removeprefix("file://"))
    aside = folder.with_name(folder.name + ".gone")
    folder.rename(aside)
    try:
        yield
    finally:
        aside.rename(folder)


def test_a_champion_whose_artifacts_are_gone_is_one_line_saying_what_to_do(registry_store, capsys):
    from sentiment import tracking

    promote(load_config(registry_store), version="2", force=True)
    champion = versions.alias_version(NAME, versions.CHAMPION)
    with _artifacts_gone(MlflowClient().get_model_version_download_uri(NAME, champion.version)):
        assert main(["predict", "--text", "a fine film", *registry_store]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "are gone or unreadable" in err and "make rollback" in err
        assert main(["promote", "--version", "1", *registry_store]) == 2  # the champion cannot be scored
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"version {champion.version}" in err and "make rollback" in err
    with _artifacts_gone(MlflowClient().get_run(champion.run_id).info.artifact_uri):
        with pytest.raises(TrackingError, match=f"run {champion.run_id}'s keras_model are gone.*sweep.study_name"):
            tracking.load_keras_model(champion.run_id)


@pytest.mark.integration
def test_make_predict_passes_dollars_quotes_and_backslashes_unchanged(registry_store):
    import subprocess

    from sentiment.config import REPO_ROOT

    promote(load_config(registry_store), version="2", force=True)
    review = """It cost $5, "quoted" and 'single' \\ back $(echo no) $$HOME"""
    done = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO_ROOT), "predict", f"TEXT={review}",
                           "ARGS=" + " ".join(registry_store)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert review in done.stdout
