"""`make serve`: MLflow's scoring server for @champion, behind a guard for bad requests.

The app is MLflow's own (`mlflow.pyfunc.scoring_server.init`, what `mlflow models serve` runs),
so /invocations, /ping and /version and the request formats stay MLflow's. The guard in front
answers what MLflow would answer with a stack trace, the whole input echoed back, or several
lines: every 4xx and 503 is one JSON object {"error_code", "message"} whose message is one line
naming the problem, and the server keeps serving.

Limits, so that one client cannot hold the others up:
- a request body may hold at most MAX_BODY_BYTES (8 MiB: about 4,000 reviews of typical length;
  the largest aclImdb review is ~14 KB), counted while it is read (a chunked body too): 413;
- a request may hold at most MAX_ROWS reviews (5,000 empty ones cost ~0.1 s; more are split
  by the client): 413;
- at most MAX_WAITING requests are scored or wait to be at once; more get 503 with Retry-After.

The served model follows `@champion` (ChampionFollower): every `serve.reload_seconds` the alias
is read, a newly promoted version is loaded and warmed up in the background and then swapped in,
so no request fails or waits on the move; each prediction row says which version answered it
(`model_version`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading

import mlflow
import pandas as pd

from sentiment.model_code import TEXT_COLUMN, BadInput, reviews_from_input
from sentiment.registry import versions

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ROWS = 5_000
MAX_WAITING = 32
RETRY_AFTER_S = 1
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
    _check_row_count(_listed_rows(key, rows))  # before pandas builds a table of a million rows
    try:
        if key == "dataframe_split":
            frame = pd.DataFrame(rows.get("data", []), columns=rows.get("columns"))
        elif isinstance(rows, dict):
            frame = pd.DataFrame(rows)
        elif isinstance(rows, list) and rows and all(isinstance(r, str) for r in rows):
            frame = pd.DataFrame({TEXT_COLUMN: rows})
        else:
            frame = pd.DataFrame(rows)
    except Exception as err:  # pandas raises many kinds for shapes that are no table
        raise BadRequest(400, "BAD_REQUEST", f"{key} is not a table of records: {one_line(err)}") from None
    if frame.empty:
        raise BadRequest(400, "BAD_REQUEST", f"{key} holds no reviews: send at least one record with a {TEXT_COLUMN!r} string")
    return frame


def _listed_rows(key: str, rows) -> int:
    """How many rows a JSON body lists (0 where it holds columns, not a list of rows)."""
    if key == "dataframe_split" and isinstance(rows, dict):
        rows = rows.get("data")
    return len(rows) if isinstance(rows, list) else 0


def csv_frame(body: bytes) -> pd.DataFrame:
    """A CSV body as MLflow reads it (pandas, a header row)."""
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except Exception as err:  # empty, undecodable or ragged CSV
        raise BadRequest(400, "BAD_REQUEST", f"the body is not a CSV table with a {TEXT_COLUMN!r} column "
                                             f"({one_line(err)})") from None
    if frame.empty:
        raise BadRequest(400, "BAD_REQUEST", f"the CSV holds no reviews: send a header row {TEXT_COLUMN} and one review a row")
    return frame


def _check_row_count(rows: int) -> None:
    if rows > MAX_ROWS:
        raise BadRequest(413, "REQUEST_TOO_LARGE", f"the request holds {rows:,} reviews; the limit is {MAX_ROWS:,} "
                                                   "a request: split the batch")


def too_large(size: int = MAX_BODY_BYTES) -> BadRequest:
    return BadRequest(413, "REQUEST_TOO_LARGE", f"the body is over {size:,} bytes: the limit is {size:,} "
                                                "(about 4,000 reviews); split the batch")


def parse_json(body: bytes):
    """The JSON body, or BadRequest naming why not (Python's parser raises RecursionError for
    deep nesting and a plain ValueError for an integer of over 4,300 digits, and accepts lone
    surrogates that pandas and TensorFlow then cannot encode)."""
    try:
        payload = json.loads(body)
        json.dumps(payload, ensure_ascii=False).encode("utf-8")  # "\ud800" parses, but no UTF-8 holds it
        return payload
    except UnicodeEncodeError:
        raise BadRequest(400, "MALFORMED_REQUEST", "the JSON holds a lone surrogate (e.g. \\ud800) that is not "
                                                   "valid Unicode: send UTF-8 text") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(400, "MALFORMED_REQUEST", f"the body is not valid JSON ({one_line(err)})") from None
    except RecursionError:
        raise BadRequest(400, "MALFORMED_REQUEST", "the JSON nests too deeply: send a flat list of records") from None
    except ValueError:
        raise BadRequest(400, "MALFORMED_REQUEST", "the JSON holds a number too long to read: send reviews as strings") from None


def check_request(content_type: str, body: bytes) -> None:
    """Raise BadRequest for what the model could never score; the rest goes to MLflow."""
    if len(body) > MAX_BODY_BYTES:
        raise too_large(MAX_BODY_BYTES)
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime not in (JSON_TYPE, CSV_TYPE):
        raise BadRequest(415, "UNSUPPORTED_MEDIA_TYPE",
                         f"Content-Type {mime or '(none)'} is not supported: send {JSON_TYPE} (or {CSV_TYPE})")
    frame = texts_frame(parse_json(body)) if mime == JSON_TYPE else csv_frame(body)
    _check_row_count(len(frame))
    try:
        reviews_from_input(frame)
    except BadInput as err:
        raise BadRequest(400, "INVALID_PARAMETER_VALUE", one_line(err.message)) from None


class BodyLimit:
    """ASGI middleware: reads a /invocations body up to MAX_BODY_BYTES, counting as it reads
    (a chunked body has no Content-Length to check first), answers 413 past it, and hands the
    app the whole body otherwise."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/invocations":
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _send_error(send, too_large(self.limit))
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def receive_once():
            return replay.pop() if replay else await receive()

        return await self.app(scope, receive_once, send)


