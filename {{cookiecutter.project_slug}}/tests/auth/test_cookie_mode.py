"""Cookie mode for browsers: httpOnly token cookies (never in the body), a CSRF header bound
to the session on unsafe methods, and no sign-in from another site (login CSRF)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.dependencies import CurrentUser
from tests.auth.conftest import (
    PASSWORD,
    FakeProvider,
    assert_problem,
    make_auth_settings,
    register,
)
from tests.auth.test_oauth import start


@pytest.fixture
def auth_settings(oidc_server: FakeProvider) -> AuthSettings:
    return make_auth_settings(oidc_server.url, cookie_mode=True, cookie_secure=True)


@pytest.fixture
def https(client: AsyncClient) -> AsyncClient:
    client.base_url = "https://testserver"  # Secure cookies only travel over https
    return client


async def test_login_sets_secure_httponly_cookies(https: AsyncClient) -> None:
    await register(https, "browser@example.com")
    response = await https.post(
        "/api/v1/auth/login",
        data={"username": "browser@example.com", "password": "correct horse battery"},
    )
    assert response.status_code == 200
    cookies = {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}
    assert set(cookies) == {"access_token", "refresh_token", "csrf_token"}
    for name in ("access_token", "refresh_token"):
        assert "HttpOnly" in cookies[name]
    assert "HttpOnly" not in cookies["csrf_token"]
    for cookie in cookies.values():
        assert "Secure" in cookie
        assert "samesite=lax" in cookie.lower()
    assert "Path=/api/v1/auth" in cookies["refresh_token"]


async def test_cookie_auth_with_csrf(https: AsyncClient) -> None:
    await register(https, "csrf@example.com")
    await https.post(
        "/api/v1/auth/login",
        data={"username": "csrf@example.com", "password": "correct horse battery"},
    )
    assert (await https.get("/api/v1/users/me")).status_code == 200  # safe method: no header
    change = "/api/v1/users/me/email"
    patch = {"email": "csrf2@example.com", "current_password": "correct horse battery"}
    assert_problem(await https.post(change, json=patch), 403)
    assert_problem(await https.post(change, json=patch, headers={"X-CSRF-Token": "forged"}), 403)
    csrf = https.cookies.get("csrf_token")
    assert csrf
    ok = await https.post(change, json=patch, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 202, ok.text

    assert_problem(await https.post("/api/v1/auth/refresh"), 403)
    refreshed = await https.post("/api/v1/auth/refresh", headers={"X-CSRF-Token": csrf})
    assert refreshed.status_code == 200, refreshed.text

    assert_problem(await https.post("/api/v1/auth/logout"), 403)  # no CSRF header
    out = await https.post(
        "/api/v1/auth/logout", headers={"X-CSRF-Token": https.cookies.get("csrf_token") or ""}
    )
    assert out.status_code == 204
    assert "access_token" not in https.cookies
    assert_problem(await https.get("/api/v1/users/me"), 401)


LOGIN = "/api/v1/auth/login"
CREDENTIALS = {"username": "browser@example.com", "password": PASSWORD}
UNSAFE = "/_test/unsafe"


@pytest.fixture
def unsafe(app: FastAPI) -> None:
    """A signed-in POST route of the app's own (any unsafe method needs the CSRF header)."""
    router = APIRouter()

    @router.post(UNSAFE)
    async def change(user: CurrentUser) -> dict[str, str]:
        return {"email": user.email}

    app.include_router(router)


async def test_cookie_mode_keeps_the_tokens_out_of_the_body(https: AsyncClient) -> None:
    """A script on the page (XSS) cannot read the tokens and take them away."""
    await register(https, "browser@example.com")
    signed_in = await https.post(LOGIN, data=CREDENTIALS)
    refreshed = await https.post(
        "/api/v1/auth/refresh", headers={"X-CSRF-Token": https.cookies.get("csrf_token") or ""}
    )
    for response in (signed_in, refreshed):
        assert response.status_code == 200, response.text
        body = response.json()
        assert "access_token" not in body
        assert "refresh_token" not in body
        assert body["token_type"] == "cookie"
        assert body["csrf_token"] == https.cookies.get("csrf_token")
        access = https.cookies.get("access_token")
        assert access
        assert access not in response.text


