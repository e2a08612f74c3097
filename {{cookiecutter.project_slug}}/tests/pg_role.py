"""A PostgreSQL login role the way production should connect: no superuser, no BYPASSRLS.

Tests connect as `postgres`, a superuser, whom row-level security never holds; to see the
policies work, a test connects as this role instead (made for the test, dropped after).
`TEST_APP_ROLE=1` runs the whole suite's app as such a role (tests/conftest.py,
`app_database_url`): a code path that reads or writes a table under a policy without
entering its tenant or taking the bypass then fails its test.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    # tables a later migration (re)creates, as the role that migrates (docs: the app's role)
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
    " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
)


def is_postgresql(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def needs_postgresql(database_url: str) -> None:
    if not is_postgresql(database_url):
        pytest.skip("row-level security is PostgreSQL's (TEST_DATABASE_URL)")


async def create_role(database_url: str) -> tuple[str, str]:
    """A fresh role with the app's grants on the tables: (its name, its DATABASE_URL)."""
    url = make_url(database_url)
    role = f"rls_app_{secrets.token_hex(6)}"
    password = secrets.token_hex(16)
    superuser = create_async_engine(url, poolclass=NullPool)
    try:
        async with superuser.begin() as conn:
            await conn.execute(
                text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'")
            )
            for grant in GRANTS:
                await conn.execute(text(grant.format(role=role)))
    finally:
        await superuser.dispose()
    return role, url.set(username=role, password=password).render_as_string(hide_password=False)


async def drop_role(database_url: str, role: str) -> None:
    superuser = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with superuser.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))
    finally:
        await superuser.dispose()


@asynccontextmanager
async def app_role(database_url: str) -> AsyncIterator[str]:
    """A fresh role with the app's grants on the tables; yields its DATABASE_URL."""
    role, url = await create_role(database_url)
    try:
        yield url
    finally:
        await drop_role(database_url, role)
