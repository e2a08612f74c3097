"""Access tokens (expired, tampered, alg none, wrong key), refresh rotation, scopes, roles."""

from __future__ import annotations

import base64
import json
import time
from typing import Annotated

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth.dependencies import (
    CurrentSuperuser,
    Principal,
    get_auth_state,
    require_scopes,
)
from {{ cookiecutter.package_name }}.auth.models import RefreshToken, User
from {{ cookiecutter.package_name }}.auth.security import TokenSigner
from {{ cookiecutter.package_name }}.core.db import Database
from tests.auth.conftest import age_rotations, assert_problem, login, register

ME = "/api/v1/users/me"


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


@pytest.fixture
async def token(client: AsyncClient) -> str:
    await register(client, "jwt@example.com")
    access: str = (await login(client, "jwt@example.com"))["access_token"]
    return access


async def test_the_token_carries_the_expected_claims(app: FastAPI, token: str) -> None:
    header, payload, _ = token.split(".")
    assert unb64(header)["alg"] == "HS256"
    claims = unb64(payload)
    assert set(claims) >= {"sub", "exp", "iat", "jti", "scope"}
    assert claims["exp"] == claims["iat"] + 900  # type: ignore[operator]
    signer = get_auth_state(app).tokens.signer
    assert signer.decode("access", token)["sub"] == claims["sub"]


