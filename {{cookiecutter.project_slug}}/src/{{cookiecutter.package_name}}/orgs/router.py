"""HTTP routes of the orgs module, under /api/v1. Rules live in service.py."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter

from {{ cookiecutter.package_name }}.auth.dependencies import (
    AuthStateDep,
    CurrentUser,
    Principal,
    PrincipalDep,
    require_scopes,
    require_session_scopes,
)
from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.contract import declare, problems
from {{ cookiecutter.package_name }}.core.db import SessionDep

from . import exceptions, service
from .config import OrgsSettingsDep
from .dependencies import OrgAdmin, OrgMember, OrgOwner
from .models import Invitation, Organization, Role
from .schemas import (
    InvitationAccept,
    InvitationCreate,
    InvitationRead,
    InvitationState,
    MemberRead,
    MemberUpdate,
    OrgCreate,
    OrgRead,
    OrgUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["orgs"])


def _key_id(principal: Principal) -> uuid.UUID | None:
    return principal.api_key.id if principal.api_key is not None else None


def _org_read(org: Organization, role: Role) -> OrgRead:
    return OrgRead(
        id=org.id,
        name=org.name,
        personal=org.personal_for is not None,
        created_at=org.created_at,
        role=role,
    )


@router.post(
    "/orgs",
    status_code=201,
    dependencies=[require_scopes("write")],
    responses=problems({403: "An organization's API key acts only in its organization"}),
)
async def create_org(body: OrgCreate, principal: PrincipalDep, session: SessionDep) -> OrgRead:
    """A new organization; the caller is its owner."""
    if await service.bound_org(session, _key_id(principal)) is not None:
        raise exceptions.forbidden("An organization's API key acts only in its organization.")
    org = await service.create_org(session, principal.user, body.name)
    return _org_read(org, Role.OWNER)


@router.get("/orgs", dependencies=[require_scopes("read")])
async def list_orgs(principal: PrincipalDep, session: SessionDep) -> list[OrgRead]:
    """The caller's organizations, with their role in each (an organization's API key: its
    organization only)."""
    found = await service.orgs_of(session, principal.user.id, _key_id(principal))
    return [_org_read(org, role) for org, role in found]


@router.get("/orgs/{org_id}")
async def read_org(access: OrgMember) -> OrgRead:
    return _org_read(access.org, access.role)


@router.patch("/orgs/{org_id}")
async def rename_org(body: OrgUpdate, access: OrgOwner, session: SessionDep) -> OrgRead:
    """Rename the organization (owners)."""
    return _org_read(await service.rename_org(session, access, body.name), access.role)


@router.delete(
    "/orgs/{org_id}",
    status_code=204,
    responses=problems({409: "A personal organization is deleted only with its account"}),
)
async def delete_org(access: OrgOwner, session: SessionDep) -> None:
    """Delete the organization, its memberships and invitations (owners); a subscription of
    the organization is cancelled."""
    await service.delete_org(session, access)


# --- members ----------------------------------------------------------------------------------

NO_MEMBER = {404: "No such member (the user is not a member of this organization)"}
LAST_OWNER = {
    409: "The last owner, or the account of a personal organization, cannot stop being its owner"
}


@router.get("/orgs/{org_id}/members", response_model=list[MemberRead])
async def list_members(access: OrgMember, session: SessionDep) -> list[dict[str, Any]]:
    """The members, with their email and role, in the order they joined."""
    return await service.list_members(session, access)


@router.patch(
    "/orgs/{org_id}/members/{user_id}",
    response_model=MemberRead,
    responses=problems(
        {403: "Making or unmaking an owner needs the owner role", **NO_MEMBER, **LAST_OWNER}
    ),
)
async def change_role(
    user_id: uuid.UUID, body: MemberUpdate, access: OrgAdmin, session: SessionDep
) -> dict[str, Any]:
    """Change a member's role (admins; only owners make or unmake owners)."""
    return await service.change_role(session, access, user_id, body.role)


