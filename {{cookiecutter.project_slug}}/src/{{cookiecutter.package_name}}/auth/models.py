"""Auth tables: users, linked OAuth accounts, refresh-token sessions, API keys."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    String,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    func,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from {{ cookiecutter.package_name }}.core.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that comes back aware (in UTC) on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: use datetime.now(UTC)")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value if isinstance(value, datetime) else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_security_stamp() -> str:
    return secrets.token_urlsafe(12)


class User(Base):
    __tablename__ = "users"
    # Emails are stored lowercased, so the unique index makes them unique regardless of case.
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_lowercase"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    # None for accounts that only sign in through a provider.
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    is_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    # Every access token carries the stamp it was issued under; a new stamp (password
    # changed or reset, account claimed) refuses them all at once.
    security_stamp: Mapped[str] = mapped_column(
        String(32), default=new_security_stamp, server_default=""
    )
    # Sessions (refresh families, by hex id) ended while their access tokens may still
    # be alive: {family: unix time after which none can be}. Read with the user on every
    # request, so a logout cuts that session's access tokens with no query of its own.
    revoked_sessions: Mapped[dict[str, int] | None] = mapped_column(JSON(none_as_null=True))

    @property
    def has_password(self) -> bool:
        return self.hashed_password is not None


class OAuthAccount(Base):
    """A provider identity (provider + subject) linked to a user."""

    __tablename__ = "oauth_accounts"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class RefreshToken(Base):
    """One refresh token (stored as its SHA-256); rotation keeps the family id."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    # Both indexed for the daily purge (auth.purge_expired).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Set when the token was exchanged for a new one; presenting it again is reuse.
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class ApiKey(Base):
    """A long-lived key for scripts: shown once, stored as its SHA-256 with a visible prefix."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )

    user: Mapped[User] = relationship(lazy="raise")

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()
