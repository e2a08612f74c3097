"""Organizations: a personal one for every account, creating one, who may see it."""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth import service as auth_service
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.orgs.models import Membership, Organization
from tests.auth.conftest import assert_problem, signed_in
from tests.orgs.conftest import ORGS, my_orgs, new_org


async def test_every_account_gets_a_personal_org(app: FastAPI, client: AsyncClient) -> None:
    headers = await signed_in(client, "ada@example.com")
    [personal] = await my_orgs(client, headers)
    assert personal["personal"] is True
    assert personal["role"] == "owner"
    assert personal["name"] == "ada's organization"


async def test_accounts_made_outside_a_request_get_one_too(app: FastAPI) -> None:
    """The CLI's create-superuser (no app built) goes through the same hook."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        user, _ = await auth_service.create_superuser(session, "root@example.com", "x" * 12)
    async with database.sessionmaker() as session:
        org = (
            await session.execute(select(Organization).where(Organization.personal_for == user.id))
        ).scalar_one()
        role = (
            await session.execute(select(Membership.role).where(Membership.org_id == org.id))
        ).scalar_one()
    assert role == "owner"


async def test_create_and_read(app: FastAPI, client: AsyncClient) -> None:
    headers = await signed_in(client, "ada@example.com")
    created = await new_org(client, headers, "  Acme  ")
    assert created["name"] == "Acme"
    assert created["role"] == "owner"
    assert created["personal"] is False
    read = await client.get(f"{ORGS}/{created['id']}", headers=headers)
    assert read.status_code == 200
    assert read.json() == created
    assert [o["name"] for o in await my_orgs(client, headers)] == ["ada's organization", "Acme"]


async def test_a_non_member_cannot_tell_an_org_exists(app: FastAPI, client: AsyncClient) -> None:
    ada = await signed_in(client, "ada@example.com")
    eve = await signed_in(client, "eve@example.com")
    acme = await new_org(client, ada, "Acme")
    hidden = assert_problem(await client.get(f"{ORGS}/{acme['id']}", headers=eve), 404)
    missing = assert_problem(await client.get(f"{ORGS}/{uuid.uuid4()}", headers=eve), 404)
    assert hidden["detail"] == missing["detail"]
    assert [o["name"] for o in await my_orgs(client, eve)] == ["eve's organization"]


async def test_bad_names_are_refused(app: FastAPI, client: AsyncClient) -> None:
    headers = await signed_in(client, "ada@example.com")
    for name in ("", "   ", "x" * 101):
        assert_problem(await client.post(ORGS, json={"name": name}, headers=headers), 422)
    assert len(await my_orgs(client, headers)) == 1


async def test_signed_out_is_401(app: FastAPI, client: AsyncClient) -> None:
    assert_problem(await client.get(ORGS), 401)
    assert_problem(await client.get(f"{ORGS}/{uuid.uuid4()}"), 401)
