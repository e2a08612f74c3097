"""`python -m <package> jobs list|replay|delete|run`: the real command, in its own process,
against the test database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.config import Config
from redis.asyncio import Redis
from sqlalchemy import delete, update

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.email import Email, send_email
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, enqueue
from tests.conftest import PROJECT_ROOT
from tests.loopback import free_port

PACKAGE = Settings.__module__.split(".")[0]
REDIS_URL = os.environ.get("TEST_REDIS_URL")


@pytest.fixture
async def database(settings: Settings, migrated: Config) -> AsyncIterator[Database]:
    """The test database, without jobs; no app (and so no job runner) in this process."""
    db = Database.from_settings(settings)
    async with db.engine.begin() as connection:  # what an earlier test may have left
        await connection.execute(delete(JobRecord))
    yield db
    async with db.engine.begin() as connection:
        await connection.execute(delete(JobRecord))
    await db.engine.dispose()


def jobs_command(
    database_url: str, cwd: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m <package> jobs ARGS` with a test environment (no .env in `cwd`)."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "ENVIRONMENT": "test",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "SMTP_HOST": "",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", PACKAGE, "jobs", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def add_emails(database: Database, count: int, *, delay: float = 0) -> list[str]:
    async with database.sessionmaker() as session:
        ids = [
            await enqueue(
                session,
                send_email,
                Email(to=f"user{i}@example.com", subject="Your invoice", body="Thanks."),
                delay=delay,
            )
            for i in range(count)
        ]
        await session.commit()
    return ids


async def add_row(database: Database, status: str) -> str:
    job_id = uuid.uuid4().hex
    async with database.sessionmaker() as session:
        session.add(
            JobRecord(
                id=job_id,
                name="core.send_email",
                args={"to": "a@example.com", "subject": "Hi", "body": "Hello"},
                status=status,
                attempts=1 if status == "dead" else 0,
                max_attempts=1,
                run_at=datetime.now(UTC),
                last_error="SMTPConnectError: refused" if status == "dead" else None,
            )
        )
        await session.commit()
    return job_id


async def get_job(database: Database, job_id: str) -> JobRecord | None:
    async with database.sessionmaker() as session:
        return await session.get(JobRecord, job_id)


async def test_a_dead_job_is_listed_replayed_and_run(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    (job_id,) = await add_emails(database, 1)
    async with database.engine.begin() as connection:  # one attempt only, for this test
        await connection.execute(
            update(JobRecord).where(JobRecord.id == job_id).values(max_attempts=1)
        )
    # The SMTP server is away: the only attempt fails, and the job is dead.
    away = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()), "SMTP_SECURITY": "none"}
    ran = jobs_command(database_url, tmp_path, "run", **away)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ran 1 job(s)"
    row = await get_job(database, job_id)
    assert row is not None
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error

    listed = jobs_command(database_url, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split("\t")[:4] == [job_id, "core.send_email", "dead", "attempts=1/1"]
    assert line.split("\t")[4] == row.last_error.splitlines()[0]
    pending = jobs_command(database_url, tmp_path, "list", "--status", "pending")
    assert pending.stdout.strip() == "no pending jobs"

    replayed = jobs_command(database_url, tmp_path, "replay", job_id)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"{job_id}: replayed"
    row = await get_job(database, job_id)
    assert row is not None
    assert (row.status, row.attempts) == ("pending", 0)

    # Mail goes to the log now (no SMTP_HOST): the replayed job runs and is done.
    ran = jobs_command(database_url, tmp_path, "run")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ran 1 job(s)"
    row = await get_job(database, job_id)
    assert row is not None
    assert (row.status, row.attempts) == ("done", 1)


@pytest.mark.parametrize("action", ["replay", "delete"])
async def test_an_unknown_id_exits_non_zero_with_one_plain_line(
    database: Database, database_url: str, tmp_path: Path, action: str
) -> None:
    result = jobs_command(database_url, tmp_path, action, "no-such-job")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["no-such-job: no such dead job"]


async def test_delete_removes_dead_jobs_only(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    dead = await add_row(database, "dead")
    done = await add_row(database, "done")
    deleted = jobs_command(database_url, tmp_path, "delete", dead)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"{dead}: deleted"
    assert await get_job(database, dead) is None

    kept = jobs_command(database_url, tmp_path, "delete", done)
    assert kept.returncode == 1
    assert kept.stderr.splitlines() == [f"{done}: no such dead job"]
    assert await get_job(database, done) is not None


@pytest.mark.parametrize(
    "redis_url",
    [
        pytest.param(None, id="without-redis"),
        pytest.param(
            REDIS_URL,
            id="with-redis",
            marks=pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to use Redis"),
        ),
    ],
)
async def test_run_runs_every_due_job_here_and_counts_them(
    database: Database, database_url: str, tmp_path: Path, redis_url: str | None
) -> None:
    """More due jobs than JOBS_CONCURRENCY; with REDIS_URL too, they run in this command."""
    due = await add_emails(database, 15)
    (later,) = await add_emails(database, 1, delay=3600)
    env = {"JOBS_CONCURRENCY": "10"}
    queue = f"test-cli-{uuid.uuid4().hex}"
    if redis_url:
        env |= {"REDIS_URL": redis_url, "JOBS_QUEUE": queue}
    ran = jobs_command(database_url, tmp_path, "run", **env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ran 15 job(s)"
    for job_id in due:
        row = await get_job(database, job_id)
        assert row is not None
        assert (row.status, row.attempts) == ("done", 1)
    waiting = await get_job(database, later)
    assert waiting is not None
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    if redis_url:  # nothing was handed to the workers' stream
        async with Redis.from_url(redis_url) as redis:
            assert await redis.exists(queue) == 0


async def test_list_takes_a_positive_limit(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    await add_row(database, "dead")
    refused = jobs_command(database_url, tmp_path, "list", "--limit", "0")
    assert refused.returncode == 2
    assert "--limit: 0 is not a positive number" in refused.stderr
