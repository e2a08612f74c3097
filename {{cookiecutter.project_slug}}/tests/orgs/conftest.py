"""Orgs fixtures: the auth module's app (real SMTP for invitation emails) and helpers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from tests.auth.conftest import (  # noqa: F401 - fixtures used by the orgs tests
    Outbox,
    app,
    auth_settings,
    delivered,
    mailer,
    oidc_server,
    outbox,
    smtp_server,
    verified_signed_in,
)

ORGS = "/api/v1/orgs"


async def new_org(client: AsyncClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = await client.post(ORGS, json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def my_orgs(client: AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get(ORGS, headers=headers)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


INVITATIONS = "/api/v1/invitations/accept"


async def invite(
    client: AsyncClient, headers: dict[str, str], org_id: str, email: str, role: str = "member"
) -> dict[str, Any]:
    response = await client.post(
        f"{ORGS}/{org_id}/invitations", json={"email": email, "role": role}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def members(client: AsyncClient, headers: dict[str, str], org_id: str) -> list[list[str]]:
    """[email, role] of each member, in the listing's order."""
    response = await client.get(f"{ORGS}/{org_id}/members", headers=headers)
    assert response.status_code == 200, response.text
    return [[m["email"], m["role"]] for m in response.json()]


async def user_id(client: AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get("/api/v1/users/me", headers=headers)
    assert response.status_code == 200, response.text
    found: str = response.json()["id"]
    return found


async def accept(client: AsyncClient, headers: dict[str, str], token: str) -> Any:
    return await client.post(INVITATIONS, json={"token": token}, headers=headers)


async def joined(
    application: FastAPI,
    client: AsyncClient,
    mail: Outbox,
    owner: dict[str, str],
    org_id: str,
    email: str,
    role: str = "member",
) -> dict[str, str]:
    """A new verified account that joined `org_id` through an emailed invitation; its headers."""
    await invite(client, owner, org_id, email, role)
    await delivered(application)
    token = mail.link_token(email)
    headers = await verified_signed_in(application, client, email)
    response = await accept(client, headers, token)
    assert response.status_code == 200, response.text
    return headers
