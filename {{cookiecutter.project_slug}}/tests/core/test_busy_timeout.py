"""SQLite's wait for the write lock is a setting (DB_SQLITE_BUSY_TIMEOUT) every connection gets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event, text

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from tests.conftest import BUSY_TIMEOUT, make_settings


async def busy_timeout_ms(database: Database) -> int:
    try:
        async with database.read_engine.connect() as conn:
            return int((await conn.execute(text("PRAGMA busy_timeout"))).scalar_one())
    finally:
        await database.engine.dispose()


@pytest.mark.parametrize("seconds", [0.25, 42.0])
async def test_the_setting_reaches_every_connection(tmp_path: Path, seconds: float) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/busy.db"
    database = Database.from_settings(make_settings(url, db_sqlite_busy_timeout=seconds))
    assert await busy_timeout_ms(database) == round(seconds * 1000)


async def test_the_default_is_five_seconds_and_the_suite_sets_its_own(
    tmp_path: Path, settings: Settings
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/busy.db"
    default = Settings(_env_file=None, environment="test", database_url=url)
    assert default.db_sqlite_busy_timeout == 5.0
    assert await busy_timeout_ms(Database.from_settings(default)) == 5000
    # The suite's own settings carry the value it chose (tests/conftest.py).
    assert settings.db_sqlite_busy_timeout == BUSY_TIMEOUT


@pytest.mark.parametrize("value", ["-1", "601", "soon"])
def test_out_of_bounds_is_refused_naming_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_SQLITE_BUSY_TIMEOUT", value)
    with pytest.raises(ValidationError, match="db_sqlite_busy_timeout"):
        Settings(_env_file=None)


def _slow(value: int) -> int:
    time.sleep(0.1)  # in the connection's own thread, as a slow statement would be
    return value + 10


async def test_a_statement_cancelled_midway_does_not_keep_the_write_lock(tmp_path: Path) -> None:
    """A cancelled write (a timeout, a job stopped at shutdown) gives the lock back.

    The cancelled task keeps its error, and the error's traceback keeps the statement's
    cursor alive. Closing the connection alone left the statement unfinished, so the
    connection stayed open and kept the write lock: every later writer waited out the
    busy timeout and failed with "database is locked".
    """
    url = f"sqlite+aiosqlite:///{tmp_path}/cancel.db"
    database = Database.from_settings(make_settings(url, db_sqlite_busy_timeout=3.0))

    @event.listens_for(database.engine.sync_engine, "connect")
    def slow_function(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(lambda raw: raw.create_function("slow", 1, _slow))

    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (v INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1), (2), (3)"))

        async def update() -> None:
            async with database.engine.begin() as connection:
                await connection.execute(text("UPDATE t SET v = slow(v) RETURNING v"))

        task = asyncio.create_task(update())
        await asyncio.sleep(0.15)  # the statement is running in its thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()  # and the task still holds its error: nothing is collected

        async with database.engine.begin() as connection:  # waits at most the busy timeout
            await connection.execute(text("INSERT INTO t VALUES (4)"))
        async with database.read_engine.connect() as connection:
            values = (await connection.execute(text("SELECT v FROM t ORDER BY v"))).scalars()
            assert list(values) == [1, 2, 3, 4]  # the cancelled update was rolled back
    finally:
        await database.engine.dispose()
