"""Row-level security on PostgreSQL: the second line, for a query that forgets its organization.

The suite connects as `postgres`, a superuser, whom policies never hold; these tests
connect as a role made for them, with the app's grants and nothing more (tests/orgs/pg_role.py).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from structlog.testing import capture_logs

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.core.config import UnsafeSettingsError
from {{ cookiecutter.package_name }}.core.db import Database, bypass_row_security
from {{ cookiecutter.package_name }}.core.email import Mailer
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.orgs.models import Invitation, Organization
from {{ cookiecutter.package_name }}.orgs.rls import RlsSettings, role_problem
from {{ cookiecutter.package_name }}.orgs.scoping import ORG_SETTING, activation
from tests.auth.conftest import verified_signed_in
from tests.conftest import clear_tables, make_settings
from tests.orgs.conftest import ORGS, my_orgs, new_org
from tests.orgs.isolation import Tenant, walk
from tests.orgs.pg_role import app_role, needs_postgresql
from tests.orgs.test_isolation import WALKED, leaky_routes, scoped_routes


def invitation(org_id: uuid.UUID, email: str) -> Invitation:
    return Invitation(
        org_id=org_id,
        email=email,
        role="member",
        token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
        expires_at=datetime.now(UTC) + timedelta(days=7),
    )


@pytest.fixture
async def role_url(database_url: str, migrated: Config) -> AsyncIterator[str]:
    needs_postgresql(database_url)
    async with app_role(database_url) as url:
        yield url


@pytest.fixture
async def as_role(role_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(role_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def two_orgs_with_invitations(app: FastAPI) -> tuple[uuid.UUID, uuid.UUID]:
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        a, b = Organization(name="A"), Organization(name="B")
        session.add_all([a, b])
        await session.flush()
        session.add_all([invitation(a.id, "to-a@"), invitation(b.id, "to-b@")])
    return a.id, b.id


async def test_a_query_that_forgets_the_org_sees_only_the_org_it_acts_in(
    app: FastAPI, as_role: AsyncEngine
) -> None:
    a, b = await two_orgs_with_invitations(app)
    sessions = async_sessionmaker(as_role)
    async with sessions() as session, session.begin():
        await session.execute(select(activation(session, a)))
        # no scoped(...), no where: the policy adds the organization
        assert (await session.scalars(select(Invitation.email))).all() == ["to-a@"]
        assert await session.get(Invitation, await other_id(app, b)) is None
    async with sessions() as session, session.begin():
        assert (await session.scalars(select(Invitation))).all() == []  # no org: nothing
    async with sessions() as session, session.begin():
        await bypass_row_security(session)  # jobs, the admin, CLIs
        assert len((await session.scalars(select(Invitation))).all()) == 2
    # Nor can a transaction in A write a row into B.
    async with sessions() as session, session.begin():
        await session.execute(select(activation(session, a)))
        session.add(invitation(b, "smuggled@"))
        with pytest.raises(DBAPIError, match="row-level security"):
            await session.flush()
        await session.rollback()
    # The superuser the suite connects as is not held at all: why production checks the role.
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        assert len((await session.scalars(select(Invitation))).all()) == 2


async def other_id(app: FastAPI, org_id: uuid.UUID) -> uuid.UUID:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        found: uuid.UUID = (
            await session.scalars(select(Invitation.id).where(Invitation.org_id == org_id))
        ).one()
        return found


async def test_every_org_policy_reads_its_settings_once_per_statement(
    role_url: str, database_url: str
) -> None:
    """A `current_setting` written straight into a policy runs for every row checked; in a
    sub-select it runs once per statement (docs/orgs.md). Every migration's policy is the latter."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT tablename, qual, with_check FROM pg_policies"
                        " WHERE policyname = 'org_isolation'"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert "invitations" in {row.tablename for row in rows}
    for row in rows:
        for expression in (row.qual, row.with_check):
            calls = expression.count("current_setting(")
            assert calls == 2, expression
            assert expression.count("( SELECT") == calls, f"{row.tablename}: {expression}"


