"""The get_subscription tool: the caller's plan, never another's.

Removed from projects without the payments module (see the hook's table).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from asgi_lifespan import LifespanManager
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.payments.models import Subscription
from tests.ai.conftest import http, make_ai_settings
from tests.ai.fake_upstream import FakeUpstream
from tests.auth.conftest import signed_in, verified_signed_in
from tests.conftest import clear_tables
from tests.payments.conftest import PRO_PRICE, make_payments_settings, subject_of

CHAT = "/api/v1/ai/chat"
ASK = {"messages": [{"role": "user", "content": "Which plan am I on?"}]}


async def ask(client: AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.post(CHAT, json={**ASK, "tools": ["get_subscription"]}, headers=headers)
    assert response.status_code == 200, response.text
    calls: list[dict[str, Any]] = response.json()["tool_calls"]
    return calls


async def test_get_subscription_reads_the_callers_own_plan(
    settings: Settings, migrated: object, upstream: FakeUpstream
) -> None:
    app = create_app(settings)
    app.state.ai_settings = make_ai_settings(upstream, monthly_token_quota=10**9)
    app.state.payments_settings = make_payments_settings("http://127.0.0.1:9")  # never called
    async with LifespanManager(app), http(app) as client:
        try:
            alice = await signed_in(client, "alice@example.com")
            bob = await signed_in(client, "bob@example.com")
            me = (await client.get("/api/v1/users/me", headers=alice)).json()
            alice_subject = await subject_of(app, me["id"])
            ends = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
            database: Database = app.state.database
            async with database.sessionmaker() as session:
                session.add(
                    Subscription(
                        id="sub_alice",
                        subject_id=uuid.UUID(alice_subject),
                        customer_id="cus_alice",
                        status="active",
                        price_id=PRO_PRICE,
                        current_period_end=ends,
                        state_as_of=datetime.now(UTC),
                    )
                )
                await session.commit()

            upstream.tool_script = [[("get_subscription", "{}")]]
            [call] = await ask(client, alice)
            plan = json.loads(call["result"])
            assert (plan["plan"], plan["active"], plan["status"]) == ("pro", True, "active")
            assert plan["ai_monthly_tokens"] == 1_000_000
            assert datetime.fromisoformat(plan["current_period_end"]) == ends

            # Bob's model points the tool at Alice: refused; asked plainly, Bob's own plan.
            upstream.tool_script = [
                [("get_subscription", json.dumps({"subject_id": alice_subject}))],
                [("get_subscription", "{}")],
            ]
            pointed, own = await ask(client, bob)
            assert pointed["error"].startswith("Invalid arguments: subject_id: Extra inputs")
            plan = json.loads(own["result"])
            assert (plan["plan"], plan["active"], plan["status"]) == ("free", False, "none")
            assert plan["current_period_end"] is None
            for sent in upstream.requests[-2:]:
                results = [m["content"] for m in sent["messages"] if m["role"] == "tool"]
                assert not any('"pro"' in text or "sub_alice" in text for text in results)
        finally:
            await app.state.rate_limiter.reset()
            await clear_tables(app.state.database)


async def test_get_subscription_needs_read(
    settings: Settings, migrated: object, upstream: FakeUpstream
) -> None:
    """An API key with `write` (it may chat) but not `read` cannot have the model read its
    creator's plan: 403 before anything goes upstream; with both scopes it can."""
    app = create_app(settings)
    app.state.ai_settings = make_ai_settings(upstream, monthly_token_quota=10**9)
    app.state.payments_settings = make_payments_settings("http://127.0.0.1:9")  # never called
    async with LifespanManager(app), http(app) as client:
        try:
            session = await verified_signed_in(app, client, "carol@example.com")
            keys = {}
            for scopes in (["write"], ["read", "write"]):
                body = {"name": "key", "scopes": scopes}
                created = await client.post("/api/v1/api-keys", json=body, headers=session)
                assert created.status_code == 201, created.text
                keys[" ".join(scopes)] = {"X-API-Key": created.json()["key"]}

            refused = await client.post(
                CHAT, json={**ASK, "tools": ["get_subscription"]}, headers=keys["write"]
            )
            assert refused.status_code == 403, refused.text
            assert refused.json()["missing_scopes"] == ["read"]
            assert upstream.requests == []
            listed = await client.get("/api/v1/ai/tools", headers=keys["write"])
            assert listed.status_code == 403  # listing is a read

            upstream.tool_script = [[("get_subscription", "{}")]]
            [call] = await ask(client, keys["read write"])
            assert json.loads(call["result"])["plan"] == "free"
            listed = await client.get("/api/v1/ai/tools", headers=keys["read write"])
            assert "get_subscription" in {t["name"] for t in listed.json()}
        finally:
            await app.state.rate_limiter.reset()
            await clear_tables(app.state.database)
