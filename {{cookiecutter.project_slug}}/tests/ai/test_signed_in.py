"""The AI seam with accounts: the real sign-in, metering per user, no connection held.

Removed from projects without the auth module (see the hook's table).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from alembic.config import Config
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.ai.seams import get_caller
from {{ cookiecutter.package_name }}.ai.tools import NoArguments, ToolContext, registry, tool
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.jobs import get_jobs
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import FakeUpstream
from tests.ai.test_contract import AI_CHECKS, ai_app
from tests.auth.conftest import login, mark_verified, register, sign_up
from tests.contract import TIMEOUT, ContractCase, contract_test, document

CHAT = "/api/v1/ai/chat"
HELLO = {"messages": [{"role": "user", "content": "Say hello"}]}


async def signed_in(app: FastAPI, client: AsyncClient, email: str) -> dict[str, str]:
    app.dependency_overrides.pop(get_caller, None)  # the real sign-in, not the stand-in
    await register(client, email)
    tokens = await login(client, email)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_chat_needs_a_signed_in_user(make_app: MakeApp) -> None:
    app = await make_app()
    app.dependency_overrides.pop(get_caller, None)
    async with http(app) as client:
        response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert await ledger(app) == []


async def test_usage_is_metered_to_the_signed_in_user(make_app: MakeApp) -> None:
    app = await make_app()
    async with http(app) as client:
        headers = await signed_in(app, client, "metered@example.com")
        me = (await client.get("/api/v1/users/me", headers=headers)).json()
        response = await client.post(CHAT, json=HELLO, headers=headers)
        assert response.status_code == 200, response.text
        usage = (await client.get("/api/v1/ai/usage", headers=headers)).json()
    [row] = await ledger(app)
    assert row.user_id == uuid.UUID(me["id"])
    assert (usage["tokens"], usage["requests"]) == (row.total_tokens, 1)


async def test_waiting_on_the_model_holds_no_pooled_connection(
    make_app: MakeApp, upstream: object
) -> None:
    app = await make_app()
    async with http(app) as client:
        headers = await signed_in(app, client, "pool@example.com")
        pool = app.state.database.engine.pool
        await get_jobs(app).drain()  # the sign-up's email job holds no connection now
        before = pool.checkedout()
        response = await client.post(CHAT, json=HELLO, headers=headers)
        assert response.status_code == 200, response.text
        # The user lookup used a short session of its own and gave its connection back;
        # the ledger's writer may still hold one for a moment, a leak holds it for good.
        for _ in range(50):
            if pool.checkedout() == before:
                break
            await asyncio.sleep(0.1)
        assert pool.checkedout() == before


# --- tools need the scopes they declare ------------------------------------------------------


async def api_key(client: AsyncClient, headers: dict[str, str], *scopes: str) -> dict[str, str]:
    """A new API key of the signed-in user with these scopes, as its header."""
    body = {"name": "-".join(scopes), "scopes": list(scopes)}
    created = await client.post("/api/v1/api-keys", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return {"X-API-Key": created.json()["key"]}


async def test_a_tool_needs_the_scope_it_declares(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    """get_usage reads the caller's usage (`read`): an API key that may chat (`write`) but
    not read cannot have the model read it either; nothing goes upstream."""
    app = await make_app()
    async with http(app) as client:
        session = await signed_in(app, client, "scoped@example.com")
        await mark_verified(app, "scoped@example.com")
        write_only = await api_key(client, session, "write")
        both = await api_key(client, session, "read", "write")
        ask = {**HELLO, "tools": ["get_usage"]}

        refused = await client.post(CHAT, json=ask, headers=write_only)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert (problem["missing_scopes"], problem["tools"]) == (["read"], ["get_usage"])
        assert "Missing scope: read" in problem["detail"]
        assert upstream.requests == []
        assert await ledger(app) == []
        streamed = await client.post(CHAT, json={**ask, "stream": True}, headers=write_only)
        assert streamed.status_code == 403, streamed.text
        assert upstream.requests == []
        # Plain chat is still the key's to use.
        plain = await client.post(CHAT, json=HELLO, headers=write_only)
        assert plain.status_code == 200, plain.text

        for headers in (both, session):  # a key with both scopes; a signed-in user
            upstream.tool_script = [[("get_usage", "{}")]]
            allowed = await client.post(CHAT, json=ask, headers=headers)
            assert allowed.status_code == 200, allowed.text
            [call] = allowed.json()["tool_calls"]
            assert (call["name"], call["error"]) == ("get_usage", None)


async def test_the_tool_list_is_the_callers(make_app: MakeApp) -> None:
    app = await make_app()
    async with http(app) as client:
        session = await signed_in(app, client, "lister@example.com")
        await mark_verified(app, "lister@example.com")
        read_only = await api_key(client, session, "read")
        everything = {t.name for t in registry(app)}
        assert "get_usage" in everything

        async def listed(headers: dict[str, str]) -> set[str]:
            response = await client.get("/api/v1/ai/tools", headers=headers)
            assert response.status_code == 200, response.text
            for item in response.json():  # each with what it needs
                declared = registry(app).get(item["name"])
                assert declared is not None
                assert item["scopes"] == sorted(declared.scopes)
            return {t["name"] for t in response.json()}

        assert await listed(session) == everything
        assert await listed(read_only) == everything  # every shipped tool reads

        # A tool that needs a scope the key lacks is left out of its list, not the session's.
        registry(app).add(needs_write)
        assert await listed(read_only) == everything
        assert await listed(session) == everything | {"forget_me"}
        response = await client.get("/api/v1/ai/tools", headers=session)
        assert {t["name"]: t["scopes"] for t in response.json()}["forget_me"] == ["read", "write"]


@tool("forget_me", scopes=["read", "write"])
async def needs_write(ctx: ToolContext, args: NoArguments) -> str:
    """Stands for a tool that changes the caller's data."""
    return "done"


# --- the OpenAPI contract, signed in (tests/contract.py) -------------------------------------

Signed = tuple[FastAPI, dict[str, str]]


@pytest.fixture(scope="module")
def signed_in_ai_app(settings: Settings, migrated: Config) -> Iterator[Signed]:
    with ai_app(settings) as app:
        yield app, sign_up(app, "ai-contract@example.com")


@contract_test(document().include(path_regex="^/api/v1/ai/"))
def test_ai_routes_keep_the_contract_signed_in(
    case: ContractCase, signed_in_ai_app: Signed
) -> None:
    app, headers = signed_in_ai_app
    case.call_and_validate(app=app, headers=headers, checks=AI_CHECKS, timeout=TIMEOUT)
