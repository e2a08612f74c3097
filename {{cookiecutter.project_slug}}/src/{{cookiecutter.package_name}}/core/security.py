"""HTTP security headers, CORS, trusted hosts, trusted proxies and the request-body limit.

CORS and the host check use Starlette's middleware. Each sits behind a fast path
that answers the common case from the raw headers without building a `Headers`
object or wrapping `send`: a request without an `Origin` header is none of
CORS's business (Starlette would pass it through unchanged), and a `Host` that
exactly matches an allowed name needs no pattern matching. Everything else goes
to Starlette's middleware as before.

The client address and scheme come from `X-Forwarded-For` / `X-Forwarded-Proto`
only when the peer is a proxy listed in `FORWARDED_ALLOW_IPS` (uvicorn's own
middleware, applied by the app itself so that it holds whatever server runs it).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from .config import Settings
from .errors import problem_response

log = structlog.get_logger(__name__)


def security_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    """Headers added to every response (by the request-context middleware)."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if settings.is_production:
        headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
    return headers


class CrossOrigin:
    """Starlette's `CORSMiddleware`, entered only by requests that carry an `Origin` header."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, _value in scope["headers"]:
                if name == b"origin":
                    await self.cors(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class TrustedHosts:
    """Starlette's `TrustedHostMiddleware` (400 for other hosts), with exact names checked first."""

    def __init__(self, app: ASGIApp, *, hosts: Sequence[str]) -> None:
        self.app = app
        self.exact = frozenset(host.encode() for host in hosts if "*" not in host)
        self.checker = TrustedHostMiddleware(app, allowed_hosts=hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope["headers"]:
                if name == b"host":
                    if value.partition(b":")[0] in self.exact:
                        await self.app(scope, receive, send)
                        return
                    break
        await self.checker(scope, receive, send)


class TrustedProxies:
    """Uvicorn's `ProxyHeadersMiddleware` with the app's `FORWARDED_ALLOW_IPS`.

    The client address (`request.client`: rate limits, the access line) and the scheme come
    from the forwarded headers only when the peer is a trusted proxy, and then from the
    right-most address no trusted proxy wrote. Applying the same rules a second time changes
    nothing, so a server that already applied them with the same list does no harm. The first
    `X-Forwarded-For` from an untrusted peer is logged once per process: behind a proxy that is
    missing from the list, every client would share the proxy's address.
    """

    def __init__(self, app: ASGIApp, *, trusted: Sequence[str]) -> None:
        self.proxy = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted))  # type: ignore[arg-type]
        self.trusted = self.proxy.trusted_hosts
        self.warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.warned and scope["type"] == "http":
            client = scope.get("client")
            if client and client[0] not in self.trusted:
                for name, _value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        self.warned = True
                        log.warning(
                            "forwarded_header_ignored",
                            peer=client[0],
                            detail="X-Forwarded-For from a peer not in FORWARDED_ALLOW_IPS",
                        )
                        break
        await self.proxy(scope, receive, send)  # type: ignore[arg-type]


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class BodyLimit:
    """At most `limit` bytes of request body (MAX_BODY_BYTES), else 413 problem+json.

    A declared `Content-Length` above the limit is refused before the app runs; the
    server never delivers more than a declared length, so such a request needs nothing
    more. A body without one (chunked) is counted as the app reads it, and reading past
    the limit raises a 413 `HTTPException` in the reader, which the error handlers turn
    into a problem document. Responses, streamed ones included, are not touched.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit():
                    if int(value) > self.limit:
                        await self.refuse(scope, receive, send)
                        return
                    await self.app(scope, receive, send)
                    return
                break
        await self.counted(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLargeError(self.limit)
        response = problem_response(Request(scope), 413, detail=str(error.detail))
        await response(scope, receive, send)

    async def counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLargeError:
            # An app that let the error through (not FastAPI's handlers): answer here if we can.
            if started:
                raise
            await self.refuse(scope, receive, send)


def install_http_security(app: FastAPI, settings: Settings) -> None:
    # Innermost of the three, so a 413 still gets CORS headers (browsers can read it).
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CrossOrigin, origins=settings.cors_origins)
    if settings.is_production and "*" not in settings.allowed_hosts:
        app.add_middleware(TrustedHosts, hosts=settings.allowed_hosts)


def install_trusted_proxies(app: FastAPI, settings: Settings) -> None:
    """Outermost: everything after it (the access line included) sees the client's address."""
    app.add_middleware(TrustedProxies, trusted=settings.forwarded_allow_ips)
