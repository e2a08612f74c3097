"""Rate limits: in memory, in Redis shared by several app instances, failing open by default
and closed (503) where a route asks for it, against a Redis that is not there or goes away.

The limits here are per day: the sliding window weighs the previous window's hits,
so a burst that straddles a window edge could otherwise slip one request through.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient, Response

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.ratelimit import rate_limit
from {{ cookiecutter.package_name }}.main import create_app
from tests.conftest import make_settings
from tests.core.redis_process import REDIS_SERVER, redis_process
from tests.loopback import free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL")


def limited_router(scope: str | None = None) -> APIRouter:
    router = APIRouter(prefix="/_test")

    @router.get("/limited", dependencies=[rate_limit("3/day", scope=scope)])
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/guarded", dependencies=[rate_limit("3/day", scope=scope, fail_closed=True)])
    async def guarded() -> dict[str, bool]:
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


def assert_unavailable(response: Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 503
    assert int(response.headers["retry-after"]) >= 1


async def test_fail_closed_limits_refuse_while_redis_is_unreachable(
    settings: Settings, migrated: object, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = make_settings(settings.database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with serve(nobody) as http:
        capsys.readouterr()
        for _ in range(2):
            assert_unavailable(await http.get("/_test/guarded"))
        assert (await http.get("/_test/limited")).status_code == 200
    err = capsys.readouterr().err
    assert "rate_limiter_unavailable" in err
    assert "fail_closed=True" in err
    assert "fail_closed=False" in err


@pytest.mark.skipif(not REDIS_SERVER, reason="needs redis-server on PATH")
async def test_a_redis_outage_closes_guarded_limits_and_opens_the_others(
    settings: Settings, migrated: object
) -> None:
    with redis_process() as redis:
        own = make_settings(settings.database_url, redis_url=redis.url)
        async with serve(own) as http:
            assert (await http.get("/_test/guarded")).status_code == 200
            assert (await http.get("/_test/limited")).status_code == 200
            redis.stop()
            for _ in range(3):
                assert_unavailable(await http.get("/_test/guarded"))
            # Failing open: more requests than the limit allows all go through.
            statuses = [(await http.get("/_test/limited")).status_code for _ in range(4)]
            assert statuses == [200] * 4
            redis.start()
            # Back: the limiter reconnects (a dead pooled connection may fail once).
            recovered = []
            for _ in range(20):
                recovered.append((await http.get("/_test/guarded")).status_code)
                if recovered[-1] == 200:
                    break
                await asyncio.sleep(0.1)
            assert recovered[-1] == 200, recovered
