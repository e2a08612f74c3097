"""Sessions: what a logout, a detected refresh reuse, a password change or reset ends, and when.

Access tokens carry their session (the refresh family) and the account's security stamp;
both are checked against the user row each request reads, so these cut access at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth import service
from {{ cookiecutter.package_name }}.auth.dependencies import ReleasedUser, get_auth_state
from {{ cookiecutter.package_name }}.auth.models import ApiKey, RefreshToken, User
from {{ cookiecutter.package_name }}.core.db import Database
from tests.auth.conftest import (
    PASSWORD,
    FakeProvider,
    Outbox,
    age_rotations,
    api_key_for,
    assert_problem,
    delivered,
    login,
    make_auth_settings,
    register,
)

ME = "/api/v1/users/me"
REFRESH = "/api/v1/auth/refresh"


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def rows(app: FastAPI) -> list[RefreshToken]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return list((await session.execute(select(RefreshToken))).scalars())


# --- access tokens end with their session (item 7) -------------------------------------------


async def test_logout_cuts_the_access_token_at_once(client: AsyncClient) -> None:
    await register(client, "out@example.com")
    tokens = await login(client, "out@example.com")
    assert (await client.get(ME, headers=bearer(tokens))).status_code == 200
    out = await client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    assert "ended" in assert_problem(await client.get(ME, headers=bearer(tokens)), 401)["detail"]


async def test_logout_leaves_the_other_sessions_alone(client: AsyncClient) -> None:
    await register(client, "many@example.com")
    laptop = await login(client, "many@example.com")
    phone = await login(client, "many@example.com")
    await client.post("/api/v1/auth/logout", json={"refresh_token": laptop["refresh_token"]})
    assert_problem(await client.get(ME, headers=bearer(laptop)), 401)
    assert (await client.get(ME, headers=bearer(phone))).status_code == 200
    again = await client.post(REFRESH, json={"refresh_token": phone["refresh_token"]})
    assert again.status_code == 200
    assert (await client.get(ME, headers=bearer(again.json()))).status_code == 200


async def test_a_detected_reuse_cuts_the_sessions_access_tokens(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "stolen@example.com")
    first = await login(client, "stolen@example.com")
    rotated = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
    await age_rotations(app, 60)  # past the grace window: this is a replay
    assert_problem(await client.post(REFRESH, json={"refresh_token": first["refresh_token"]}), 401)
    # The thief's access token and the owner's, both of that session, stop at once.
    assert_problem(await client.get(ME, headers=bearer(first)), 401)
    assert_problem(await client.get(ME, headers=bearer(rotated)), 401)


async def test_a_token_without_session_or_stamp_is_refused(
    app: FastAPI, client: AsyncClient
) -> None:
    """Tokens from before sessions were bound (or forged without them) do not pass."""
    created = await register(client, "old@example.com")
    signer = get_auth_state(app).tokens.signer
    unbound = signer.encode("access", {"sub": created["id"], "scope": "read write"}, ttl=300)
    assert_problem(await client.get(ME, headers={"Authorization": f"Bearer {unbound}"}), 401)


async def test_released_user_refuses_an_ended_session(app: FastAPI, client: AsyncClient) -> None:
    router = APIRouter()

    @router.get("/_test/released")
    async def released(user: ReleasedUser) -> dict[str, str]:
        return {"email": user.email}

    app.include_router(router)
    await register(client, "chat@example.com")
    tokens = await login(client, "chat@example.com")
    assert (await client.get("/_test/released", headers=bearer(tokens))).status_code == 200
    await client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    # The remembered row is trusted for AUTH_USER_CACHE_SECONDS (5 s at most); after it:
    get_auth_state(app).recent_users.seconds = 0
    assert_problem(await client.get("/_test/released", headers=bearer(tokens)), 401)


async def test_many_logouts_fall_back_to_a_new_stamp(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user row remembers a bounded number of ended sessions; beyond, all access ends."""
    monkeypatch.setattr(service, "MAX_REVOKED_SESSIONS", 2)
    await register(client, "busy@example.com")
    sessions = [await login(client, "busy@example.com") for _ in range(4)]
    for tokens in sessions[:2]:
        await client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert (await client.get(ME, headers=bearer(sessions[3]))).status_code == 200
    await client.post("/api/v1/auth/logout", json={"refresh_token": sessions[2]["refresh_token"]})
    for tokens in sessions:  # the stamp changed: every access token is refused
        assert_problem(await client.get(ME, headers=bearer(tokens)), 401)
    # ... but a session that was not ended refreshes and goes on.
    renewed = await client.post(REFRESH, json={"refresh_token": sessions[3]["refresh_token"]})
    assert (await client.get(ME, headers=bearer(renewed.json()))).status_code == 200
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
    assert user.revoked_sessions is None


