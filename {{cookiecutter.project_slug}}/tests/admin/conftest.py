"""Admin fixtures: accounts made through the auth module's service, and signed-in clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.auth import service
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.db import Database

PASSWORD = "correct horse battery"
ADMIN_EMAIL = "root@example.com"


async def make_user(
    app: FastAPI,
    email: str,
    *,
    superuser: bool = False,
    active: bool = True,
    password: str = PASSWORD,
) -> User:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        user = await service.create_user(session, email, password, is_superuser=superuser)
        user.is_active = active
        await session.commit()
        return user


async def get_user(app: FastAPI, user_id: uuid.UUID) -> User:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


async def admin_login(
    client: AsyncClient, email: str = ADMIN_EMAIL, password: str = PASSWORD
) -> int:
    response = await client.post("/admin/login", data={"username": email, "password": password})
    return response.status_code


async def clear_of_a_window_edge(margin: float = 10.0) -> None:
    """Wait for a fresh minute when the current one is about to end.

    The limiter's sliding window discounts the previous minute's hits, so a burst
    of attempts that straddles the edge may stay under the limit.
    """
    remaining = 60 - time.time() % 60
    if remaining < margin:
        await asyncio.sleep(remaining + 0.1)


@pytest.fixture
async def superuser(app: FastAPI) -> User:
    return await make_user(app, ADMIN_EMAIL, superuser=True)


@pytest.fixture
async def admin_client(app: FastAPI, superuser: User) -> AsyncIterator[AsyncClient]:
    """A client signed in to the admin as an active superuser."""
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert await admin_login(http) == 302
        yield http
