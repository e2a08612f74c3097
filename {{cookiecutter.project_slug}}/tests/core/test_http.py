"""CORS, trusted hosts and the access line, through the app's real middleware stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from tests.conftest import make_settings

ORIGIN = "https://app.example.com"
SECRET = "a-production-secret-that-is-long-enough-0123456789abcdef"


@asynccontextmanager
async def http(database_url: str, **overrides: object) -> AsyncIterator[AsyncClient]:
    app = create_app(make_settings(database_url, **overrides))
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_cors_answers_allowed_origins_only(database_url: str) -> None:
    async with http(database_url, cors_origins=[ORIGIN]) as client:
        preflight = await client.options(
            "/health/live",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        allowed = await client.get("/health/live", headers={"Origin": ORIGIN})
        other = await client.get("/health/live", headers={"Origin": "https://evil.example"})
        plain = await client.get("/health/live")
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers
    # No Origin header: no CORS headers at all, the security headers as always.
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers
    assert "vary" not in plain.headers
    assert plain.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("api.example.com", 200),
        ("api.example.com:8443", 200),
        ("eu.example.org", 200),  # matched by the wildcard entry
        ("example.org", 400),
        ("evil.example", 400),
    ],
)
async def test_production_answers_its_own_hosts_only(
    database_url: str, host: str, status: int
) -> None:
    async with http(
        database_url,
        environment="production",
        secret_key=SECRET,
        allowed_hosts=["api.example.com", "*.example.org"],
    ) as client:
        response = await client.get("/health/live", headers={"Host": host})
    assert response.status_code == status


@pytest.mark.parametrize(("level", "logged"), [("INFO", True), ("WARNING", False)])
async def test_one_access_line_per_request_at_info(
    database_url: str, capsys: pytest.CaptureFixture[str], level: str, logged: bool
) -> None:
    async with http(database_url, log_level=level) as client:
        capsys.readouterr()
        response = await client.get("/health/live", headers={"X-Request-ID": "trace-me-42"})
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if "trace-me-42" in line and "access" in line]
    assert response.status_code == 200
    if logged:
        assert len(lines) == 1
        assert "/health/live" in lines[0]
        assert "200" in lines[0]
    else:
        assert lines == []
