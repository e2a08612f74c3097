"""Two API instances (separate uvicorn processes) and two workers on one PostgreSQL and one
Redis: a login on one is refreshed on the other and rotation holds across them, the login
limit is one budget for both, and a social login started on one finishes on the other.

The real app and the real worker (tests/scaleout.py), against the fake OIDC provider.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from alembic.config import Config

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from tests.auth.conftest import CLIENT_ID, CLIENT_SECRET, PASSWORD, FakeProvider
from tests.scaleout import (
    Instances,
    environment,
    needs_postgresql_and_redis,
    running,
    shared_database,
)

pytestmark = needs_postgresql_and_redis

EMAIL_LIMIT = 5  # AUTH_LOGIN_LIMIT_PER_EMAIL below, per hour (see tests/core/scaleout_app.py)


@pytest.fixture(scope="module")
async def database(settings: Settings, migrated: Config) -> AsyncIterator[Database]:
    async with shared_database(settings) as database:
        yield database


@pytest.fixture(scope="module")
def started(
    settings: Settings,
    database: Database,
    oidc_server: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Instances]:
    env = environment(
        settings,
        OIDC_DISCOVERY_URL=f"{oidc_server.url}/.well-known/openid-configuration",
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        AUTH_FRONTEND_URL="http://frontend.test",
        AUTH_COOKIE_SECURE="false",
        # A rotated token presented again is reuse at once (no grace for two tabs).
        AUTH_REFRESH_REUSE_GRACE_SECONDS="0",
        AUTH_LOGIN_LIMIT_PER_EMAIL=f"{EMAIL_LIMIT}/hour",
        # Every test here comes from 127.0.0.1: the per-client limits stay out of the way.
        AUTH_LOGIN_LIMIT_PER_CLIENT="1000/minute",
        AUTH_REGISTER_LIMIT_PER_CLIENT="1000/minute",
    )
    with running(env, tmp_path_factory.mktemp("scaleout-auth")) as instances:
        yield instances


@pytest.fixture
def instances(started: Instances) -> Instances:
    started.assert_running()
    started.mark()
    return started


async def sign_up(http: httpx.AsyncClient, url: str) -> str:
    email = f"scale-{uuid.uuid4().hex[:8]}@example.com"
    registered = await http.post(
        f"{url}/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    return email


async def log_in(http: httpx.AsyncClient, url: str, email: str) -> dict[str, Any]:
    response = await http.post(
        f"{url}/api/v1/auth/login", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def refresh(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.post(f"{url}/api/v1/auth/refresh", json={"refresh_token": token})


async def me(http: httpx.AsyncClient, url: str, access_token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return await http.get(f"{url}/api/v1/users/me", headers=headers)


async def test_a_login_on_one_instance_is_refreshed_on_the_other(instances: Instances) -> None:
    a, b = (api.url for api in instances.apis)
    async with httpx.AsyncClient(timeout=15) as http:
        email = await sign_up(http, a)
        first = await log_in(http, a, email)

        rotated = await refresh(http, b, first["refresh_token"])  # A's token, on B
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()
        assert second["refresh_token"] != first["refresh_token"]
        for url in (a, b):
            assert (await me(http, url, second["access_token"])).json()["email"] == email

        # The token B rotated, presented again on A: reuse, and the whole session ends.
        reused = await refresh(http, a, first["refresh_token"])
        assert reused.status_code == 401, reused.text
        for url in (a, b):
            again = await refresh(http, url, second["refresh_token"])
            assert again.status_code == 401, again.text

        # The session's access token too, on both, once each instance's memory of the
        # account is past AUTH_USER_CACHE_SECONDS (5 s at most).
        deadline = time.monotonic() + 15
        for url in (a, b):
            while (await me(http, url, second["access_token"])).status_code != 401:
                assert time.monotonic() < deadline, f"{url} still accepts the ended session"
                await asyncio.sleep(0.2)


async def test_the_login_limit_is_one_budget_for_both_instances(instances: Instances) -> None:
    a, b = (api.url for api in instances.apis)
    email = f"limited-{uuid.uuid4().hex[:8]}@example.com"
    form = {"username": email, "password": "not the password"}
    async with httpx.AsyncClient(timeout=15) as http:
        statuses = []
        for i in range(EMAIL_LIMIT):  # A, B, A, B, A
            response = await http.post(f"{(a, b)[i % 2]}/api/v1/auth/login", data=form)
            statuses.append(response.status_code)
        assert statuses == [401] * EMAIL_LIMIT  # counted, and answered
        for url in (a, b):
            refused = await http.post(f"{url}/api/v1/auth/login", data=form)
            assert refused.status_code == 429, refused.text
            assert "retry-after" in refused.headers


async def test_a_social_login_started_on_one_instance_finishes_on_the_other(
    instances: Instances, provider: FakeProvider
) -> None:
    a, b = (api.url for api in instances.apis)
    async with httpx.AsyncClient(timeout=15) as http:
        started = await http.get(f"{a}/api/v1/auth/oauth/oidc/authorize")
        assert started.status_code == 302, started.text
        state_cookie = started.cookies["oauth_state"]
        http.cookies.clear()  # sent by hand below (a jar would send it to any port)
        at_provider = await http.get(started.headers["location"])
        assert at_provider.status_code == 302, at_provider.text
        callback = urlsplit(at_provider.headers["location"])
        assert f"{callback.scheme}://{callback.netloc}" == a  # the provider sends it back to A

        # The browser's request reaches B instead, with the state cookie A set.
        finished = await http.get(
            f"{b}{callback.path}?{callback.query}",
            headers={"Cookie": f"oauth_state={state_cookie}"},
        )
        assert finished.status_code == 200, finished.text
        signed_in = await me(http, a, finished.json()["access_token"])
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["email"] == provider.identity["email"]

        # Without A's cookie, B refuses the same kind of answer (the state is checked).
        started = await http.get(f"{a}/api/v1/auth/oauth/oidc/authorize")
        http.cookies.clear()
        at_provider = await http.get(started.headers["location"])
        callback = urlsplit(at_provider.headers["location"])
        forged = await http.get(f"{b}{callback.path}?{callback.query}")
        assert forged.status_code == 400, forged.text
