"""Two API instances and two workers (separate processes) on one PostgreSQL and one Redis:
a rate limit holds across both instances, each job enqueued through either runs once,
and a scheduled job runs once per tick with every process scheduling.

The instances run the project's app with test routes and jobs (tests/core/scaleout_app.py);
the workers, the project's worker with the same jobs (tests/core/job_worker.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from alembic.config import Config
from sqlalchemy import select

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, JobStatus
from tests.core.jobkit import drop_effects_table, effect_rows, make_effects_table, wait_for
from tests.core.scaleout_app import LIMIT
from tests.scaleout import (
    Instances,
    environment,
    needs_postgresql_and_redis,
    running,
    shared_database,
)

pytestmark = needs_postgresql_and_redis


@pytest.fixture(scope="module")
async def database(settings: Settings, migrated: Config) -> AsyncIterator[Database]:
    async with shared_database(settings) as database:
        await make_effects_table(database)
        try:
            yield database
        finally:
            await drop_effects_table(database)


@pytest.fixture(scope="module")
def started(
    settings: Settings, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Instances]:
    env = environment(settings, JOBS_SCHEDULER="true", TEST_SCHEDULED="1")
    with running(
        env,
        tmp_path_factory.mktemp("scaleout"),
        app="tests.core.scaleout_app:create",
        factory=True,
        worker=(sys.executable, "-m", "tests.core.job_worker"),
    ) as instances:
        yield instances


@pytest.fixture
def instances(started: Instances) -> Instances:
    started.assert_running()
    started.mark()
    return started


async def test_a_rate_limit_holds_across_instances(instances: Instances) -> None:
    a, b = (api.url for api in instances.apis)
    async with httpx.AsyncClient(timeout=10) as http:
        answered: list[tuple[str, int]] = []
        for i in range(LIMIT):  # A, B, A, B...: the limit's budget spent on both
            url = (a, b)[i % 2]
            response = await http.get(f"{url}/test-scaleout/limited")
            answered.append((url, response.status_code))
        assert answered == [((a, b)[i % 2], 200) for i in range(LIMIT)]
        for url in (a, b):  # one more, on either: refused
            refused = await http.get(f"{url}/test-scaleout/limited")
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) > 0


async def test_each_job_enqueued_through_either_instance_runs_once(
    instances: Instances, database: Database
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:

        async def enqueue(url: str, batch: int) -> list[str]:
            response = await http.post(
                f"{url}/test-scaleout/jobs", params={"tag": f"batch{batch}", "count": 10}
            )
            assert response.status_code == 200, response.text
            ids: list[str] = response.json()["ids"]
            return ids

        batches = await asyncio.gather(*(enqueue(instances.apis[i % 2].url, i) for i in range(6)))
    ids = [job_id for batch in batches for job_id in batch]
    assert len(set(ids)) == 60

    async def all_done() -> bool:
        async with database.engine.connect() as connection:
            statuses = await connection.scalars(
                select(JobRecord.status).where(JobRecord.id.in_(ids))
            )
            return list(statuses) == [JobStatus.DONE] * len(ids)

    await wait_for(all_done, within=60, what="every job to be done")
    rows = [row for row in await effect_rows(database) if row["job_id"] in set(ids)]
    assert Counter(row["job_id"] for row in rows) == Counter(ids)  # each once, none lost
    # Run by the workers (the instances only enqueue), by both of them.
    assert {row["pid"] for row in rows} == {worker.pid for worker in instances.workers}


async def test_a_scheduled_job_runs_once_per_tick_with_every_process_scheduling(
    instances: Instances, database: Database
) -> None:
    """tests.tick is due every second, and all four processes run the scheduler: each of
    the next three ticks runs exactly once, on a worker."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    coming = [start + timedelta(seconds=n) for n in range(3)]

    async def ran() -> bool:
        async with database.engine.connect() as connection:
            statuses = list(
                await connection.scalars(
                    select(JobRecord.status).where(
                        JobRecord.name == "tests.tick", JobRecord.run_at.in_(coming)
                    )
                )
            )
        return len(statuses) >= len(coming) and set(statuses) == {JobStatus.DONE}

    await wait_for(ran, within=40, what="the next three ticks to run")
    rows = [row for row in await effect_rows(database) if row["job_id"].startswith("tests.tick")]
    runs = Counter(row["tag"] for row in rows)
    assert [runs[tick.isoformat()] for tick in coming] == [1, 1, 1]
    assert [tag for tag, n in runs.items() if n > 1] == []  # nor any tick before them
    assert {row["pid"] for row in rows} <= {worker.pid for worker in instances.workers}
