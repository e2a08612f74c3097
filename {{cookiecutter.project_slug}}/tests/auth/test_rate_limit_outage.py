"""Auth's rate limits fail closed: while the limiter's Redis is down, login, registration,
forgot-password and reset answer 503 problem+json with Retry-After (brute force is never
unlimited), and what is not brute-forceable (a signed-in request) keeps working."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.email import Mailer
from {{ cookiecutter.package_name }}.main import create_app
from tests.auth.conftest import PASSWORD, assert_problem, count, login, register
from tests.conftest import clear_tables, make_settings
from tests.core.redis_process import REDIS_SERVER, redis_process
from tests.loopback import free_port


@asynccontextmanager
async def auth_client(
    settings: Settings, auth_settings: AuthSettings, mailer: Mailer, redis_url: str
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(make_settings(settings.database_url, redis_url=redis_url))
    app.state.auth_settings = auth_settings
    app.state.mailer = mailer
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield app, http
        finally:
            await clear_tables(app.state.database)


async def brute_force_surfaces(http: AsyncClient) -> dict[str, Response]:
    return {
        "login": await http.post(
            "/api/v1/auth/login", data={"username": "who@example.com", "password": "a guess"}
        ),
        "register": await http.post(
            "/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD}
        ),
        "forgot": await http.post(
            "/api/v1/auth/forgot-password", json={"email": "who@example.com"}
        ),
        "reset": await http.post(
            "/api/v1/auth/reset-password", json={"token": "guess", "password": "long enough now"}
        ),
    }


def assert_closed(responses: dict[str, Response]) -> None:
    for name, response in responses.items():
        body = assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1, name
        assert "try again" in body["detail"]


async def test_auth_limits_fail_closed_when_redis_is_unreachable(
    settings: Settings, migrated: object, auth_settings: AuthSettings, mailer: Mailer
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with auth_client(settings, auth_settings, mailer, nobody) as (app, http):
        assert_closed(await brute_force_surfaces(http))
        assert await count(app, User) == 0
        assert (await http.get("/health/live")).status_code == 200


@pytest.mark.skipif(not REDIS_SERVER, reason="needs redis-server on PATH")
async def test_auth_limits_close_while_redis_is_down_and_reopen(
    settings: Settings, migrated: object, auth_settings: AuthSettings, mailer: Mailer
) -> None:
    with redis_process() as redis:
        async with auth_client(settings, auth_settings, mailer, redis.url) as (_app, http):
            await register(http, "owner@example.com")
            tokens = await login(http, "owner@example.com")
            me = {"Authorization": f"Bearer {tokens['access_token']}"}
            up = await brute_force_surfaces(http)
            assert {name: r.status_code for name, r in up.items()} == {
                "login": 401,
                "register": 201,
                "forgot": 202,
                "reset": 400,
            }

            redis.stop()
            assert_closed(await brute_force_surfaces(http))
            # A signed-in request does not go through those limits.
            assert (await http.get("/api/v1/users/me", headers=me)).status_code == 200

            redis.start()
            statuses: list[int] = []
            for _ in range(20):  # a dead pooled connection may fail once more
                statuses.append(
                    (
                        await http.post(
                            "/api/v1/auth/login",
                            data={"username": "owner@example.com", "password": PASSWORD},
                        )
                    ).status_code
                )
                if statuses[-1] != 503:
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 200, statuses
