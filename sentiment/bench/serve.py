"""`make bench-serve`: latency and throughput of `make serve` over HTTP, as a client sees them.

Starts the server on @champion, waits for it, then: single reviews one after another, from 8
and from 32 concurrent clients (threads with their own keep-alive session), and batches of 100
and 1,000 reviews. Prints p50/p95/p99 latency, requests/s, reviews/s, errors and the server's
memory, and writes JSON under bench/results/. A benchmark, not a test.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from omegaconf import DictConfig

from sentiment.bench.local_servers import ServerNotReady, free_port, stop_process_group, wait_until_answers
from sentiment.bench.results import machine_info, write_results
from sentiment.data import load_test_reviews
from sentiment.model_code import TEXT_COLUMN

SCENARIOS = (  # name, concurrent clients, reviews per request
    ("single, sequential", 1, 1),
    ("single, 8 clients", 8, 1),
    ("single, 32 clients", 32, 1),
    ("batch of 100", 1, 100),
    ("batch of 1,000", 1, 1000),
)


def server_rss_mb(pid: int) -> float:
    """Resident memory of the server process and its children (uvicorn may fork)."""
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{proc}/status").read_text()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start_server(overrides: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "sentiment", "serve", "--port", str(port), *overrides],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", process, seconds=300)
    except ServerNotReady as err:
        raise RuntimeError(f"`sentiment serve` did not start ({err}): see `make serve`") from None
    return process


def run_scenario(url: str, reviews: list[str], clients: int, batch: int, seconds: float) -> dict:
    """`clients` threads send requests of `batch` reviews back to back for `seconds`."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        session, rng = requests.Session(), np.random.default_rng(index)
        while time.monotonic() < stop:
            picked = [reviews[i] for i in rng.integers(0, len(reviews), size=batch)]
            start = time.perf_counter()
            try:
                ok = session.post(f"{url}/invocations", json={"dataframe_records": [{TEXT_COLUMN: t} for t in picked]},
                                  timeout=120).status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    ms = np.array(latencies) * 1000
    return {"clients": clients, "batch": batch, "requests": len(latencies), "errors": errors[0],
            "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95), "p99_ms": _pct(ms, 99),
            "requests_per_s": round(len(latencies) / wall, 1), "reviews_per_s": round(len(latencies) * batch / wall, 1)}


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def bench_serve(cfg: DictConfig, overrides: list[str], seconds: float = 60.0) -> dict:
    reviews = load_test_reviews(cfg).texts  # real reviews, real lengths
    port = free_port()
    server = start_server(overrides, port)
    url = f"http://127.0.0.1:{port}"
    report = {"machine": machine_info(), "model": f"models:/{cfg.tracking.model_name}@{cfg.serve.alias}",
              "seconds_per_scenario": seconds, "scenarios": {}}
    try:
        run_scenario(url, reviews, 1, 1, 3)  # warm the connection pool and the server
        report["server_rss_mb_start"] = server_rss_mb(server.pid)
        for name, clients, batch in SCENARIOS:
            report["scenarios"][name] = {**run_scenario(url, reviews, clients, batch, seconds),
                                         "server_rss_mb": server_rss_mb(server.pid)}
    finally:
        stop_process_group(server, grace_seconds=60)
    return write_results(report, "serve")


def format_serve_report(report: dict) -> str:
    lines = [f"{report['model']}, {report['seconds_per_scenario']:.0f} s per scenario, "
             f"server RSS at start {report['server_rss_mb_start']} MB",
             f"{'scenario':22s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} {'reviews/s':>10s} "
             f"{'errors':>7s} {'RSS MB':>7s}"]
    for name, r in report["scenarios"].items():
        lines.append(f"{name:22s} {r['p50_ms']!s:>8s} {r['p95_ms']!s:>8s} {r['p99_ms']!s:>8s} "
                     f"{r['requests_per_s']:8.1f} {r['reviews_per_s']:10.1f} {r['errors']:7d} {r['server_rss_mb']:7.1f}")
    lines.append(f"written to {report['path']}")
    return "\n".join(lines)
