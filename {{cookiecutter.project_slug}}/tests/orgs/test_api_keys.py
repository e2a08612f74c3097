"""API keys of an organization: they act only there, never above their creator's role."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import delete, update

from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.orgs.models import Membership
from tests.auth.conftest import api_key_for, assert_problem, verified_signed_in
from tests.orgs.conftest import ORGS, my_orgs, new_org

Headers = dict[str, str]


async def user_id(client: AsyncClient, headers: Headers) -> uuid.UUID:
    return uuid.UUID((await client.get("/api/v1/users/me", headers=headers)).json()["id"])


async def set_role(app: FastAPI, org_id: str, user: uuid.UUID, role: str | None) -> None:
    """Change a membership as the member routes would (None: remove it)."""
    database: Database = app.state.database
    where = (Membership.org_id == uuid.UUID(org_id), Membership.user_id == user)
    async with database.engine.begin() as conn:
        if role is None:
            await conn.execute(delete(Membership).where(*where))
        else:
            await conn.execute(update(Membership).where(*where).values(role=role))


async def add_member(app: FastAPI, org_id: str, user: uuid.UUID, role: str) -> None:
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        session.add(Membership(org_id=uuid.UUID(org_id), user_id=user, role=role))


async def org_key(
    client: AsyncClient, headers: Headers, org_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{ORGS}/{org_id}/api-keys", json={"name": "ci", **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def role_in(client: AsyncClient, key: str, org_id: str) -> str | int:
    """The key's role in the organization, or the status that refused it."""
    response = await client.get(f"{ORGS}/{org_id}", headers={"X-API-Key": key})
    if response.status_code != 200:
        return response.status_code
    role: str = response.json()["role"]
    return role


async def acme_with(
    app: FastAPI, client: AsyncClient, role: str
) -> tuple[dict[str, Any], Headers, Headers]:
    """Ada owns Acme; Bob is in it with `role`."""
    ada = await verified_signed_in(app, client, "ada@example.com")
    bob = await verified_signed_in(app, client, "bob@example.com")
    acme = await new_org(client, ada, "Acme")
    await add_member(app, acme["id"], await user_id(client, bob), role)
    return acme, ada, bob


async def test_a_key_acts_with_its_role_only_in_its_organization(
    app: FastAPI, client: AsyncClient
) -> None:
    acme, ada, _bob = await acme_with(app, client, "member")
    created = await org_key(client, ada, acme["id"], role="admin")
    assert (created["role"], created["user_id"]) == ("admin", str(await user_id(client, ada)))
    key = created["key"]
    assert await role_in(client, key, acme["id"]) == "admin"  # below the owner who made it
    [personal] = [o for o in await my_orgs(client, ada) if o["personal"]]
    # Ada owns her personal organization, but this key is Acme's.
    assert await role_in(client, key, personal["id"]) == 404
    # A personal key acts as its creator in every organization of theirs.
    personal_key = await api_key_for(app, "ada@example.com")
    assert await role_in(client, personal_key, personal["id"]) == "owner"
    assert await role_in(client, personal_key, acme["id"]) == "owner"


async def test_no_key_above_its_creators_role(app: FastAPI, client: AsyncClient) -> None:
    acme, _ada, bob = await acme_with(app, client, "member")
    refused = await client.post(
        f"{ORGS}/{acme['id']}/api-keys", json={"name": "x", "role": "admin"}, headers=bob
    )
    assert_problem(refused, 403)
    mine = await org_key(client, bob, acme["id"])
    assert mine["role"] == "member"  # the default


async def test_the_creators_demotion_caps_the_key_and_removal_stops_it(
    app: FastAPI, client: AsyncClient
) -> None:
    acme, _ada, bob = await acme_with(app, client, "admin")
    key = (await org_key(client, bob, acme["id"], role="admin"))["key"]
    bob_id = await user_id(client, bob)
    assert await role_in(client, key, acme["id"]) == "admin"
    await set_role(app, acme["id"], bob_id, "member")
    assert await role_in(client, key, acme["id"]) == "member"
    # An admin-only route now refuses it (403), as it refuses Bob.
    listing = await client.get(f"{ORGS}/{acme['id']}/api-keys", headers=bob)
    assert [k["user_id"] for k in listing.json()] == [str(bob_id)]
    await set_role(app, acme["id"], bob_id, None)
    assert await role_in(client, key, acme["id"]) == 404


async def test_admins_list_and_revoke_every_key_members_their_own(
    app: FastAPI, client: AsyncClient
) -> None:
    acme, ada, bob = await acme_with(app, client, "member")
    adas = await org_key(client, ada, acme["id"], role="owner")
    bobs = await org_key(client, bob, acme["id"])
    by_owner = (await client.get(f"{ORGS}/{acme['id']}/api-keys", headers=ada)).json()
    by_member = (await client.get(f"{ORGS}/{acme['id']}/api-keys", headers=bob)).json()
    assert [k["id"] for k in by_owner] == [adas["id"], bobs["id"]]
    assert [k["id"] for k in by_member] == [bobs["id"]]
    assert "key" not in by_owner[0]
    # Bob cannot see Ada's key, so cannot revoke it; Ada revokes Bob's.
    assert_problem(
        await client.delete(f"{ORGS}/{acme['id']}/api-keys/{adas['id']}", headers=bob), 404
    )
    assert (
        await client.delete(f"{ORGS}/{acme['id']}/api-keys/{bobs['id']}", headers=ada)
    ).status_code == 204
    assert await role_in(client, bobs["key"], acme["id"]) == 401
    assert await role_in(client, adas["key"], acme["id"]) == "owner"
    # Not Acme's key: not found under Acme.
    [personal] = [o for o in await my_orgs(client, ada) if o["personal"]]
    assert_problem(
        await client.delete(f"{ORGS}/{personal['id']}/api-keys/{adas['id']}", headers=ada), 404
    )


async def test_keys_cannot_make_keys_and_non_members_see_none(
    app: FastAPI, client: AsyncClient
) -> None:
    acme, ada, _bob = await acme_with(app, client, "member")
    key = {"X-API-Key": (await org_key(client, ada, acme["id"], role="owner"))["key"]}
    assert_problem(
        await client.post(f"{ORGS}/{acme['id']}/api-keys", json={"name": "k"}, headers=key), 403
    )
    eve = await verified_signed_in(app, client, "eve@example.com")
    assert_problem(await client.get(f"{ORGS}/{acme['id']}/api-keys", headers=eve), 404)
    assert_problem(
        await client.post(f"{ORGS}/{acme['id']}/api-keys", json={"name": "k"}, headers=eve), 404
    )


async def test_a_key_lists_only_its_organization_and_makes_none(
    app: FastAPI, client: AsyncClient
) -> None:
    acme, ada, _bob = await acme_with(app, client, "member")
    key = {"X-API-Key": (await org_key(client, ada, acme["id"], role="admin"))["key"]}
    listed = (await client.get(ORGS, headers=key)).json()
    assert [(o["id"], o["role"]) for o in listed] == [(acme["id"], "admin")]
    assert len(await my_orgs(client, ada)) == 2  # Ada herself still sees both
    refused = await client.post(ORGS, json={"name": "Shadow"}, headers=key)
    assert_problem(refused, 403)
    assert len(await my_orgs(client, ada)) == 2  # nothing made
    # A personal key acts as its creator: it lists and makes organizations.
    personal = {"X-API-Key": await api_key_for(app, "ada@example.com")}
    assert len((await client.get(ORGS, headers=personal)).json()) == 2
    assert (await client.post(ORGS, json={"name": "New"}, headers=personal)).status_code == 201
