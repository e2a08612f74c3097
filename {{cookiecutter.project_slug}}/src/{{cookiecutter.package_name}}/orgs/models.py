"""Orgs tables: organizations, memberships (with the member's role) and invitations.

Every org-scoped table carries `org_id`; read it through `orgs.scoping` (see docs/orgs.md).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from {{ cookiecutter.package_name }}.auth.models import UTCDateTime, utcnow
from {{ cookiecutter.package_name }}.core.db import Base


class Role(enum.StrEnum):
    """What a member may do; each role may do everything the ones below it may."""

    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return ROLE_ORDER.index(self)

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


ROLE_ORDER = (Role.MEMBER, Role.ADMIN, Role.OWNER)
ROLE_CHECK = "role IN ('member', 'admin', 'owner')"


class Organization(Base):
    """A team: the subject that is billed and whose AI allowance is pooled."""

    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    # The account whose personal organization this is (made at sign-up, one per account,
    # deleted with it); None for organizations made with POST /orgs.
    personal_for: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Membership(Base):
    """A user's place in an organization, with their role."""

    __tablename__ = "memberships"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="role"),)

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class Invitation(Base):
    """An invitation by email: single use, expiring, revocable. Stored as its token's SHA-256."""

    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint(ROLE_CHECK, name="role"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320), index=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )

    def state(self, now: datetime) -> str:
        """pending | accepted | revoked | expired."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "pending"


class OrgApiKey(Base):
    """An API key that belongs to an organization: it acts only there, with at most `role`.

    The key itself is the auth module's (`api_keys`: hash, scopes, expiry, revocation);
    this row binds it. Its role in the organization is the lower of `role` and its
    creator's current role, so demoting the creator lowers it and removing them stops it.
    """

    __tablename__ = "org_api_keys"
    __table_args__ = (CheckConstraint(ROLE_CHECK, name="role"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