declare(change_role, requires="org role: owner to make or unmake an owner")


@router.delete(
    "/orgs/{org_id}/members/{user_id}",
    status_code=204,
    responses=problems(
        {
            403: "Removing another member needs the admin role, removing an owner the owner role",
            **NO_MEMBER,
            **LAST_OWNER,
        }
    ),
)
async def remove_member(user_id: uuid.UUID, access: OrgMember, session: SessionDep) -> None:
    """Remove a member (admins; owners for owners), or leave: your own user id (anyone)."""
    await service.remove_member(session, access, user_id)


declare(
    remove_member,
    requires="org role: admin to remove a member or admin, owner an owner; none to leave",
)


# --- invitations ------------------------------------------------------------------------------


def _invitation_read(invitation: Invitation) -> InvitationRead:
    return InvitationRead(
        id=invitation.id,
        email=invitation.email,
        role=Role(invitation.role),
        state=invitation.state(utcnow()),  # type: ignore[arg-type]
        invited_by=invitation.invited_by,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
        accepted_at=invitation.accepted_at,
        revoked_at=invitation.revoked_at,
    )


NO_INVITATION = {404: "No such invitation in this organization"}
OWNER_INVITATION = {403: "Inviting an owner needs the owner role"}


@router.post(
    "/orgs/{org_id}/invitations",
    status_code=201,
    responses=problems(
        {**OWNER_INVITATION, 409: "The address is a member already, or has a pending invitation"}
    ),
)
async def invite(
    body: InvitationCreate,
    access: OrgAdmin,
    session: SessionDep,
    auth: AuthStateDep,
    settings: OrgsSettingsDep,
) -> InvitationRead:
    """Invite an address with a role (admins); the link goes out by email."""
    invitation = await service.invite(
        session, access, auth.tokens.signer, settings, str(body.email), body.role
    )
    return _invitation_read(invitation)


@router.get("/orgs/{org_id}/invitations")
async def list_invitations(
    access: OrgAdmin,
    session: SessionDep,
    state: InvitationState | Literal["all"] = "pending",
) -> list[InvitationRead]:
    """The organization's invitations (admins): the pending ones, or those in `state`."""
    found = await service.list_invitations(session, access, None if state == "all" else state)
    return [_invitation_read(invitation) for invitation in found]


@router.delete(
    "/orgs/{org_id}/invitations/{invitation_id}",
    status_code=204,
    responses=problems({**NO_INVITATION, 409: "The invitation was accepted"}),
)
async def revoke_invitation(
    invitation_id: uuid.UUID, access: OrgAdmin, session: SessionDep
) -> None:
    """Revoke an invitation (admins): its link stops working."""
    await service.revoke_invitation(session, access, invitation_id)


@router.post(
    "/orgs/{org_id}/invitations/{invitation_id}/resend",
    responses=problems(
        {**OWNER_INVITATION, **NO_INVITATION, 409: "The invitation was accepted or revoked"}
    ),
)
async def resend_invitation(
    invitation_id: uuid.UUID,
    access: OrgAdmin,
    session: SessionDep,
    auth: AuthStateDep,
    settings: OrgsSettingsDep,
) -> InvitationRead:
    """Send the invitation again (admins): a new link and expiry; the old link stops working."""
    invitation = await service.resend_invitation(
        session, access, auth.tokens.signer, settings, invitation_id
    )
    return _invitation_read(invitation)


@router.post(
    "/invitations/accept",
    dependencies=[require_session_scopes("write")],
    responses=problems(
        {
            403: "The invitation is for another email address, or the caller's is not verified",
            404: "No such invitation (unknown token, or one replaced by a newer email)",
            409: "The caller is a member already",
            410: "The invitation has expired, was accepted or was revoked",
        }
    ),
)
async def accept_invitation(
    body: InvitationAccept, user: CurrentUser, session: SessionDep
) -> OrgRead:
    """Join the organization the emailed link invites to, with its role."""
    org, role = await service.accept_invitation(session, user, body.token)
    return _org_read(org, role)
