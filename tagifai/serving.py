"""``tagifai serve``: MLflow's own scoring server for a tagifai model, with the checks a
server on a shared host needs.

The app is MLflow's (``mlflow.pyfunc.scoring_server``: the same ``/invocations``,
``/ping``, ``/health`` and ``/version``, the same payload formats as ``mlflow models
serve``). Around it:

- the model's ``MLmodel`` file is read first, and a model tagifai did not write is
  refused before any of its code could run (:func:`~tagifai.logged_models.check_model`);
- the ``Host`` header must name an allowed host (loopback names by default), so a web
  page in the user's browser cannot reach the server through DNS rebinding;
- a request body is read up to :data:`MAX_REQUEST_BYTES`, and a JSON body that Python
  cannot parse (nesting past its recursion limit, an integer of thousands of digits)
  is a 400 with one line, not a 500.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK_HOSTS", "MAX_REQUEST_BYTES", "build_app", "serve"]

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a batch of ~3,000 28x28 images as JSON numbers
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MAX_ERROR_CHARS = 1_000  # of an error answer's message

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _refuse(send: Send, status: int, message: str) -> None:
    """Answer like MLflow's scoring server does: a JSON body with ``message``."""
    body = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware: bodies over ``max_bytes`` get a 413, unparsable JSON a 400, and
    an error answer is cut to :data:`MAX_ERROR_CHARS` with no stack trace.

    The body is read here (never more than ``max_bytes`` of it) and handed on whole.
    MLflow quotes the whole input in some error messages (a megabyte column name comes
    back twice), and adds a stack trace to others.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")  # uvicorn refuses one not a number
        too_big = f"request body: over the limit of {self.max_bytes:,} bytes"
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, 413, too_big)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:  # chunked, or a Content-Length that lied
                await _refuse(send, 413, too_big)
                return
        if b"json" in headers.get(b"content-type", b""):
            problem = _json_problem(bytes(body))
            if problem is not None:
                await _refuse(send, 400, f"request body: {problem}")
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, _BoundedErrors(send))


class _BoundedErrors:
    """A ``send`` that holds an error answer (status 400+) until it is whole, then sends
    it cut to size."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        if len(self.body) <= 4 * MAX_REQUEST_BYTES:  # past that it is cut anyway
            self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        body = _bounded_error(bytes(self.body))
        headers = [
            (k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def _bounded_error(body: bytes) -> bytes:
    """An error answer with its message cut to :data:`MAX_ERROR_CHARS`, no stack trace."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:MAX_ERROR_CHARS]
    if not isinstance(answer, dict):
        return body[:MAX_ERROR_CHARS]
    answer.pop("stack_trace", None)
    message = str(answer.get("message", ""))
    if len(message) > MAX_ERROR_CHARS:
        answer["message"] = (
            f"{message[: MAX_ERROR_CHARS - 40]}... [{len(message):,} characters, cut]"
        )
    return json.dumps(answer).encode()


def _json_problem(body: bytes) -> str | None:
    """Why Python's JSON parser would fail on ``body`` (MLflow turns those into 500s)."""
    try:
        json.loads(body)
    except RecursionError:
        return "JSON nested too deeply"
    except ValueError as exc:  # not JSON, bad UTF-8, an integer past 4,300 digits
        return f"not valid JSON: {str(exc).splitlines()[0][:120]}"
    return None


def build_app(
    model_uri: str, folder: Path, allowed_hosts: list[str], max_bytes: int = MAX_REQUEST_BYTES
) -> ASGIApp:
    """MLflow's scoring app for the tagifai model at ``model_uri``, behind the checks.

    Args:
        model_uri: Any MLflow model URI (``models:/tagifai@champion``, ``runs:/...``).
        folder: Where the model's files are downloaded (kept while the app serves).
        allowed_hosts: ``Host`` header values answered (others get a 400).
        max_bytes: Largest request body read.

    Raises:
        TagifaiError: If the URI names no model, or a model tagifai did not write.
    """
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from tagifai.logged_models import check_model, download_model

    # Read the MLmodel of the very files that are loaded: no second download to swap.
    local = download_model(model_uri, folder)
    check_model(local, model_uri)
    app = scoring_server.init(mlflow.pyfunc.load_model(str(local)))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    return RequestLimits(app, max_bytes)


def serve(model_uri: str, host: str, port: int, allowed_hosts: list[str]) -> None:
    """Serve ``model_uri`` on ``host:port`` until interrupted.

    Raises:
        TagifaiError: If the model is refused (nothing is served then).
    """
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="tagifai-serve-") as folder:
        app = build_app(model_uri, Path(folder), allowed_hosts)
        uvicorn.run(app, host=host, port=port, log_level="info")
