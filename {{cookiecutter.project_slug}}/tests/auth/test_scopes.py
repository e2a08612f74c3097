"""Scopes on every route; what an API key or a read-only token may not do; the email change.

A read-only credential must not be able to take the account: no write, no new keys,
no email or password change, and a new key never holds more than its creator.
"""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.dependencies import (
    CurrentUser,
    Principal,
    ReleasedUser,
    require_scopes,
)
from {{ cookiecutter.package_name }}.auth.models import ApiKey
from {{ cookiecutter.package_name }}.core.contract import requirements, routes
from tests.auth.conftest import (
    PASSWORD,
    Outbox,
    assert_problem,
    count,
    delivered,
    login,
    mark_verified,
    register,
    signed_in,
    text_of,
    verified_signed_in,
)

ME = "/api/v1/users/me"
KEYS = "/api/v1/api-keys"
CHANGE_EMAIL = "/api/v1/users/me/email"
NEW_PASSWORD = "a brand new passphrase"


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def new_key(client: AsyncClient, headers: dict[str, str], *scopes: str) -> str:
    body = {"name": "k", "scopes": list(scopes)} if scopes else {"name": "k"}
    created = await client.post(KEYS, json=body, headers=headers)
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


# --- the route table ----------------------------------------------------------------------------


async def test_a_signed_in_route_without_a_scope_is_caught(app: FastAPI) -> None:
    router = APIRouter()

    @router.get("/_test/forgot")
    async def forgot(user: CurrentUser) -> None: ...

    @router.get("/_test/declared", dependencies=[require_scopes("read")])
    async def declared(user: CurrentUser) -> None: ...

    @router.post("/_test/released")
    async def released(user: ReleasedUser) -> None: ...

    app.include_router(router)
    by_path = {route.path: route for route in routes(app)}
    assert requirements(by_path["/_test/forgot"]) == []  # signed in is not a scope
    assert requirements(by_path["/_test/declared"]) == ["scopes: read"]
    assert requirements(by_path["/_test/released"], "POST") == ["scopes: write"]
    assert requirements(by_path["/_test/released"], "GET") == ["scopes: read"]


# --- scopes are enforced ------------------------------------------------------------------------


async def test_a_read_only_token_reads_but_changes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "reader@example.com")
    await mark_verified(app, "reader@example.com")
    headers = bearer(await login(client, "reader@example.com", scope="read"))
    assert (await client.get(ME, headers=headers)).status_code == 200
    assert_problem(await client.post(KEYS, json={"name": "k"}, headers=headers), 403)
    body = {"email": "other@example.com", "current_password": PASSWORD}
    assert_problem(await client.post(CHANGE_EMAIL, json=body, headers=headers), 403)
    change = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert_problem(await client.patch(ME, json=change, headers=headers), 403)
    assert await count(app, ApiKey) == 0


async def test_an_api_key_cannot_manage_the_account(app: FastAPI, client: AsyncClient) -> None:
    headers = await verified_signed_in(app, client, "owner@example.com")
    key = {"X-API-Key": await new_key(client, headers)}  # read and write
    assert (await client.get(ME, headers=key)).status_code == 200
    assert_problem(await client.post(KEYS, json={"name": "more"}, headers=key), 403)
    assert_problem(await client.get(KEYS, headers=key), 403)
    listed = (await client.get(KEYS, headers=headers)).json()
    assert_problem(await client.delete(f"{KEYS}/{listed[0]['id']}", headers=key), 403)
    body = {"email": "thief@example.com", "current_password": PASSWORD}
    assert_problem(await client.post(CHANGE_EMAIL, json=body, headers=key), 403)
    change = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert_problem(await client.patch(ME, json=change, headers=key), 403)
    assert await count(app, ApiKey) == 1


async def test_a_read_only_key_cannot_write(app: FastAPI, client: AsyncClient) -> None:
    router = APIRouter()

    @router.post("/_test/write", status_code=204, dependencies=[require_scopes("write")])
    async def write(user: CurrentUser) -> None: ...

    @router.get("/_test/who")
    async def who(principal: Annotated[Principal, require_scopes("read")]) -> list[str]:
        return sorted(principal.scopes)

    @router.post("/_test/released", status_code=204)
    async def released_write(user: ReleasedUser) -> None: ...

    app.include_router(router)
    headers = await verified_signed_in(app, client, "ro@example.com")
    key = {"X-API-Key": await new_key(client, headers, "read")}
    assert (await client.get("/_test/who", headers=key)).json() == ["read"]
    assert_problem(await client.post("/_test/write", headers=key), 403)
    assert_problem(await client.post("/_test/released", headers=key), 403)
    assert (await client.post("/_test/write", headers=headers)).status_code == 204
    assert (await client.post("/_test/released", headers=headers)).status_code == 204


