"""The auth emails are jobs: enqueued in the request's transaction, sent by the app's own
runner (or by a worker through Redis), retried while the SMTP server refuses or is away,
and nothing secret is stored. A real SMTP server (aiosmtpd) receives them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, JobStatus, get_jobs
from {{ cookiecutter.package_name }}.core.jobs import cli as jobs_cli
from {{ cookiecutter.package_name }}.main import create_app
from tests.auth.conftest import (
    PASSWORD,
    FakeProvider,
    Outbox,
    count,
    delivered,
    make_auth_settings,
    register,
    signed_in,
    text_of,
)
from tests.conftest import PROJECT_ROOT, clear_tables, make_settings
from tests.loopback import free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL")
CHANGE_EMAIL = "/api/v1/users/me/email"
ME = "/api/v1/users/me"
NEW_PASSWORD = "a brand new password"


async def job_rows(app: FastAPI, name: str | None = None) -> list[JobRecord]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        query = select(JobRecord).order_by(JobRecord.created_at, JobRecord.id)
        if name is not None:
            query = query.where(JobRecord.name == name)
        return list((await session.execute(query)).scalars())


async def make_due(app: FastAPI) -> None:
    """Time passes: every job waiting for its retry is due now."""
    database: Database = app.state.database
    async with database.engine.begin() as connection:
        await connection.execute(
            update(JobRecord)
            .where(JobRecord.status == JobStatus.PENDING)
            .values(run_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def tokens_in(messages: list[Any]) -> list[str]:
    return [m for msg in messages for m in re.findall(r"\?token=([A-Za-z0-9._\-]+)", text_of(msg))]


# --- in the app's own runner (no Redis) --------------------------------------------------------


async def test_the_jobs_table_holds_no_link_or_token(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    headers = await signed_in(client, "keep@example.com")
    await client.post("/api/v1/auth/forgot-password", json={"email": "keep@example.com"})
    body = {"email": "Moved@example.com", "current_password": PASSWORD}
    assert (await client.post(CHANGE_EMAIL, json=body, headers=headers)).status_code == 202
    await delivered(app)
    rows = await job_rows(app)
    assert sorted(r.name for r in rows) == [
        "auth.send_email_change",
        "auth.send_reset",
        "auth.send_verification",
        "core.send_email",
    ]
    assert {r.status for r in rows} == {JobStatus.DONE}
    tokens = tokens_in(outbox.messages)
    assert len(tokens) == 3  # verification, reset, the new address's confirmation
    stored = json.dumps([[r.args, r.last_error] for r in rows])
    for token in tokens:
        signature = token.rsplit(".", 1)[-1]
        assert token not in stored
        assert signature not in stored
    assert "token" not in stored
    by_name = {r.name: r.args for r in rows}
    assert set(by_name["auth.send_verification"]) == {"user_id", "requested_at"}
    assert set(by_name["auth.send_reset"]) == {"user_id", "binding", "requested_at"}
    assert set(by_name["auth.send_email_change"]) == {
        "user_id",
        "new_email",
        "binding",
        "requested_at",
    }
    # The notice to the old address holds no link: a plain message.
    assert by_name["core.send_email"]["to"] == "keep@example.com"
    assert "moved@example.com" in by_name["core.send_email"]["body"]


async def test_a_rolled_back_registration_sends_nothing(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    def commit_fails(session: Session) -> None:
        """The commit of a transaction that enqueued the verification email fails."""
        for item in [*session.new, *session.identity_map.values()]:
            if isinstance(item, JobRecord) and item.name == "auth.send_verification":
                raise OperationalError("COMMIT", None, ConnectionError("the database went away"))

    event.listen(Session, "before_commit", commit_fails)
    try:
        response = await client.post(
            "/api/v1/auth/register", json={"email": "rolled@example.com", "password": PASSWORD}
        )
    finally:
        event.remove(Session, "before_commit", commit_fails)
    assert response.status_code == 503, response.text
    await delivered(app)
    assert await count(app, User) == 0
    assert await job_rows(app) == []
    assert outbox.to("rolled@example.com") == []
    # The same registration, committed this time, sends its email.
    await register(client, "rolled@example.com")
    await delivered(app)
    assert len(outbox.to("rolled@example.com")) == 1


async def test_an_smtp_refusal_is_retried_then_the_email_goes_out(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    outbox.refuse = 1
    await register(client, "retry@example.com")
    await delivered(app)
    assert outbox.to("retry@example.com") == []
    [row] = await job_rows(app, "auth.send_verification")
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error is not None
    assert "451" in row.last_error
    assert row.run_at.replace(tzinfo=row.run_at.tzinfo or UTC) > datetime.now(UTC)  # backoff
    await delivered(app)
    assert outbox.to("retry@example.com") == []  # not due yet
    await make_due(app)
    await delivered(app)
    assert len(outbox.to("retry@example.com")) == 1
    [row] = await job_rows(app, "auth.send_verification")
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)
    verified = await client.post(
        "/api/v1/auth/verify-email", json={"token": outbox.link_token("retry@example.com")}
    )
    assert verified.status_code == 200, verified.text


async def test_smtp_away_the_email_is_dead_after_its_attempts_then_replayed(
    app: FastAPI, client: AsyncClient, outbox: Outbox, mailer: Mailer
) -> None:
    app.state.mailer = Mailer(
        EmailSettings(
            _env_file=None,
            smtp_host="127.0.0.1",
            smtp_port=free_port(),  # nothing listens there
            smtp_security="none",
            smtp_timeout=2,
        )
    )
    attempts = get_jobs(app).jobs["auth.send_verification"].max_attempts
    await register(client, "away@example.com")
    for _ in range(attempts):
        await delivered(app)
        await make_due(app)
    [row] = await job_rows(app, "auth.send_verification")
    assert (row.status, row.attempts) == (JobStatus.DEAD, attempts)
    assert row.last_error
    assert outbox.to("away@example.com") == []
    # What an operator does (`python -m <package> jobs list`, then `jobs replay ID`).
    database: Database = app.state.database

    def this_app(_settings: Settings) -> FastAPI:
        return app

    async def jobs(action: str, **values: Any) -> str:
        return await jobs_cli.run(argparse.Namespace(action=action, **values), database, this_app)

    listed = await jobs("list", status="dead", limit=10)
    assert row.id in listed
    assert "auth.send_verification" in listed
    app.state.mailer = mailer  # the server is back
    assert await jobs("replay", ids=[row.id]) == f"{row.id}: replayed"
    await delivered(app)
    assert len(outbox.to("away@example.com")) == 1


async def test_a_password_change_before_the_send_voids_an_email_change(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    """Better than sending a link that is void on arrival: nothing goes to the new address."""
    headers = await signed_in(client, "victim@example.com")
    await delivered(app)
    outbox.refuse = 2  # the confirmation and the notice wait for their retry
    body = {"email": "attacker@example.com", "current_password": PASSWORD}
    assert (await client.post(CHANGE_EMAIL, json=body, headers=headers)).status_code == 202
    await delivered(app)
    change = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert (await client.patch(ME, json=change, headers=headers)).status_code == 200
    await make_due(app)
    await delivered(app)
    assert outbox.to("attacker@example.com") == []
    notices = [m for m in outbox.to("victim@example.com") if "being changed" in m["Subject"]]
    assert len(notices) == 1  # the owner is still told someone asked
    [row] = await job_rows(app, "auth.send_email_change")
    assert row.status == JobStatus.DONE


async def test_a_password_change_before_the_send_voids_a_reset(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    headers = await signed_in(client, "reset-late@example.com")
    await delivered(app)
    outbox.refuse = 1
    await client.post("/api/v1/auth/forgot-password", json={"email": "reset-late@example.com"})
    await delivered(app)
    change = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert (await client.patch(ME, json=change, headers=headers)).status_code == 200
    await make_due(app)
    await delivered(app)
    assert [m for m in outbox.to("reset-late@example.com") if "Reset" in m["Subject"]] == []
    [row] = await job_rows(app, "auth.send_reset")
    assert row.status == JobStatus.DONE


async def test_a_request_older_than_the_send_window_is_dropped(
    app: FastAPI, client: AsyncClient, outbox: Outbox, auth_settings: AuthSettings
) -> None:
    """A dead job replayed days later (or an outage that long) sends no surprise link."""
    outbox.refuse = 1
    await register(client, "old@example.com")
    await delivered(app)
    [row] = await job_rows(app, "auth.send_verification")
    long_ago = datetime.now(UTC) - timedelta(seconds=auth_settings.email_send_within_seconds + 60)
    database: Database = app.state.database
    async with database.engine.begin() as connection:
        await connection.execute(
            update(JobRecord)
            .where(JobRecord.id == row.id)
            .values(args={**row.args, "requested_at": long_ago.isoformat()})
        )
    await make_due(app)
    await delivered(app)
    assert outbox.to("old@example.com") == []
    [row] = await job_rows(app, "auth.send_verification")
    assert row.status == JobStatus.DONE


@asynccontextmanager
async def running(
    settings: Settings, auth_settings: AuthSettings, mailer: Mailer | None = None
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    app = create_app(settings)
    app.state.auth_settings = auth_settings
    if mailer is not None:
        app.state.mailer = mailer
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http
        await app.state.rate_limiter.reset()


@pytest.fixture
async def cleanup(settings: Settings, migrated: Config) -> AsyncIterator[None]:
    yield
    database = Database.from_settings(settings)
    try:
        await clear_tables(database)
    finally:
        await database.engine.dispose()


async def wait_for_mail(outbox: Outbox, address: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not outbox.to(address):
        assert time.monotonic() < deadline, f"no email to {address} within {within} s"
        await asyncio.sleep(0.05)


async def test_with_the_runner_stopped_after_the_commit_the_email_goes_out_after_a_restart(
    settings: Settings,
    cleanup: None,
    auth_settings: AuthSettings,
    mailer: Mailer,
    outbox: Outbox,
) -> None:
    async with running(settings, auth_settings, mailer) as (first, http):
        await get_jobs(first).stop()  # the process goes down: nothing runs its jobs any more
        await register(http, "restart@example.com")
        [row] = await job_rows(first)
        assert row.status == JobStatus.PENDING
    assert outbox.to("restart@example.com") == []
    async with running(settings, auth_settings, mailer) as (second, _):
        await wait_for_mail(outbox, "restart@example.com")  # its runner finds the job itself
        await delivered(second)
        [row] = await job_rows(second)
        assert (row.status, row.attempts) == (JobStatus.DONE, 1)
    assert len(outbox.to("restart@example.com")) == 1


# --- through Redis, to a worker process ---------------------------------------------------------


@pytest.fixture
async def worker_env(
    settings: Settings, smtp_server: tuple[Outbox, int]
) -> AsyncIterator[dict[str, str]]:
    assert REDIS_URL
    queue = f"test-auth-{uuid.uuid4().hex}"
    yield {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": settings.database_url,
        "DB_SQLITE_BUSY_TIMEOUT": str(settings.db_sqlite_busy_timeout),
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": settings.secret_key.get_secret_value(),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server[1]),
        "SMTP_SECURITY": "none",
        "EMAIL_FROM": "app@example.com",
        "AUTH_FRONTEND_URL": "http://frontend.test",
        "JOBS_QUEUE": queue,
        "JOBS_POLL_SECONDS": "0.2",
        "JOBS_SCHEDULER": "false",
    }
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.delete(queue)
    finally:
        await redis.aclose()


@contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    package = Settings.__module__.split(".")[0]
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", package, "worker"],
            cwd=log.parent,  # no .env here
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to test with a real Redis")
async def test_a_worker_sends_the_email_even_when_the_app_stopped_before_it_ran(
    settings: Settings,
    cleanup: None,
    oidc_server: FakeProvider,
    outbox: Outbox,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    redis_settings = make_settings(
        settings.database_url,
        redis_url=REDIS_URL,
        jobs_queue=worker_env["JOBS_QUEUE"],
        jobs_poll_seconds=0.2,
    )
    auth_settings = make_auth_settings(oidc_server.url, register_limit_per_client="1000/minute")
    log = tmp_path / "worker.log"
    # The app commits the registration and stops; no worker is running yet.
    async with running(redis_settings, auth_settings) as (app, http):
        await register(http, "queued@example.com")
        deadline = time.monotonic() + 10
        while (await job_rows(app))[0].status != JobStatus.QUEUED:  # handed to Redis
            assert time.monotonic() < deadline, "the job was not handed to Redis"
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert outbox.to("queued@example.com") == []
    with worker(worker_env, log) as process:
        try:
            await wait_for_mail(outbox, "queued@example.com")
            # And while the worker runs, an app's new email goes through it at once.
            async with running(redis_settings, auth_settings) as (app, http):
                await register(http, "live@example.com")
                await wait_for_mail(outbox, "live@example.com")
                verified = await http.post(
                    "/api/v1/auth/verify-email",
                    json={"token": outbox.link_token("queued@example.com")},
                )
                assert verified.status_code == 200, verified.text
                deadline = time.monotonic() + 10
                while {r.status for r in await job_rows(app)} != {JobStatus.DONE}:
                    assert time.monotonic() < deadline, "the jobs were not marked done"
                    await asyncio.sleep(0.05)
                assert {r.attempts for r in await job_rows(app)} == {1}
        finally:
            assert process.poll() is None, log.read_text(errors="replace")
    assert len(outbox.to("queued@example.com")) == 1
    assert len(outbox.to("live@example.com")) == 1
    assert "auth.send_verification" in log.read_text(errors="replace")
