"""The scoring server's guard in process, on a stand-in app: what it refuses before MLflow sees a
request (hostile JSON, CSV, row counts), the body limit counted while reading, and the bound on
waiting requests."""

import asyncio
import json

import pytest
from fastapi import FastAPI

from sentiment.registry import server
from sentiment.registry.server import MAX_BODY_BYTES, MAX_ROWS, BadRequest, BodyLimit, check_request, guard

JSON = "application/json"


@pytest.mark.parametrize(("body", "status", "message"), [
    ('{"dataframe_records": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "the JSON nests too deeply"),
    ('{"dataframe_records": [{"text": ' + "9" * 5000 + "}]}", 400, "a number too long to read"),
    ('{"dataframe_records": [{"text": "\\ud800"}]}', 400, "the JSON holds a lone surrogate"),
    (json.dumps({"dataframe_records": [{"text": ""}] * (MAX_ROWS + 1)}), 413, f"the limit is {MAX_ROWS:,} a request"),
    (json.dumps({"inputs": {"text": [""] * (MAX_ROWS + 1)}}), 413, f"the limit is {MAX_ROWS:,} a request"),
    (json.dumps({"dataframe_split": {"columns": ["text"], "data": 5}}), 400, "dataframe_split is not a table"),
    ('{"dataframe_records": [{"text": NaN}]}', 400, "row 0: every 'text' value must be a string, got null"),
])
def test_hostile_json_is_refused_in_one_line(body, status, message):
    with pytest.raises(BadRequest) as caught:
        check_request(JSON, body.encode())
    assert (caught.value.status, caught.value.code != "") == (status, True)
    assert message in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(("body", "message"), [
    (b"", "is not a CSV table"),
    (b"review\nfine\n", "needs a 'text' column"),
    (b"text\n", "the CSV holds no reviews"),
    (b"text\n\xff\xfe\n", "is not a CSV table"),
])
def test_bad_csv_is_refused_in_one_line(body, message):
    with pytest.raises(BadRequest, match=message):
        check_request("text/csv", body)


def test_good_json_and_csv_pass():
    check_request(JSON, json.dumps({"dataframe_records": [{"text": "fine"}] * MAX_ROWS}).encode())
    check_request("text/csv; charset=utf-8", b"text\nA fine film\n\"Dull, dull\"\n")


def _request(app, body_chunks: list[bytes], content_type: str = JSON, path: str = "/invocations"):
    """One request through the ASGI app, its body sent in the given chunks: (status, headers, body)."""
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
                for i, chunk in enumerate(body_chunks)]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", content_type.encode()), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def run():
        await app(scope, receive, send)

    return scope, run, sent


def _answer(sent):
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body)


def test_a_chunked_body_is_cut_at_the_limit_before_the_app_sees_it():
    seen = []

    async def app(scope, receive, send):
        seen.append(await receive())

    chunk = b" " * (1024 * 1024)
    _, run, sent = _request(BodyLimit(app), [chunk] * 9)  # 9 MiB, no Content-Length
    asyncio.run(run())
    status, _, body = _answer(sent)
    assert status == 413 and not seen
    assert body["error_code"] == "REQUEST_TOO_LARGE" and f"the limit is {MAX_BODY_BYTES:,}" in body["message"]
    _, run, sent = _request(BodyLimit(app), [b'{"a": ', b"1}"])
    asyncio.run(run())
    assert seen == [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}]  # the whole body, once


def test_past_max_waiting_requests_get_503_with_retry_after(monkeypatch):
    monkeypatch.setattr(server, "MAX_WAITING", 3)
    gate = asyncio.Event()
    inner = FastAPI()

    @inner.post("/invocations")
    async def invocations():
        await gate.wait()
        return {"predictions": []}

    app = BodyLimit(guard(inner))
    body = json.dumps({"dataframe_records": [{"text": "fine"}]}).encode()

    async def scenario():
        runs = [_request(app, [body]) for _ in range(4)]
        tasks = [asyncio.create_task(run()) for _, run, _ in runs[:3]]
        for _ in range(50):  # until the three are inside the app, waiting on the gate
            await asyncio.sleep(0.01)
        await runs[3][1]()
        refused = _answer(runs[3][2])
        gate.set()
        await asyncio.gather(*tasks)
        return refused, [_answer(sent)[0] for _, _, sent in runs[:3]]

    (status, headers, answer), served = asyncio.run(scenario())
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert answer["error_code"] == "SERVER_BUSY" and "3 requests are being scored or waiting" in answer["message"]
    assert served == [200, 200, 200]


def test_a_fault_inside_the_guard_is_one_line_json_not_a_trace(monkeypatch):
    inner = FastAPI()

    @inner.post("/invocations")
    async def invocations():
        return {"predictions": []}

    def broken(*args):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr(server, "check_request", broken)
    _, run, sent = _request(BodyLimit(guard(inner)), [b"{}"])
    asyncio.run(run())
    status, _, body = _answer(sent)
    assert status == 500 and body == {"error_code": "INTERNAL_ERROR",
                                      "message": "the server failed to score the request; its log has the details"}
