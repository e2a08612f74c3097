"""Structured logging: JSON in production, readable in development, one access line a request."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .telemetry import add_trace_ids

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,128}$")

access_log = structlog.get_logger("access")


def configure_logging(settings: Settings, *, trace_ids: bool = False) -> None:
    """Route structlog and the standard library (uvicorn, SQLAlchemy) through one renderer.

    With `trace_ids` (tracing on), every line carries the current trace and span ids.
    """
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.is_production
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info
            if settings.is_production
            else structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Filter by level before any processor runs: a disabled line costs next to nothing.
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(settings.log_level)
        ),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # At format time, in the caller's context: its span is the current one.
            *([add_trace_ids] if trace_ids else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our own access line replaces uvicorn's.
    logging.getLogger("uvicorn.access").disabled = True


def _new_request_id() -> str:
    """32 hex digits; unique enough to find a request's lines, and not a secret.

    Not os.urandom: it lets go of the GIL for its system call, and with a busy
    thread beside the event loop (aiosqlite runs one per SQLite connection) the
    loop could wait up to the interpreter's switch interval (5 ms) to get it back,
    once per request. Python's generator is seeded from os.urandom at start and
    again in each forked worker.
    """
    return f"{random.getrandbits(128):032x}"


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, security headers and one access line per request.

    The request id is the caller's `X-Request-ID` when it is a sane token, a fresh
    random one otherwise; it is bound to structlog's context (so every log line of
    the request carries it), kept on `request.state.request_id` and echoed in the
    response. The access line is skipped, timing included, when the log level is
    above INFO. Servers run each request in a task of its own, with its own copy
    of the context, so nothing bound here leaks into another request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        security_headers: list[tuple[bytes, bytes]],
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.security_headers = security_headers
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _VALID_REQUEST_ID.match(value):
                    request_id = value.decode()
                break
        request_id = request_id or _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        extra_headers = [(REQUEST_ID_HEADER, request_id.encode()), *self.security_headers]
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        if not self.access_log:
            await self.app(scope, receive, send_with_headers)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            client = scope.get("client")
            if client:
                fields["client"] = client[0]
            access_log.info("request", **fields)
