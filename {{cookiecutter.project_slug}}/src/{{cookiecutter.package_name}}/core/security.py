"""HTTP security headers, CORS and trusted hosts.

CORS and the host check use Starlette's middleware. Each sits behind a fast path
that answers the common case from the raw headers without building a `Headers`
object or wrapping `send`: a request without an `Origin` header is none of
CORS's business (Starlette would pass it through unchanged), and a `Host` that
exactly matches an allowed name needs no pattern matching. Everything else goes
to Starlette's middleware as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings


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


def install_http_security(app: FastAPI, settings: Settings) -> None:
    if settings.cors_origins:
        app.add_middleware(CrossOrigin, origins=settings.cors_origins)
    if settings.is_production and "*" not in settings.allowed_hosts:
        app.add_middleware(TrustedHosts, hosts=settings.allowed_hosts)
