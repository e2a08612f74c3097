"""Test fixtures: a real database (SQLite file, or PostgreSQL via TEST_DATABASE_URL),
migrated once with Alembic, the app with its lifespan, and an async HTTP client."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Generator, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import Connection, event, func, make_url, select
from sqlalchemy.orm import Session as OrmSession

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import (
    ROW_SECURITY_BYPASS,
    Base,
    Database,
    bypass_row_security,
)
from {{ cookiecutter.package_name }}.core.jobs.runtime import JobRuntime
from {{ cookiecutter.package_name }}.main import create_app
from tests.pg_role import create_role, drop_role, is_postgresql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# SQLite's wait for the one write lock in the suite (DB_SQLITE_BUSY_TIMEOUT): the default.
# A test that shows a write failing behind a held lock must hold it longer than this.
BUSY_TIMEOUT = 5.0


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "redis_url": None,
        "log_level": "WARNING",
        "db_sqlite_busy_timeout": BUSY_TIMEOUT,
        # Scheduled jobs run only in the tests that turn the scheduler on.
        "jobs_scheduler": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def app_database_url(database_url: str) -> Iterator[str]:
    """The URL the app under test connects with: the owner's (who migrates), or, with
    `TEST_APP_ROLE=1` on PostgreSQL, a role made for the session with the app's grants and
    neither SUPERUSER nor BYPASSRLS, which row-level security holds (docs: the app's role)."""
    if not (os.environ.get("TEST_APP_ROLE") == "1" and is_postgresql(database_url)):
        yield database_url
        return
    role, url = asyncio.run(create_role(database_url))
    try:
        yield url
    finally:
        asyncio.run(drop_role(database_url, role))


# Set while the app's own code runs (a request, a job); with TEST_APP_ROLE=1 everything
# else (a test reading or seeding rows) runs past row-level security.
_APP_CODE: ContextVar[bool] = ContextVar("app_code", default=False)


def _as_app_code(method: Any) -> Any:
    # At least one argument after self: uvicorn calls an app with none to detect a factory.
    @functools.wraps(method)
    async def wrapper(self: Any, first: Any, *rest: Any) -> Any:
        token = _APP_CODE.set(True)
        try:
            return await method(self, first, *rest)
        finally:
            _APP_CODE.reset(token)

    return wrapper


@pytest.fixture(scope="session", autouse=True)
def held_by_row_security(app_database_url: str, database_url: str) -> Iterator[None]:
    """With TEST_APP_ROLE=1: the app's requests and jobs run as its role, held by the
    policies, so a path that forgot its tenant (or the bypass) fails its test; the
    tests' own reads and writes of rows (`app.state.database` outside a request or job)
    take the bypass, as the admin does."""
    if app_database_url == database_url:
        yield
        return
    role = make_url(app_database_url).username

    def bypass(session: OrmSession, transaction: Any, connection: Connection) -> None:
        if connection.engine.url.username == role and not _APP_CODE.get():
            connection.execute(select(func.set_config(ROW_SECURITY_BYPASS, "on", True)))

    patched: tuple[tuple[Any, str], ...] = ((FastAPI, "__call__"), (JobRuntime, "_run_once"))
    originals = [getattr(owner, name) for owner, name in patched]
    for owner, name in patched:
        setattr(owner, name, _as_app_code(getattr(owner, name)))
    event.listen(OrmSession, "after_begin", bypass)
    try:
        yield
    finally:
        event.remove(OrmSession, "after_begin", bypass)
        for (owner, name), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)


@pytest.fixture(scope="session")
def settings(app_database_url: str) -> Settings:
    return make_settings(app_database_url)


def alembic_config(database_url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(scope="session")
def migrated(database_url: str) -> Iterator[Config]:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    yield config
    command.downgrade(config, "base")


async def clear_tables(database: Database) -> None:
    async with database.engine.begin() as conn:
        await bypass_row_security(conn)  # else the app role sees no tenant rows
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.fixture
async def app(settings: Settings, migrated: Config) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A failed test shows what its fixtures have to say: e.g. the logs of the processes
    it talked to (tests/scaleout.py), which ran outside its own output."""
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        seen: set[int] = set()  # a fixture may hand on another's value
        for name, value in getattr(item, "funcargs", {}).items():
            describe = getattr(value, "failure_report", None)
            if callable(describe) and id(value) not in seen:
                seen.add(id(value))
                report.sections.append((f"{name}: failure report", str(describe())))
