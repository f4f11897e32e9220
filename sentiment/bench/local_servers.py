"""Servers run as child processes on this machine (scoring, tracking, UI): a free loopback port,
and waiting until one answers. `make bench-serve` and the tests that start real servers use it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import requests


class ServerNotReady(RuntimeError):
    """The server process exited, or did not answer within the time given."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, seconds: float = 180,
                       params: dict | None = None) -> requests.Response:
    """Poll GET url once a second until it answers 2xx; that answer. A server still starting may
    refuse the connection or be too busy to answer within the 2 s each try allows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerNotReady(f"the server exited with code {process.returncode} before {url} answered")
        try:
            reply = requests.get(url, params=params, timeout=2)
            if reply.ok:
                return reply
        except requests.RequestException:
            pass
        time.sleep(1)
    raise ServerNotReady(f"{url} did not answer within {seconds:.0f} s")


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM the server's process group (started with start_new_session=True), SIGKILL what is
    left after grace_seconds: `mlflow ui` and its job runner can take longer than that to exit
    on a busy 2-core machine, and a test's teardown must not fail on a slow goodbye."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_seconds)
    except ProcessLookupError:
        process.wait(timeout=grace_seconds)
