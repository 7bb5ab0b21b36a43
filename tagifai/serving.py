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
  is a 400 with one line, not a 500;
- slow clients are bounded: a request's headers must all come within
  :data:`READ_TIMEOUT_SECONDS` (else the connection is closed) and then its body within
  as long again (else a 408 and the connection is closed); past
  :data:`MAX_CONNECTIONS` open connections a request gets a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from tagifai.errors import TagifaiError, VisibleLogText

__all__ = [
    "LOOPBACK_HOSTS",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "READ_TIMEOUT_SECONDS",
    "build_app",
    "serve",
]

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a batch of ~3,000 28x28 images as JSON numbers
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MAX_ERROR_CHARS = 1_000  # of an error answer's message
# 16 MiB in 30 s is ~4.5 Mbit/s: a slower client is more likely holding a connection on
# purpose than sending a batch.
READ_TIMEOUT_SECONDS = 30.0  # for a request's headers, and again for its body
MAX_CONNECTIONS = 64  # served at once; one more gets a 503
MAX_HEADER_BYTES = 16 * 1024  # of a request's line and headers (uvicorn's h11 default)
KEEP_ALIVE_SECONDS = 5  # an idle connection between requests is closed after this
# MLflow's scoring server answers a failed prediction with "Failed to predict data
# '<the input frame>'. \nError: <why>": only <why> is kept.
PREDICT_FAILED_PREFIX = "Failed to predict data '"
PREDICT_FAILED_SEPARATOR = "'. \nError: "

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _refuse(send: Send, status: int, message: str, close: bool = False) -> None:
    """Answer like MLflow's scoring server does: a JSON body with ``message`` (and, with
    ``close``, the connection closed after it)."""
    body = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware: bodies over ``max_bytes`` get a 413, bodies not whole within
    ``read_timeout`` seconds a 408 (and the connection closed), unparsable JSON a 400,
    and an error answer is cut to :data:`MAX_ERROR_CHARS` with no stack trace and
    without MLflow's quote of the input.

    The body is read here (never more than ``max_bytes`` of it) and handed on whole.
    MLflow quotes the whole input in some error messages (a megabyte column name comes
    back twice), and adds a stack trace to others.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_REQUEST_BYTES,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

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
        try:
            async with asyncio.timeout(self.read_timeout):
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
        except TimeoutError:
            slow = f"request body: not received whole within {self.read_timeout:g} seconds"
            await _refuse(send, 408, slow, close=True)
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
    if message.startswith(PREDICT_FAILED_PREFIX):  # MLflow quotes the whole input first
        message = message.partition(PREDICT_FAILED_SEPARATOR)[2] or message
        answer["message"] = message
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
    model_uri: str,
    folder: Path,
    allowed_hosts: list[str],
    max_bytes: int = MAX_REQUEST_BYTES,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> ASGIApp:
    """MLflow's scoring app for the tagifai model at ``model_uri``, behind the checks.

    The model is loaded as a pyfunc, whose payloads name no file of this machine
    (:data:`~tagifai.workloads.base.SERVED_INPUTS`).

    Args:
        model_uri: Any MLflow model URI (``models:/tagifai@champion``, ``runs:/...``).
        folder: Where the model's files are downloaded (kept while the app serves).
        allowed_hosts: ``Host`` header values answered (others get a 400).
        max_bytes: Largest request body read.
        read_timeout: Seconds a request's body may take to arrive whole (else a 408).

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
    return RequestLimits(app, max_bytes, read_timeout)


def serve(
    model_uri: str,
    host: str,
    port: int,
    allowed_hosts: list[str],
    read_timeout: float = READ_TIMEOUT_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve ``model_uri`` on ``host:port`` until interrupted.

    Args:
        model_uri: Any MLflow model URI.
        host: Interface to bind.
        port: Port to listen on.
        allowed_hosts: ``Host`` header values answered.
        read_timeout: Seconds for a request's headers to arrive (else the connection is
            closed), and again for its body (else a 408).
        max_connections: Connections served at once; a request on one more gets a 503.

    Raises:
        TagifaiError: If the model is refused (nothing is served then).
    """
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="tagifai-serve-") as folder:
        app = build_app(model_uri, Path(folder), allowed_hosts, read_timeout=read_timeout)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="info",
            http=_header_deadline(read_timeout),  # h11, whose bounds below apply
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # uvicorn answers 503 once open connections reach the limit, the asking one
            # included: one more lets max_connections be served.
            limit_concurrency=max_connections + 1,
        )
        # The access log quotes each request's path: a client's "%1b[2J" must not
        # reach the operator's terminal as an escape code.
        for name in ("uvicorn", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                handler.addFilter(VisibleLogText())
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down
            server.run()
        if not server.started:  # uvicorn logged why (the port is taken, ...)
            raise TagifaiError(f"serve: could not listen on {host}:{port}")


def _header_deadline(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request's headers have not
    all come ``seconds`` after it opened or after its last answer.

    uvicorn bounds the headers' size and an idle connection's time, but a client that
    sends a byte now and then keeps it forever; the body has :class:`RequestLimits`.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_deadline()

        def _arm_deadline(self) -> None:
            self.loop.call_later(seconds, self._deadline, self.cycle)

        def _deadline(self, cycle: Any) -> None:
            # Still waiting for the same request's headers: no new request (that would
            # replace self.cycle), and none in progress (a pipelined one may be).
            waiting = cycle is None or cycle.response_complete
            if waiting and self.cycle is cycle and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline
