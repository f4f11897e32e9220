"""`mlflow models serve` of @champion answers raw review text over HTTP."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests

from sentiment.config import load_config
from sentiment.promote import promote


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited early:\n{server.stdout.read()}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail("server did not answer /ping in time")


def test_served_model_code_needs_nothing_from_the_repo(registry_store):
    cfg = load_config(registry_store)
    promote(cfg, version="2", force=True)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{cfg.tracking.model_name}@champion"))
    code = (local / "serving.py").read_text() if (local / "serving.py").exists() else \
        next(local.rglob("*.py")).read_text()
    assert "sentiment" not in [line.split()[1].split(".")[0] for line in code.splitlines()
                               if line.startswith(("import ", "from "))]
    assert list(local.rglob("*.keras")), "the .keras model travels with the logged model"


@pytest.mark.integration
def test_mlflow_models_serve_answers_raw_text(registry_store, tmp_path):
    cfg = load_config(registry_store)
    promote(cfg, version="2", force=True)
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)  # the server runs uvicorn from the same environment
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking.uri, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen(
        [Path(sys.executable).with_name("mlflow"), "models", "serve", "-m",
         f"models:/{cfg.tracking.model_name}@champion", "--host", "127.0.0.1", "--port", str(port),
         "--env-manager", "local"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, server)
        reply = requests.post(f"{url}/invocations", timeout=60, json={
            "dataframe_records": [{"text": "great wonderful superb film"}, {"text": "awful boring <br /> mess"}]})
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == 2
        assert all(0 <= p["probability"] <= 1 and p["label"] in {"positive", "negative"} for p in predictions)
        bad = requests.post(f"{url}/invocations", timeout=60, json={"dataframe_records": [{"review": "x"}]})
        assert bad.status_code == 400
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
