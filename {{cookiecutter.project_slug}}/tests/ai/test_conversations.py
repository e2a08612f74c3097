"""Conversations: stored threads per caller, history trimmed upstream, answers stored.

Removed from projects without the auth module (see the hook's table). Callers are
told apart by test headers (a user, and the shared pool their calls bill), so two
users billing one pool (two members of a team) are two callers; one test signs in
for real.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from {{ cookiecutter.package_name }}.ai import tokens
from {{ cookiecutter.package_name }}.ai.conversations import Conversations, trim
from {{ cookiecutter.package_name }}.ai.schemas import Message
from {{ cookiecutter.package_name }}.ai.seams import default_quota, get_caller
from {{ cookiecutter.package_name }}.ai.service import Caller
from {{ cookiecutter.package_name }}.core.batch import Batcher
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import REPLY, FakeUpstream, json_chunks
from tests.ai.test_signed_in import signed_in
from tests.loopback import serving

BASE = "/api/v1/ai/conversations"
ADA, BOB = uuid.UUID(int=0xADA), uuid.UUID(int=0xB0B)
ACME, GLOBEX = uuid.UUID(int=0xAC3E), uuid.UUID(int=0x610BE)


def as_caller(user: uuid.UUID, pool: uuid.UUID | None = ACME) -> dict[str, str]:
    headers = {"x-test-user": str(user)}
    if pool is not None:
        headers["x-test-pool"] = str(pool)
    return headers


def callers_by_header(app: FastAPI) -> None:
    """The caller is whoever the test headers say: a user, billing a shared pool or not."""
    quota = default_quota(app.state.ai_settings)

    async def caller(request: Request) -> Caller:
        user = uuid.UUID(request.headers["x-test-user"])
        pool = request.headers.get("x-test-pool")
        return Caller(
            user_id=user,
            monthly_quota=quota,
            rate_key=f"user:{user}",
            pool=uuid.UUID(pool) if pool else None,
        )

    app.dependency_overrides[get_caller] = caller


async def conversation_app(make_app: MakeApp, **settings: Any) -> FastAPI:
    app = await make_app(**settings)
    callers_by_header(app)
    return app


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    response = await client.post(BASE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["id"]
    return conversation_id


async def test_crud_and_paging_newest_first(make_app: MakeApp) -> None:
    app = await conversation_app(make_app)
    ada = as_caller(ADA)
    async with http(app) as client:
        ids = [await create(client, ada, title=f"t{i}") for i in range(5)]
        # Activity moves a conversation to the top: t1 gets a message.
        sent = await client.post(f"{BASE}/{ids[1]}/messages", json={"content": "hi"}, headers=ada)
        assert sent.status_code == 200, sent.text
        first = (await client.get(BASE, params={"limit": 2}, headers=ada)).json()
        second = (await client.get(BASE, params={"limit": 2, "offset": 2}, headers=ada)).json()
        last = (await client.get(BASE, params={"limit": 2, "offset": 4}, headers=ada)).json()
        renamed = await client.patch(f"{BASE}/{ids[0]}", json={"title": "renamed"}, headers=ada)
        deleted = await client.delete(f"{BASE}/{ids[2]}", headers=ada)
        gone = await client.get(f"{BASE}/{ids[2]}", headers=ada)
        again = await client.delete(f"{BASE}/{ids[2]}", headers=ada)
        remaining = (await client.get(BASE, params={"limit": 100}, headers=ada)).json()
    titles = [c["title"] for page in (first, second, last) for c in page["items"]]
    assert titles == ["t1", "t4", "t3", "t2", "t0"]
    assert (first["next_offset"], second["next_offset"], last["next_offset"]) == (2, 4, None)
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "renamed"
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert again.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert {c["id"] for c in remaining["items"]} == {ids[0], ids[1], ids[3], ids[4]}


async def test_the_answer_and_its_usage_are_stored(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await conversation_app(make_app)
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada, title="Trip", system="Be brief.")
        plain = await client.post(
            f"{BASE}/{conversation}/messages", json={"content": "Hello"}, headers=ada
        )
        streamed = await client.post(
            f"{BASE}/{conversation}/messages",
            json={"content": "And again", "stream": True},
            headers=ada,
        )
        detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
    assert plain.status_code == 200, plain.text
    assert plain.json()["content"] == "".join(REPLY)
    assert "event: usage" in streamed.text
    roles = [(m["role"], m["content"], m["cut_off"]) for m in detail["messages"]]
    assert roles == [
        ("system", "Be brief.", False),
        ("user", "Hello", False),
        ("assistant", "".join(REPLY), False),
        ("user", "And again", False),
        ("assistant", "".join(REPLY), False),
    ]
    rows = await ledger(app)
    answers = [m for m in detail["messages"] if m["role"] == "assistant"]
    # Each stored answer carries what its call was charged: the ledger's row.
    assert [(m["input_tokens"], m["output_tokens"]) for m in answers] == [
        (row.prompt_tokens, row.completion_tokens) for row in rows
    ]
    assert plain.json()["usage"]["prompt_tokens"] == answers[0]["input_tokens"]
    assert answers[0]["model"] == "test-model"
    assert {row.user_id for row in rows} == {ADA}
    assert {row.subject for row in rows} == {ACME}
    # The second call carried the whole history, the system prompt first.
    assert [m["content"] for m in upstream.requests[1]["messages"]] == [
        "Be brief.",
        "Hello",
        "".join(REPLY),
        "And again",
    ]


async def test_another_callers_conversation_is_404(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await conversation_app(make_app)
    ada = as_caller(ADA)
    others = {
        "another user billing the same pool": as_caller(BOB),
        "the same user billing another pool": as_caller(ADA, GLOBEX),
        "the same user billing no pool": as_caller(ADA, None),
    }
    async with http(app) as client:
        conversation = await create(client, ada, title="mine")
        for who, headers in others.items():
            url = f"{BASE}/{conversation}"
            answers = [
                await client.get(url, headers=headers),
                await client.patch(url, json={"title": "theirs"}, headers=headers),
                await client.post(f"{url}/messages", json={"content": "hi"}, headers=headers),
                await client.delete(url, headers=headers),
            ]
            assert [r.status_code for r in answers] == [404] * 4, who
            listed = (await client.get(BASE, headers=headers)).json()
            assert listed["items"] == [], who
        mine = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
    assert mine["title"] == "mine"
    assert mine["messages"] == []
    assert upstream.calls == 0
    assert await ledger(app) == []


async def test_history_is_trimmed_to_the_budget_newest_first(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    # Each stored message of 40 ASCII characters is 4 + 10 tokens; the budget fits the
    # system prompt, the new message and the newest two of the six stored before it.
    system, new = Message(role="system", content="s" * 40), Message(role="user", content="n" * 40)
    budget = tokens.prompt_tokens([system, new]) + 2 * (tokens.PER_MESSAGE + 10)
    app = await conversation_app(make_app, history_token_budget=budget)
    upstream.chunks = ["a" * 40]
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada, system=system.content)
        for i in range(3):
            sent = await client.post(
                f"{BASE}/{conversation}/messages", json={"content": f"{i}" * 40}, headers=ada
            )
            assert sent.status_code == 200, sent.text
        sent = await client.post(
            f"{BASE}/{conversation}/messages", json={"content": new.content}, headers=ada
        )
        assert sent.status_code == 200, sent.text
    last = upstream.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in last] == [
        ("system", system.content),
        ("user", "2" * 40),
        ("assistant", "a" * 40),
        ("user", new.content),
    ]
    [*_, row] = await ledger(app)
    assert row.prompt_tokens >= tokens.prompt_tokens(Message(**m) for m in last)


async def test_concurrent_messages_each_read_and_store_their_own_conversation(
    make_app: MakeApp, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Histories are read and turns stored in batches shared by concurrent requests
    (ai/conversations.py, `Conversations`): each request still gets its own history and
    stores its own turn, and a conversation deleted meanwhile keeps nothing."""
    app = await conversation_app(make_app, monthly_token_quota=10**9)  # room for all at once
    ada, bob = as_caller(ADA), as_caller(BOB)
    upstream.delay = 0.3  # the messages wait on the model together
    conversations: Conversations = app.state.ai_conversations
    sizes: dict[str, list[int]] = {"read": [], "store": []}
    monkeypatch.setattr(conversations.read, "_run", counted(conversations.read, sizes["read"]))
    monkeypatch.setattr(conversations.store, "_run", counted(conversations.store, sizes["store"]))
    async with http(app) as client:
        mine = [await create(client, ada, system=f"Prompt {i}.") for i in range(4)]
        theirs = await create(client, bob, system="Bob's prompt.")
        deleted = await create(client, ada, system="Deleted.")
        sends = [
            (conversation, headers, f"{n} to {conversation}")
            for n in range(3)
            for conversation, headers in [*((c, ada) for c in mine), (theirs, bob), (deleted, ada)]
        ]

        async def send(conversation: str, headers: dict[str, str], content: str) -> int:
            url = f"{BASE}/{conversation}/messages"
            response = await client.post(url, json={"content": content}, headers=headers)
            return response.status_code

        sent = asyncio.gather(*(send(*s) for s in sends))
        for _ in range(500):  # all asked (at most 5 s): the deletion comes while they wait
            if upstream.calls == len(sends) or sent.done():
                break
            await asyncio.sleep(0.01)
        assert (await client.delete(f"{BASE}/{deleted}", headers=ada)).status_code == 204
        statuses = await sent
        details = {
            c: (await client.get(f"{BASE}/{c}", headers=h)).json()
            for c, h in [*((c, ada) for c in mine), (theirs, bob)]
        }
    assert statuses == [200] * len(sends)
    for conversation, detail in details.items():
        messages = [(m["role"], m["content"]) for m in detail["messages"]]
        asked = sorted(content for c, _, content in sends if c == conversation)
        assert messages[0][0] == "system"
        turns = messages[1:]
        # Each turn stored whole (the question, then its answer), whatever the order of turns.
        assert [role for role, _ in turns] == ["user", "assistant"] * 3, conversation
        assert sorted(content for role, content in turns if role == "user") == asked
        assert {content for role, content in turns if role == "assistant"} == {"".join(REPLY)}
    # Every request sent upstream its own conversation's prompt and nothing of another's.
    prompts = {c: d["messages"][0]["content"] for c, d in details.items()} | {deleted: "Deleted."}
    assert len(upstream.requests) == len(sends)
    for request in upstream.requests:
        conversation = request["messages"][-1]["content"].split(" to ")[1]
        assert request["messages"][0]["content"] == prompts[conversation]
        others = [m["content"] for m in request["messages"][1:-1]]
        assert all(other.endswith(conversation) or other == "".join(REPLY) for other in others)
    assert len(await ledger(app)) == len(sends)  # the deleted conversation's calls are billed
    # They did share batches (one statement each on PostgreSQL).
    assert max(sizes["read"]) > 1, sizes
    assert max(sizes["store"]) > 1, sizes
    assert sum(sizes["read"]) == sum(sizes["store"]) == len(sends)


