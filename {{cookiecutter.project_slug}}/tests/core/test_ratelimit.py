"""Rate limits: in memory, in Redis shared by several app instances, and failing open.

The limits here are per day: the sliding window weighs the previous window's hits,
so a burst that straddles a window edge could otherwise slip one request through.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.ratelimit import rate_limit
from {{ cookiecutter.package_name }}.main import create_app
from tests.conftest import make_settings

REDIS_URL = os.environ.get("TEST_REDIS_URL")


def limited_router(scope: str | None = None) -> APIRouter:
    router = APIRouter(prefix="/_test")

    @router.get("/limited", dependencies=[rate_limit("3/day", scope=scope)])
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    return router


@asynccontextmanager
async def serve(settings: Settings, scope: str | None = None) -> AsyncIterator[AsyncClient]:
    app = create_app(settings)
    app.include_router(limited_router(scope))
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_over_the_limit_is_429_with_retry_after(app: FastAPI, client: AsyncClient) -> None:
    app.include_router(limited_router())
    statuses = [(await client.get("/_test/limited")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await client.get("/_test/limited")
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 24 * 3600
    assert "3/day" in response.json()["detail"]


async def test_other_routes_are_not_limited(app: FastAPI, client: AsyncClient) -> None:
    app.include_router(limited_router())
    for _ in range(4):
        await client.get("/_test/limited")
    assert (await client.get("/health/live")).status_code == 200


@pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to test with a real Redis")
async def test_instances_share_counters_in_redis(settings: Settings, migrated: object) -> None:
    assert REDIS_URL
    shared = make_settings(settings.database_url, redis_url=REDIS_URL)
    # A fresh scope per run keeps earlier runs' counters in Redis out of the way.
    scope = uuid.uuid4().hex
    async with serve(shared, scope) as first, serve(shared, scope) as second:
        statuses = []
        for i in range(4):
            http = first if i % 2 == 0 else second
            statuses.append((await http.get("/_test/limited")).status_code)
        assert statuses == [200, 200, 200, 429]
        ready = await first.get("/health/ready")
        assert ready.json()["checks"]["redis"] == "ok"


async def test_unreachable_redis_fails_open(settings: Settings, migrated: object) -> None:
    down = make_settings(settings.database_url, redis_url="redis://127.0.0.1:1/0")
    async with serve(down) as http:
        statuses = [(await http.get("/_test/limited")).status_code for _ in range(5)]
        assert statuses == [200] * 5
        ready = await http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] == "failed"
