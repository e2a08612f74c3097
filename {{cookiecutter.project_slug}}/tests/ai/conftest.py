"""Fixtures for the AI module: the real `openai` client against a fake upstream on loopback."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.ai.config import AISettings
from {{ cookiecutter.package_name }}.ai.models import AIUsage
from {{ cookiecutter.package_name }}.ai.seams import default_quota, get_caller
from {{ cookiecutter.package_name }}.ai.service import Caller
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import create_app
from tests.ai.fake_upstream import FakeUpstream, start
from tests.conftest import clear_tables

API_KEY = "sk-test-key-never-echoed-0123456789"
TRANSPORTS = ["fast", "sdk"]

MakeApp = Callable[..., Awaitable[FastAPI]]

# With the auth module the caller is a signed-in user (see ai/seams.py).
SIGNED_IN = set(inspect.signature(get_caller).parameters) != {"request"}
TEST_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001") if SIGNED_IN else None


def stand_in_user(app: FastAPI) -> None:
    """With auth on, one user stands in for the sign-in (auth's own tests cover that)."""
    if not SIGNED_IN:
        return
    quota = default_quota(app.state.ai_settings)

    async def test_user() -> Caller:
        return Caller(user_id=TEST_USER_ID, monthly_quota=quota, rate_key="user:test")

    app.dependency_overrides[get_caller] = test_user


@pytest.fixture(scope="session")
async def upstream_server() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    runner = await start(fake)
    yield fake
    await runner.cleanup()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


def make_ai_settings(upstream: FakeUpstream, **overrides: Any) -> AISettings:
    values: dict[str, Any] = {
        "openai_api_key": API_KEY,
        "openai_base_url": upstream.url,
        "default_model": "test-model",
        "allowed_models": ["test-model", "other-model"],
        "timeout": 5.0,
        "max_retries": 0,
        "monthly_token_quota": 1000,
        "rate_limit": "",
    }
    values.update(overrides)
    return AISettings(_env_file=None, **values)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def make_app(
    settings: Settings, migrated: Config, upstream: FakeUpstream, transport: str
) -> AsyncIterator[MakeApp]:
    """Start apps with AI settings of the test's choosing; all are stopped afterwards."""
    started: list[tuple[FastAPI, LifespanManager]] = []

    async def make(ai_settings: AISettings | None = None, **overrides: Any) -> FastAPI:
        app = create_app(settings)
        overrides.setdefault("transport", transport)
        app.state.ai_settings = ai_settings or make_ai_settings(upstream, **overrides)
        stand_in_user(app)
        manager = LifespanManager(app)
        await manager.__aenter__()
        started.append((app, manager))
        return app

    yield make
    for app, manager in reversed(started):
        await app.state.rate_limiter.reset()
        await clear_tables(app.state.database)
        await manager.__aexit__(None, None, None)


def http(app: FastAPI) -> AsyncClient:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    return AsyncClient(transport=transport, base_url="http://testserver")


async def ledger(app: FastAPI) -> list[AIUsage]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return list((await session.scalars(select(AIUsage).order_by(AIUsage.id))).all())
