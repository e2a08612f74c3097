"""The connection pool serves waiters in the order they asked."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from {{ cookiecutter.package_name }}.core.db import Database, FairQueuePool
from tests.conftest import make_settings


async def test_a_returned_connection_goes_to_the_longest_waiter(database_url: str) -> None:
    engine = create_async_engine(
        database_url, poolclass=FairQueuePool, pool_size=1, max_overflow=0, pool_timeout=5
    )
    order: list[str] = []

    async def use(name: str) -> None:
        async with engine.connect():
            order.append(name)

    try:
        holder = await engine.connect()
        waiters = [asyncio.create_task(use(name)) for name in ("first", "second", "third")]
        await asyncio.sleep(0.1)  # all three are queued
        await holder.close()
        await use("asked last")  # at once, as a busy request loop would
        await asyncio.gather(*waiters)
    finally:
        await engine.dispose()
    assert order == ["first", "second", "third", "asked last"]


async def test_waiting_longer_than_the_timeout_raises_the_pool_timeout(database_url: str) -> None:
    engine = create_async_engine(
        database_url, poolclass=FairQueuePool, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        async with engine.connect():
            with pytest.raises(PoolTimeout):
                await engine.connect()
        async with engine.connect():  # the permit came back
            pass
    finally:
        await engine.dispose()


async def test_a_burst_opens_no_connection_beyond_the_pool(database_url: str) -> None:
    """SQLite files too: each aiosqlite connection is a thread, so none come and go."""
    database = Database.from_settings(make_settings(database_url, db_pool_size=2))
    opened: list[object] = []
    event.listen(database.engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))

    async def query() -> None:
        async with database.read_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)  # held, so that the others queue

    try:
        await asyncio.gather(*(query() for _ in range(12)))
    finally:
        await database.engine.dispose()
    assert isinstance(database.engine.pool, FairQueuePool)
    assert len(opened) == 2


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true"]
)
async def test_an_in_memory_sqlite_database_stays_one_database(url: str) -> None:
    database = Database.from_settings(make_settings(url))
    try:
        async with database.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        async with database.read_engine.connect() as conn:  # the same database
            assert (await conn.execute(text("SELECT x FROM t"))).scalar_one() == 1
    finally:
        await database.engine.dispose()
