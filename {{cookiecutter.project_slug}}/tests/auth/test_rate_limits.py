"""Rate limits on login, register, forgot-password and reset, per client and per email
(per email and client address, so nobody elsewhere can spend an owner's budget).

The limits come from AuthSettings; here they count per day, so a test never straddles
the window boundary of a per-minute limit.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from tests.auth.conftest import (
    PASSWORD,
    FakeProvider,
    Outbox,
    assert_problem,
    delivered,
    login,
    make_auth_settings,
    register,
)


@pytest.fixture
def auth_settings(oidc_server: FakeProvider) -> AuthSettings:
    return make_auth_settings(
        oidc_server.url,
        login_limit_per_client="8/day",
        login_limit_per_email="3/day",
        register_limit_per_client="4/day",
        forgot_limit_per_client="6/day",
        forgot_limit_per_email="2/day",
        reset_limit_per_client="3/day",
    )


def allowed(limit: str) -> int:
    return int(limit.split("/")[0])


async def test_login_is_limited_per_email(client: AsyncClient, auth_settings: AuthSettings) -> None:
    bad = {"username": "target@example.com", "password": "guessing wrong"}
    for _ in range(allowed(auth_settings.login_limit_per_email)):
        assert (await client.post("/api/v1/auth/login", data=bad)).status_code == 401
    limited = await client.post("/api/v1/auth/login", data=bad)
    assert "3/day" in assert_problem(limited, 429)["detail"]
    assert int(limited.headers["retry-after"]) >= 1
    other = {"username": "other@example.com", "password": "guessing wrong"}
    assert (await client.post("/api/v1/auth/login", data=other)).status_code == 401


async def test_nobody_else_can_spend_a_victims_login_budget(
    app: FastAPI, client: AsyncClient, auth_settings: AuthSettings
) -> None:
    """The per-email limit counts per email and client address: an attacker elsewhere
    spends their own budget, never the owner's."""
    await register(client, "victim@example.com")
    attacker = AsyncClient(
        transport=ASGITransport(app=app, client=("198.51.100.7", 40000)),
        base_url="http://testserver",
    )
    bad = {"username": "victim@example.com", "password": "guessing wrong"}
    async with attacker:
        for _ in range(allowed(auth_settings.login_limit_per_email)):
            assert (await attacker.post("/api/v1/auth/login", data=bad)).status_code == 401
        assert_problem(await attacker.post("/api/v1/auth/login", data=bad), 429)
        # Guessing other passwords of the victim from that address stays refused.
        good = {"username": "victim@example.com", "password": PASSWORD}
        assert_problem(await attacker.post("/api/v1/auth/login", data=good), 429)
    await login(client, "victim@example.com")  # the owner, from their own address


async def test_login_is_limited_per_client(
    client: AsyncClient, auth_settings: AuthSettings
) -> None:
    for i in range(allowed(auth_settings.login_limit_per_client)):
        data = {"username": f"u{i}@example.com", "password": "guessing wrong"}
        assert (await client.post("/api/v1/auth/login", data=data)).status_code == 401
    data = {"username": "fresh@example.com", "password": "guessing wrong"}
    assert_problem(await client.post("/api/v1/auth/login", data=data), 429)


async def test_register_is_limited(client: AsyncClient, auth_settings: AuthSettings) -> None:
    for i in range(allowed(auth_settings.register_limit_per_client)):
        await register(client, f"r{i}@example.com")
    response = await client.post(
        "/api/v1/auth/register", json={"email": "one-more@example.com", "password": "long enough"}
    )
    assert_problem(response, 429)


async def test_forgot_password_is_limited_per_email(
    client: AsyncClient, auth_settings: AuthSettings
) -> None:
    body = {"email": "flood@example.com"}
    for _ in range(allowed(auth_settings.forgot_limit_per_email)):
        assert (await client.post("/api/v1/auth/forgot-password", json=body)).status_code == 202
    assert_problem(await client.post("/api/v1/auth/forgot-password", json=body), 429)
    other = {"email": "calm@example.com"}
    assert (await client.post("/api/v1/auth/forgot-password", json=other)).status_code == 202


async def test_nobody_else_can_spend_a_victims_reset_emails(
    app: FastAPI, client: AsyncClient, auth_settings: AuthSettings, outbox: Outbox
) -> None:
    """The per-email forgot-password limit counts per email and client address: a stranger
    elsewhere floods the owner's mailbox with no more than that limit, and the owner still
    gets a reset email."""
    await register(client, "owner@example.com")
    attacker = AsyncClient(
        transport=ASGITransport(app=app, client=("198.51.100.7", 40000)),
        base_url="http://testserver",
    )
    body = {"email": "Owner@Example.com"}
    async with attacker:
        for _ in range(allowed(auth_settings.forgot_limit_per_email)):
            response = await attacker.post("/api/v1/auth/forgot-password", json=body)
            assert response.status_code == 202
        assert_problem(await attacker.post("/api/v1/auth/forgot-password", json=body), 429)
    await delivered(app)
    resets = [m for m in outbox.to("owner@example.com") if "Reset" in m["Subject"]]
    assert len(resets) == allowed(auth_settings.forgot_limit_per_email)
    owner = await client.post("/api/v1/auth/forgot-password", json={"email": "owner@example.com"})
    assert owner.status_code == 202, owner.text
    await delivered(app)
    resets = [m for m in outbox.to("owner@example.com") if "Reset" in m["Subject"]]
    assert len(resets) == allowed(auth_settings.forgot_limit_per_email) + 1
    token = outbox.link_token("owner@example.com")
    reset = await client.post(
        "/api/v1/auth/reset-password", json={"token": token, "password": "the owner's new one"}
    )
    assert reset.status_code == 200, reset.text


async def test_forgot_password_is_limited_per_client(
    client: AsyncClient, auth_settings: AuthSettings
) -> None:
    for i in range(allowed(auth_settings.forgot_limit_per_client)):
        body = {"email": f"f{i}@example.com"}
        assert (await client.post("/api/v1/auth/forgot-password", json=body)).status_code == 202
    body = {"email": "last@example.com"}
    assert_problem(await client.post("/api/v1/auth/forgot-password", json=body), 429)


async def test_reset_is_limited(client: AsyncClient, auth_settings: AuthSettings) -> None:
    body = {"token": "guess", "password": "long enough password"}
    for _ in range(allowed(auth_settings.reset_limit_per_client)):
        assert (await client.post("/api/v1/auth/reset-password", json=body)).status_code == 400
    assert_problem(await client.post("/api/v1/auth/reset-password", json=body), 429)


def test_a_bad_limit_is_refused_at_startup(oidc_server: FakeProvider) -> None:
    with pytest.raises(ValueError, match="login_limit_per_email"):
        make_auth_settings(oidc_server.url, login_limit_per_email="lots")
