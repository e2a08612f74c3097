"""Social login: the real Authlib client against the fake OIDC provider on loopback."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth.models import OAuthAccount, User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import create_app
from tests.auth.conftest import (
    FakeProvider,
    assert_problem,
    count,
    login,
    make_auth_settings,
    register,
    set_verified,
)
from tests.loopback import free_port

AUTHORIZE = "/api/v1/auth/oauth/oidc/authorize"


async def start(client: AsyncClient) -> tuple[dict[str, list[str]], str]:
    """Our authorize step, then the provider's: (our redirect's query, the callback path)."""
    response = await client.get(AUTHORIZE)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(location)
    assert at_provider.status_code == 302, at_provider.text
    callback = urlsplit(at_provider.headers["location"])
    assert callback.netloc == "testserver"
    return query, f"{callback.path}?{callback.query}"


async def test_full_flow_creates_a_verified_user(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    query, callback = await start(client)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"][0]
    assert query["nonce"][0]
    assert query["code_challenge"][0]
    assert query["scope"] == ["openid email profile"]
    response = await client.get(callback)
    assert response.status_code == 200, response.text
    tokens = response.json()
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["email"] == "social@example.com"
    assert me.json()["is_verified"] is True
    assert me.json()["has_password"] is False
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        account = (await session.execute(select(OAuthAccount))).scalar_one()
    assert (account.provider, account.subject) == ("oidc", "provider-user-1")

    # Signing in again finds the same account.
    _, callback = await start(client)
    again = await client.get(callback)
    assert again.status_code == 200
    assert await count(app, User) == 1


async def test_state_cookie_is_signed_and_scoped(
    client: AsyncClient, provider: FakeProvider
) -> None:
    response = await client.get(AUTHORIZE)
    cookie = response.headers["set-cookie"]
    assert "oauth_state=" in cookie
    assert "HttpOnly" in cookie
    assert "Path=/api/v1/auth/oauth" in cookie
    assert "samesite=lax" in cookie.lower()


async def test_bad_state_is_400(app: FastAPI, client: AsyncClient, provider: FakeProvider) -> None:
    _, callback = await start(client)
    tampered = callback.replace("state=", "state=x")
    assert "Social login failed" in assert_problem(await client.get(tampered), 400)["detail"]
    assert await count(app, User) == 0


async def test_callback_from_another_browser_is_400(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    _, callback = await start(client)
    client.cookies.clear()  # the state cookie belonged to the browser that started
    assert_problem(await client.get(callback), 400)
    assert await count(app, User) == 0


async def test_reused_code_is_400(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    _, callback = await start(client)
    state_cookie = client.cookies.get("oauth_state")
    assert state_cookie
    assert (await client.get(callback)).status_code == 200
    client.cookies.set("oauth_state", state_cookie, path="/api/v1/auth/oauth")
    replay = await client.get(callback)
    assert "invalid_grant" in assert_problem(replay, 400)["detail"]


async def test_provider_error_is_400(client: AsyncClient, provider: FakeProvider) -> None:
    query, _ = await start(client)
    state = query["state"][0]
    response = await client.get(
        f"/api/v1/auth/oauth/oidc/callback?error=access_denied&error_description=User+said+no&state={state}"
    )
    assert "User said no" in assert_problem(response, 400)["detail"]


async def test_nonce_mismatch_is_400(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    _, callback = await start(client)
    for grant in provider.codes.values():
        grant["nonce"] = "not-the-nonce-we-sent"
    assert_problem(await client.get(callback), 400)
    assert await count(app, User) == 0


async def test_unknown_provider_is_404(client: AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/auth/oauth/github/authorize"), 404)
    assert_problem(await client.get("/api/v1/auth/oauth/nope/callback?code=x&state=y"), 404)


async def test_no_linking_by_email_unless_the_provider_is_trusted_for_it(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    """AUTH_OAUTH_LINK_BY_EMAIL is empty by default: a verified email is not enough."""
    await register(client, "social@example.com")
    await set_verified(app, "social@example.com")
    _, callback = await start(client)
    assert "sign in with your password" in assert_problem(await client.get(callback), 400)["detail"]
    assert await count(app, OAuthAccount) == 0
    await login(client, "social@example.com")  # the owner's password still works


async def test_unverified_email_does_not_take_over_an_account(
    app: FastAPI, client: AsyncClient, provider: FakeProvider
) -> None:
    await register(client, "social@example.com")
    provider.identity["email_verified"] = False
    _, callback = await start(client)
    assert_problem(await client.get(callback), 400)
    assert await count(app, OAuthAccount) == 0
    await login(client, "social@example.com")  # the owner's password still works


async def test_unverified_email_for_a_new_user_stays_unverified(
    client: AsyncClient, provider: FakeProvider
) -> None:
    provider.identity = {"sub": "u2", "email": "fresh@example.com", "email_verified": "false"}
    _, callback = await start(client)
    response = await client.get(callback)
    assert response.status_code == 200
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.json()["is_verified"] is False


async def test_an_unreachable_provider_is_a_clear_400(settings: Settings, migrated: Config) -> None:
    """Nothing listens at the provider's address: a problem, not a 500 (whichever httpx
    package Authlib uses: httpx2 where installed, else httpx)."""
    application = create_app(settings)
    application.state.auth_settings = make_auth_settings(f"http://127.0.0.1:{free_port()}")
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            problem = assert_problem(await http.get(AUTHORIZE), 400)
    assert "cannot be reached" in problem["detail"]
