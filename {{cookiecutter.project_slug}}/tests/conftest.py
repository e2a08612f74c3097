"""Test fixtures: a real database (SQLite file, or PostgreSQL via TEST_DATABASE_URL),
migrated once with Alembic, the app with its lifespan, and an async HTTP client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Base, Database
from {{ cookiecutter.package_name }}.main import create_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
        # Scheduled jobs run only in the tests that turn the scheduler on.
        "jobs_scheduler": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


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