async def test_a_new_key_holds_at_most_the_callers_scopes(
    app: FastAPI, client: AsyncClient
) -> None:
    await register(client, "narrow@example.com")
    await mark_verified(app, "narrow@example.com")
    headers = bearer(await login(client, "narrow@example.com", scope="write"))
    assert_problem(
        await client.post(KEYS, json={"name": "k", "scopes": ["read", "write"]}, headers=headers),
        403,
    )
    created = await client.post(KEYS, json={"name": "k"}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == ["write"]  # by default, the session's own


async def test_api_keys_need_a_verified_email(app: FastAPI, client: AsyncClient) -> None:
    headers = await signed_in(client, "unverified@example.com")
    body = assert_problem(await client.post(KEYS, json={"name": "k"}, headers=headers), 403)
    assert "Verify your email" in body["detail"]
    assert await count(app, ApiKey) == 0
    await mark_verified(app, "unverified@example.com")
    assert (await client.post(KEYS, json={"name": "k"}, headers=headers)).status_code == 201


# --- the email change ---------------------------------------------------------------------------


async def test_an_email_change_waits_for_the_new_address(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    headers = await verified_signed_in(app, client, "old@example.com")
    body = {"email": "New@example.com", "current_password": PASSWORD}
    asked = await client.post(CHANGE_EMAIL, json=body, headers=headers)
    assert asked.status_code == 202, asked.text
    # Nothing changed yet: the account keeps its address and its sign-in.
    me = (await client.get(ME, headers=headers)).json()
    assert (me["email"], me["is_verified"]) == ("old@example.com", True)
    assert_problem(
        await client.post(
            "/api/v1/auth/login", data={"username": "new@example.com", "password": PASSWORD}
        ),
        401,
    )
    # The old address is told, without a link that could complete the change.
    await delivered(app)
    [notice] = outbox.to("old@example.com")[-1:]
    assert "new@example.com" in text_of(notice)
    assert "token=" not in text_of(notice)
    # The link to the new address makes the change.
    token = outbox.link_token("new@example.com")
    confirmed = await client.post("/api/v1/auth/verify-email", json={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["email"], confirmed.json()["is_verified"]) == ("new@example.com", True)
    await login(client, "new@example.com")
    # It works once.
    assert_problem(await client.post("/api/v1/auth/verify-email", json={"token": token}), 400)


async def test_an_email_change_needs_the_current_password(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    headers = await verified_signed_in(app, client, "pw@example.com")
    missing = await client.post(CHANGE_EMAIL, json={"email": "x@example.com"}, headers=headers)
    assert_problem(missing, 422)
    wrong = {"email": "x@example.com", "current_password": "not my password"}
    assert_problem(await client.post(CHANGE_EMAIL, json=wrong, headers=headers), 400)
    await delivered(app)
    assert outbox.to("x@example.com") == []
    # PATCH /users/me no longer changes the email at all.
    assert_problem(await client.patch(ME, json={"email": "x@example.com"}, headers=headers), 422)
    assert (await client.get(ME, headers=headers)).json()["email"] == "pw@example.com"


async def test_a_password_change_voids_a_pending_email_change(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    headers = await verified_signed_in(app, client, "victim@example.com")
    body = {"email": "attacker@example.com", "current_password": PASSWORD}
    assert (await client.post(CHANGE_EMAIL, json=body, headers=headers)).status_code == 202
    await delivered(app)
    token = outbox.link_token("attacker@example.com")
    change = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert (await client.patch(ME, json=change, headers=headers)).status_code == 200
    assert_problem(await client.post("/api/v1/auth/verify-email", json={"token": token}), 400)
    await login(client, "victim@example.com", NEW_PASSWORD)


async def test_an_email_change_to_a_taken_address_is_409(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    await register(client, "taken@example.com")
    headers = await verified_signed_in(app, client, "mine@example.com")
    body = {"email": "Taken@example.com", "current_password": PASSWORD}
    assert_problem(await client.post(CHANGE_EMAIL, json=body, headers=headers), 409)
    # Taken between the request and the link: still 409, and nothing changes.
    body = {"email": "later@example.com", "current_password": PASSWORD}
    assert (await client.post(CHANGE_EMAIL, json=body, headers=headers)).status_code == 202
    await delivered(app)
    token = outbox.link_token("later@example.com")
    await register(client, "later@example.com")
    assert_problem(await client.post("/api/v1/auth/verify-email", json={"token": token}), 409)
    assert (await client.get(ME, headers=headers)).json()["email"] == "mine@example.com"


@pytest.mark.parametrize("scopes", ["read", "write", "admin"])
def test_the_route_scopes_cannot_be_configured_away(scopes: str) -> None:
    with pytest.raises(ValidationError, match="must include"):
        AuthSettings.model_validate({"scopes": scopes})
    kept = AuthSettings.model_validate({"scopes": "read,write,admin"})
    assert kept.scopes == ["read", "write", "admin"]
