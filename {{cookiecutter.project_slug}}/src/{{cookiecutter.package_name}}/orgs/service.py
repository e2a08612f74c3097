"""Business rules of organizations. Services flush, never commit."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.events import on_user_created
from {{ cookiecutter.package_name }}.auth.models import User

from .models import Membership, Organization, Role

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


async def orgs_of(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[Organization, Role]]:
    """The caller's organizations with their role in each, oldest first."""
    rows = await session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.created_at, Organization.id)
    )
    return [(org, Role(role)) for org, role in rows]
