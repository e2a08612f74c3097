"""Request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, StringConstraints

from {{ cookiecutter.package_name }}.auth.config import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

Password = Annotated[
    str,
    Field(
        min_length=PASSWORD_MIN_LENGTH,
        max_length=PASSWORD_MAX_LENGTH,
        description=f"{PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters.",
    ),
]
Scope = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9:._-]{1,50}$")]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: Password


class UserUpdate(BaseModel):
    """A new password. The email changes through `POST /users/me/email`."""

    model_config = ConfigDict(extra="forbid")

    password: Password | None = None
    current_password: str | None = Field(
        default=None, max_length=PASSWORD_MAX_LENGTH, description="Needed to change the password."
    )


class EmailChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Field(description="The new address; it gets a link that confirms it.")
    current_password: str = Field(max_length=PASSWORD_MAX_LENGTH)


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    is_active: bool
    is_verified: bool
    is_superuser: bool
    has_password: bool
    created_at: datetime


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int
    scope: str


class CookieSession(BaseModel):
    """Cookie mode's answer to a sign-in or refresh: the tokens are only in httpOnly cookies."""

    token_type: Literal["cookie"] = "cookie"  # noqa: S105
    expires_in: int
    scope: str
    csrf_token: str = Field(description="Send it as X-CSRF-Token on unsafe methods.")


class RefreshRequest(BaseModel):
    # Optional in cookie mode, where the refresh token comes from its cookie.
    refresh_token: str | None = Field(default=None, max_length=200)


class EmailRequest(BaseModel):
    email: EmailStr


class TokenRequest(BaseModel):
    token: str = Field(max_length=2000)


class ResetPassword(BaseModel):
    token: str = Field(max_length=2000)
    password: Password


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] | None = Field(
        default=None,
        max_length=50,
        description="Default: every scope of the caller's session. At most those.",
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def _scope_words(value: object) -> object:
    """A stored scope string ("read write") is shown as its list of scopes."""
    return value.split() if isinstance(value, str) else value


class ApiKeyRead(BaseModel):
    """Built from an `ApiKey`, or from a row of `service.API_KEY_COLUMNS`."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    scopes: Annotated[list[str], BeforeValidator(_scope_words)]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The full key. Shown only this once.")


class Message(BaseModel):
    detail: str
