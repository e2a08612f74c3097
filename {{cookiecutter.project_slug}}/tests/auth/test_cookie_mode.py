"""Cookie mode for browsers: httpOnly token cookies and a CSRF header on unsafe methods."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from tests.auth.conftest import FakeProvider, assert_problem, make_auth_settings, register


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
