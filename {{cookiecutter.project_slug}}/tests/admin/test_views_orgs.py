"""Organizations in the admin: organizations, memberships, invitations and the organizations'
API keys listed and searchable.

The admin acts for no single organization: on PostgreSQL its sessions pass row-level
security, so it lists every organization's invitations even when the app connects as a
role the policies hold (the last test).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.auth.models import ApiKey, User
from {{ cookiecutter.package_name }}.core.db import Database, bypass_row_security
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.orgs import service
from {{ cookiecutter.package_name }}.orgs.models import Invitation, Organization, OrgApiKey
from tests.admin.conftest import admin_login, make_user
from tests.conftest import clear_tables, make_settings
from tests.orgs.pg_role import app_role, needs_postgresql

TOKEN_HASH = hashlib.sha256(b"an invitation token").hexdigest()


async def acme_with_an_invitation(app: FastAPI) -> tuple[Organization, Invitation]:
    """Ada owns Acme, which invited carol; Bob has only his personal organization."""
    ada = await make_user(app, "ada@example.com")
    await make_user(app, "bob@example.com")
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await bypass_row_security(session)
        owner = await session.get(User, ada.id)
        assert owner is not None
        acme = await service.create_org(session, owner, "Acme")
        invitation = Invitation(
            org_id=acme.id,
            email="carol@example.com",
            role="admin",
            token_hash=TOKEN_HASH,
            invited_by=ada.id,
            expires_at=datetime.now(UTC) + timedelta(days=7),
        )
        session.add(invitation)
    return acme, invitation


async def test_organizations_are_listed_searched_and_renamed(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    acme, _ = await acme_with_an_invitation(app)
    found = await admin_client.get("/admin/organization/list", params={"search": "acm"})
    assert found.status_code == 200
    assert "Acme" in found.text
    assert "bob&#39;s organization" not in found.text
    everyone = await admin_client.get("/admin/organization/list")
    assert "bob&#39;s organization" in everyone.text
    edit = await admin_client.post(f"/admin/organization/edit/{acme.id}", data={"name": "Acme Inc"})
    assert edit.status_code == 302
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        renamed = await session.get(Organization, acme.id)
        assert renamed is not None
        assert renamed.name == "Acme Inc"
    assert (await admin_client.get("/admin/organization/create")).status_code == 403


async def test_memberships_are_searched_by_email_and_organization_name(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    acme, _ = await acme_with_an_invitation(app)
    by_email = await admin_client.get("/admin/membership/list", params={"search": "bob@"})
    assert by_email.status_code == 200
    assert str(acme.id) not in by_email.text
    by_org = await admin_client.get("/admin/membership/list", params={"search": "Acme"})
    assert str(acme.id) in by_org.text
    assert "Email, organization name" in by_org.text
    assert (await admin_client.get("/admin/membership/create")).status_code == 403


async def test_invitations_are_searched_and_never_show_the_token_hash(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    _, invitation = await acme_with_an_invitation(app)
    for term in ("carol", "acme"):
        found = await admin_client.get("/admin/invitation/list", params={"search": term})
        assert "carol@example.com" in found.text, term
    missed = await admin_client.get("/admin/invitation/list", params={"search": "dave"})
    assert "carol@example.com" not in missed.text
    details = await admin_client.get(f"/admin/invitation/details/{invitation.id}")
    assert details.status_code == 200
    assert "carol@example.com" in details.text
    assert TOKEN_HASH not in details.text
    assert (await admin_client.get(f"/admin/invitation/edit/{invitation.id}")).status_code == 403


async def test_organization_api_keys_are_searched_by_organization_and_key(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    acme, invitation = await acme_with_an_invitation(app)
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await bypass_row_security(session)
        key = ApiKey(
            user_id=invitation.invited_by,
            name="deploy bot",
            prefix="sk_d3pl0y",
            key_hash=hashlib.sha256(b"an API key").hexdigest(),
            scope="read",
        )
        session.add(key)
        await session.flush()
        session.add(OrgApiKey(api_key_id=key.id, org_id=acme.id, role="member"))
    for term in ("acme", "deploy", "sk_d3p"):
        found = await admin_client.get("/admin/org-api-key/list", params={"search": term})
        assert found.status_code == 200
        assert str(key.id) in found.text, term
    missed = await admin_client.get("/admin/org-api-key/list", params={"search": "bob"})
    assert str(key.id) not in missed.text
    assert "Organization name, key name or prefix" in missed.text
    for page in ("create", f"edit/{key.id}"):
        assert (await admin_client.get(f"/admin/org-api-key/{page}")).status_code == 403


async def test_the_admin_reads_every_organization_under_row_security(
    database_url: str, migrated: object
) -> None:
    needs_postgresql(database_url)
    async with app_role(database_url) as url:
        app = create_app(make_settings(url))
        try:
            async with LifespanManager(app):
                await make_user(app, "root@example.com", superuser=True)
                _, invitation = await acme_with_an_invitation(app)
                transport = ASGITransport(app=app, raise_app_exceptions=False)
                async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                    assert await admin_login(http) == 302
                    listing = await http.get("/admin/invitation/list")
                    details = await http.get(f"/admin/invitation/details/{invitation.id}")
            assert "carol@example.com" in listing.text
            assert details.status_code == 200
        finally:
            owner = Database.from_settings(make_settings(database_url))
            await clear_tables(owner)
            await owner.engine.dispose()
