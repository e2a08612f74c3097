"""Row-level security on the organization's billing tables (0017_payments_rls, PostgreSQL):
a query on subscriptions, customers or checkouts that forgets the organization still sees
and writes only the rows of the organization its transaction acts in.

The suite connects as `postgres`, whom policies never hold; these tests connect as a role
made for them (tests/pg_role.py). `TEST_APP_ROLE=1` runs the whole suite's app as such a
role, which is how the webhooks, jobs, CLI and plan reads are shown to take the bypass or
enter their organization (docs/orgs.md, Row-level security).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.core.db import Database, bypass_row_security
from {{ cookiecutter.package_name }}.orgs.models import Organization
from {{ cookiecutter.package_name }}.orgs.scoping import activation
from {{ cookiecutter.package_name }}.payments.models import (
    StripeCheckout,
    StripeCustomer,
    Subscription,
)
from tests.pg_role import app_role, is_postgresql, needs_postgresql

TABLES = ("stripe_customers", "subscriptions", "stripe_checkouts")


@pytest.fixture
async def as_role(database_url: str, migrated: Config) -> AsyncIterator[AsyncEngine]:
    needs_postgresql(database_url)
    async with app_role(database_url) as url:
        engine = create_async_engine(url, poolclass=NullPool)
        yield engine
        await engine.dispose()


def billing_rows(org_id: uuid.UUID, name: str) -> list[Any]:
    return [
        StripeCustomer(org_id=org_id, customer_id=f"cus_{name}"),
        Subscription(
            id=f"sub_{name}",
            org_id=org_id,
            customer_id=f"cus_{name}",
            status="active",
            price_id="price_pro_monthly",
            state_as_of=datetime.now(UTC),
        ),
        StripeCheckout(org_id=org_id, session_id=f"cs_{name}"),
    ]


async def two_billed_orgs(app: FastAPI) -> tuple[uuid.UUID, uuid.UUID]:
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await bypass_row_security(session)
        a, b = Organization(name="A"), Organization(name="B")
        session.add_all([a, b])
        await session.flush()
        session.add_all([*billing_rows(a.id, "a"), *billing_rows(b.id, "b")])
    return a.id, b.id


async def test_a_subscription_query_that_forgets_the_org_sees_only_its_own(
    app: FastAPI, as_role: AsyncEngine
) -> None:
    a, b = await two_billed_orgs(app)
    sessions = async_sessionmaker(as_role, expire_on_commit=False)
    async with sessions() as session, session.begin():
        await session.execute(select(activation(session, a)))
        # no scoped(...), no where: the policy adds the organization
        assert (await session.scalars(select(Subscription.id))).all() == ["sub_a"]
        assert (await session.scalars(select(StripeCustomer.customer_id))).all() == ["cus_a"]
        assert (await session.scalars(select(StripeCheckout.session_id))).all() == ["cs_a"]
        assert await session.get(Subscription, "sub_b") is None
        assert await session.get(StripeCustomer, b) is None
        # nor can it change B's rows it does not see
        changed = await session.execute(
            text("UPDATE subscriptions SET status = 'canceled' WHERE id = 'sub_b'")
        )
        assert changed.rowcount == 0  # type: ignore[attr-defined]
    async with sessions() as session, session.begin():  # no organization: nothing
        assert (await session.scalars(select(Subscription))).all() == []
        assert (await session.scalars(select(StripeCustomer))).all() == []
    async with sessions() as session, session.begin():  # webhooks, jobs, the CLI, the admin
        await bypass_row_security(session)
        assert sorted((await session.scalars(select(Subscription.id))).all()) == [
            "sub_a",
            "sub_b",
        ]
    # A transaction in A cannot write a row into B.
    for row in billing_rows(b, "smuggled"):
        async with sessions() as session:
            await session.begin()
            await session.execute(select(activation(session, a)))
            session.add(row)
            with pytest.raises(DBAPIError, match="row-level security"):
                await session.flush()
            await session.rollback()


async def _row_security(database_url: str) -> dict[str, tuple[bool, bool, int]]:
    """table -> (ENABLE, FORCE, number of policies)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
                    " (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname)"
                    " FROM pg_class c WHERE c.relname = ANY(:tables) AND c.relkind = 'r'"
                ),
                {"tables": list(TABLES)},
            )
            return {name: (enabled, forced, policies) for name, enabled, forced, policies in rows}
    finally:
        await engine.dispose()


def test_the_migration_is_reversible(migrated: Config, database_url: str) -> None:
    """Downgrade takes the tables out from under the policy, upgrade puts them back; on
    SQLite both are no-ops. Back at head, the models still match (`alembic check`)."""
    postgresql = is_postgresql(database_url)
    if postgresql:
        assert asyncio.run(_row_security(database_url)) == dict.fromkeys(TABLES, (True, True, 1))
    command.downgrade(migrated, "0017_payments_rls-1")
    try:
        if postgresql:
            off = dict.fromkeys(TABLES, (False, False, 0))
            assert asyncio.run(_row_security(database_url)) == off
    finally:
        command.upgrade(migrated, "head")
    if postgresql:
        assert asyncio.run(_row_security(database_url)) == dict.fromkeys(TABLES, (True, True, 1))
    command.check(migrated)
