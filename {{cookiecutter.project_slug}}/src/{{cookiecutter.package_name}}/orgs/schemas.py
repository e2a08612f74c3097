"""Request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from .models import Role

OrgName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class OrgCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OrgName


class OrgUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OrgName


class OrgRead(BaseModel):
    id: uuid.UUID
    name: str
    personal: bool
    created_at: datetime
    role: Role  # the caller's


class MemberRead(BaseModel):
    user_id: uuid.UUID
    email: str
    role: Role
    joined: datetime


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


InvitationState = Literal["pending", "accepted", "revoked", "expired"]


class InvitationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    role: Role = Role.MEMBER


class InvitationRead(BaseModel):
    """An invitation as the organization's admins see it (never its token)."""

    id: uuid.UUID
    email: str
    role: Role
    state: InvitationState
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


class InvitationAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=200, description="The token of the emailed link.")