async def test_the_social_login_callback_keeps_the_tokens_out_of_the_body(
    https: AsyncClient, provider: FakeProvider
) -> None:
    _, callback = await start(https)
    response = await https.get(callback)
    assert response.status_code == 200, response.text
    assert "access_token" not in response.json()
    assert "refresh_token" not in response.json()


async def test_a_planted_csrf_cookie_is_refused(https: AsyncClient, unsafe: None) -> None:
    """A sibling site can set a cookie for this one; the token must be the session's own."""
    await register(https, "browser@example.com")
    await https.post(LOGIN, data=CREDENTIALS)
    genuine = https.cookies.get("csrf_token") or ""
    assert (await https.post(UNSAFE, headers={"X-CSRF-Token": genuine})).status_code == 200
    https.cookies.set("csrf_token", "planted-by-attacker")
    forged = {"X-CSRF-Token": "planted-by-attacker"}
    assert_problem(await https.post(UNSAFE, headers=forged), 403)
    assert_problem(await https.post("/api/v1/auth/refresh", headers=forged), 403)
    assert_problem(await https.post("/api/v1/auth/logout", headers=forged), 403)
    assert (await https.get("/api/v1/users/me")).status_code == 200  # still signed in


async def test_another_sessions_csrf_token_is_refused(https: AsyncClient, unsafe: None) -> None:
    await register(https, "browser@example.com")
    other = (await https.post(LOGIN, data=CREDENTIALS)).json()["csrf_token"]
    https.cookies.clear()
    mine = (await https.post(LOGIN, data=CREDENTIALS)).json()["csrf_token"]
    assert mine != other
    assert_problem(await https.post(UNSAFE, headers={"X-CSRF-Token": other}), 403)
    assert (await https.post(UNSAFE, headers={"X-CSRF-Token": mine})).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["foreign-origin", "null-origin", "cross-site", "same-site-no-origin"],
)
async def test_a_cross_site_sign_in_is_refused(https: AsyncClient, headers: dict[str, str]) -> None:
    """Login CSRF: another site must not sign the visitor in to an account of its choice."""
    await register(https, "browser@example.com")
    response = await https.post(LOGIN, data=CREDENTIALS, headers=headers)
    assert "Cross-site" in assert_problem(response, 403)["detail"]
    assert "set-cookie" not in response.headers
    attacker = await login_pair(https)
    with_body = await https.post(
        "/api/v1/auth/refresh", json={"refresh_token": attacker}, headers=headers
    )
    assert_problem(with_body, 403)
    new_account = {"email": "second@example.com", "password": PASSWORD}
    registered = await https.post("/api/v1/auth/register", json=new_account, headers=headers)
    assert_problem(registered, 403)


async def login_pair(https: AsyncClient) -> str:
    """The refresh token of a new session (read from its cookie, as an attacker would)."""
    await https.post(LOGIN, data=CREDENTIALS)
    token = https.cookies.get("refresh_token", path="/api/v1/auth")
    assert token
    https.cookies.clear()
    return token


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "http://frontend.test", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://app.example.com", "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "none"},
        {},
    ],
    ids=["same-origin", "frontend-url", "cors-origin", "typed-by-user", "not-a-browser"],
)
async def test_a_sign_in_from_a_trusted_origin_passes(
    app: FastAPI, https: AsyncClient, headers: dict[str, str]
) -> None:
    app.state.settings.cors_origins = ["https://app.example.com"]
    await register(https, "browser@example.com")
    assert (await https.post(LOGIN, data=CREDENTIALS, headers=headers)).status_code == 200
