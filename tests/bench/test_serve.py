"""`make bench-serve`'s client side against a small HTTP server in a thread (never the model
server): requests, errors and latency percentiles, the report table and a process's memory."""

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentiment.bench.local_servers import free_port
from sentiment.bench.serve import format_serve_report, run_scenario, server_rss_mb
from sentiment.model_code import TEXT_COLUMN  # the column the scoring server reads

REVIEWS = ["great film", "awful mess", "a moving story", "dull and boring"]
DELAY_S = 0.02  # each answer takes at least this long


class _Invocations(BaseHTTPRequestHandler):
    """POST /invocations: 200; /fail/invocations: 500; /flaky/invocations: 500 for every other request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the scoring server

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.received.append((self.path, body))
            flaky_failure = self.path == "/flaky/invocations" and len(server.received) % 2 == 0
        time.sleep(DELAY_S)
        ok = self.path == "/invocations" or (self.path == "/flaky/invocations" and not flaky_failure)
        answer = json.dumps({"predictions": []} if ok else {"error_code": "INTERNAL_ERROR"}).encode()
        self.send_response(200 if ok else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Invocations)
    httpd.daemon_threads = True
    httpd.received, httpd.lock = [], threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_run_scenario_counts_answered_requests_and_their_latency(server):
    result = run_scenario(server.url, REVIEWS, clients=3, batch=2, seconds=0.8)

    assert result["clients"] == 3 and result["batch"] == 2 and result["errors"] == 0
    assert result["requests"] == len(server.received) >= 1
    for path, body in server.received:
        assert path == "/invocations"
        records = body["dataframe_records"]
        assert len(records) == 2 and all(set(r) == {TEXT_COLUMN} and r[TEXT_COLUMN] in REVIEWS for r in records)
    assert DELAY_S * 1000 <= result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]  # milliseconds
    assert result["requests_per_s"] > 0
    assert result["reviews_per_s"] == pytest.approx(2 * result["requests_per_s"], abs=0.2)


def test_run_scenario_counts_error_answers_as_errors_without_latency(server):
    result = run_scenario(server.url + "/fail", REVIEWS, clients=2, batch=1, seconds=0.3)
    assert result["requests"] == 0 and result["errors"] == len(server.received) >= 1
    assert result["p50_ms"] is result["p95_ms"] is result["p99_ms"] is None
    assert result["requests_per_s"] == result["reviews_per_s"] == 0


def test_run_scenario_separates_answers_from_errors(server):
    result = run_scenario(server.url + "/flaky", REVIEWS, clients=1, batch=1, seconds=0.5)
    answered = len(server.received)
    assert result["requests"] + result["errors"] == answered >= 2
    assert result["requests"] == (answered + 1) // 2 and result["errors"] == answered // 2  # every second fails
    assert result["p50_ms"] >= DELAY_S * 1000


def test_run_scenario_counts_refused_connections_as_errors():
    result = run_scenario(f"http://127.0.0.1:{free_port()}", REVIEWS, clients=1, batch=1, seconds=0.2)  # nobody listens
    assert result["requests"] == 0 and result["errors"] >= 1 and result["p99_ms"] is None


def test_format_serve_report_has_one_line_per_scenario():
    report = {"model": "models:/imdb-sentiment@champion", "seconds_per_scenario": 60.0, "server_rss_mb_start": 512.3,
              "path": "/somewhere/serve-20240501-123000.json",
              "scenarios": {
                  "single, sequential": {"clients": 1, "batch": 1, "requests": 600, "errors": 0, "p50_ms": 9.5,
                                         "p95_ms": 12.25, "p99_ms": 20.0, "requests_per_s": 100.04,
                                         "reviews_per_s": 100.04, "server_rss_mb": 530.0},
                  "batch of 1,000": {"clients": 1, "batch": 1000, "requests": 0, "errors": 3, "p50_ms": None,
                                     "p95_ms": None, "p99_ms": None, "requests_per_s": 0.0, "reviews_per_s": 0.0,
                                     "server_rss_mb": 901.26}}}

    lines = format_serve_report(report).splitlines()

    assert lines[0] == "models:/imdb-sentiment@champion, 60 s per scenario, server RSS at start 512.3 MB"
    assert lines[1].split() == ["scenario", "p50", "ms", "p95", "ms", "p99", "ms", "req/s", "reviews/s", "errors",
                                "RSS", "MB"]
    assert lines[2].split() == ["single,", "sequential", "9.5", "12.25", "20.0", "100.0", "100.0", "0", "530.0"]
    assert lines[3].split() == ["batch", "of", "1,000", "None", "None", "None", "0.0", "0.0", "3", "901.3"]
    assert lines[4] == "written to /somewhere/serve-20240501-123000.json" and len(lines) == 5
    assert len({len(line) for line in lines[1:4]}) == 1  # the columns line up


def _vm_rss_mb(pid: int) -> float:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_server_rss_of_this_process_is_its_resident_memory():
    own = _vm_rss_mb(os.getpid())
    assert server_rss_mb(os.getpid()) > 0
    assert server_rss_mb(os.getpid()) == pytest.approx(own, rel=0.2)  # plus any children of this process


def test_server_rss_adds_the_children_and_is_zero_for_a_gone_process():
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("this kernel does not list a process's children")
    # A server that forked two workers, in a process group of its own to stop it with them.
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        children = []
        deadline = time.monotonic() + 10
        while len(children) < 2 and time.monotonic() < deadline:
            children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            time.sleep(0.05)
        assert len(children) == 2
        expected = sum(_vm_rss_mb(pid) for pid in [parent.pid, *map(int, children)])
        assert server_rss_mb(parent.pid) == pytest.approx(expected, abs=0.2)
        assert server_rss_mb(parent.pid) > server_rss_mb(int(children[0])) > 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
    assert server_rss_mb(parent.pid) == 0  # reaped: nothing left to measure
