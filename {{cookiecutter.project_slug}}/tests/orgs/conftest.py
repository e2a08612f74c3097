"""Orgs fixtures: the auth module's app (real SMTP for invitation emails) and helpers."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

from tests.auth.conftest import (  # noqa: F401 - fixtures used by the orgs tests
    app,
    auth_settings,
    mailer,
    oidc_server,
    outbox,
    smtp_server,
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
