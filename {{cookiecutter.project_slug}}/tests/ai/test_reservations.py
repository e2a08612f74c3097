"""Quota reservations: concurrent callers, on several instances, cannot overshoot.

Each call reserves its estimated prompt plus max_tokens from the month atomically
(in the database) before it is sent, and gives back what it did not use when it
is charged. The fake upstream here bills every call its whole max_tokens.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from {{ cookiecutter.package_name }}.ai import tokens
from {{ cookiecutter.package_name }}.ai.models import AIUsageTotal
from {{ cookiecutter.package_name }}.ai.schemas import Message
from {{ cookiecutter.package_name }}.core.db import Database
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import FakeUpstream

CHAT = "/api/v1/ai/chat"
HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
RESERVATION = tokens.prompt_tokens([Message(role="user", content="Say hello")]) + 50


async def totals(database: Database) -> list[AIUsageTotal]:
    async with database.sessionmaker() as session:
        return list((await session.scalars(select(AIUsageTotal))).all())


async def test_concurrent_callers_on_two_instances_overshoot_by_one_reservation_at_most(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    quota = 8 * RESERVATION + RESERVATION // 2  # room for 8 calls and a clamped ninth
    upstream.delay = 0.3  # all of them in flight at once
    upstream.prompt_tokens = 1  # reported below the estimate: the estimate is charged
    upstream.bill_max_tokens = True  # each call uses all it may
    apps = [await make_app(monthly_token_quota=quota) for _ in range(2)]
    clients = [http(app) for app in apps]
    try:
        calls = [clients[n % 2].post(CHAT, json={**HELLO, "stream": n % 3 == 0}) for n in range(24)]
        statuses = [r.status_code for r in await asyncio.gather(*calls)]
    finally:
        for client in clients:
            await client.aclose()
    assert set(statuses) == {200, 429}
    assert statuses.count(200) == upstream.calls == 9  # 8 whole reservations, 1 clamped
    rows = await ledger(apps[0])
    used = sum(row.total_tokens for row in rows)
    assert used == 9 * RESERVATION
    assert quota < used <= quota + RESERVATION
    [total] = await totals(apps[0].state.database)
    assert (total.tokens, total.requests, total.reserved) == (used, 9, 0)


async def test_the_quota_is_reserved_before_the_call_and_given_back_after(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.delay = 0.3
    app = await make_app(monthly_token_quota=10 * RESERVATION)
    async with http(app) as client:
        call = asyncio.create_task(client.post(CHAT, json=HELLO))
        for _ in range(300):
            if upstream.calls:
                break
            await asyncio.sleep(0.01)
        [during] = await totals(app.state.database)
        assert (during.tokens, during.reserved) == (0, RESERVATION)
        assert (await call).status_code == 200
    [after] = await totals(app.state.database)
    assert (after.tokens, after.reserved) == (upstream.usage["total_tokens"], 0)


async def test_a_reservation_left_by_a_dead_process_is_let_go_after_an_hour(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    quota = 10 * RESERVATION
    app = await make_app(monthly_token_quota=quota)
    async with http(app) as client:
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
        database: Database = app.state.database
        # A process died holding the whole month's allowance.
        async with database.engine.begin() as conn:
            await conn.execute(update(AIUsageTotal).values(reserved=quota))
        assert (await client.post(CHAT, json=HELLO)).status_code == 429
        async with database.engine.begin() as conn:
            an_hour_ago = datetime.now(UTC) - timedelta(hours=1, seconds=1)
            await conn.execute(update(AIUsageTotal).values(reserved_at=an_hour_ago))
        assert (await client.post(CHAT, json=HELLO)).status_code == 200
    [total] = await totals(app.state.database)
    assert total.reserved == 0


async def test_input_over_the_caps_is_413_and_max_tokens_over_the_cap_422(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app(max_messages=2, max_input_chars=100, max_tokens=64)
    message = {"role": "user", "content": "hi"}
    async with http(app) as client:
        many = await client.post(CHAT, json={"messages": [message] * 3})
        long = await client.post(CHAT, json={"messages": [{**message, "content": "x" * 101}]})
        over = await client.post(CHAT, json={"messages": [message], "max_tokens": 65})
        fits = await client.post(CHAT, json={"messages": [message] * 2})
    for response in (many, long):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
    assert many.json()["max_messages"] == 2
    assert long.json()["max_input_chars"] == 100
    assert over.status_code == 422
    assert fits.status_code == 200
    assert upstream.calls == 1
    assert upstream.requests[0]["max_tokens"] == 64  # the cap, sent when none is asked


@pytest.mark.parametrize("tools", [[], ["get_usage"]], ids=["chat", "tool-loop"])
async def test_concurrent_streams_per_caller_are_capped(
    make_app: MakeApp, upstream: FakeUpstream, tools: list[str]
) -> None:
    """Plain streamed chat and the streamed tool loop hold the same slots."""
    upstream.delay = 0.3
    app = await make_app(max_concurrent_streams=1)
    stream = {**HELLO, "stream": True, "tools": tools}
    async with http(app) as client:
        first, second = await asyncio.gather(
            client.post(CHAT, json=stream), client.post(CHAT, json=stream)
        )
        later = await client.post(CHAT, json=stream)
        plain = await client.post(CHAT, json=HELLO)  # not a stream: not counted
    assert sorted([first.status_code, second.status_code]) == [200, 429]
    refused = first if first.status_code == 429 else second
    assert refused.headers["content-type"] == "application/problem+json"
    assert later.status_code == 200
    assert plain.status_code == 200
    assert upstream.calls == 3
    assert app.state.ai.metering.streams.open_streams == {}


async def test_the_cap_can_be_sent_as_max_completion_tokens(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    """OpenAI's reasoning models refuse `max_tokens`; the name is a setting."""
    app = await make_app(max_tokens=64, max_tokens_parameter="max_completion_tokens")
    async with http(app) as client:
        assert (await client.post(CHAT, json={**HELLO, "stream": True})).status_code == 200
    sent = upstream.requests[0]
    assert sent["max_completion_tokens"] == 50
    assert "max_tokens" not in sent