def test_the_user_cache_is_capped(oidc_server: FakeProvider) -> None:
    make_auth_settings(oidc_server.url, user_cache_seconds=5)
    with pytest.raises(ValueError, match="user_cache_seconds"):
        make_auth_settings(oidc_server.url, user_cache_seconds=30)
    with pytest.raises(ValueError, match="refresh_reuse_grace_seconds"):
        make_auth_settings(oidc_server.url, refresh_reuse_grace_seconds=600)


# --- a changed or reset password ends everything (items 3 and 7) -----------------------------


async def test_a_password_change_ends_every_session_and_api_key(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "change@example.com")
    elsewhere = await login(client, "change@example.com")
    here = await login(client, "change@example.com")
    key = await api_key_for(app, "change@example.com")
    assert (await client.get(ME, headers={"X-API-Key": key})).status_code == 200
    changed = await client.patch(
        ME,
        json={"password": "a brand new password", "current_password": PASSWORD},
        headers=bearer(here),
    )
    assert changed.status_code == 200, changed.text
    for tokens in (elsewhere, here):
        assert_problem(await client.get(ME, headers=bearer(tokens)), 401)
        stale = await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        assert_problem(stale, 401)
    assert_problem(await client.get(ME, headers={"X-API-Key": key}), 401)
    fresh = await login(client, "change@example.com", "a brand new password")
    assert (await client.get(ME, headers=bearer(fresh))).status_code == 200


async def test_a_password_reset_ends_every_session_and_api_key(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    await register(client, "forgot@example.com")
    tokens = await login(client, "forgot@example.com")
    key = await api_key_for(app, "forgot@example.com")
    await client.post("/api/v1/auth/forgot-password", json={"email": "forgot@example.com"})
    await delivered(app)
    reset = await client.post(
        "/api/v1/auth/reset-password",
        json={"token": outbox.link_token("forgot@example.com"), "password": "fresh long password"},
    )
    assert reset.status_code == 200, reset.text
    assert_problem(await client.get(ME, headers=bearer(tokens)), 401)
    assert_problem(await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}), 401)
    assert_problem(await client.get(ME, headers={"X-API-Key": key}), 401)
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        keys = (await session.execute(select(ApiKey))).scalars().all()
    assert [k.revoked_at is not None for k in keys] == [True]


# --- two tabs refreshing at once (item 12) -----------------------------------------------------


async def test_a_just_rotated_token_gets_the_live_one_back_within_the_grace_window(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "tabs@example.com")
    first = await login(client, "tabs@example.com")
    one = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    other = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert one.status_code == other.status_code == 200, other.text
    # The same live refresh token (no second one to replay later), a new access token.
    assert other.json()["refresh_token"] == one.json()["refresh_token"]
    assert (await client.get(ME, headers=bearer(other.json()))).status_code == 200
    assert [r.rotated_at is None for r in await rows(app)].count(True) == 1
    # After the window the old token is a replay: the session ends.
    await age_rotations(app, 60)
    assert_problem(await client.post(REFRESH, json={"refresh_token": first["refresh_token"]}), 401)
    assert all(r.revoked_at is not None for r in await rows(app))
    live = await client.post(REFRESH, json={"refresh_token": one.json()["refresh_token"]})
    assert_problem(live, 401)


async def test_two_tabs_refreshing_at_the_same_moment_keep_the_session(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "race@example.com")
    first = await login(client, "race@example.com")
    answers = await asyncio.gather(
        *(client.post(REFRESH, json={"refresh_token": first["refresh_token"]}) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["refresh_token"] == answers[1].json()["refresh_token"]
    assert all(r.revoked_at is None for r in await rows(app))
    nxt = await client.post(REFRESH, json={"refresh_token": answers[0].json()["refresh_token"]})
    assert nxt.status_code == 200, nxt.text


async def test_the_grace_window_follows_a_quick_second_rotation(client: AsyncClient) -> None:
    await register(client, "quick@example.com")
    r0 = (await login(client, "quick@example.com"))["refresh_token"]
    r1 = (await client.post(REFRESH, json={"refresh_token": r0})).json()["refresh_token"]
    r2 = (await client.post(REFRESH, json={"refresh_token": r1})).json()["refresh_token"]
    late = await client.post(REFRESH, json={"refresh_token": r0})
    assert late.status_code == 200
    assert late.json()["refresh_token"] == r2
