"""The one dependency every org-scoped route takes: the organization and the caller's role.

    @router.get("/orgs/{org_id}/projects")
    async def list_projects(access: OrgMember, session: SessionDep) -> list[ProjectRead]:
        return (await session.scalars(scoped(Project, access))).all()

`OrgMember`, `OrgAdmin` and `OrgOwner` resolve `{org_id}` from the path and the
caller's membership in one query. A caller who is not a member gets 404, as for an
organization that does not exist; a member without the role gets 403. Reading
(GET, HEAD) needs the `read` scope, anything else `write`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth import exceptions as auth_exceptions
from {{ cookiecutter.package_name }}.auth.dependencies import (
    MISSING_SCOPE,
    PrincipalDep,
    method_scope,
)
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.contract import declare
from {{ cookiecutter.package_name }}.core.db import SessionDep

from . import exceptions
from .models import Membership, Organization, Role
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


async def get_org_access(
    org_id: uuid.UUID, request: Request, principal: PrincipalDep, session: SessionDep
) -> OrgAccess:
    missing = method_scope(request.method) - principal.scopes
    if missing:
        raise auth_exceptions.missing_scopes(sorted(missing))
    row = (
        await session.execute(
            select(Organization, Membership.role, activation(session, org_id))
            .join(Membership, Membership.org_id == Organization.id)
            .where(Organization.id == org_id, Membership.user_id == principal.user.id)
        )
    ).first()
    if row is None:
        raise exceptions.org_not_found()
    return OrgAccess(org=row[0], user=principal.user, role=Role(row[1]))


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
