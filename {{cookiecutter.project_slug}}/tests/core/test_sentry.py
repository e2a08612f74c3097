"""SENTRY_DSN: an unhandled error reaches Sentry (a fake one on loopback, taking the SDK's
envelopes), without the caller's cookies, credentials or address."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import sentry_sdk
from asgi_lifespan import LifespanManager
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.contract import public
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.core.telemetry import Telemetry, TelemetrySettings
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES

SECRET_COOKIE = "session=cookie-value-never-sent"
SECRET_TOKEN = "Bearer token-value-never-sent"


class FakeSentry(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found, unused-ignore]

            body = brotli.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def sentry() -> Iterator[tuple[str, list[bytes]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSentry)
    FakeSentry.received.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://public-key@127.0.0.1:{server.server_address[1]}/1", FakeSentry.received
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: reports nothing from here on
        server.shutdown()
        server.server_close()


async def test_an_unhandled_error_reaches_sentry_without_personal_data(
    settings: Settings, migrated: object, sentry: tuple[str, list[bytes]]
) -> None:
    dsn, received = sentry
    router = APIRouter()

    @router.get("/test-sentry-boom")
    @public("a test route")
    async def boom() -> None:
        raise RuntimeError("the planned failure of a test route")

    telemetry = Telemetry.from_settings(
        TelemetrySettings(_env_file=None, sentry_dsn=SecretStr(dsn)),
        environment="test",
    )
    app = create_app(
        settings, modules=(*MODULES, Module("t", routers=(router,))), telemetry=telemetry
    )
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            headers = {"Cookie": SECRET_COOKIE, "Authorization": SECRET_TOKEN}
            response = await http.get("/test-sentry-boom", headers=headers)
    assert response.status_code == 500
    sentry_sdk.flush(timeout=10)
    sent = b"".join(received)
    assert b"the planned failure of a test route" in sent
    assert b"RuntimeError" in sent
    assert b"cookie-value-never-sent" not in sent
    assert b"token-value-never-sent" not in sent
