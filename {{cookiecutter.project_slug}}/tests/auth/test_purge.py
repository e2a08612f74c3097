"""The daily purge: refresh tokens and API keys expired or revoked longer ago than their
retention are deleted; live ones, and recent ones, are kept."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import ApiKey, RefreshToken, User
from {{ cookiecutter.package_name }}.auth.security import token_hash
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, JobStatus, get_jobs
from tests.auth.conftest import delivered, login, register

DAY = timedelta(days=1)


def refresh_row(user_id: uuid.UUID, name: str, **times: datetime | None) -> RefreshToken:
    values: dict[str, datetime | None] = {"expires_at": datetime.now(UTC) + 10 * DAY, **times}
    return RefreshToken(
        user_id=user_id,
        family_id=uuid.uuid4(),
        token_hash=token_hash(name),
        scope="read write",
        **values,
    )


def key_row(user_id: uuid.UUID, name: str, **times: datetime | None) -> ApiKey:
    return ApiKey(
        user_id=user_id, name=name, prefix="sk_test", key_hash=token_hash(name), scope="", **times
    )


async def run_purge(app: FastAPI) -> None:
    """One tick of the schedule, as the scheduler adds it, run by the app's runner."""
    tick = datetime.now(UTC).replace(second=0, microsecond=0)
    await get_jobs(app).schedule_ticks([(get_jobs(app).jobs["auth.purge_expired"], tick)])
    await delivered(app)
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        [row] = (
            await session.execute(select(JobRecord).where(JobRecord.name == "auth.purge_expired"))
        ).scalars()
        assert row.status == JobStatus.DONE, row.last_error


async def test_the_purge_runs_daily(app: FastAPI) -> None:
    registered = get_jobs(app).jobs["auth.purge_expired"]
    assert registered.schedule is not None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = croniter(registered.schedule, start)
    first, second = ticks.get_next(datetime), ticks.get_next(datetime)
    assert second - first == DAY


async def test_expired_and_revoked_rows_go_live_ones_stay(
    app: FastAPI,
    client: AsyncClient,
    auth_settings: AuthSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    purge = get_jobs(app).jobs["auth.purge_expired"]
    monkeypatch.setattr(sys.modules[purge.handler.__module__], "PURGE_BATCH", 2)  # in batches
    await register(client, "keeper@example.com")
    session_tokens = await login(client, "keeper@example.com")
    now = datetime.now(UTC)
    old_token = now - (auth_settings.refresh_token_retention_days + 1) * DAY
    recent_token = now - (auth_settings.refresh_token_retention_days - 1) * DAY
    old_key = now - (auth_settings.api_key_retention_days + 1) * DAY
    recent_key = now - (auth_settings.api_key_retention_days - 1) * DAY
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        user = (
            await session.execute(select(User).where(User.email == "keeper@example.com"))
        ).scalar_one()
        session.add_all(
            [
                *(
                    refresh_row(user.id, f"expired long ago {i}", expires_at=old_token)
                    for i in range(5)
                ),
                refresh_row(user.id, "revoked long ago", revoked_at=old_token),
                refresh_row(user.id, "expired lately", expires_at=recent_token),
                refresh_row(user.id, "revoked lately", revoked_at=recent_token),
                # Rotated, not expired: kept, so that presenting it again is still reuse.
                refresh_row(user.id, "rotated long ago", rotated_at=old_token),
                refresh_row(user.id, "live"),
                key_row(user.id, "revoked long ago", revoked_at=old_key),
                key_row(user.id, "expired long ago", expires_at=old_key),
                key_row(user.id, "revoked lately", revoked_at=recent_key),
                key_row(user.id, "expired lately", expires_at=recent_key),
                key_row(user.id, "live, no expiry"),
                key_row(user.id, "live", expires_at=now + DAY),
            ]
        )
    await run_purge(app)
    async with database.sessionmaker() as session:
        token_hashes = set((await session.execute(select(RefreshToken.token_hash))).scalars())
        keys = set((await session.execute(select(ApiKey.name))).scalars())
    kept = {
        token_hash(name)
        for name in ("expired lately", "revoked lately", "rotated long ago", "live")
    }
    assert token_hashes - {token_hash(session_tokens["refresh_token"])} == kept
    assert keys == {"revoked lately", "expired lately", "live, no expiry", "live"}
    # The signed-in session goes on.
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": session_tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
