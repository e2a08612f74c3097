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
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.jobs import get_jobs
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.test_contract import AI_CHECKS, ai_app
from tests.auth.conftest import login, register, sign_up
from tests.contract import ContractCase, contract_test, document

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
    case.call_and_validate(app=app, headers=headers, checks=AI_CHECKS)
