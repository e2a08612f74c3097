"""Request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

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
