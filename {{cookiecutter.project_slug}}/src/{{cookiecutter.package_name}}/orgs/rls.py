"""Row-level security (PostgreSQL): the check, at start-up, that it holds the app at all.

The policies themselves live in the migrations (0012_orgs_rls, and the migration of every
org-scoped table; docs/orgs.md). They hold a role only if it is neither a superuser nor
has BYPASSRLS: an app that connects as `postgres` (or the official image's POSTGRES_USER)
reads every organization's rows when a query forgets its filter. Production logs one
warning naming the problem; with ORGS_RLS_REQUIRED=true it refuses to start instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache

import structlog
from fastapi import FastAPI
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.config import UnsafeSettingsError
from {{ cookiecutter.package_name }}.core.db import Database


class RlsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORGS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Refuse to start in production when the database role is not held by row-level security.
    rls_required: bool = False


@lru_cache
def get_rls_settings() -> RlsSettings:
    return RlsSettings()


async def role_problem(engine: AsyncEngine) -> str | None:
    """One line naming why the app's database role escapes row-level security, or None."""
    if engine.dialect.name != "postgresql":
        return None  # SQLite has no row-level security; the scoped helper is the only line
    async with engine.connect() as connection:
        role, superuser, bypass = (
            await connection.execute(
                text(
                    "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles"
                    " WHERE rolname = current_user"
                )
            )
        ).one()
    if not (superuser or bypass):
        return None
    why = "is a superuser" if superuser else "has BYPASSRLS"
    return (
        f"DATABASE_URL connects as {role!r}, which {why}: row-level security does not hold it, "
        "so a query that forgets its organization filter reads every organization's rows; "
        "connect as a role without them (docs/orgs.md, Row-level security)"
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.settings.is_production:
        database: Database = app.state.database
        problem = await role_problem(database.engine)
        if problem is not None:
            settings: RlsSettings = getattr(app.state, "rls_settings", None) or get_rls_settings()
            if settings.rls_required:
                raise UnsafeSettingsError([f"ORGS_RLS_REQUIRED=true: {problem}"])
            structlog.get_logger(__name__).warning("row_level_security_bypassed", problem=problem)
    yield
