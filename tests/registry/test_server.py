"""`mlflow models serve` of @champion answers raw review text over HTTP."""

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import requests

from sentiment.bench.local_servers import ServerNotReady, free_port, stop_process_group, wait_until_answers
from sentiment.config import load_config
from sentiment.registry.promote import promote

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast


def test_served_model_code_needs_nothing_from_the_repo(registry_store):
    cfg = load_config(registry_store)
    promote(cfg, version="2", force=True)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{cfg.tracking.model_name}@champion"))
    code = (local / "serving.py").read_text() if (local / "serving.py").exists() else \
        next(local.rglob("*.py")).read_text()
    assert "sentiment" not in [line.split()[1].split(".")[0] for line in code.splitlines()
                               if line.startswith(("import ", "from "))]
    assert list(local.rglob("*.keras")), "the .keras model travels with the logged model"


@pytest.fixture(scope="module")
def server(registry_store, tmp_path_factory):
    """`sentiment serve` (what `make serve` runs) on @champion = v2, once for the whole module."""
    cfg = load_config(registry_store)
    promote(cfg, version="2", force=True)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "serve", "--port", str(port), *registry_store],
        cwd=tmp_path_factory.mktemp("serve"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/ping", process)
        yield url
    except ServerNotReady as err:
        pytest.fail(f"{err}:\n{process.stdout.read() if process.poll() is not None else ''}")
    finally:
        stop_process_group(process)


def _invoke(url, **kwargs):
    return requests.post(f"{url}/invocations", timeout=60, **kwargs)


@pytest.mark.integration
def test_served_model_answers_raw_text(server):
    reply = _invoke(server, json={
        "dataframe_records": [{"text": "great wonderful superb film"}, {"text": "awful boring <br /> mess"}]})
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == 2
    assert all(0 <= p["probability"] <= 1 and p["label"] in {"positive", "negative"} for p in predictions)
    assert predictions[0]["probability"] > predictions[1]["probability"]
    split = _invoke(server, json={"dataframe_split": {"columns": ["text"], "data": [["great film"], ["dull"]]}})
    assert split.status_code == 200 and len(split.json()["predictions"]) == 2


BAD_REQUESTS = {
    "number as text": (dict(json={"dataframe_records": [{"text": 5}]}), 400,
                       "row 0: every 'text' value must be a string, got int"),
    "null text": (dict(json={"dataframe_records": [{"text": "fine"}, {"text": None}]}), 400, "row 1:"),
    "empty list": (dict(json={"dataframe_records": []}), 400, "holds no reviews"),
    "missing column": (dict(json={"dataframe_records": [{"review": "x"}]}), 400, "needs a 'text' column"),
    "no records key": (dict(json={"text": "x"}), 400, "needs one of the keys"),
    "wrong content type": (dict(data="text=great", headers={"Content-Type": "text/plain"}), 415, "text/plain"),
    "malformed json": (dict(data='{"dataframe_records": [', headers={"Content-Type": "application/json"}),
                       400, "not valid JSON"),
    "oversize body": (dict(data=b" " * (8 * 1024 * 1024 + 1), headers={"Content-Type": "application/json"}),
                      413, "the limit is 8,388,608"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_a_one_line_4xx_and_the_server_keeps_serving(server, case):
    request, status, message = BAD_REQUESTS[case]
    reply = _invoke(server, **request)
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error_code", "message"} and message in body["message"]
    assert "\n" not in body["message"] and "Traceback" not in reply.text and "/site-packages/" not in reply.text
    assert _invoke(server, json={"dataframe_records": [{"text": "still here"}]}).status_code == 200
