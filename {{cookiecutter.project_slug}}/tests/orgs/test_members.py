"""Members and roles: who may rename, delete, change roles and remove; the last owner stays.

Each refusal is a problem+json and changes nothing (checked in the database after).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.orgs import events
from {{ cookiecutter.package_name }}.orgs.models import Invitation, Membership, Organization
from tests.auth.conftest import Outbox, assert_problem, count, signed_in
from tests.orgs.conftest import ORGS, invite, joined, members, my_orgs, new_org, user_id

Calls = list[tuple[str, str]]


@pytest.fixture
def hooked() -> Iterator[Calls]:
    """The orgs events as they run: ("members_changed" | "org_deleted", org name)."""
    calls: Calls = []

    async def changed(session: AsyncSession, org: Organization) -> None:
        calls.append(("members_changed", org.name))

    async def deleted(session: AsyncSession, org: Organization) -> None:
        # Before the deletion, in its transaction: the organization is still there.
        still = await session.scalar(
            select(func.count()).select_from(Organization).where(Organization.id == org.id)
        )
        calls.append(("org_deleted", f"{org.name} ({still} row)"))

    events.on_members_changed(changed)
    events.on_org_deleted(deleted)
    yield calls
    events._members_changed.remove(changed)
    events._org_deleted.remove(deleted)


async def roles_in(app: FastAPI, org_id: str) -> dict[str, str]:
    """user id -> role, as the database has them."""
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        rows = await session.execute(
            select(Membership.user_id, Membership.role).where(
                Membership.org_id == uuid.UUID(org_id)
            )
        )
        return {str(user): role for user, role in rows}


async def team(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """Acme: ada (owner), bob (admin), cy (member)."""
    ada = await signed_in(client, "ada@example.com")
    acme = (await new_org(client, ada, "Acme"))["id"]
    bob = await joined(app, client, outbox, ada, acme, "bob@example.com", "admin")
    cy = await joined(app, client, outbox, ada, acme, "cy@example.com")
    return acme, ada, bob, cy


async def test_members_are_listed_in_the_order_they_joined(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada, _bob, cy = await team(app, client, outbox)
    expected = [
        ["ada@example.com", "owner"],
        ["bob@example.com", "admin"],
        ["cy@example.com", "member"],
    ]
    assert await members(client, cy, acme) == expected
    listed = (await client.get(f"{ORGS}/{acme}/members", headers=cy)).json()
    assert set(listed[0]) == {"user_id", "email", "role", "joined"}
    assert listed[0]["user_id"] == await user_id(client, ada)
    eve = await signed_in(client, "eve@example.com")
    assert_problem(await client.get(f"{ORGS}/{acme}/members", headers=eve), 404)


async def test_rename_is_for_owners(app: FastAPI, client: AsyncClient, outbox: Outbox) -> None:
    acme, ada, bob, cy = await team(app, client, outbox)
    for who in (bob, cy):
        assert_problem(await client.patch(f"{ORGS}/{acme}", json={"name": "X"}, headers=who), 403)
    renamed = await client.patch(f"{ORGS}/{acme}", json={"name": " Acme Ltd "}, headers=ada)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Acme Ltd"
    assert "Acme Ltd" in [o["name"] for o in await my_orgs(client, cy)]


async def test_delete_is_for_owners_and_takes_everything_with_it(
    app: FastAPI, client: AsyncClient, outbox: Outbox, hooked: Calls
) -> None:
    acme, ada, bob, cy = await team(app, client, outbox)
    await invite(client, ada, acme, "dee@example.com")
    for who in (bob, cy):
        assert_problem(await client.delete(f"{ORGS}/{acme}", headers=who), 403)
    eve = await signed_in(client, "eve@example.com")
    assert_problem(await client.delete(f"{ORGS}/{acme}", headers=eve), 404)
    assert await count(app, Organization) == 5  # four personal ones and Acme
    hooked.clear()

    response = await client.delete(f"{ORGS}/{acme}", headers=ada)
    assert response.status_code == 204, response.text
    assert hooked == [("org_deleted", "Acme (1 row)")]
    assert await count(app, Organization) == 4
    assert await count(app, Invitation) == 0
    assert await count(app, Membership) == 4  # each account in its personal organization
    assert_problem(await client.get(f"{ORGS}/{acme}", headers=ada), 404)


async def test_a_personal_org_is_not_deleted_while_its_account_exists(
    app: FastAPI, client: AsyncClient, hooked: Calls
) -> None:
    ada = await signed_in(client, "ada@example.com")
    [personal] = await my_orgs(client, ada)
    assert_problem(await client.delete(f"{ORGS}/{personal['id']}", headers=ada), 409)
    assert await count(app, Organization) == 1
    assert hooked == []


async def test_admins_change_roles_below_owner(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada, bob, cy = await team(app, client, outbox)
    ada_id, bob_id, cy_id = [await user_id(client, h) for h in (ada, bob, cy)]
    path = f"{ORGS}/{acme}/members"

    promoted = await client.patch(f"{path}/{cy_id}", json={"role": "admin"}, headers=bob)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "admin"
    assert promoted.json()["email"] == "cy@example.com"
    demoted = await client.patch(f"{path}/{cy_id}", json={"role": "member"}, headers=bob)
    assert demoted.json()["role"] == "member"
    before = await roles_in(app, acme)

    # A member acting beyond their role; an admin making or unmaking an owner.
    assert_problem(await client.patch(f"{path}/{bob_id}", json={"role": "member"}, headers=cy), 403)
    assert_problem(await client.patch(f"{path}/{cy_id}", json={"role": "owner"}, headers=bob), 403)
    assert_problem(await client.patch(f"{path}/{bob_id}", json={"role": "owner"}, headers=bob), 403)
    assert_problem(await client.patch(f"{path}/{ada_id}", json={"role": "admin"}, headers=bob), 403)
    # Not a member: 404; not a role: 422.
    eve = await signed_in(client, "eve@example.com")
    eve_id = await user_id(client, eve)
    assert_problem(await client.patch(f"{path}/{eve_id}", json={"role": "admin"}, headers=ada), 404)
    assert_problem(await client.patch(f"{path}/{cy_id}", json={"role": "boss"}, headers=ada), 422)
    assert await roles_in(app, acme) == before


async def test_ownership_is_transferred_and_the_last_owner_stays(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    acme, ada, bob, _cy = await team(app, client, outbox)
    ada_id, bob_id = await user_id(client, ada), await user_id(client, bob)
    path = f"{ORGS}/{acme}/members"

    # The last owner cannot step down.
    last = assert_problem(
        await client.patch(f"{path}/{ada_id}", json={"role": "admin"}, headers=ada), 409
    )
    assert "last owner" in last["detail"]
    assert (await roles_in(app, acme))[ada_id] == "owner"

    # Transfer: make bob owner, then step down.
    made = await client.patch(f"{path}/{bob_id}", json={"role": "owner"}, headers=ada)
    assert made.status_code == 200, made.text
    stepped = await client.patch(f"{path}/{ada_id}", json={"role": "member"}, headers=ada)
    assert stepped.status_code == 200, stepped.text
    roles = await roles_in(app, acme)
    assert (roles[ada_id], roles[bob_id]) == ("member", "owner")
    # Now bob is the last owner, and ada may do what a member may.
    assert_problem(await client.patch(f"{path}/{bob_id}", json={"role": "admin"}, headers=bob), 409)
    assert_problem(await client.patch(f"{ORGS}/{acme}", json={"name": "X"}, headers=ada), 403)
    assert (await roles_in(app, acme))[bob_id] == "owner"


async def test_removing_members_and_leaving(
    app: FastAPI, client: AsyncClient, outbox: Outbox, hooked: Calls
) -> None:
    acme, ada, bob, cy = await team(app, client, outbox)
    ada_id, bob_id, cy_id = [await user_id(client, h) for h in (ada, bob, cy)]
    dee = await joined(app, client, outbox, ada, acme, "dee@example.com")
    dee_id = await user_id(client, dee)
    path = f"{ORGS}/{acme}/members"
    eve = await signed_in(client, "eve@example.com")
    eve_id = await user_id(client, eve)
    before = await roles_in(app, acme)
    hooked.clear()

    assert_problem(await client.delete(f"{path}/{dee_id}", headers=cy), 403)  # a member: others
    assert_problem(await client.delete(f"{path}/{ada_id}", headers=bob), 403)  # an admin: owners
    assert_problem(await client.delete(f"{path}/{ada_id}", headers=ada), 409)  # the last owner
    assert_problem(await client.delete(f"{path}/{eve_id}", headers=ada), 404)  # not a member
    assert_problem(await client.delete(f"{path}/{cy_id}", headers=eve), 404)  # not in the org
    assert await roles_in(app, acme) == before
    assert hooked == []

    assert (await client.delete(f"{path}/{dee_id}", headers=bob)).status_code == 204
    assert (await client.delete(f"{path}/{cy_id}", headers=cy)).status_code == 204  # leaves
    assert hooked == [("members_changed", "Acme"), ("members_changed", "Acme")]
    assert await members(client, ada, acme) == [
        ["ada@example.com", "owner"],
        ["bob@example.com", "admin"],
    ]
    assert_problem(await client.get(f"{ORGS}/{acme}", headers=cy), 404)

    # Ownership transferred, the old owner may leave; an owner removes another owner.
    await client.patch(f"{path}/{bob_id}", json={"role": "owner"}, headers=ada)
    assert (await client.delete(f"{path}/{ada_id}", headers=ada)).status_code == 204
    assert await members(client, bob, acme) == [["bob@example.com", "owner"]]


async def test_the_account_of_a_personal_org_stays_its_owner(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    ada = await signed_in(client, "ada@example.com")
    [personal] = await my_orgs(client, ada)
    org = personal["id"]
    bob = await joined(app, client, outbox, ada, org, "bob@example.com", "owner")
    ada_id = await user_id(client, ada)
    path = f"{ORGS}/{org}/members/{ada_id}"
    assert_problem(await client.patch(path, json={"role": "admin"}, headers=ada), 409)
    assert_problem(await client.patch(path, json={"role": "admin"}, headers=bob), 409)
    assert_problem(await client.delete(path, headers=ada), 409)
    assert_problem(await client.delete(path, headers=bob), 409)
    assert (await roles_in(app, org))[ada_id] == "owner"


async def test_two_owners_demoting_each_other_at_once_leave_one(
    app: FastAPI, client: AsyncClient, outbox: Outbox
) -> None:
    ada = await signed_in(client, "ada@example.com")
    acme = (await new_org(client, ada, "Acme"))["id"]
    bob = await joined(app, client, outbox, ada, acme, "bob@example.com", "owner")
    ada_id, bob_id = await user_id(client, ada), await user_id(client, bob)
    path = f"{ORGS}/{acme}/members"
    answers = await asyncio.gather(
        client.patch(f"{path}/{bob_id}", json={"role": "member"}, headers=ada),
        client.patch(f"{path}/{ada_id}", json={"role": "member"}, headers=bob),
    )
    # One wins; the other sees the last owner (409; on PostgreSQL it waited for the lock),
    # or comes in once demoted (403), or on SQLite, which lets one writer through, finds
    # the database busy (503): nothing of it applied.
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200, [a.text for a in answers]
    assert statuses[1] in (403, 409, 503), [a.text for a in answers]
    assert sorted((await roles_in(app, acme)).values()) == ["member", "owner"]
