"""Business rules of organizations. Services flush, never commit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from {{ cookiecutter.package_name }}.auth.events import on_user_created
from {{ cookiecutter.package_name }}.auth.models import User, utcnow
from {{ cookiecutter.package_name }}.auth.security import TokenSigner, token_hash
from {{ cookiecutter.package_name }}.auth.service import normalize_email
from {{ cookiecutter.package_name }}.core.jobs import enqueue

from . import events, exceptions, jobs
from .config import OrgsSettings
from .dependencies import OrgAccess, row_role, with_key
from .models import Invitation, Membership, Organization, OrgApiKey, Role
from .schemas import InvitationState
from .scoping import enter_org
from .tokens import new_nonce, org_of, stored_hash

PERSONAL_NAME_LENGTH = 100


def personal_name(user: User) -> str:
    return f"{user.email.partition('@')[0]}'s organization"[:PERSONAL_NAME_LENGTH]


async def create_org(
    session: AsyncSession, owner: User, name: str, *, personal: bool = False
) -> Organization:
    org = Organization(name=name, personal_for=owner.id if personal else None)
    session.add(org)
    await session.flush()
    session.add(Membership(org_id=org.id, user_id=owner.id, role=Role.OWNER.value))
    await session.flush()
    return org


@on_user_created
async def create_personal_org(session: AsyncSession, user: User) -> None:
    """Every account gets an organization of its own: the billing subject is always one."""
    await create_org(session, user, personal_name(user), personal=True)


async def personal_org(session: AsyncSession, user_id: uuid.UUID) -> Organization | None:
    return (
        await session.execute(select(Organization).where(Organization.personal_for == user_id))
    ).scalar_one_or_none()


async def orgs_of(
    session: AsyncSession, user_id: uuid.UUID, api_key_id: uuid.UUID | None = None
) -> list[tuple[Organization, Role]]:
    """The caller's organizations with their role in each, oldest first.

    Through an organization's API key, only that organization, with the key's role.
    """
    query = (
        select(Organization, Membership.role)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.created_at, Organization.id)
    )
    found = [
        (row[0], row_role(row[0].id, row, api_key_id))
        for row in await session.execute(with_key(query, api_key_id))
    ]
    return [(org, role) for org, role in found if role is not None]


async def bound_org(session: AsyncSession, api_key_id: uuid.UUID | None) -> uuid.UUID | None:
    """The organization an API key belongs to, if any."""
    if api_key_id is None:
        return None
    query = select(OrgApiKey.org_id).where(OrgApiKey.api_key_id == api_key_id)
    return (await session.execute(query)).scalar_one_or_none()


# --- organizations ----------------------------------------------------------------------------


async def rename_org(session: AsyncSession, access: OrgAccess, name: str) -> Organization:
    access.org.name = name
    await session.flush()
    return access.org


async def delete_org(session: AsyncSession, access: OrgAccess) -> None:
    """Delete the organization with its memberships and invitations (owners only).

    The `on_org_deleted` hooks run first, in this transaction (where billing enqueues
    the cancellation of a subscription). A personal organization goes only with
    its account.
    """
    org = access.org
    if org.personal_for is not None:
        raise exceptions.conflict(
            "A personal organization cannot be deleted; it is deleted with its account."
        )
    await events.org_deleted(session, org)
    await session.delete(org)
    await session.flush()


# --- members and roles ------------------------------------------------------------------------

MEMBER_COLUMNS = (
    Membership.user_id,
    User.email,
    Membership.role,
    Membership.created_at.label("joined"),
)


async def list_members(session: AsyncSession, access: OrgAccess) -> list[dict[str, Any]]:
    """Every member with their email and role, in the order they joined (one query)."""
    rows = await session.execute(
        select(*MEMBER_COLUMNS)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == access.org_id)
        .order_by(Membership.created_at, Membership.user_id)
    )
    return [dict(row._mapping) for row in rows]


async def _member(session: AsyncSession, access: OrgAccess, user_id: uuid.UUID) -> Membership:
    membership = await session.get(Membership, (access.org_id, user_id))
    if membership is None:
        raise exceptions.not_found("member")
    return membership


async def _member_read(session: AsyncSession, membership: Membership) -> dict[str, Any]:
    email = (
        await session.execute(select(User.email).where(User.id == membership.user_id))
    ).scalar_one()
    return {
        "user_id": membership.user_id,
        "email": email,
        "role": membership.role,
        "joined": membership.created_at,
    }


LAST_OWNER = "The last owner cannot leave or be demoted; make another member owner first."


async def _check_owner_may_go(session: AsyncSession, org: Organization, user_id: uuid.UUID) -> None:
    """An owner is about to stop being one (demoted, removed, leaving): refuse if they must stay.

    The owners' rows are locked (PostgreSQL) so that two owners demoting each other at
    once cannot leave the organization without one: the second waits and sees one owner.
    """
    if org.personal_for == user_id:
        raise exceptions.conflict(
            "This is the account's personal organization: its account stays its owner."
        )
    owners = (
        await session.execute(
            select(Membership.user_id)
            .where(Membership.org_id == org.id, Membership.role == Role.OWNER.value)
            .order_by(Membership.user_id)  # every transaction locks them in one order
            .with_for_update()
        )
    ).scalars()
    if not set(owners) - {user_id}:
        raise exceptions.conflict(LAST_OWNER)


def _another_owner(org_id: uuid.UUID, user_id: uuid.UUID) -> ColumnElement[bool]:
    other = aliased(Membership)
    return (
        select(other.user_id)
        .where(
            other.org_id == org_id,
            other.role == Role.OWNER.value,
            other.user_id != user_id,
        )
        .exists()
    )


async def _write_member(
    session: AsyncSession, membership: Membership, role: Role | None, *, owner_goes: bool
) -> None:
    """Set the member's role, or with None remove them, in one statement.

    When an owner stops being one, the statement itself requires another owner: SQLite
    reads outside the writing transaction, so the check above could be stale there by
    the time this writes (PostgreSQL's lock already settled it).
    """
    where = [Membership.org_id == membership.org_id, Membership.user_id == membership.user_id]
    if owner_goes:
        where.append(_another_owner(membership.org_id, membership.user_id))
    statement = (
        delete(Membership).where(*where)
        if role is None
        else update(Membership).where(*where).values(role=role.value)
    )
    result = await session.execute(statement.execution_options(synchronize_session=False))
    if cast(CursorResult[Any], result).rowcount != 1:
        raise exceptions.conflict(LAST_OWNER)
    if role is None:
        session.expunge(membership)
    else:
        set_committed_value(membership, "role", role.value)


async def change_role(
    session: AsyncSession, access: OrgAccess, user_id: uuid.UUID, role: Role
) -> dict[str, Any]:
    """Set a member's role (admins and owners). Only an owner makes or unmakes an owner.

    Transferring ownership: an owner makes another member owner, then may step down.
    """
    membership = await _member(session, access, user_id)
    current = Role(membership.role)
    if Role.OWNER in (current, role) and not access.can(Role.OWNER):
        raise exceptions.role_needed(Role.OWNER.value)
    owner_goes = current is Role.OWNER and role is not Role.OWNER
    if owner_goes:
        await _check_owner_may_go(session, access.org, user_id)
    if role is not current:
        await _write_member(session, membership, role, owner_goes=owner_goes)
    return await _member_read(session, membership)


async def remove_member(session: AsyncSession, access: OrgAccess, user_id: uuid.UUID) -> None:
    """Remove a member (admins: members and admins; owners: anyone), or leave (anyone)."""
    leaving = user_id == access.user.id
    if not leaving and not access.can(Role.ADMIN):
        raise exceptions.role_needed(Role.ADMIN.value)
    membership = await _member(session, access, user_id)
    owner_goes = Role(membership.role) is Role.OWNER
    if owner_goes:
        if not leaving and not access.can(Role.OWNER):
            raise exceptions.role_needed(Role.OWNER.value)
        await _check_owner_may_go(session, access.org, user_id)
    await _write_member(session, membership, None, owner_goes=owner_goes)
    await events.members_changed(session, access.org)


# --- invitations ------------------------------------------------------------------------------


def _state_filter(state: InvitationState, now: datetime | None = None) -> ColumnElement[bool]:
    now = now or utcnow()
    open_ = and_(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
    return {
        "pending": and_(open_, Invitation.expires_at > now),
        "expired": and_(open_, Invitation.expires_at <= now),
        "accepted": Invitation.accepted_at.is_not(None),
        "revoked": and_(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_not(None)),
    }[state]


async def list_invitations(
    session: AsyncSession, access: OrgAccess, state: InvitationState | None
) -> list[Invitation]:
    """The organization's invitations in one state (all with None), newest first."""
    query = select(Invitation).where(Invitation.org_id == access.org_id)
    if state is not None:
        query = query.where(_state_filter(state))
    query = query.order_by(Invitation.created_at.desc(), Invitation.id)
    return list((await session.execute(query)).scalars())


async def _send(
    session: AsyncSession,
    signer: TokenSigner,
    settings: OrgsSettings,
    invitation: Invitation,
) -> None:
    """A new token (the last link stops working), a new expiry, and its email as a job."""
    nonce = new_nonce()
    invitation.token_hash = stored_hash(signer, invitation.org_id, invitation.id, nonce)
    invitation.expires_at = utcnow() + timedelta(hours=settings.invitation_ttl_hours)
    session.add(invitation)
    await session.flush()
    await enqueue(
        session,
        jobs.send_invitation,
        jobs.SendInvitation(org_id=invitation.org_id, invitation_id=invitation.id, nonce=nonce),
        key=f"{invitation.id}:{invitation.token_hash[:16]}",
    )


async def _invitation(
    session: AsyncSession, access: OrgAccess, invitation_id: uuid.UUID
) -> Invitation:
    """The organization's invitation with this id; 404 for another organization's."""
    found = (
        await session.execute(
            select(Invitation).where(
                Invitation.org_id == access.org_id, Invitation.id == invitation_id
            )
        )
    ).scalar_one_or_none()
    if found is None:
        raise exceptions.not_found("invitation")
    return found


def _check_may_grant(access: OrgAccess, role: Role) -> None:
    if role is Role.OWNER and not access.can(Role.OWNER):
        raise exceptions.role_needed(Role.OWNER.value)


async def _check_invitable(
    session: AsyncSession, access: OrgAccess, email: str, resent: uuid.UUID | None = None
) -> None:
    """409 if the address is a member, or has a pending invitation (other than `resent`)."""
    member = await session.execute(
        select(Membership.user_id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == access.org_id, User.email == email)
    )
    if member.first() is not None:
        raise exceptions.conflict("This address is already a member of the organization.")
    pending = select(Invitation.id).where(
        Invitation.org_id == access.org_id, Invitation.email == email, _state_filter("pending")
    )
    if resent is not None:
        pending = pending.where(Invitation.id != resent)
    if (await session.execute(pending)).first() is not None:
        raise exceptions.conflict(
            "This address already has a pending invitation; send it again or revoke it."
        )


async def invite(
    session: AsyncSession,
    access: OrgAccess,
    signer: TokenSigner,
    settings: OrgsSettings,
    email: str,
    role: Role,
) -> Invitation:
    """Invite an address with a role (admins and owners; only an owner invites an owner).

    An address that is already a member, or has a pending invitation, is refused (409):
    send that one again (`resend`) or revoke it first.
    """
    _check_may_grant(access, role)
    email = normalize_email(email)
    await _check_invitable(session, access, email)
    invitation = Invitation(
        id=uuid.uuid4(),
        org_id=access.org_id,
        email=email,
        role=role.value,
        invited_by=access.user.id,
    )
    await _send(session, signer, settings, invitation)
    return invitation


async def resend_invitation(
    session: AsyncSession,
    access: OrgAccess,
    signer: TokenSigner,
    settings: OrgsSettings,
    invitation_id: uuid.UUID,
) -> Invitation:
    """Send a pending (or expired) invitation again: new link, new expiry, old link dead."""
    invitation = await _invitation(session, access, invitation_id)
    _check_may_grant(access, Role(invitation.role))
    state = invitation.state(utcnow())
    if state in ("accepted", "revoked"):
        raise exceptions.conflict(f"The invitation was {state}; invite the address again.")
    await _check_invitable(session, access, invitation.email, resent=invitation.id)
    await _send(session, signer, settings, invitation)
    return invitation


async def revoke_invitation(
    session: AsyncSession, access: OrgAccess, invitation_id: uuid.UUID
) -> None:
    """Revoke an invitation: its link stops working (revoking twice is harmless)."""
    invitation = await _invitation(session, access, invitation_id)
    if invitation.accepted_at is not None:
        raise exceptions.conflict("The invitation was accepted; remove the member instead.")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        await session.flush()


GONE = {"expired": "has expired", "accepted": "was used already", "revoked": "was revoked"}


async def accept_invitation(
    session: AsyncSession, user: User, token: str
) -> tuple[Organization, Role]:
    """Join the organization with the invitation's role, in one transaction.

    Unknown token (or one replaced by a resend): 404. Expired, accepted or revoked:
    410. The caller's verified email must be the invited address: 403. Already a
    member: 409. The invitation's row is locked (PostgreSQL), so it is used once.
    """
    org_id = org_of(token)
    invitation = None
    if org_id is not None:
        await enter_org(session, org_id)
        invitation = (
            await session.execute(
                select(Invitation)
                .where(Invitation.org_id == org_id, Invitation.token_hash == token_hash(token))
                .with_for_update()
            )
        ).scalar_one_or_none()
    if invitation is None:
        raise exceptions.not_found("invitation")
    state = invitation.state(utcnow())
    if state != "pending":
        raise exceptions.gone(f"The invitation {GONE[state]}.")
    if user.email != invitation.email:
        raise exceptions.forbidden("The invitation is for another email address.")
    if not user.is_verified:
        raise exceptions.forbidden("Verify your email address first, then accept the invitation.")
    if await session.get(Membership, (invitation.org_id, user.id)) is not None:
        raise exceptions.conflict("You are already a member of the organization.")
    # Used in one statement that requires it unused (SQLite reads outside the writing
    # transaction, so two requests at once may both have read it pending).
    now = utcnow()
    used = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, _state_filter("pending", now))
        .values(accepted_at=now, accepted_by=user.id)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], used).rowcount != 1:
        raise exceptions.gone(f"The invitation {GONE['accepted']}.")
    set_committed_value(invitation, "accepted_at", now)
    set_committed_value(invitation, "accepted_by", user.id)
    role = Role(invitation.role)
    session.add(Membership(org_id=invitation.org_id, user_id=user.id, role=role.value))
    try:
        await session.flush()
    except IntegrityError as exc:  # joined at the same moment through another invitation
        raise exceptions.conflict("You are already a member of the organization.") from exc
    org = await session.get(Organization, invitation.org_id)
    assert org is not None  # the invitation goes with its organization
    await events.members_changed(session, org)
    return org, role
