"""The connection pool serves waiters in the order they asked."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from {{ cookiecutter.package_name }}.core.db import FairQueuePool


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
