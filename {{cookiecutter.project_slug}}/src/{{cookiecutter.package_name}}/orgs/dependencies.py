"""The one dependency every org-scoped route takes: the organization and the caller's role.

    @router.get("/orgs/{org_id}/projects")
    async def list_projects(access: OrgMember, session: SessionDep) -> list[ProjectRead]:
        return (await session.scalars(scoped(Project, access))).all()

`OrgMember`, `OrgAdmin` and `OrgOwner` resolve `{org_id}` from the path and the
caller's membership in one query. A caller who is not a member gets 404, as for an
organization that does not exist; a member without the role gets 403. Reading
(GET, HEAD) needs the `read` scope, anything else `write`.

An API key that belongs to an organization (`OrgApiKey`) acts only there (404
elsewhere), with the lower of its role and its creator's current role.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from sqlalchemy import Row, Select, func, select

from {{ cookiecutter.package_name }}.auth import exceptions as auth_exceptions
from {{ cookiecutter.package_name }}.auth.dependencies import (
    MISSING_SCOPE,
    PrincipalDep,
    method_scope,
)
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.db import Database, SessionDep

from . import exceptions
from .models import Membership, Organization, OrgApiKey, Role
from .scoping import activation


@dataclass(frozen=True)
class OrgAccess:
    """The organization a request acts in, who acts, and with which role."""

    org: Organization
    user: User
    role: Role

    @property
    def org_id(self) -> uuid.UUID:
        return self.org.id

    def can(self, role: Role) -> bool:
        return self.role.at_least(role)


def effective_role(
    org_id: uuid.UUID, member_role: str, key_org: uuid.UUID | None, key_role: str | None
) -> Role | None:
    """The caller's role in `org_id`; None (404) when an API key of another organization acts.

    A key of no organization acts as its creator; a key of this one with the lower of
    its role and its creator's current role (`member_role`, read in the same query).
    """
    role = Role(member_role)
    if key_org is None:
        return role
    if key_org != org_id or key_role is None:
        return None
    return min(role, Role(key_role), key=lambda r: r.rank)


def with_key(
    query: Select[*tuple[Any, ...]], api_key_id: uuid.UUID | None
) -> Select[*tuple[Any, ...]]:
    """`query` (over memberships) with the API key's organization and role as its last columns."""
    if api_key_id is None:
        return query
    return query.add_columns(OrgApiKey.org_id, OrgApiKey.role).outerjoin(
        OrgApiKey, OrgApiKey.api_key_id == api_key_id
    )


def row_role(
    org_id: uuid.UUID, row: Row[*tuple[Any, ...]], api_key_id: uuid.UUID | None, at: int = 1
) -> Role | None:
    """`effective_role` from a row of a query with the membership's role at `at`."""
    if api_key_id is None:
        return Role(row[at])
    return effective_role(org_id, row[at], row[-2], row[-1])


async def get_org_access(
    org_id: uuid.UUID, request: Request, principal: PrincipalDep, session: SessionDep
) -> OrgAccess:
    missing = method_scope(request.method) - principal.scopes
    if missing:
        raise auth_exceptions.missing_scopes(sorted(missing))
    key_id = principal.api_key.id if principal.api_key is not None else None
    query = (
        select(Organization, Membership.role, activation(session, org_id))
        .join(Membership, Membership.org_id == Organization.id)
        .where(Organization.id == org_id, Membership.user_id == principal.user.id)
    )
    row = (await session.execute(with_key(query, key_id))).first()
    role = None if row is None else row_role(org_id, row, key_id)
    if row is None or role is None:
        raise exceptions.org_not_found()
    return OrgAccess(org=row[0], user=principal.user, role=role)


async def read_role(
    database: Database, org_id: uuid.UUID, user_id: uuid.UUID, api_key_id: uuid.UUID | None
) -> Role | None:
    """`get_org_access`'s answer without the request's session: the role, or None (404).

    One query on an autocommit connection, for endpoints that hold no pooled
    connection while they wait (AI chat).
    """
    query = select(Membership.role).where(
        Membership.org_id == org_id, Membership.user_id == user_id
    )
    async with database.read_engine.connect() as conn:
        row = (await conn.execute(with_key(query, api_key_id))).first()
    return None if row is None else row_role(org_id, row, api_key_id, at=0)


async def read_home_org(
    database: Database, user_id: uuid.UUID, api_key_id: uuid.UUID | None
) -> uuid.UUID | None:
    """The organization a request outside `/orgs/{org_id}` acts for, in one query.

    An API key's organization (None if its creator is no longer a member), else the
    caller's personal organization.
    """
    home: Any = (
        select(Organization.id).where(Organization.personal_for == user_id).scalar_subquery()
    )
    if api_key_id is not None:
        bound = select(OrgApiKey.org_id).where(OrgApiKey.api_key_id == api_key_id)
        home = func.coalesce(bound.scalar_subquery(), home)
    query = select(Membership.org_id).where(
        Membership.user_id == user_id, Membership.org_id == home
    )
    async with database.read_engine.connect() as conn:
        found: uuid.UUID | None = (await conn.execute(query)).scalar_one_or_none()
    return found


declare(
    get_org_access,
    requires=lambda method: f"org member, scopes: {' '.join(sorted(method_scope(method)))}",
    problems={404: "No such organization, or the caller is not a member", **MISSING_SCOPE},
)


def require_org_role(role: Role) -> DependsParam:
    """The caller's access to `{org_id}`, refused (403) below `role`."""

    async def dependency(
        access: Annotated[OrgAccess, Depends(get_org_access)],
    ) -> OrgAccess:
        if not access.can(role):
            raise exceptions.role_needed(role.value)
        return access

    if role is not Role.MEMBER:
        declare(dependency, requires=f"org role: {role.value}", problems={403: "Below the role"})
    return DependsParam(dependency)


OrgMember = Annotated[OrgAccess, require_org_role(Role.MEMBER)]
OrgAdmin = Annotated[OrgAccess, require_org_role(Role.ADMIN)]
OrgOwner = Annotated[OrgAccess, require_org_role(Role.OWNER)]
