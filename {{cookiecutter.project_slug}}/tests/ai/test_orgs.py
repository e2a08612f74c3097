"""AI in organizations: the allowance is pooled per organization, usage recorded per member.

Removed from projects without the orgs module (see the hook's table). The allowance is
whatever the project gives an organization (its free plan's with plans, else
AI_MONTHLY_TOKEN_QUOTA): the tests read it from the usage endpoint and size their calls by it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.config import Config
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import delete, event, select

from {{ cookiecutter.package_name }}.ai import tokens
from {{ cookiecutter.package_name }}.ai.models import AIUsageTotal
from {{ cookiecutter.package_name }}.ai.schemas import Message
from {{ cookiecutter.package_name }}.ai.seams import get_caller
from {{ cookiecutter.package_name }}.auth import service as auth_service
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.orgs.models import Membership, Organization
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import FakeUpstream
from tests.ai.test_contract import AI_CHECKS, ai_app
from tests.auth.conftest import PASSWORD, login, sign_up
from tests.contract import TIMEOUT, ContractCase, contract_test, document
from tests.orgs.conftest import new_org

CHAT = "/api/v1/ai/chat"
HELLO = {"messages": [{"role": "user", "content": "Say hello"}]}
PROMPT = tokens.prompt_tokens([Message(role="user", content="Say hello")])


def org_chat(org_id: str) -> str:
    return f"/api/v1/orgs/{org_id}/ai/chat"


def org_usage(org_id: str) -> str:
    return f"/api/v1/orgs/{org_id}/ai/usage"


async def user_id(client: AsyncClient, headers: dict[str, str]) -> uuid.UUID:
    me = await client.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200, me.text
    return uuid.UUID(me.json()["id"])


async def add_member(app: FastAPI, org_id: str, user: uuid.UUID, role: str = "member") -> None:
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        session.add(Membership(org_id=uuid.UUID(org_id), user_id=user, role=role))


async def personal_org(app: FastAPI, user: uuid.UUID) -> uuid.UUID:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        found = await session.scalar(
            select(Organization.id).where(Organization.personal_for == user)
        )
    assert found is not None
    return found


Headers = dict[str, str]


async def account(app: FastAPI, client: AsyncClient, email: str) -> Headers:
    """A verified account made by the service (sign-ups are rate limited), signed in."""
    app.dependency_overrides.pop(get_caller, None)  # the real sign-in, not the stand-in
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await auth_service.create_user(session, email, PASSWORD, is_verified=True)
    tokens = await login(client, email)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def team(
    app: FastAPI, client: AsyncClient
) -> tuple[dict[str, Any], Headers, Headers, Headers]:
    """Ada owns Acme, Bob is a member of it, Eve is in no organization but her own."""
    ada = await account(app, client, "ada@example.com")
    bob = await account(app, client, "bob@example.com")
    eve = await account(app, client, "eve@example.com")
    acme = await new_org(client, ada, "Acme")
    await add_member(app, acme["id"], await user_id(client, bob))
    return acme, ada, bob, eve


async def test_members_share_the_pool_and_each_row_keeps_the_member(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    async with http(app) as client:
        acme, ada, bob, _eve = await team(app, client)
        plain = await client.post(org_chat(acme["id"]), json=HELLO, headers=ada)
        assert plain.status_code == 200, plain.text
        stream = await client.post(
            org_chat(acme["id"]), json={**HELLO, "stream": True}, headers=bob
        )
        assert stream.status_code == 200, stream.text
        assert "event: usage" in stream.text
        usage = (await client.get(org_usage(acme["id"]), headers=bob)).json()
        ada_own = (await client.get("/api/v1/ai/usage", headers=ada)).json()
        ada_id, bob_id = await user_id(client, ada), await user_id(client, bob)
    rows = await ledger(app)
    assert {row.user_id for row in rows} == {ada_id, bob_id}
    assert {row.subject for row in rows} == {uuid.UUID(acme["id"])}
    assert usage["tokens"] == sum(row.total_tokens for row in rows)
    assert usage["requests"] == 2
    assert usage["remaining"] == usage["quota"] - usage["tokens"]
    # Ada's personal organization is another pool: untouched.
    assert (ada_own["tokens"], ada_own["requests"]) == (0, 0)


async def test_plain_chat_bills_the_personal_organization(make_app: MakeApp) -> None:
    app = await make_app()
    async with http(app) as client:
        ada = await account(app, client, "ada@example.com")
        assert (await client.post(CHAT, json=HELLO, headers=ada)).status_code == 200
        usage = (await client.get("/api/v1/ai/usage", headers=ada)).json()
        ada_id = await user_id(client, ada)
    [row] = await ledger(app)
    assert row.subject == await personal_org(app, ada_id)
    assert row.user_id == ada_id
    assert (usage["tokens"], usage["requests"]) == (row.total_tokens, 1)


async def test_admins_see_every_members_share_members_only_their_own(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    async with http(app) as client:
        acme, ada, bob, _eve = await team(app, client)
        for headers in (ada, bob, bob):
            assert (await client.post(org_chat(acme["id"]), json=HELLO, headers=headers)).is_success
        as_owner = (await client.get(org_usage(acme["id"]), headers=ada)).json()
        as_member = (await client.get(org_usage(acme["id"]), headers=bob)).json()
        ada_id, bob_id = await user_id(client, ada), await user_id(client, bob)
    each = upstream.usage["total_tokens"]
    assert as_owner["tokens"] == as_member["tokens"] == 3 * each
    assert [
        (m["user_id"], m["email"], m["tokens"], m["requests"]) for m in as_owner["members"]
    ] == [
        (str(bob_id), "bob@example.com", 2 * each, 2),
        (str(ada_id), "ada@example.com", each, 1),
    ]
    assert as_owner["mine"]["user_id"] == str(ada_id)
    assert as_member["members"] is None
    assert as_member["mine"] == {
        "user_id": str(bob_id),
        "email": "bob@example.com",
        "tokens": 2 * each,
        "requests": 2,
    }


async def test_the_breakdown_costs_the_same_statements_for_any_number_of_members(
    make_app: MakeApp,
) -> None:
    """No query per member (no N+1): one grouped query gives every member's share."""
    app = await make_app()
    statements: list[str] = []

    def count(*args: Any) -> None:
        # The plan's allowance is read again when its cached value is older than a second,
        # and the app's job runner (the sign-ups' emails) polls its table meanwhile.
        statement = str(args[2])
        if "subscription" not in statement and not re.search(r"\bjobs\b", statement):
            statements.append(statement)

    async def read_usage(headers: Headers, org_id: str) -> tuple[int, list[str]]:
        engine = app.state.database.engine.sync_engine
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            usage = (await client.get(org_usage(org_id), headers=headers)).json()
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(usage["members"]), list(statements)

    async with http(app) as client:
        acme, ada, _bob, _eve = await team(app, client)
        assert (await client.post(org_chat(acme["id"]), json=HELLO, headers=ada)).is_success
        one, few = await read_usage(ada, acme["id"])
        for n in range(3):
            headers = await account(app, client, f"m{n}@example.com")
            await add_member(app, acme["id"], await user_id(client, headers))
            assert (await client.post(org_chat(acme["id"]), json=HELLO, headers=headers)).is_success
        four, more = await read_usage(ada, acme["id"])
    assert (one, four) == (1, 4)
    assert len(more) == len(few)
    assert sum("ai_usage" in s and "GROUP BY" in s for s in more) == 1