def counted(batcher: Batcher[Any, Any], sizes: list[int]) -> Any:
    run = batcher._run

    async def counting(batch: Sequence[Any]) -> Any:
        sizes.append(len(batch))
        return await run(batch)

    return counting


def test_trim_always_sends_the_system_prompt_and_the_new_message() -> None:
    system = [Message(role="system", content="x" * 400)]
    history = [Message(role="user", content="old")]
    new = Message(role="user", content="y" * 400)
    assert trim(system, history, new, budget=1, max_messages=100, max_chars=10_000) == [
        *system,
        new,
    ]
    # AI_MAX_MESSAGES and AI_MAX_INPUT_CHARS bound what is sent as well.
    many = [Message(role="user", content=str(i)) for i in range(10)]
    sent = trim([], many, new, budget=10_000, max_messages=4, max_chars=10_000)
    assert [m.content for m in sent] == ["7", "8", "9", new.content]
    sent = trim([], many, new, budget=10_000, max_messages=100, max_chars=402)
    assert [m.content for m in sent] == ["8", "9", new.content]


async def test_an_upstream_failure_stores_nothing(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await conversation_app(make_app)
    upstream.mode = "500"
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada)
        sent = await client.post(
            f"{BASE}/{conversation}/messages", json={"content": "hi"}, headers=ada
        )
        detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
    assert sent.status_code == 502
    assert detail["messages"] == []
    [row] = await ledger(app)
    assert row.outcome == "upstream_error"