async def test_the_org_setting_ends_with_its_transaction(as_role: AsyncEngine) -> None:
    """A pooled connection never carries one request's organization into the next."""
    async with as_role.connect() as connection:
        async with connection.begin():
            await connection.execute(select(func.set_config(ORG_SETTING, str(uuid.uuid4()), True)))
        async with connection.begin():
            assert (await connection.scalars(select(Invitation.id))).all() == []
            setting = await connection.scalar(select(func.current_setting(ORG_SETTING, True)))
            assert not setting


async def test_the_org_routes_work_for_an_app_held_by_row_security(
    settings: object,
    database_url: str,
    role_url: str,
    auth_settings: AuthSettings,
    mailer: Mailer,
) -> None:
    application = create_app(make_settings(role_url))
    application.state.auth_settings = auth_settings
    application.state.mailer = mailer
    application.include_router(scoped_routes())
    application.include_router(leaky_routes())
    try:
        async with LifespanManager(application):
            transport = ASGITransport(app=application, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://testserver") as client:
                await routes_under_row_security(application, client)
    finally:
        owner = Database.from_settings(make_settings(database_url))
        await clear_tables(owner)
        await owner.engine.dispose()


async def routes_under_row_security(app: FastAPI, client: AsyncClient) -> None:
    ada = await verified_signed_in(app, client, "ada@example.com")
    acme = await new_org(client, ada, "Acme")
    assert [o["name"] for o in await my_orgs(client, ada)] == ["ada's organization", "Acme"]
    assert (await client.get(f"{ORGS}/{acme['id']}", headers=ada)).json() == acme
    bob = await verified_signed_in(app, client, "bob@example.com")
    beta = await new_org(client, bob, "Beta")
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        # an org-scoped write in the organization the transaction acts in passes the policy
        await session.execute(select(activation(session, uuid.UUID(acme["id"]))))
        mine = invitation(uuid.UUID(acme["id"]), "to-acme@example.com")
        session.add(mine)
    async with database.sessionmaker() as session, session.begin():
        await bypass_row_security(session)
        theirs = invitation(uuid.UUID(beta["id"]), "to-beta@example.com")
        session.add(theirs)
    walked = WALKED.replace("{org_id}", acme["id"])
    read = await client.get(walked.replace("{invitation_id}", str(mine.id)), headers=ada)
    assert read.json() == "to-acme@example.com"
    changed = await client.patch(
        walked.replace("{invitation_id}", str(mine.id)),
        json={"role": "admin", "note": "promote"},
        headers=ada,
    )
    assert changed.json() == "admin"
    # The route that forgets the scope: here the policy hides B's row (as superuser, it leaks).
    leak = await client.get(f"{ORGS}/{acme['id']}/leaky-invitations/{theirs.id}", headers=ada)
    assert leak.status_code == 200
    assert leak.json() == ""
    # The isolation walk holds with the app held by the policies too (the leaky route aside).
    me = (await client.get("/api/v1/users/me", headers=bob)).json()
    b = Tenant(uuid.UUID(beta["id"]), uuid.UUID(me["id"]))
    _, failures = await walk(app, client, ada, uuid.UUID(acme["id"]), b)
    assert [f.split(" as ")[0] for f in failures] == [
        "GET /api/v1/orgs/{org_id}/leaky-invitations/{invitation_id}"
    ]


async def test_production_warns_when_the_role_escapes_row_security(
    database_url: str, migrated: Config, role_url: str
) -> None:
    superuser = create_async_engine(database_url, poolclass=NullPool)
    try:
        problem = await role_problem(superuser)
    finally:
        await superuser.dispose()
    assert problem is not None
    assert "is a superuser" in problem
    assert problem.startswith("DATABASE_URL connects as 'postgres'")
    held = create_async_engine(role_url, poolclass=NullPool)
    try:
        assert await role_problem(held) is None
    finally:
        await held.dispose()

    production = make_settings(
        database_url, environment="production", allowed_hosts=["api.example.com"]
    )
    app = create_app(production)
    with capture_logs() as logs:
        async with LifespanManager(app):
            pass
    assert [e["problem"] for e in logs if e["event"] == "row_level_security_bypassed"] == [problem]

    app = create_app(production)
    app.state.rls_settings = RlsSettings(_env_file=None, rls_required=True)
    with pytest.raises(UnsafeSettingsError) as error:
        async with LifespanManager(app):
            pass
    assert str(error.value) == f"ORGS_RLS_REQUIRED=true: {problem}"
    await app.state.database.engine.dispose()
