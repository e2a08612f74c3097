"""SQLite's wait for the write lock is a setting (DB_SQLITE_BUSY_TIMEOUT) every connection gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

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
