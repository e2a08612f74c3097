"""Only active superusers get in; everyone else is refused, and guessing is rate-limited."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import update

from {{ cookiecutter.package_name }}.admin.auth import SESSION_COOKIE
from {{ cookiecutter.package_name }}.auth.dependencies import get_auth_state
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import create_app
from tests.admin.conftest import (
    ADMIN_EMAIL,
    PASSWORD,
    admin_login,
    clear_of_a_window_edge,
    get_user,
    make_user,
)
from tests.conftest import make_settings

PAGES = ["/admin/", "/admin/user/list", "/admin/api-key/list", "/admin/o-auth-account/list"]


def refused(response_status: int, location: str | None) -> bool:
    return response_status == 302 and (location or "").endswith("/admin/login")


async def test_anonymous_visitors_are_sent_to_the_login_form(client: AsyncClient) -> None:
    for page in PAGES:
        response = await client.get(page)
        assert refused(response.status_code, response.headers.get("location")), page
    form = await client.get("/admin/login")
    assert form.status_code == 200
    assert 'name="password"' in form.text


async def test_anonymous_actions_do_nothing(app: FastAPI, client: AsyncClient) -> None:
    user = await make_user(app, "someone@example.com")
    response = await client.get(f"/admin/user/action/deactivate?pks={user.id}")
    assert refused(response.status_code, response.headers.get("location"))
    assert (await get_user(app, user.id)).is_active


async def test_normal_users_are_refused(app: FastAPI, client: AsyncClient) -> None:
    await make_user(app, "user@example.com")
    response = await client.post(
        "/admin/login", data={"username": "user@example.com", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert "Invalid credentials" in response.text
    assert SESSION_COOKIE not in response.cookies
    page = await client.get("/admin/")
    assert refused(page.status_code, page.headers.get("location"))


async def test_inactive_superusers_are_refused(app: FastAPI, client: AsyncClient) -> None:
    await make_user(app, "former@example.com", superuser=True, active=False)
    assert await admin_login(client, "former@example.com") == 400


async def test_wrong_password_and_unknown_email_are_refused(
    client: AsyncClient, superuser: User
) -> None:
    assert await admin_login(client, ADMIN_EMAIL, "not the password") == 400
    assert await admin_login(client, "nobody@example.com") == 400
    assert await admin_login(client, ADMIN_EMAIL, "x" * 10_000) == 400


async def test_superuser_signs_in_with_a_safe_cookie_and_signs_out(
    client: AsyncClient, superuser: User
) -> None:
    response = await client.post(
        "/admin/login", data={"username": ADMIN_EMAIL.upper(), "password": PASSWORD}
    )
    assert response.status_code == 302
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    attributes = cookie.lower()
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/admin" in attributes
    assert "secure" not in attributes  # plain HTTP outside production
    home = await client.get("/admin/")
    assert home.status_code == 200
    assert "Users" in home.text

    response = await client.get("/admin/logout")
    assert refused(response.status_code, response.headers.get("location"))
    page = await client.get("/admin/user/list")
    assert refused(page.status_code, page.headers.get("location"))


async def test_session_cookie_is_secure_in_production(database_url: str) -> None:
    settings = make_settings(
        database_url, environment="production", allowed_hosts=["api.example.com"]
    )
    app = create_app(settings)
    (middleware,) = app.state.admin.sqladmin.authentication_backend.middlewares
    assert middleware.kwargs["https_only"] is True
    assert middleware.kwargs["same_site"] == "lax"
    await app.state.database.engine.dispose()


async def test_a_forged_session_cookie_is_refused(client: AsyncClient, superuser: User) -> None:
    client.cookies.set(SESSION_COOKIE, "eyJ1c2VyX2lkIjogIngifQ==.forged.signature")
    page = await client.get("/admin/")
    assert refused(page.status_code, page.headers.get("location"))


async def test_demoted_or_deactivated_superusers_lose_access_at_once(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    database: Database = app.state.database
    assert (await admin_client.get("/admin/user/list")).status_code == 200
    for change in ({"is_superuser": False}, {"is_active": False}):
        async with database.sessionmaker() as session:
            await session.execute(update(User).where(User.id == superuser.id).values(**change))
            await session.commit()
        page = await admin_client.get("/admin/user/list")
        assert refused(page.status_code, page.headers.get("location")), change
        async with database.sessionmaker() as session:
            values = {"is_superuser": True, "is_active": True}
            await session.execute(update(User).where(User.id == superuser.id).values(**values))
            await session.commit()
        assert await admin_login(admin_client) == 302


async def test_a_password_change_ends_admin_sessions(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        user = await session.get(User, superuser.id)
        assert user is not None
        user.hashed_password = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$changed"
        await session.commit()
    page = await admin_client.get("/admin/")
    assert refused(page.status_code, page.headers.get("location"))


async def test_wrong_passwords_are_rate_limited(
    app: FastAPI, client: AsyncClient, superuser: User
) -> None:
    allowed = int(get_auth_state(app).settings.login_limit_per_email.split("/")[0])
    await clear_of_a_window_edge()
    for _ in range(allowed):
        assert await admin_login(client, ADMIN_EMAIL, "guess") == 400
    response = await client.post(
        "/admin/login", data={"username": ADMIN_EMAIL, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "Too many login attempts" in response.text
    assert SESSION_COOKIE not in response.cookies


async def test_the_admin_and_api_logins_share_one_budget(
    app: FastAPI, client: AsyncClient, superuser: User
) -> None:
    allowed = int(get_auth_state(app).settings.login_limit_per_email.split("/")[0])
    await clear_of_a_window_edge()
    for _ in range(allowed):
        response = await client.post(
            "/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": "guess"}
        )
        assert response.status_code == 401
    assert await admin_login(client) == 429


async def test_cross_site_actions_are_refused(app: FastAPI, admin_client: AsyncClient) -> None:
    user = await make_user(app, "victim@example.com")
    url = f"/admin/user/action/deactivate?pks={user.id}"
    response = await admin_client.get(url, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    response = await admin_client.get(url, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert (await get_user(app, user.id)).is_active
    listing = await admin_client.get("/admin/user/list", headers={"Sec-Fetch-Site": "cross-site"})
    assert listing.status_code == 200  # reading is fine; changing is not
