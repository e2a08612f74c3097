"""Registration, login, the signed-in user, and bad inputs that change nothing."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import select, update

from {{ cookiecutter.package_name }}.auth.dependencies import CurrentUser, ReleasedUser, get_auth_state
from {{ cookiecutter.package_name }}.auth.models import RefreshToken, User
from {{ cookiecutter.package_name }}.core.db import Database
from tests.auth.conftest import PASSWORD, assert_problem, count, login, register, signed_in


async def test_register_then_login_then_me(client: AsyncClient) -> None:
    created = await register(client, "Ada@Example.com")
    assert created["email"] == "ada@example.com"
    assert created["is_verified"] is False
    assert created["has_password"] is True
    assert "hashed_password" not in created
    tokens = await login(client, "ADA@example.com")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["scope"] == "read write"
    me = await client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["id"] == created["id"]


async def test_password_is_stored_as_argon2(app: FastAPI, client: AsyncClient) -> None:
    await register(client, "hash@example.com")
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
    assert user.hashed_password is not None
    assert user.hashed_password.startswith("$argon2id$")
    assert PASSWORD not in user.hashed_password


async def test_duplicate_email_regardless_of_case_is_409(app: FastAPI, client: AsyncClient) -> None:
    await register(client, "dup@example.com")
    response = await client.post(
        "/api/v1/auth/register", json={"email": "DUP@example.com", "password": PASSWORD}
    )
    assert_problem(response, 409)
    assert await count(app, User) == 1


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('{"email": "not-an-email", "password": "long enough pw"}', "email"),
        ('{"email": "short@example.com", "password": "short"}', "password"),
        ('{"email": "long@example.com", "password": "' + "x" * 129 + '"}', "password"),
        (
            '{"email": "extra@example.com", "password": "long enough pw", "is_superuser": true}',
            "is_superuser",
        ),
        ('{"email": "broken@example.com", "password": ', None),
    ],
    ids=["invalid-email", "short-password", "long-password", "extra-field", "malformed-json"],
)
async def test_bad_registration_is_422_and_changes_nothing(
    app: FastAPI, client: AsyncClient, content: str, field: str | None
) -> None:
    response = await client.post(
        "/api/v1/auth/register", content=content, headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422)
    if field:
        assert any(field in err["loc"] for err in body["errors"]), body
    if field == "password":
        assert "character" in str(body["errors"])  # says how long it must be
    assert await count(app, User) == 0


async def test_wrong_password_and_unknown_email_are_the_same_401(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "who@example.com")
    wrong = await client.post(
        "/api/v1/auth/login", data={"username": "who@example.com", "password": "wrong password"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", data={"username": "nobody@example.com", "password": PASSWORD}
    )
    assert assert_problem(wrong, 401)["detail"] == assert_problem(unknown, 401)["detail"]
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert await count(app, RefreshToken) == 0


async def test_disabled_user_cannot_log_in(app: FastAPI, client: AsyncClient) -> None:
    await register(client, "off@example.com")
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        (await session.execute(select(User))).scalar_one().is_active = False
    response = await client.post(
        "/api/v1/auth/login", data={"username": "off@example.com", "password": PASSWORD}
    )
    assert_problem(response, 403)


async def test_outdated_hash_is_upgraded_on_login(app: FastAPI, client: AsyncClient) -> None:
    await register(client, "old@example.com")
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        user = (await session.execute(select(User))).scalar_one()
        user.hashed_password = weak.hash(PASSWORD)
        old_hash = user.hashed_password
    await login(client, "old@example.com")
    async with database.sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
    assert user.hashed_password != old_hash
    assert user.hashed_password is not None
    assert "m=8192" not in user.hashed_password
    await login(client, "old@example.com")  # the new hash still matches


async def test_me_needs_authentication(client: AsyncClient) -> None:
    response = await client.get("/api/v1/users/me")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_change_password_needs_the_current_one(app: FastAPI, client: AsyncClient) -> None:
    headers = await signed_in(client, "pw@example.com")
    new = "a brand new password"
    missing = await client.patch("/api/v1/users/me", json={"password": new}, headers=headers)
    assert_problem(missing, 400)
    wrong = await client.patch(
        "/api/v1/users/me",
        json={"password": new, "current_password": "not it at all"},
        headers=headers,
    )
    assert_problem(wrong, 400)
    await login(client, "pw@example.com")  # unchanged so far
    ok = await client.patch(
        "/api/v1/users/me", json={"password": new, "current_password": PASSWORD}, headers=headers
    )
    assert ok.status_code == 200, ok.text
    await login(client, "pw@example.com", new)
    old = await client.post(
        "/api/v1/auth/login", data={"username": "pw@example.com", "password": PASSWORD}
    )
    assert_problem(old, 401)


async def test_changes_to_the_current_user_are_committed(app: FastAPI, client: AsyncClient) -> None:
    # The caller is read outside the request's transaction, then attached to the
    # request's session: a change with no explicit flush is still written.
    router = APIRouter()

    @router.post("/_test/deactivate-me", status_code=204)
    async def deactivate_me(user: CurrentUser) -> None:
        user.is_active = False

    app.include_router(router)
    headers = await signed_in(client, "leaving@example.com")
    assert (await client.post("/_test/deactivate-me", headers=headers)).status_code == 204
    assert_problem(await client.get("/api/v1/users/me", headers=headers), 401)


async def test_released_user_trusts_a_recent_read_briefly(
    app: FastAPI, client: AsyncClient
) -> None:
    router = APIRouter()

    @router.get("/_test/released")
    async def released(user: ReleasedUser) -> dict[str, str]:
        return {"email": user.email}

    app.include_router(router)
    headers = await signed_in(client, "recent@example.com")
    assert (await client.get("/_test/released", headers=headers)).json() == {
        "email": "recent@example.com"
    }
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        await session.execute(
            update(User).where(User.email == "recent@example.com").values(is_active=False)
        )
        await session.commit()
    # Within AUTH_USER_CACHE_SECONDS the account read a moment ago is trusted ...
    assert (await client.get("/_test/released", headers=headers)).status_code == 200
    # ... after it, the account is read again and refused; CurrentUser reads every time.
    get_auth_state(app).recent_users.seconds = 0
    assert_problem(await client.get("/_test/released", headers=headers), 401)
    assert_problem(await client.get("/api/v1/users/me", headers=headers), 401)
