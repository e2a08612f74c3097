"""Jobs run inside the app process (no Redis): outbox, retries, dead jobs, shutdown, scheduler."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel
from sqlalchemy import func, insert, select, update

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.contract import public
from {{ cookiecutter.package_name }}.core.db import Database, SessionDep
from {{ cookiecutter.package_name }}.core.jobs import (
    JobContext,
    JobRecord,
    JobStatus,
    Tick,
    enqueue,
    get_jobs,
)
from {{ cookiecutter.package_name }}.core.jobs.dead import replay
from {{ cookiecutter.package_name }}.core.jobs.registry import job
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from tests.conftest import clear_tables, make_settings
from tests.core.jobkit import (
    FLAKY,
    Effect,
    app_with_test_jobs,
    drop_effects_table,
    effect,
    effect_rows,
    flaky,
    held,
    job_row,
    make_effects_table,
    wait_for,
)


@pytest.fixture
async def jobs_app(settings: Settings, migrated: object) -> AsyncIterator[FastAPI]:
    app = app_with_test_jobs(make_settings(settings.database_url, jobs_poll_seconds=0.2))
    async with LifespanManager(app):
        await make_effects_table(app.state.database)
        try:
            yield app
        finally:
            await drop_effects_table(app.state.database)
            await clear_tables(app.state.database)


async def cleaned(db: Database) -> None:
    try:
        await drop_effects_table(db)
        await clear_tables(db)
    finally:
        await db.engine.dispose()


def database(app: FastAPI) -> Database:
    db: Database = app.state.database
    return db


async def count_jobs(app: FastAPI) -> int:
    async with database(app).engine.connect() as connection:
        return int((await connection.scalar(select(func.count()).select_from(JobRecord))) or 0)


async def put_job(
    app: FastAPI,
    job_id: str,
    *,
    name: str = "tests.effect",
    args: dict[str, object] | None = None,
    attempts: int = 0,
    started_ago: timedelta | None = None,
) -> None:
    """A row written as another process would have left it: pending, or running since then."""
    at = datetime.now(UTC) - (started_ago or timedelta(0))
    async with database(app).engine.begin() as connection:
        await connection.execute(
            insert(JobRecord).values(
                id=job_id,
                name=name,
                args=Effect(tag="x").model_dump() if args is None else args,
                status=JobStatus.PENDING if started_ago is None else JobStatus.RUNNING,
                attempts=attempts,
                max_attempts=4,
                run_at=at,
                started_at=None if started_ago is None else at,
            )
        )


async def is_status(app: FastAPI, job_id: str, status: JobStatus) -> bool:
    return bool((await job_row(database(app), job_id))["status"] == status)


async def test_a_rolled_back_transaction_enqueues_nothing(jobs_app: FastAPI) -> None:
    async with database(jobs_app).sessionmaker() as session:
        await enqueue(session, effect, Effect(tag="rolled back"))
        await session.rollback()
    assert await count_jobs(jobs_app) == 0
    assert await get_jobs(jobs_app).drain() == 0
    assert await effect_rows(database(jobs_app)) == []


async def test_a_committed_job_runs_once_by_itself(jobs_app: FastAPI) -> None:
    async with database(jobs_app).sessionmaker() as session:
        job_id = await enqueue(session, effect, Effect(tag="committed"))
        await session.commit()
    # No drain: the commit wakes this process's runner.
    await wait_for(lambda: is_status(jobs_app, job_id, JobStatus.DONE), what="the job to run")
    assert await get_jobs(jobs_app).drain() == 0
    rows = await effect_rows(database(jobs_app))
    assert [(r["job_id"], r["attempt"], r["tag"]) for r in rows] == [(job_id, 1, "committed")]
    row = await job_row(database(jobs_app), job_id)
    assert row["attempts"] == 1
    assert row["finished_at"] is not None


async def test_a_request_that_fails_enqueues_nothing_and_one_that_succeeds_does(
    settings: Settings, migrated: object
) -> None:
    router = APIRouter()

    @router.post("/test-jobs/{tag}")
    @public("a test route")
    async def make_job(tag: str, session: SessionDep) -> dict[str, str]:
        job_id = await enqueue(session, effect, Effect(tag=tag))
        if tag == "fail":
            raise RuntimeError("the request fails after enqueueing")
        return {"id": job_id}

    app = create_app(settings, modules=(*MODULES, Module("t", routers=(router,), jobs=(effect,))))
    async with LifespanManager(app):
        await make_effects_table(database(app))
        try:
            transport = ASGITransport(app=app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                failed = await http.post("/test-jobs/fail")
                assert failed.status_code == 500
                assert await count_jobs(app) == 0
                ok = await http.post("/test-jobs/ok")
                assert ok.status_code == 200
            await get_jobs(app).drain()
            rows = await effect_rows(database(app))
            assert [(r["job_id"], r["tag"]) for r in rows] == [(ok.json()["id"], "ok")]
        finally:
            await drop_effects_table(database(app))
            await clear_tables(database(app))


async def test_a_key_makes_a_second_enqueue_a_no_op(jobs_app: FastAPI) -> None:
    for _ in range(2):
        async with database(jobs_app).sessionmaker() as session:
            job_id = await enqueue(session, effect, Effect(tag="keyed"), key="evt_1")
            await session.commit()
    assert job_id == "tests.effect:evt_1"
    await get_jobs(jobs_app).drain()
    assert await count_jobs(jobs_app) == 1
    assert [r["tag"] for r in await effect_rows(database(jobs_app))] == ["keyed"]


async def test_a_failing_job_is_retried_with_backoff_then_dead_then_replayed(
    jobs_app: FastAPI,
) -> None:
    FLAKY.update(broken=True, attempted_at=[])
    async with database(jobs_app).sessionmaker() as session:
        job_id = await enqueue(session, flaky, Effect(tag="flaky"))
        await session.commit()
    await wait_for(lambda: is_status(jobs_app, job_id, JobStatus.DEAD), what="the job to die")
    row = await job_row(database(jobs_app), job_id)
    assert row["attempts"] == 3
    assert row["last_error"] == "RuntimeError: the flaky job's upstream is down"
    times = FLAKY["attempted_at"]
    assert len(times) == 3
    # backoff 0.2 s doubling, with up to 25% jitter off: >= 0.15 s, then >= 0.3 s
    assert times[1] - times[0] >= 0.15
    assert times[2] - times[1] >= 0.3
    # Each failed attempt's writes rolled back.
    assert await effect_rows(database(jobs_app)) == []

    FLAKY["broken"] = False
    async with database(jobs_app).engine.begin() as connection:
        assert await replay(connection, [job_id, "no-such-job"]) == [job_id]
    await wait_for(lambda: is_status(jobs_app, job_id, JobStatus.DONE), what="the replayed job")
    rows = await effect_rows(database(jobs_app))
    assert [(r["job_id"], r["attempt"]) for r in rows] == [(job_id, 1)]
    async with database(jobs_app).engine.begin() as connection:
        assert await replay(connection, [job_id]) == []  # only dead jobs are replayed


async def test_arguments_that_no_longer_fit_are_dead_at_once(jobs_app: FastAPI) -> None:
    await put_job(jobs_app, "old-shape", args={"label": "a field this job no longer has"})
    await get_jobs(jobs_app).drain()
    row = await job_row(database(jobs_app), "old-shape")
    assert row["status"] == JobStatus.DEAD
    assert row["attempts"] == 1
    assert row["last_error"].startswith("ValidationError")


async def test_a_job_another_version_declares_is_left_alone(jobs_app: FastAPI) -> None:
    await put_job(jobs_app, "from-a-newer-release", name="billing.a_job_this_version_does_not_have")
    assert await get_jobs(jobs_app).drain() == 0
    row = await job_row(database(jobs_app), "from-a-newer-release")
    assert (row["status"], row["attempts"]) == (JobStatus.PENDING, 0)


async def test_stopping_gives_a_running_job_back_and_the_next_start_runs_it(
    settings: Settings, migrated: object
) -> None:
    quick_stop = make_settings(
        settings.database_url, jobs_poll_seconds=0.2, jobs_shutdown_seconds=0.2
    )
    FLAKY["hold"] = True
    first = app_with_test_jobs(quick_stop)
    async with LifespanManager(first):
        await make_effects_table(database(first))
        async with database(first).sessionmaker() as session:
            job_id = await enqueue(session, held, Effect(tag="held"))
            await session.commit()
        await wait_for(lambda: is_status(first, job_id, JobStatus.RUNNING), what="the job to start")
    # Stopped mid-run: given back, the attempt not counted, its writes rolled back.
    row = await job_row(database(first), job_id)
    assert (row["status"], row["attempts"]) == (JobStatus.PENDING, 0)
    assert await effect_rows(database(first)) == []
    FLAKY["hold"] = False
    second = app_with_test_jobs(quick_stop)
    async with LifespanManager(second):
        try:
            await wait_for(lambda: is_status(second, job_id, JobStatus.DONE), what="the rerun")
            rows = await effect_rows(database(second))
            assert [(r["job_id"], r["attempt"]) for r in rows] == [(job_id, 1)]
        finally:
            await drop_effects_table(database(second))
            await clear_tables(database(second))


async def test_a_job_whose_process_died_is_run_again_once(jobs_app: FastAPI) -> None:
    await put_job(jobs_app, "left-running", attempts=1, started_ago=timedelta(minutes=5))
    runtime = get_jobs(jobs_app)
    await runtime.sweep()  # (or the app's own sweeper, every ten polls, got there first)
    await wait_for(lambda: is_status(jobs_app, "left-running", JobStatus.DONE), what="the rerun")
    row = await job_row(database(jobs_app), "left-running")
    assert (row["status"], row["attempts"]) == (JobStatus.DONE, 2)
    rows = await effect_rows(database(jobs_app))
    assert [(r["job_id"], r["attempt"]) for r in rows] == [("left-running", 2)]


async def test_a_lost_job_out_of_attempts_is_dead(jobs_app: FastAPI) -> None:
    await put_job(jobs_app, "lost-for-good", attempts=4, started_ago=timedelta(minutes=5))
    await get_jobs(jobs_app).sweep()  # (or the app's own sweeper got there first)
    row = await job_row(database(jobs_app), "lost-for-good")
    assert row["status"] == JobStatus.DEAD
    assert "attempt 4" in row["last_error"]


async def test_a_running_job_within_its_time_is_not_taken_away(jobs_app: FastAPI) -> None:
    await put_job(jobs_app, "still-running", attempts=1, started_ago=timedelta(seconds=1))
    assert await get_jobs(jobs_app).sweep() == 0
    assert await get_jobs(jobs_app).drain() == 0


async def test_a_sweep_that_finds_nothing_writes_nothing(jobs_app: FastAPI) -> None:
    """Every process sweeps, and most sweeps find nothing: such a sweep only reads. On SQLite
    a write, even one matching no row, would wait for the database's one write lock, held
    here by another transaction for longer than the busy timeout: "database is locked"."""
    await put_job(jobs_app, "still-running", attempts=1, started_ago=timedelta(seconds=1))
    async with database(jobs_app).engine.begin() as writer:
        await writer.execute(
            update(JobRecord).where(JobRecord.id == "still-running").values(last_error="held")
        )
        assert await get_jobs(jobs_app).sweep() == 0
    assert (await job_row(database(jobs_app), "still-running"))["last_error"] == "held"


async def test_two_instances_run_a_scheduled_job_once_per_tick(
    settings: Settings, migrated: object
) -> None:
    scheduling = make_settings(settings.database_url, jobs_poll_seconds=0.2, jobs_scheduler=True)
    first = app_with_test_jobs(scheduling, scheduled=True)
    second = app_with_test_jobs(scheduling, scheduled=True)
    try:
        async with LifespanManager(first), LifespanManager(second):
            await make_effects_table(database(first))
            await asyncio.sleep(3.5)
            await get_jobs(first).drain()
            await get_jobs(second).drain()
            ticks = [r["tag"] for r in await effect_rows(database(first))]
    finally:  # with both schedulers stopped, so no tick comes after the cleaning
        await cleaned(Database.from_settings(settings))
    assert len(ticks) >= 3
    assert len(set(ticks)) == len(ticks), f"a tick ran twice: {sorted(ticks)}"
    seconds = sorted(datetime.fromisoformat(t) for t in ticks)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(seconds))


class Numbers(BaseModel):
    n: int


async def numbers_handler(ctx: JobContext, args: Numbers) -> None:
    return None


async def tick_handler(ctx: JobContext, args: Tick) -> None:
    return None


async def unannotated_handler(ctx, args):  # type: ignore[no-untyped-def]
    return None


def test_a_job_declaration_is_checked() -> None:
    with pytest.raises(TypeError, match="takes Tick"):
        job("x.scheduled", schedule="* * * * *")(numbers_handler)
    with pytest.raises(ValueError, match="not a cron schedule"):
        job("x.bad", schedule="every day")(tick_handler)
    with pytest.raises(TypeError, match="Pydantic model"):
        job("x.untyped")(unannotated_handler)
    assert job("x.fine", schedule="*/5 * * * *")(tick_handler).schedule == "*/5 * * * *"
    assert job("x.numbers")(numbers_handler).args_type is Numbers