async def test_structured_output_in_a_conversation(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await conversation_app(make_app)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada)
        url = f"{BASE}/{conversation}/messages"
        upstream.chunks = json_chunks({"n": 3})
        good = await client.post(
            url, json={"content": "count", "response_format": response_format}, headers=ada
        )
        upstream.chunks = json_chunks({"n": "three"})
        bad = await client.post(
            url, json={"content": "count", "response_format": response_format}, headers=ada
        )
        detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
    assert good.status_code == 200, good.text
    assert json.loads(good.json()["content"]) == {"n": 3}
    assert upstream.requests[0]["response_format"] == response_format
    assert bad.status_code == 502
    assert bad.json()["type"] == "ai-invalid-structured-output"
    # The invalid answer is not stored (its call is in the ledger).
    assert [m["content"] for m in detail["messages"]] == ["count", '{"n": 3}']
    assert len(await ledger(app)) == 2


async def test_signed_in_users_see_only_their_own(make_app: MakeApp) -> None:
    app = await make_app()
    async with http(app) as client:
        ada = await signed_in(app, client, "conv-ada@example.com")
        eve = await signed_in(app, client, "conv-eve@example.com")
        conversation = await create(client, ada, title="Ada's")
        theirs = await client.get(f"{BASE}/{conversation}", headers=eve)
        listed = (await client.get(BASE, headers=eve)).json()
        anonymous = await client.get(BASE)
        mine = await client.get(f"{BASE}/{conversation}", headers=ada)
    assert theirs.status_code == 404
    assert listed["items"] == []
    assert anonymous.status_code == 401
    assert mine.status_code == 200
    assert mine.json()["title"] == "Ada's"