async def test_a_non_member_gets_404_and_nothing_is_sent(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    async with http(app) as client:
        acme, _ada, _bob, eve = await team(app, client)
        chat = await client.post(org_chat(acme["id"]), json=HELLO, headers=eve)
        usage = await client.get(org_usage(acme["id"]), headers=eve)
        nowhere = await client.post(org_chat(str(uuid.uuid4())), json=HELLO, headers=eve)
    for response in (chat, usage, nowhere):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert chat.json()["detail"] == nowhere.json()["detail"]
    assert upstream.calls == 0
    assert await ledger(app) == []


async def test_a_removed_member_loses_access_within_the_cache_bound(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    seconds = app.state.auth.settings.user_cache_seconds
    async with http(app) as client:
        acme, _ada, bob, _eve = await team(app, client)
        assert (await client.post(org_chat(acme["id"]), json=HELLO, headers=bob)).is_success
        database: Database = app.state.database
        async with database.engine.begin() as conn:
            await conn.execute(delete(Membership).where(Membership.org_id == uuid.UUID(acme["id"])))
        await asyncio.sleep(seconds + 0.1)
        after = await client.post(org_chat(acme["id"]), json=HELLO, headers=bob)
    assert after.status_code == 404
    assert upstream.calls == 1


async def test_waiting_on_the_model_holds_no_pooled_connection(make_app: MakeApp) -> None:
    app = await make_app()
    async with http(app) as client:
        acme, ada, _bob, _eve = await team(app, client)
        pool = app.state.database.engine.pool
        before = pool.checkedout()
        response = await client.post(org_chat(acme["id"]), json=HELLO, headers=ada)
        assert response.status_code == 200, response.text
    assert pool.checkedout() == before


async def test_reservations_hold_for_the_pool_across_members_and_instances(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    """Two members, two app instances, many calls at once: the pool's allowance holds."""
    upstream.delay = 0.3  # all of them in flight at once
    upstream.prompt_tokens = 1  # reported below the estimate: the estimate is charged
    upstream.bill_max_tokens = True  # each call uses all it may
    apps = [await make_app() for _ in range(2)]
    clients = [http(app) for app in apps]
    try:
        acme, ada, bob, _eve = await team(apps[0], clients[0])
        quota = (await clients[0].get(org_usage(acme["id"]), headers=ada)).json()["quota"]
        assert quota, "the organization needs an allowance for this test"
        # Room for 8 whole reservations and a clamped ninth.
        max_tokens = int(quota / 8.5) - PROMPT
        reservation = PROMPT + max_tokens
        body = {**HELLO, "max_tokens": max_tokens}
        calls = [
            clients[n % 2].post(
                org_chat(acme["id"]),
                json={**body, "stream": n % 3 == 0},
                headers=(ada, bob)[n // 2 % 2],
            )
            for n in range(24)
        ]
        statuses = [r.status_code for r in await asyncio.gather(*calls)]
    finally:
        for client in clients:
            await client.aclose()
    assert set(statuses) == {200, 429}
    assert statuses.count(200) == upstream.calls == 9
    rows = await ledger(apps[0])
    # Which calls win is the scheduler's choice; every one served is charged to the pool.
    assert {row.subject for row in rows} == {uuid.UUID(acme["id"])}
    used = sum(row.total_tokens for row in rows)
    assert quota < used <= quota + reservation
    database: Database = apps[0].state.database
    async with database.sessionmaker() as session:
        [total] = (
            await session.scalars(
                select(AIUsageTotal).where(AIUsageTotal.subject == uuid.UUID(acme["id"]))
            )
        ).all()
    assert (total.tokens, total.requests, total.reserved) == (used, 9, 0)


async def test_an_organizations_api_key_bills_its_organization(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    async with http(app) as client:
        acme, ada, _bob, _eve = await team(app, client)
        key = {"X-API-Key": await client_key(app, client, ada, acme["id"])}
        assert (await client.post(CHAT, json=HELLO, headers=key)).status_code == 200
        assert (await client.post(org_chat(acme["id"]), json=HELLO, headers=key)).is_success
        ada_id = await user_id(client, ada)
        personal = str(await personal_org(app, ada_id))
        # Bound to Acme: Ada's own organization is another organization to it.
        elsewhere = await client.post(org_chat(personal), json=HELLO, headers=key)
        assert elsewhere.status_code == 404
        # Its creator removed from Acme: it no longer acts there.
        database: Database = app.state.database
        async with database.engine.begin() as conn:
            await conn.execute(
                delete(Membership).where(
                    Membership.user_id == ada_id, Membership.org_id == uuid.UUID(acme["id"])
                )
            )
        await asyncio.sleep(app.state.auth.settings.user_cache_seconds + 0.1)
        gone = await client.post(CHAT, json=HELLO, headers=key)
        assert gone.status_code == 403, gone.text
        assert (await client.post(org_chat(acme["id"]), json=HELLO, headers=key)).status_code == 404
    rows = await ledger(app)
    assert [row.subject for row in rows] == [uuid.UUID(acme["id"])] * 2


async def client_key(app: FastAPI, client: AsyncClient, headers: dict[str, str], org: str) -> str:
    """A new API key of the organization, made by the signed-in member through the route."""
    response = await client.post(
        f"/api/v1/orgs/{org}/api-keys", json={"name": "ci"}, headers=headers
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


# --- the OpenAPI contract of the organization's AI routes (tests/contract.py) ---------------


@pytest.fixture(scope="module")
def org_ai_app(settings: Settings, migrated: Config) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    with ai_app(settings) as app:
        yield app, sign_up(app, "org-ai-contract@example.com")


@contract_test(document().include(path_regex="^/api/v1/orgs/[^/]+/ai/"))
def test_org_ai_routes_keep_the_contract(
    case: ContractCase, org_ai_app: tuple[FastAPI, dict[str, str]]
) -> None:
    app, headers = org_ai_app
    case.call_and_validate(app=app, headers=headers, checks=AI_CHECKS, timeout=TIMEOUT)
