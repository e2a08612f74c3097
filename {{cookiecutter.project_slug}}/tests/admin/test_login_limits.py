"""The admin login counts like the API login and, like it, fails closed.

- While the limiter's Redis is unreachable or down, the form answers 503 with Retry-After on
  the login page and never looks at the password (a right one does not get in either).
- Its attempts count against the API login's counters under the same keys (per client
  address, per email), both ways round.
- The client address is core's: X-Forwarded-For counts only from a proxy in
  FORWARDED_ALLOW_IPS, so rotating a forged one does not give a fresh budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from redis.asyncio import Redis

from {{ cookiecutter.package_name }}.admin import auth as admin_auth
from {{ cookiecutter.package_name }}.admin.auth import SESSION_COOKIE
from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.security import verify_password
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from tests.admin.conftest import ADMIN_EMAIL, PASSWORD, make_user
from tests.conftest import clear_tables, make_settings
from tests.core.redis_process import REDIS_SERVER, redis_process
from tests.core.served import served
from tests.loopback import free_port

# Per day, so a test never straddles the edge of a per-minute window.
FEW = "3/day"
MANY = "100/day"


def auth_settings(per_client: str = MANY, per_email: str = MANY) -> AuthSettings:
    return AuthSettings(
        _env_file=None,
        login_limit_per_client=per_client,
        login_limit_per_email=per_email,
    )


def own_app(database_url: str, limits: AuthSettings, **overrides: object) -> FastAPI:
    app = create_app(make_settings(database_url, **overrides))
    app.state.auth_settings = limits
    return app


@asynccontextmanager
async def admin_app(
    settings: Settings, limits: AuthSettings | None = None, **overrides: object
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = own_app(settings.database_url, limits or auth_settings(), **overrides)
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield app, http
        finally:
            await clear_tables(app.state.database)


async def attempt(
    http: AsyncClient, email: str = ADMIN_EMAIL, password: str = PASSWORD
) -> Response:
    return await http.post("/admin/login", data={"username": email, "password": password})


def assert_closed(response: Response) -> None:
    """The login page again, saying sign-in is unavailable, with 503 and Retry-After."""
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("text/html")
    assert "Sign-in is unavailable for now" in response.text
    assert 'name="password"' in response.text  # the form, to try again
    assert SESSION_COOKIE not in response.cookies


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the admin login verifies (the real check still runs)."""
    seen: list[str] = []

    async def recorded(password: str, hashed: str | None) -> Any:
        seen.append(password)
        return await verify_password(password, hashed)

    monkeypatch.setattr(admin_auth, "verify_password", recorded)
    return seen


async def test_the_login_fails_closed_while_redis_is_unreachable(
    settings: Settings, migrated: object, password_checks: list[str]
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with admin_app(settings, redis_url=nobody) as (app, http):
        await make_user(app, ADMIN_EMAIL, superuser=True)
        right, wrong = await attempt(http), await attempt(http, password="a guess")
        for response in (right, wrong):
            assert_closed(response)
        assert right.text == wrong.text  # nothing tells a right password from a wrong one
        assert password_checks == []
        assert (await http.get("/admin/")).status_code == 302  # not signed in
        assert (await http.get("/admin/login")).status_code == 200  # the form still shows


@pytest.mark.skipif(not REDIS_SERVER, reason="needs redis-server on PATH")
async def test_the_login_closes_while_redis_is_down_and_reopens(
    settings: Settings, migrated: object, password_checks: list[str]
) -> None:
    with redis_process() as redis:
        async with admin_app(settings, redis_url=redis.url) as (app, http):
            await make_user(app, ADMIN_EMAIL, superuser=True)
            assert (await attempt(http, password="a guess")).status_code == 400
            assert password_checks == ["a guess"]

            redis.stop()
            for _ in range(2):
                assert_closed(await attempt(http))
            assert password_checks == ["a guess"]

            redis.start()
            statuses: list[int] = []
            for _ in range(20):  # a dead pooled connection may fail once more
                statuses.append((await attempt(http)).status_code)
                if statuses[-1] != 503:
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 302, statuses
            assert (await http.get("/admin/")).status_code == 200


async def test_admin_and_api_logins_count_on_the_same_keys(
    settings: Settings, migrated: object
) -> None:
    # Per client address: the form's attempts (each with another email) spend the API's budget.
    async with admin_app(settings, auth_settings(per_client=FEW)) as (_app, http):
        for i in range(3):
            assert (await attempt(http, f"who{i}@example.com")).status_code == 400
        api = await http.post(
            "/api/v1/auth/login", data={"username": "other@example.com", "password": "x"}
        )
        assert api.status_code == 429, api.text
        assert (await attempt(http, "yet-another@example.com")).status_code == 429
    # Per email: the API's attempts spend the form's budget for that email (whatever its case),
    # and another email still has its own.
    async with admin_app(settings, auth_settings(per_email=FEW)) as (app, http):
        await make_user(app, ADMIN_EMAIL, superuser=True)
        for _ in range(3):
            api = await http.post(
                "/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": "a guess"}
            )
            assert api.status_code == 401, api.text
        refused = await attempt(http, ADMIN_EMAIL.upper())
        assert refused.status_code == 429
        assert "Too many login attempts" in refused.text
        assert (await attempt(http, "someone-else@example.com")).status_code == 400


