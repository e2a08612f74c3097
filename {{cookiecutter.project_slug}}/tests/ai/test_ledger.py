"""The ledger writer: rows that arrive together are committed together, totals add up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from alembic.config import Config
from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.ai.models import AIUsage
from {{ cookiecutter.package_name }}.ai.service import (
    WAKE_AT_ONCE,
    Caller,
    Entry,
    Metering,
    Totals,
    period_start,
)
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from tests.conftest import clear_tables


@pytest.fixture
async def database(settings: Settings, migrated: Config) -> AsyncIterator[Database]:
    database = Database.from_settings(settings)
    yield database
    await clear_tables(database)
    await database.engine.dispose()


def entry(user_id: uuid.UUID | None, tokens: int) -> Entry:
    caller = Caller(user_id=user_id, monthly_quota=None, rate_key="test")
    return Entry(caller, "test-model", False, None, time.perf_counter(), tokens, 1)


async def test_concurrent_rows_for_several_callers_all_land(database: Database) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    callers = [alice] * 5 + [bob] * 3 + [None] * 2
    async with Metering(database) as metering:
        await asyncio.gather(*(metering.record(entry(who, 10)) for who in callers))
        period = period_start(datetime.now(UTC))
        # From memory (the writer keeps what its upsert returned) ...
        assert await metering.totals(alice, period) == Totals(tokens=55, requests=5)
        assert await metering.totals(bob, period) == Totals(tokens=33, requests=3)
        metering.known.seconds = 0  # ... and from the database
        assert await metering.totals(alice, period) == Totals(tokens=55, requests=5)
        assert await metering.totals(bob, period) == Totals(tokens=33, requests=3)
        await metering.record(entry(alice, 100))
        assert await metering.totals(alice, period) == Totals(tokens=156, requests=6)
    async with database.engine.connect() as conn:
        rows = await conn.scalar(select(func.count()).select_from(AIUsage))
    assert rows == len(callers) + 1


async def test_a_large_batch_wakes_its_requests_a_few_at_a_time(database: Database) -> None:
    """Between groups of woken requests the event loop gets a turn for other work."""
    alice = uuid.uuid4()
    woken: list[str] = []
    first_group = asyncio.Event()

    async def request(n: int) -> None:
        await metering.record(entry(alice, 1))
        woken.append(f"request {n}")
        if len(woken) == WAKE_AT_ONCE:
            first_group.set()

    async def other_work() -> None:
        # Ready as soon as the first group has run: it must not wait for the last.
        await first_group.wait()
        woken.append("other")

    count = 3 * WAKE_AT_ONCE
    async with Metering(database) as metering:
        requests = [asyncio.create_task(request(n)) for n in range(count)]
        await asyncio.sleep(0)  # all rows queued: one batch
        other = asyncio.create_task(other_work())
        await asyncio.gather(*requests, other)
    assert len(woken) == count + 1
    assert WAKE_AT_ONCE <= woken.index("other") < count
    period = period_start(datetime.now(UTC))
    async with Metering(database) as fresh:
        assert await fresh.totals(alice, period) == Totals(tokens=2 * count, requests=count)
