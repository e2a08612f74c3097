"""A PostgreSQL login role the way production should connect: no superuser, no BYPASSRLS.

Tests connect as `postgres`, a superuser, whom row-level security never holds; to see the
policies work, a test connects as this role instead (made for the test, dropped after).
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
)


def needs_postgresql(database_url: str) -> None:
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("row-level security is PostgreSQL's (TEST_DATABASE_URL)")


@asynccontextmanager
async def app_role(database_url: str) -> AsyncIterator[str]:
    """A fresh role with the app's grants on the migrated tables; yields its DATABASE_URL."""
    url = make_url(database_url)
    role = f"rls_app_{secrets.token_hex(6)}"
    password = secrets.token_hex(16)
    superuser = create_async_engine(url, poolclass=NullPool)
    async with superuser.begin() as conn:
        await conn.execute(
            text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'")
        )
        for grant in GRANTS:
            await conn.execute(text(grant.format(role=role)))
    try:
        yield url.set(username=role, password=password).render_as_string(hide_password=False)
    finally:
        async with superuser.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))
        await superuser.dispose()
