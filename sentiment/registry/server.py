"""`make serve`: MLflow's scoring server for @champion, behind a guard for bad requests.

The app is MLflow's own (`mlflow.pyfunc.scoring_server.init`, what `mlflow models serve` runs),
so /invocations, /ping and /version and the request formats stay MLflow's. The guard in front
answers what MLflow would answer with a stack trace, the whole input echoed back, or several
lines: every 4xx is one JSON object {"error_code", "message"} whose message is one line naming
the problem, and the server keeps serving.

Limit: a request body may hold at most MAX_BODY_BYTES (8 MiB: about 4,000 reviews of typical
length; the largest aclImdb review is ~14 KB). Larger batches are split by the client.
"""

from __future__ import annotations

import json
import os
import re

import pandas as pd

from sentiment.model_code import TEXT_COLUMN, BadInput, reviews_from_input

MAX_BODY_BYTES = 8 * 1024 * 1024
JSON_TYPE, CSV_TYPE = "application/json", "text/csv"
RECORD_KEYS = ("dataframe_records", "dataframe_split", "instances", "inputs")
_PATH = re.compile(r"(/[\w.-]+){2,}")  # anything that looks like a server path


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def one_line(message: str, limit: int = 300) -> str:
    """The last `Error:` part of a message (MLflow prefixes it with the echoed input), first
    line only, without server paths."""
    message = str(message).rsplit("Error:", 1)[-1].strip().splitlines()[0] if str(message).strip() else "bad request"
    message = _PATH.sub("<path>", message)
    return message if len(message) <= limit else message[: limit - 3] + "..."


def texts_frame(payload) -> pd.DataFrame:
    """The request's rows as a DataFrame, for the model's own input check; BadRequest if the
    JSON is not one of MLflow's input formats."""
    if not isinstance(payload, dict) or not any(key in payload for key in RECORD_KEYS):
        raise BadRequest(400, "BAD_REQUEST", f"the JSON body needs one of the keys {', '.join(RECORD_KEYS)}, "
                                             f'e.g. {{"dataframe_records": [{{"{TEXT_COLUMN}": "A fine film"}}]}}')
    key = next(k for k in RECORD_KEYS if k in payload)
    rows = payload[key]
    try:
        if key == "dataframe_split":
            frame = pd.DataFrame(rows.get("data", []), columns=rows.get("columns"))
        elif isinstance(rows, dict):
            frame = pd.DataFrame(rows)
        elif isinstance(rows, list) and rows and all(isinstance(r, str) for r in rows):
            frame = pd.DataFrame({TEXT_COLUMN: rows})
        else:
            frame = pd.DataFrame(rows)
    except (TypeError, ValueError, AttributeError) as err:
        raise BadRequest(400, "BAD_REQUEST", f"{key} is not a table of records: {one_line(err)}") from None
    if frame.empty:
        raise BadRequest(400, "BAD_REQUEST", f"{key} holds no reviews: send at least one record with a {TEXT_COLUMN!r} string")
    return frame


def too_large(size: int) -> BadRequest:
    return BadRequest(413, "REQUEST_TOO_LARGE", f"the body is {size:,} bytes; the limit is {MAX_BODY_BYTES:,} "
                                                "(about 4,000 reviews): split the batch")


def check_request(content_type: str, body: bytes) -> None:
    """Raise BadRequest for what the model could never score; the rest goes to MLflow."""
    if len(body) > MAX_BODY_BYTES:
        raise too_large(len(body))
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime not in (JSON_TYPE, CSV_TYPE):
        raise BadRequest(415, "UNSUPPORTED_MEDIA_TYPE",
                         f"Content-Type {mime or '(none)'} is not supported: send {JSON_TYPE} (or {CSV_TYPE})")
    if mime != JSON_TYPE:
        return
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, "MALFORMED_REQUEST", f"the body is not valid JSON ({one_line(err)})") from None
    try:
        reviews_from_input(texts_frame(payload))
    except BadInput as err:
        raise BadRequest(400, "INVALID_PARAMETER_VALUE", one_line(err.message)) from None


def guard(app):
    """Wrap MLflow's scoring app: check /invocations requests first, flatten any 4xx answer."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def guard_invocations(request: Request, call_next):
        if request.url.path != "/invocations" or request.method != "POST":
            return await call_next(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(JSONResponse, too_large(int(declared)))
        body = await request.body()
        try:
            check_request(request.headers.get("content-type", ""), body)
        except BadRequest as err:
            return _error(JSONResponse, err)
        response = await call_next(request)
        if response.status_code < 400:
            return response
        content = b"".join([chunk async for chunk in response.body_iterator])
        return _error(JSONResponse, BadRequest(response.status_code, *_mlflow_error(content)))

    return app


def _mlflow_error(content: bytes) -> tuple[str, str]:
    try:
        error = json.loads(content)
        return str(error.get("error_code", "BAD_REQUEST")), one_line(error.get("message", ""))
    except (ValueError, AttributeError):
        return "BAD_REQUEST", one_line(content.decode(errors="replace"))


def _error(response_class, err: BadRequest):
    return response_class({"error_code": err.code, "message": err.message}, status_code=err.status)


def create_app():
    """The app uvicorn serves (`sentiment.registry.server:create_app`, factory mode): the model comes from
    the same environment variable MLflow's own server reads."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    return guard(scoring_server.init(model))
