"""Tenant isolation: every org-scoped route of the app, called across organizations, answers 404.

The walk (tests/orgs/isolation.py) reads the routes from the app, so a route any module adds
under /orgs/{org_id} is walked without a change here; a route whose path takes an id the
walk cannot fill fails it, naming the id.
"""

from __future__ import annotations

import uuid
from typing import Literal

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from pydantic import BaseModel, Field

from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.orgs.dependencies import OrgAdmin, OrgMember
from {{ cookiecutter.package_name }}.orgs.models import Invitation
from {{ cookiecutter.package_name }}.orgs.scoping import get_scoped
from tests.auth.conftest import verified_signed_in
from tests.orgs.conftest import ORGS, new_org
from tests.orgs.isolation import Tenant, WalkError, walk

WALKED = "/api/v1/orgs/{org_id}/walked-invitations/{invitation_id}"


class RoleChange(BaseModel):
    role: Literal["member", "admin"]
    note: str = Field(min_length=3, max_length=20)


def scoped_routes() -> APIRouter:
    """Org-scoped routes as a module would write them: through the dependency and get_scoped."""
    router = APIRouter(prefix="/api/v1")

    @router.get(WALKED.removeprefix("/api/v1"))
    async def read(invitation_id: uuid.UUID, access: OrgMember, session: SessionDep) -> str:
        found: Invitation = await get_scoped(session, Invitation, invitation_id, access)
        return found.email

    @router.patch(WALKED.removeprefix("/api/v1"))
    async def change(
        invitation_id: uuid.UUID, body: RoleChange, access: OrgAdmin, session: SessionDep
    ) -> str:
        invitation: Invitation = await get_scoped(session, Invitation, invitation_id, access)
        invitation.role = body.role
        return invitation.role

    return router


def leaky_routes() -> APIRouter:
    """A route that checks the organization but forgets to scope its row: the walk must catch it."""
    router = APIRouter(prefix="/api/v1")

    @router.get("/orgs/{org_id}/leaky-invitations/{invitation_id}")
    async def leak(invitation_id: uuid.UUID, access: OrgMember, session: SessionDep) -> str:
        invitation = await session.get(Invitation, invitation_id)
        return invitation.email if invitation else ""

    return router


async def two_orgs(app: FastAPI, client: AsyncClient) -> tuple[dict[str, str], uuid.UUID, Tenant]:
    """Ada owns A (so no route refuses her for her role); Bob owns B."""
    ada = await verified_signed_in(app, client, "ada@example.com")
    a = await new_org(client, ada, "Alpha")
    bob = await verified_signed_in(app, client, "bob@example.com")
    b = await new_org(client, bob, "Beta")
    me = await client.get("/api/v1/users/me", headers=bob)
    return ada, uuid.UUID(a["id"]), Tenant(uuid.UUID(b["id"]), uuid.UUID(me.json()["id"]))


async def test_every_org_route_answers_404_across_organizations(
    app: FastAPI, client: AsyncClient
) -> None:
    app.include_router(scoped_routes())
    ada, a_org, b = await two_orgs(app, client)
    walked, failures = await walk(app, client, ada, a_org, b)
    assert not failures, "\n".join(failures)
    assert {"GET /api/v1/orgs/{org_id}", f"GET {WALKED}", f"PATCH {WALKED}"} <= set(walked)
    # The routes work for A's own rows: the 404s above are isolation, not broken routes.
    assert (await client.get(f"{ORGS}/{a_org}", headers=ada)).status_code == 200


async def test_the_walk_catches_a_route_that_forgets_the_scope(
    app: FastAPI, client: AsyncClient
) -> None:
    app.include_router(leaky_routes())
    ada, a_org, b = await two_orgs(app, client)
    _, failures = await walk(app, client, ada, a_org, b)
    [failure] = failures
    assert failure.startswith("GET /api/v1/orgs/{org_id}/leaky-invitations/{invitation_id} as ")
    assert f"/orgs/{a_org}/" in failure
    assert " 200 " in failure


async def test_a_path_id_the_walk_cannot_fill_fails_it(app: FastAPI, client: AsyncClient) -> None:
    router = APIRouter(prefix="/api/v1")

    @router.get("/orgs/{org_id}/widgets/{widget_id}")
    async def widget(widget_id: uuid.UUID, access: OrgMember) -> str:
        return str(widget_id)

    app.include_router(router)
    ada, a_org, b = await two_orgs(app, client)
    with pytest.raises(WalkError, match=r"\['widget_id'\].*PATH_IDS"):
        await walk(app, client, ada, a_org, b)