async def test_valid_token_is_accepted(client: AsyncClient, token: str) -> None:
    assert (await client.get(ME, headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_expired_token_is_401(app: FastAPI, client: AsyncClient, token: str) -> None:
    signer = get_auth_state(app).tokens.signer
    sub = signer.decode("access", token)["sub"]
    expired = signer.encode("access", {"sub": sub, "scope": "read"}, ttl=-10)
    response = await client.get(ME, headers={"Authorization": f"Bearer {expired}"})
    assert_problem(response, 401)


async def test_a_token_accepted_before_is_refused_once_it_expires(
    client: AsyncClient, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verified tokens are remembered for a while; their expiry is still checked."""
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get(ME, headers=headers)).status_code == 200
    expires = unb64(token.split(".")[1])["exp"]
    assert isinstance(expires, int)
    monkeypatch.setattr(time, "time", lambda: float(expires))
    assert_problem(await client.get(ME, headers=headers), 401)


async def test_tampered_token_is_401(client: AsyncClient, token: str) -> None:
    header, payload, signature = token.split(".")
    claims = unb64(payload)
    claims["scope"] = "read write admin"
    tampered = f"{header}.{b64(claims)}.{signature}"
    response = await client.get(ME, headers={"Authorization": f"Bearer {tampered}"})
    assert_problem(response, 401)


async def test_alg_none_token_is_401(client: AsyncClient, token: str) -> None:
    _, payload, _ = token.split(".")
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    response = await client.get(ME, headers={"Authorization": f"Bearer {unsigned}"})
    assert_problem(response, 401)


async def test_token_signed_with_another_key_is_401(
    app: FastAPI, client: AsyncClient, token: str
) -> None:
    sub = get_auth_state(app).tokens.signer.decode("access", token)["sub"]
    forged = TokenSigner("another-secret-key-of-enough-length-000").encode(
        "access", {"sub": sub, "scope": "read write"}, ttl=300
    )
    response = await client.get(ME, headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401)


async def test_a_token_for_another_purpose_is_401(
    app: FastAPI, client: AsyncClient, token: str
) -> None:
    signer = get_auth_state(app).tokens.signer
    sub = signer.decode("access", token)["sub"]
    reset_like = signer.encode("reset-password", {"sub": sub, "scope": "read"}, ttl=300)
    response = await client.get(ME, headers={"Authorization": f"Bearer {reset_like}"})
    assert_problem(response, 401)


@pytest.mark.parametrize("value", ["Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Bearer x"])
async def test_garbage_credentials_are_401(client: AsyncClient, value: str) -> None:
    assert_problem(await client.get(ME, headers={"Authorization": value}), 401)


async def test_refresh_rotates_and_reuse_revokes_the_family(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "rot@example.com")
    first = await login(client, "rot@example.com")
    second = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert (
        await client.get(ME, headers={"Authorization": f"Bearer {rotated['access_token']}"})
    ).status_code == 200
    # A thief replays the old token (past the grace window): refused, the whole family dies.
    await age_rotations(app, 60)
    reuse = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_problem(reuse, 401)
    legit = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert_problem(legit, 401)
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        rows = (await session.execute(select(RefreshToken))).scalars().all()
    assert len(rows) == 2
    assert all(row.revoked_at is not None for row in rows)


async def test_other_sessions_survive_a_reuse(app: FastAPI, client: AsyncClient) -> None:
    await register(client, "two@example.com")
    laptop = await login(client, "two@example.com")
    phone = await login(client, "two@example.com")
    await client.post("/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    await age_rotations(app, 60)
    reuse = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]}
    )
    assert_problem(reuse, 401)
    ok = await client.post("/api/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert ok.status_code == 200


async def test_unknown_and_expired_refresh_tokens_are_401(
    app: FastAPI, client: AsyncClient
) -> None:
    assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": "nope"}), 401)
    assert_problem(await client.post("/api/v1/auth/refresh", json={}), 401)
    await register(client, "exp@example.com")
    tokens = await login(client, "exp@example.com")
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        row = (await session.execute(select(RefreshToken))).scalar_one()
        row.expires_at = row.created_at
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(response, 401)


async def test_logout_revokes_the_refresh_token(client: AsyncClient) -> None:
    await register(client, "bye@example.com")
    tokens = await login(client, "bye@example.com")
    out = await client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    again = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert_problem(again, 401)


# --- scopes and superusers on a route of the app's own ------------------------------------


@pytest.fixture
async def guarded(app: FastAPI, client: AsyncClient) -> AsyncClient:
    router = APIRouter(prefix="/_test")

    @router.post("/write", dependencies=[require_scopes("write")])
    async def write() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/whoami")
    async def whoami(principal: Annotated[Principal, require_scopes("read")]) -> dict[str, str]:
        return {"email": principal.user.email}

    @router.get("/admin")
    async def admin(user: CurrentSuperuser) -> dict[str, str]:
        return {"admin": user.email}

    app.include_router(router)
    return client


async def test_scopes_guard_routes(guarded: AsyncClient) -> None:
    await register(guarded, "scoped@example.com")
    full = await login(guarded, "scoped@example.com")
    read_only = await login(guarded, "scoped@example.com", scope="read")
    assert read_only["scope"] == "read"
    full_h = {"Authorization": f"Bearer {full['access_token']}"}
    read_h = {"Authorization": f"Bearer {read_only['access_token']}"}
    assert (await guarded.post("/_test/write", headers=full_h)).status_code == 200
    denied = await guarded.post("/_test/write", headers=read_h)
    assert "write" in assert_problem(denied, 403)["detail"]
    whoami = await guarded.get("/_test/whoami", headers=read_h)
    assert whoami.json() == {"email": "scoped@example.com"}


async def test_unknown_scope_at_login_is_400(client: AsyncClient) -> None:
    await register(client, "sc@example.com")
    response = await client.post(
        "/api/v1/auth/login",
        data={
            "username": "sc@example.com",
            "password": "correct horse battery",
            "scope": "read admin",
        },
    )
    assert "admin" in assert_problem(response, 400)["detail"]


async def test_superuser_only_route(app: FastAPI, guarded: AsyncClient) -> None:
    await register(guarded, "boss@example.com")
    token = (await login(guarded, "boss@example.com"))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert_problem(await guarded.get("/_test/admin", headers=headers), 403)
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        (await session.execute(select(User))).scalar_one().is_superuser = True
    response = await guarded.get("/_test/admin", headers=headers)
    assert response.json() == {"admin": "boss@example.com"}