async def test_a_client_that_leaves_mid_stream_leaves_a_cut_off_answer(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.chunks = [f" word{i}" for i in range(100)]
    upstream.chunk_interval = 0.02  # two seconds in all, if nobody stops it
    app = await conversation_app(make_app)
    ada = as_caller(ADA)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        conversation = await create(client, ada)
        async with client.stream(
            "POST",
            f"{BASE}/{conversation}/messages",
            json={"content": "go", "stream": True},
            headers=ada,
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break  # the first delta arrived: hang up
        messages: list[dict[str, Any]] = []
        for _ in range(500):  # up to 10 s
            detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
            messages = detail["messages"]
            if messages and upstream.aborted_streams:
                break
            await asyncio.sleep(0.02)
    [asked, answered] = messages
    assert (asked["role"], asked["content"], asked["cut_off"]) == ("user", "go", False)
    assert answered["role"] == "assistant"
    assert answered["cut_off"] is True
    # What was relayed before the client left: a start of the answer, not all of it.
    assert answered["content"].startswith(" word0")
    assert len(answered["content"]) < len("".join(upstream.chunks))
    [row] = await ledger(app)
    assert row.outcome == "cancelled"
    assert (answered["input_tokens"], answered["output_tokens"]) == (
        row.prompt_tokens,
        row.completion_tokens,
    )


@pytest.mark.parametrize("body", [{"title": ""}, {"title": "x" * 201}, {"other": 1}])
async def test_bad_conversation_bodies_are_422(make_app: MakeApp, body: dict[str, Any]) -> None:
    app = await conversation_app(make_app)
    async with http(app) as client:
        response = await client.post(BASE, json=body, headers=as_caller(ADA))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_messages_page_newest_first_by_before(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await conversation_app(make_app)
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada, system="Prompt.")
        for i in range(3):
            sent = await client.post(
                f"{BASE}/{conversation}/messages", json={"content": f"q{i}"}, headers=ada
            )
            assert sent.status_code == 200, sent.text
        url = f"{BASE}/{conversation}"
        everything = (await client.get(url, headers=ada)).json()
        pages, before = [], None
        for _ in range(5):  # 7 messages, 3 a page: 3 pages
            params: dict[str, Any] = {"limit": 3} | ({"before": before} if before else {})
            page = (await client.get(url, params=params, headers=ada)).json()
            pages.append([m["content"] for m in page["messages"]])
            before = page["next_before"]
            if before is None:
                break
        too_many = await client.get(url, params={"limit": 1001}, headers=ada)
    assert len(everything["messages"]) == 7
    assert everything["next_before"] is None
    reply = "".join(REPLY)
    assert pages == [[reply, "q2", reply], ["q0", reply, "q1"], ["Prompt."]]
    assert [c for p in reversed(pages) for c in p] == [m["content"] for m in everything["messages"]]
    assert too_many.status_code == 422
