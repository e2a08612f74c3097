"""Background jobs in the admin: listed newest first, filtered, read-only; dead ones replayed
(and then run) or deleted by a superuser, never from another site."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import BaseModel

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobContext, JobRecord, enqueue, get_jobs, job
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from tests.admin.conftest import admin_login, make_user
from tests.conftest import clear_tables

LIST = "/admin/job-record/list"
REPLAY = "/admin/job-record/action/replay"
FORGET = "/admin/job-record/action/forget"


class Note(BaseModel):
    text: str


REFUSED: set[str] = set()  # texts the job fails on, for now
NOTED: list[str] = []  # texts the job ran for


@job("tests.note", max_attempts=1)
async def note(ctx: JobContext, args: Note) -> None:
    if args.text in REFUSED:
        raise RuntimeError(f"refusing {args.text}\nsecond line of the error")
    NOTED.append(args.text)


@pytest.fixture
async def app(settings: Settings, migrated: Config) -> AsyncIterator[FastAPI]:
    """The app with one test-only job module (this file's `superuser` and `admin_client` use it).

    Its own runner is stopped: here jobs run when a test says so (`drain()`), so the states in
    between (dead, pending again) stay put while the test looks at them.
    """
    REFUSED.clear()
    NOTED.clear()
    application = create_app(settings, modules=(*MODULES, Module("tests", jobs=(note,))))
    async with LifespanManager(application):
        await get_jobs(application).stop()
        yield application
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)


async def add_note(app: FastAPI, text: str, *, refused: bool = False, delay: float = 0) -> str:
    """Enqueue the test job and run what is due; a refused one ends dead (one attempt)."""
    if refused:
        REFUSED.add(text)
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        job_id = await enqueue(session, note, Note(text=text), delay=delay)
        await session.commit()
    await get_jobs(app).drain()
    REFUSED.discard(text)
    return job_id


async def get_job(app: FastAPI, job_id: str) -> JobRecord | None:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return await session.get(JobRecord, job_id)


async def add_row(app: FastAPI, job_id: str, status: str, created: datetime) -> None:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        session.add(
            JobRecord(
                id=job_id,
                name="tests.note",
                args={"text": job_id},
                status=status,
                attempts=1,
                max_attempts=1,
                run_at=created,
                created_at=created,
                last_error="RuntimeError: it broke" if status == "dead" else None,
            )
        )
        await session.commit()


async def test_jobs_are_listed_newest_first_filtered_and_searched(
    app: FastAPI, admin_client: AsyncClient
) -> None:
    dead = await add_note(app, "too-early", refused=True)
    done = await add_note(app, "on-time")
    waiting = await add_note(app, "tomorrow", delay=86_400)
    earlier = datetime.now(UTC) - timedelta(days=2)
    await add_row(app, "scheduler.tick:2026-01-01T03:23:00Z", "done", earlier)

    listing = await admin_client.get(LIST)
    assert listing.status_code == 200
    for job_id in (dead, done, waiting, "scheduler.tick:2026-01-01T03:23:00Z"):
        assert job_id in listing.text
    assert "tests.note" in listing.text
    assert "1/1" in listing.text  # attempts / max
    assert "RuntimeError: refusing too-early" in listing.text
    assert "second line of the error" not in listing.text  # the first line only in the list
    assert listing.text.index(waiting) < listing.text.index("scheduler.tick:2026-01-01")

    dead_only = await admin_client.get(LIST, params={"status": "dead"})
    assert dead in dead_only.text
    assert done not in dead_only.text
    assert waiting not in dead_only.text
    pending = await admin_client.get(LIST, params={"status": "pending"})
    assert waiting in pending.text
    assert dead not in pending.text
    searched = await admin_client.get(LIST, params={"search": "scheduler.tick"})
    assert "scheduler.tick:2026-01-01T03:23:00Z" in searched.text
    assert dead not in searched.text

    details = await admin_client.get(f"/admin/job-record/details/{dead}")
    assert details.status_code == 200
    assert "second line of the error" in details.text
    keyed = await admin_client.get("/admin/job-record/details/scheduler.tick:2026-01-01T03:23:00Z")
    assert keyed.status_code == 200


async def test_jobs_are_read_only(app: FastAPI, admin_client: AsyncClient) -> None:
    done = await add_note(app, "kept")
    assert (await admin_client.get(f"/admin/job-record/edit/{done}")).status_code == 403
    assert (await admin_client.get("/admin/job-record/create")).status_code == 403
    deleted = await admin_client.delete("/admin/job-record/delete", params={"pks": done})
    assert deleted.status_code == 403
    row = await get_job(app, done)
    assert row is not None
    assert row.status == "done"


async def test_a_replayed_dead_job_is_pending_then_runs(
    app: FastAPI, admin_client: AsyncClient
) -> None:
    dead = await add_note(app, "retry-me", refused=True)
    row = await get_job(app, dead)
    assert row is not None
    assert (row.status, row.attempts) == ("dead", 1)
    assert NOTED == []

    response = await admin_client.get(REPLAY, params={"pks": dead})
    assert response.status_code == 302
    row = await get_job(app, dead)
    assert row is not None
    assert (row.status, row.attempts) == ("pending", 0)
    assert "Replayed 1 dead job(s)." in (await admin_client.get(LIST)).text

    await get_jobs(app).drain()
    row = await get_job(app, dead)
    assert row is not None
    assert (row.status, row.attempts) == ("done", 1)
    assert NOTED == ["retry-me"]


async def test_only_dead_jobs_are_replayed_or_deleted(
    app: FastAPI, admin_client: AsyncClient
) -> None:
    done = await add_note(app, "finished")
    waiting = await add_note(app, "later", delay=3600)
    for url, verb in ((REPLAY, "replayed"), (FORGET, "deleted")):
        response = await admin_client.get(url, params={"pks": f"{done},{waiting},no-such-job"})
        assert response.status_code == 302
        listing = await admin_client.get(LIST)
        assert f"3 left alone: only dead jobs can be {verb}." in listing.text
    finished = await get_job(app, done)
    assert finished is not None
    assert (finished.status, finished.attempts) == ("done", 1)
    later = await get_job(app, waiting)
    assert later is not None
    assert (later.status, later.attempts) == ("pending", 0)
    await get_jobs(app).drain()
    assert NOTED == ["finished"]  # nothing ran again, nothing ran early


async def test_a_dead_job_is_deleted(app: FastAPI, admin_client: AsyncClient) -> None:
    dead = await add_note(app, "give-up", refused=True)
    other = await add_note(app, "also-dead", refused=True)
    response = await admin_client.get(FORGET, params={"pks": dead})
    assert response.status_code == 302
    assert await get_job(app, dead) is None
    assert await get_job(app, other) is not None
    assert "Deleted 1 dead job(s)." in (await admin_client.get(LIST)).text


async def test_only_signed_in_superusers_change_jobs(
    app: FastAPI, client: AsyncClient, admin_client: AsyncClient
) -> None:
    dead = await add_note(app, "guarded", refused=True)
    anonymous = await client.get(LIST)
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].endswith("/admin/login")
    for url in (REPLAY, FORGET):
        response = await client.get(url, params={"pks": dead})
        assert response.status_code == 302
        assert response.headers["location"].endswith("/admin/login")
    await make_user(app, "member@example.com")
    assert await admin_login(client, "member@example.com") == 400
    assert (await client.get(REPLAY, params={"pks": dead})).status_code == 302

    # Signed in, but the request comes from another site: refused.
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        for url in (REPLAY, FORGET):
            response = await admin_client.get(url, params={"pks": dead}, headers=headers)
            assert response.status_code == 403
    row = await get_job(app, dead)
    assert row is not None
    assert row.status == "dead"
