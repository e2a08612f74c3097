"""Jobs through a real Redis to real worker processes: crashes, several workers, the scheduler."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, JobStatus, enqueue, get_jobs
from tests.conftest import clear_tables, make_settings
from tests.core.jobkit import (
    Effect,
    app_with_test_jobs,
    drop_effects_table,
    effect,
    effect_rows,
    job_row,
    make_effects_table,
    slow,
    wait_for,
    worker_environment,
    workers,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to test with Redis")


@pytest.fixture
async def redis_settings(settings: Settings, migrated: object) -> AsyncIterator[Settings]:
    queue = f"test-jobs-{uuid.uuid4().hex[:8]}"
    yield make_settings(
        settings.database_url,
        redis_url=REDIS_URL,
        jobs_queue=queue,
        jobs_concurrency=2,
        jobs_poll_seconds=0.2,
        jobs_lease_grace_seconds=1.0,
        jobs_requeue_seconds=3.0,
        jobs_shutdown_seconds=2.0,
    )
    assert REDIS_URL is not None
    async with Redis.from_url(REDIS_URL) as redis:
        await redis.delete(queue)


async def unfinished(settings: Settings, app: object) -> int:
    database = app.state.database  # type: ignore[attr-defined]
    async with database.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count())
            .select_from(JobRecord)
            .where(JobRecord.status.not_in([JobStatus.DONE, JobStatus.DEAD]))
        )
    return int(count or 0)


async def test_a_job_whose_worker_is_killed_mid_run_completes_once_on_another(
    redis_settings: Settings, tmp_path: Path
) -> None:
    app = app_with_test_jobs(redis_settings)  # publishes only: the workers run the jobs
    env = worker_environment(redis_settings)
    async with LifespanManager(app):
        database = app.state.database
        await make_effects_table(database)
        try:
            with workers(env, 1, str(tmp_path / "first")) as (doomed,):
                async with database.sessionmaker() as session:
                    job_id = await enqueue(session, slow, Effect(tag="survives"))
                    await session.commit()

                async def running() -> bool:
                    row = await job_row(database, job_id)
                    return bool(row["status"] == JobStatus.RUNNING and row["attempts"] == 1)

                await wait_for(running, what="the first worker to take the job")
                doomed.kill()
                assert doomed.process.returncode == -9
            assert (await job_row(database, job_id))["status"] == JobStatus.RUNNING
            with workers(env, 1, str(tmp_path / "second")) as (rescuer,):

                async def done() -> bool:
                    return bool((await job_row(database, job_id))["status"] == JobStatus.DONE)

                await wait_for(done, within=40, what="another worker to finish the job")
            row = await job_row(database, job_id)
            assert row["attempts"] == 2
            rows = await effect_rows(database)
            # Once: the killed attempt's write never committed.
            assert [(r["job_id"], r["attempt"], r["pid"]) for r in rows] == [
                (job_id, 2, rescuer.process.pid)
            ]
        finally:
            await drop_effects_table(database)
            await clear_tables(database)


async def test_a_stopped_worker_gives_its_running_job_back_for_another(
    redis_settings: Settings, tmp_path: Path
) -> None:
    app = app_with_test_jobs(redis_settings)
    env = worker_environment(redis_settings, JOBS_SHUTDOWN_SECONDS="0.5")
    async with LifespanManager(app):
        database = app.state.database
        await make_effects_table(database)
        try:
            with workers(env, 1, str(tmp_path / "first")) as (stopping,):
                async with database.sessionmaker() as session:
                    job_id = await enqueue(session, slow, Effect(tag="handed over"))
                    await session.commit()

                async def running() -> bool:
                    row = await job_row(database, job_id)
                    return bool(row["status"] == JobStatus.RUNNING)

                await wait_for(running, what="the worker to take the job")
                assert stopping.stop(within=15) == 0  # SIGTERM: a clean exit, soon
            assert "outcome=given_back" in stopping.output()
            row = await job_row(database, job_id)
            # Given back, the attempt not counted (this app's relay may have queued it again).
            assert row["status"] in (JobStatus.PENDING, JobStatus.QUEUED)
            assert row["attempts"] == 0
            with workers(env, 1, str(tmp_path / "second")):

                async def done() -> bool:
                    return bool((await job_row(database, job_id))["status"] == JobStatus.DONE)

                await wait_for(done, within=30, what="the next worker to finish it")
            rows = await effect_rows(database)
            assert [r["job_id"] for r in rows] == [job_id]
        finally:
            await drop_effects_table(database)
            await clear_tables(database)


async def test_two_workers_run_each_of_many_jobs_once(
    redis_settings: Settings, tmp_path: Path
) -> None:
    app = app_with_test_jobs(redis_settings)
    env = worker_environment(redis_settings)
    async with LifespanManager(app):
        database = app.state.database
        await make_effects_table(database)
        try:
            with workers(env, 2, str(tmp_path)) as pair:
                ids: list[str] = []
                for batch in range(6):
                    async with database.sessionmaker() as session:
                        for i in range(10):
                            ids.append(await enqueue(session, effect, Effect(tag=f"{batch}-{i}")))
                        await session.commit()

                async def all_done() -> bool:
                    return await unfinished(redis_settings, app) == 0

                await wait_for(all_done, within=60, what="every job to finish")
            rows = await effect_rows(database)
            assert Counter(r["job_id"] for r in rows) == Counter(ids)  # each once, none lost
            assert {r["pid"] for r in rows} == {w.process.pid for w in pair}
            for worker in pair:  # one line per job: id, name, attempt, duration, outcome
                assert "outcome=done" in worker.output()
                assert "name=tests.effect" in worker.output()
        finally:
            await drop_effects_table(database)
            await clear_tables(database)


async def test_a_scheduled_job_with_two_instances_and_two_workers_runs_once_per_tick(
    redis_settings: Settings, tmp_path: Path
) -> None:
    scheduling = redis_settings.model_copy(update={"jobs_scheduler": True})
    env = worker_environment(scheduling, TEST_SCHEDULED="1")
    first = app_with_test_jobs(scheduling, scheduled=True)
    second = app_with_test_jobs(scheduling, scheduled=True)
    database = first.state.database
    try:
        with workers(env, 2, str(tmp_path)):
            async with LifespanManager(first), LifespanManager(second):
                await make_effects_table(database)
                await asyncio.sleep(4)

            async def settled() -> bool:
                return await unfinished(scheduling, first) <= 1  # the workers still tick

            await wait_for(settled, within=30, what="the ticks to run")
        ticks = [r["tag"] for r in await effect_rows(database)]
        assert len(ticks) >= 3
        repeated = [t for t, n in Counter(ticks).items() if n > 1]
        assert repeated == [], f"ticks that ran more than once: {repeated}"
        seconds = sorted(datetime.fromisoformat(t) for t in ticks)
        assert seconds[-1] - seconds[0] == timedelta(seconds=len(seconds) - 1)  # none missed
    finally:  # with every scheduler stopped, so no tick comes after the cleaning
        await drop_effects_table(database)
        await clear_tables(database)
        await database.engine.dispose()


async def test_readiness_reports_the_queue(redis_settings: Settings) -> None:
    app = app_with_test_jobs(redis_settings)
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/health/ready")
        await app.state.rate_limiter.reset()
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "jobs": "ok"}

    unreachable = redis_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    broken = app_with_test_jobs(unreachable)
    async with LifespanManager(broken):  # starts anyway: jobs wait in the database
        async with broken.state.database.sessionmaker() as session:
            job_id = await enqueue(session, effect, Effect(tag="waits"))
            await session.commit()
        transport = ASGITransport(app=broken, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/health/ready")

        async def given_back() -> bool:
            row = await job_row(broken.state.database, job_id)
            return bool(row["status"] == JobStatus.PENDING)

        try:  # not lost: a publish that failed leaves it pending, for when Redis is back
            await wait_for(given_back, within=15, what="the failed publish to give it back")
        finally:
            await clear_tables(broken.state.database)
    assert response.status_code == 503
    assert response.json()["checks"]["jobs"] == "failed"
    assert get_jobs(broken).broker is not None