@pytest.mark.skipif(not REDIS_SERVER, reason="needs redis-server on PATH")
async def test_an_admin_attempt_counts_under_exactly_the_api_logins_keys(
    settings: Settings, migrated: object
) -> None:
    """Whatever the keys are made of, the form and the API write the same ones."""
    # Through a trusted proxy (127.0.0.1, the default), so the client is the forwarded address.
    proxied = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
    with redis_process() as redis:
        store = Redis.from_url(redis.url)
        async with admin_app(settings, redis_url=redis.url) as (_app, http):
            written: dict[str, set[bytes]] = {}
            for name, url, email, status in (
                ("admin", "/admin/login", ADMIN_EMAIL.upper(), 400),
                ("api", "/api/v1/auth/login", ADMIN_EMAIL, 401),
            ):
                await store.flushdb()
                response = await http.post(
                    url, data={"username": email, "password": "a guess"}, headers=proxied
                )
                assert response.status_code == status, response.text
                written[name] = {
                    key if isinstance(key, bytes) else key.encode() for key in await store.keys()
                }
        await store.aclose()
    assert written["admin"] == written["api"]
    keys = b" ".join(written["api"])
    assert b"login_limit_per_client" in keys
    assert b"login_limit_per_email" in keys
    assert b"203.0.113.7" in keys
    assert b"198.51.100.9" not in keys


def form_attempts(url: str, forwarded_for: list[str]) -> list[int]:
    """One admin login per forged X-Forwarded-For, each for another unknown email."""
    with httpx.Client(base_url=url, timeout=10) as http:
        return [
            http.post(
                "/admin/login",
                data={"username": f"guess{i}@example.com", "password": "a guess"},
                headers={"X-Forwarded-For": address},
            ).status_code
            for i, address in enumerate(forwarded_for)
        ]


def test_a_forged_forwarded_for_does_not_change_the_admin_login_key(
    database_url: str, migrated: object
) -> None:
    limits = auth_settings(per_client=FEW)
    # The peer (127.0.0.1) is not the listed proxy: its X-Forwarded-For is the client's own
    # writing, so every attempt counts against the peer's address.
    app = own_app(database_url, limits, forwarded_allow_ips=["192.0.2.10"])
    with served(app) as url:
        rotating = [f"203.0.113.{i}" for i in range(1, 5)]
        assert form_attempts(url, rotating) == [400, 400, 400, 429]
    # From a trusted proxy (the default, 127.0.0.1) the forwarded address is the key: the
    # right-most one, which the proxy wrote, whatever the client put to its left.
    app = own_app(database_url, limits)
    with served(app) as url:
        forged = [f"198.51.100.{i}, 203.0.113.50" for i in range(1, 5)]
        assert form_attempts(url, forged) == [400, 400, 400, 429]
        assert form_attempts(url, ["203.0.113.51"]) == [400]  # another client, its own budget
