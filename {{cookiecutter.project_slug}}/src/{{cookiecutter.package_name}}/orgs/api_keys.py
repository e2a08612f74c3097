"""API keys that belong to an organization: made, listed and revoked under /orgs/{org_id}.

The key is the auth module's (`api_keys`: hashed, scoped, expiring, revocable, made by
its service); an `org_api_keys` row binds it to the organization with a role. Such a
key acts only in its organization (404 anywhere else), with the lower of its role and
its creator's current role (orgs/dependencies.py), so demoting the creator lowers it
and removing them stops it. Outside `/orgs/{org_id}` it acts as its creator, and AI
chat bills its organization; it lists only its organization and makes none.

Any member may make a key for themselves with a role up to their own (default
`member`); admins and owners see and may revoke every key of the organization,
members their own. As for personal keys, only a signed-in session (not an API key)
manages keys, and the account's email must be verified.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy import select, update

from {{ cookiecutter.package_name }}.auth import exceptions as auth_exceptions
from {{ cookiecutter.package_name }}.auth import service as auth_service
from {{ cookiecutter.package_name }}.auth.dependencies import (
    AuthStateDep,
    Principal,
    require_session_scopes,
)
from {{ cookiecutter.package_name }}.auth.models import ApiKey, utcnow
from {{ cookiecutter.package_name }}.auth.schemas import ApiKeyCreate, ApiKeyRead
from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.db import SessionDep, as_dicts

from . import exceptions
from .dependencies import OrgAccess, OrgMember
from .models import OrgApiKey, Role

router = APIRouter(prefix="/api/v1/orgs/{org_id}/api-keys", tags=["orgs", "api keys"])


class OrgApiKeyCreate(ApiKeyCreate):
    role: Role = Field(
        default=Role.MEMBER,
        description="The most the key may do in the organization; at most the caller's role",
    )


class OrgApiKeyRead(ApiKeyRead):
    role: Role = Field(description="Its role; it acts with the lower of this and its creator's")
    user_id: uuid.UUID = Field(description="Who made it")


class OrgApiKeyCreated(OrgApiKeyRead):
    key: str = Field(description="The full key. Shown only this once.")


_COLUMNS = (*auth_service.API_KEY_COLUMNS, OrgApiKey.role, ApiKey.user_id)


def _visible(access: OrgAccess) -> Any:
    """The organization's keys the caller may see: all for admins, else their own."""
    query = select(*_COLUMNS).join(OrgApiKey, OrgApiKey.api_key_id == ApiKey.id)
    query = query.where(OrgApiKey.org_id == access.org_id)
    if not access.can(Role.ADMIN):
        query = query.where(ApiKey.user_id == access.user.id)
    return query


@router.post(
    "",
    status_code=201,
    responses=problems(
        {403: "Email not verified, a role above the caller's, or a scope the session lacks"}
    ),
)
async def create_org_api_key(
    body: OrgApiKeyCreate,
    access: OrgMember,
    principal: Annotated[Principal, require_session_scopes("write")],
    session: SessionDep,
    state: AuthStateDep,
) -> OrgApiKeyCreated:
    """A key of the organization for the caller, with a role up to the caller's own."""
    if not principal.user.is_verified:
        raise auth_exceptions.email_unverified()
    if not access.can(body.role):
        raise exceptions.forbidden(f"A key cannot have a role above yours ({access.role.value}).")
    api_key, key = await auth_service.create_api_key(
        session, state.settings, principal.user, body, principal.scopes
    )
    session.add(OrgApiKey(api_key_id=api_key.id, org_id=access.org_id, role=body.role.value))
    await session.flush()
    read = ApiKeyRead.model_validate(api_key).model_dump()
    return OrgApiKeyCreated(key=key, role=body.role, user_id=api_key.user_id, **read)


@router.get("", dependencies=[require_session_scopes("read")])
async def list_org_api_keys(access: OrgMember, session: SessionDep) -> list[OrgApiKeyRead]:
    """The organization's keys (admins and owners), or the caller's own in it (members)."""
    query = _visible(access).order_by(ApiKey.created_at, ApiKey.id)
    return [OrgApiKeyRead.model_validate(row) for row in as_dicts(await session.execute(query))]


@router.delete(
    "/{key_id}",
    status_code=204,
    dependencies=[require_session_scopes("write")],
    responses=problems({404: "No such key in the organization (or not the caller's)"}),
)
async def revoke_org_api_key(key_id: uuid.UUID, access: OrgMember, session: SessionDep) -> None:
    """Revoke a key: any of the organization's (admins and owners), or one's own."""
    found = (await session.execute(_visible(access).where(ApiKey.id == key_id))).first()
    if found is None:
        raise exceptions.not_found("API key")
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