async def _send_error(send, err: BadRequest) -> None:
    body = json.dumps({"error_code": err.code, "message": err.message}).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def guard(app):
    """Wrap MLflow's scoring app: check /invocations requests first, bound how many wait, flatten
    any error answer; the body limit sits outside (BodyLimit)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    waiting = 0  # /invocations requests being checked or scored: one event loop, so a plain count

    @app.middleware("http")
    async def guard_invocations(request: Request, call_next):
        nonlocal waiting
        if request.url.path != "/invocations" or request.method != "POST":
            return await call_next(request)
        if waiting >= MAX_WAITING:
            busy = BadRequest(503, "SERVER_BUSY", f"{waiting} requests are being scored or waiting; retry in a moment")
            return _error(JSONResponse, busy, headers={"Retry-After": str(RETRY_AFTER_S)})
        waiting += 1
        try:
            return await _guarded(request, call_next, JSONResponse)
        except Exception:  # a fault of the server, not the request: logged here, one line there
            log.exception("scoring a request failed")
            return _error(JSONResponse, BadRequest(500, "INTERNAL_ERROR", "the server failed to score the request; "
                                                                          "its log has the details"))
        finally:
            waiting -= 1

    return app


async def _guarded(request, call_next, response_class):
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _error(response_class, too_large(MAX_BODY_BYTES))
    body = await request.body()
    try:
        check_request(request.headers.get("content-type", ""), body)
    except BadRequest as err:
        return _error(response_class, err)
    response = await call_next(request)
    if response.status_code < 400:
        return response
    content = b"".join([chunk async for chunk in response.body_iterator])
    return _error(response_class, BadRequest(response.status_code, *_mlflow_error(content)))


def _mlflow_error(content: bytes) -> tuple[str, str]:
    try:
        error = json.loads(content)
        return str(error.get("error_code", "BAD_REQUEST")), one_line(error.get("message", ""))
    except (ValueError, AttributeError):
        return "BAD_REQUEST", one_line(content.decode(errors="replace"))


def _error(response_class, err: BadRequest, headers: dict[str, str] | None = None):
    return response_class({"error_code": err.code, "message": err.message}, status_code=err.status, headers=headers)


# What `sentiment serve` hands the uvicorn process it starts (cli.cmd_serve).
MODEL_ENV, VERSION_ENV, RELOAD_ENV = "SENTIMENT_SERVE_MODEL", "SENTIMENT_SERVE_VERSION", "SENTIMENT_SERVE_RELOAD_SECONDS"
ALIAS_ENV = "SENTIMENT_SERVE_ALIAS"  # the alias followed (serve.alias); unset: @champion
VERSION_COLUMN = "model_version"


class ChampionFollower:
    """A pyfunc model for MLflow's scoring app that is whichever version `@champion` names.

    A daemon thread reads the alias every `reload_seconds`; a new version is loaded (and warmed
    up by its load_context) while the current one keeps answering, then one assignment swaps
    them: a request in flight finishes on the model it started with. A failed check or load is
    logged and tried again at the next period; the current version keeps serving.
    """

    def __init__(self, model_name: str, model, version: str, reload_seconds: float | None,
                 alias: str = versions.CHAMPION):
        self.model_name, self.alias = model_name, alias
        self._current = (model, str(version))
        self._stop = threading.Event()
        if reload_seconds is not None:
            threading.Thread(target=self._follow, args=(reload_seconds,), name="follow-champion", daemon=True).start()

    @property
    def metadata(self):
        return self._current[0].metadata

    @property
    def version(self) -> str:
        return self._current[1]

    def predict(self, data, params=None):
        model, version = self._current  # one read: the rows and the version they name agree
        predictions = model.predict(data, params=params) if params else model.predict(data)
        return predictions.assign(**{VERSION_COLUMN: version})

    def check_once(self) -> bool:
        """Swap in the version the alias names now, if it is another; True if it swapped."""
        named = versions.alias_version(self.model_name, self.alias)
        if named is None or str(named.version) == self.version:
            return False
        # Loaded and warmed up (ReviewClassifier.load_context) before any request is sent to it.
        model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{named.version}")
        previous, self._current = self.version, (model, str(named.version))
        log.info("serving %s version %s (was %s): @%s moved", self.model_name, named.version, previous, self.alias)
        return True

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, reload_seconds: float) -> None:
        while not self._stop.wait(reload_seconds):
            try:
                self.check_once()
            except Exception as err:  # the store away, a version that fails to load: keep serving this one
                log.warning("could not follow @%s (%s); still serving version %s", self.alias,
                            one_line(str(err)), self.version)


def create_app():
    """The app uvicorn serves (`sentiment.registry.server:create_app`, factory mode): the model comes from
    the same environment variable MLflow's own server reads, and follows @champion from there."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    reload = os.environ.get(RELOAD_ENV)
    follower = ChampionFollower(os.environ[MODEL_ENV], model, os.environ[VERSION_ENV], float(reload) if reload else None,
                                alias=os.environ.get(ALIAS_ENV) or versions.CHAMPION)
    return BodyLimit(guard(scoring_server.init(follower)))
