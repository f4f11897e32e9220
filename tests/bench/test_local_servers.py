"""Waiting for a child-process server: the answer once it is up, one clear error when it is not."""

import subprocess
import sys

import pytest

from sentiment.bench.local_servers import ServerNotReady, free_port, wait_until_answers


def test_waits_until_a_starting_server_answers_and_returns_its_answer(tmp_path):
    (tmp_path / "health").write_text("OK")
    port = free_port()
    # The server starts listening only after a second: the first tries are refused.
    server = subprocess.Popen([sys.executable, "-c", "import time, sys, runpy; time.sleep(1); "
                               f"sys.argv = ['http.server', '--bind', '127.0.0.1', '{port}']; "
                               "runpy.run_module('http.server', run_name='__main__')"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        reply = wait_until_answers(f"http://127.0.0.1:{port}/health", server, seconds=30)
        assert reply.text == "OK"
    finally:
        server.kill()
        server.wait()


def test_a_server_that_exits_is_reported_at_once_with_its_exit_code():
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server.wait()
    with pytest.raises(ServerNotReady, match="exited with code 3"):
        wait_until_answers(f"http://127.0.0.1:{free_port()}/health", server, seconds=30)


def test_a_server_that_never_answers_times_out():
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(ServerNotReady, match="did not answer within 2 s"):
            wait_until_answers(f"http://127.0.0.1:{free_port()}/health", server, seconds=2)
    finally:
        server.kill()
        server.wait()
