"""HTTP routes of the orgs module, under /api/v1. Rules live in service.py."""

from __future__ import annotations

from fastapi import APIRouter

from {{ cookiecutter.package_name }}.auth.dependencies import CurrentUser, require_scopes
from {{ cookiecutter.package_name }}.core.db import SessionDep

from . import service
from .dependencies import OrgMember
from .models import Organization, Role
from .schemas import OrgCreate, OrgRead

router = APIRouter(prefix="/api/v1", tags=["orgs"])


def _org_read(org: Organization, role: Role) -> OrgRead:
    return OrgRead(
        id=org.id,
        name=org.name,
        personal=org.personal_for is not None,
        created_at=org.created_at,
        role=role,
    )


@router.post("/orgs", status_code=201, dependencies=[require_scopes("write")])
async def create_org(body: OrgCreate, user: CurrentUser, session: SessionDep) -> OrgRead:
    """A new organization; the caller is its owner."""
    org = await service.create_org(session, user, body.name)
    return _org_read(org, Role.OWNER)


@router.get("/orgs", dependencies=[require_scopes("read")])
async def list_orgs(user: CurrentUser, session: SessionDep) -> list[OrgRead]:
    """The caller's organizations, with their role in each."""
    return [_org_read(org, role) for org, role in await service.orgs_of(session, user.id)]


@router.get("/orgs/{org_id}")
async def read_org(access: OrgMember) -> OrgRead:
    return _org_read(access.org, access.role)
