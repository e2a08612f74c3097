"""Tool calling through the real `openai` client against the fake upstream, on both backends."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from {{ cookiecutter.package_name }}.ai.seams import get_caller
from {{ cookiecutter.package_name }}.ai.service import Caller
from {{ cookiecutter.package_name }}.ai.tools import NoArguments, ToolContext, registry, tool
from {{ cookiecutter.package_name }}.core.db import Base
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import PROMPT_TOKENS, REPLY, TOOL_CALL_TOKENS, FakeUpstream
from tests.ai.test_chat import events
from tests.loopback import serving

CHAT = "/api/v1/ai/chat"
ASK = {"messages": [{"role": "user", "content": "What is 2 + 3, and how much have I used?"}]}
ALICE = uuid.UUID("00000000-0000-4000-8000-00000000000a")
BOB = uuid.UUID("00000000-0000-4000-8000-00000000000b")


class AddArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: int
    b: int


ran: list[tuple[str, uuid.UUID | None]] = []


@tool("add", scopes=[])
async def add(ctx: ToolContext, args: AddArguments) -> dict[str, int]:
    """Add two integers."""
    ran.append(("add", ctx.caller.user_id))
    return {"sum": args.a + args.b}


@tool("explode", scopes=[])
async def explode(ctx: ToolContext, args: NoArguments) -> str:
    """Always fails."""
    ran.append(("explode", ctx.caller.user_id))
    raise RuntimeError("the tool broke\n[SQL: internals that stay in the log]")


@tool("slow", scopes=[])
async def slow(ctx: ToolContext, args: NoArguments) -> str:
    """Takes longer than AI_TOOL_TIMEOUT."""
    ran.append(("slow", ctx.caller.user_id))
    await asyncio.sleep(30)
    return "too late"


async def tool_app(make_app: MakeApp, **overrides: Any) -> FastAPI:
    """An app with the test tools, where the header `x-caller: a|b` picks one of two users."""
    overrides.setdefault("monthly_token_quota", 10**6)
    app = await make_app(**overrides)
    registry(app).add(add, explode, slow)
    quota = app.state.ai_settings.monthly_token_quota or None

    async def two_callers(request: Request) -> Caller:
        user = BOB if request.headers.get("x-caller") == "b" else ALICE
        return Caller(user_id=user, monthly_quota=quota, rate_key=f"user:{user}")

    app.dependency_overrides[get_caller] = two_callers
    ran.clear()
    return app


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_the_model_calls_tools_over_several_steps(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.tool_script = [[("add", '{"a": 2, "b": 3}')], [("get_usage", "{}")]]
    app = await tool_app(make_app)
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "tools": ["add", "get_usage"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "".join(REPLY)
    assert body["steps"] == 3
    assert [(c["name"], c["error"]) for c in body["tool_calls"]] == [
        ("add", None),
        ("get_usage", None),
    ]
    assert json.loads(body["tool_calls"][0]["result"]) == {"sum": 5}
    assert ran == [("add", ALICE)]

    first, second, third = upstream.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["add", "get_usage"]
    assert first["tools"][0]["function"]["parameters"]["properties"] == {
        "a": {"title": "A", "type": "integer"},
        "b": {"title": "B", "type": "integer"},
    }
    assert first["messages"] == ASK["messages"]
    # Each step sends the history so far: the model's call, then the tool's result.
    asked = second["messages"][1]
    assert asked["role"] == "assistant"
    assert asked["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    [result] = tool_messages(second)
    assert result["tool_call_id"] == asked["tool_calls"][0]["id"]
    assert json.loads(result["content"]) == {"sum": 5}
    assert len(tool_messages(third)) == 2
    assert all("tool_choice" not in sent for sent in upstream.requests)

    # Each step is metered as a call of its own, and the answer charges their sum.
    rows = await ledger(app)
    assert [(r.outcome, r.user_id, r.streamed) for r in rows] == [("ok", ALICE, False)] * 3
    assert body["usage"]["total_tokens"] == sum(r.total_tokens for r in rows)
    assert [r.completion_tokens for r in rows] == [TOOL_CALL_TOKENS, TOOL_CALL_TOKENS, len(REPLY)]
    # The later steps' prompts hold the tool schemas and results: estimated above the fake's 12.
    assert all(r.prompt_tokens > PROMPT_TOKENS for r in rows)
    assert rows[2].prompt_tokens > rows[0].prompt_tokens
    # get_usage read the caller's month after the first two steps were charged.
    usage = json.loads(body["tool_calls"][1]["result"])
    assert (usage["tokens"], usage["requests"]) == (rows[0].total_tokens + rows[1].total_tokens, 2)
    async with http(app) as client:
        month = (await client.get("/api/v1/ai/usage")).json()
    assert (month["tokens"], month["requests"]) == (body["usage"]["total_tokens"], 3)


async def test_the_step_limit_asks_for_a_final_answer_without_tools(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.always_call = [("add", '{"a": 1, "b": 1}')]
    app = await tool_app(make_app, max_tool_steps=2)
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "tools": ["add"]})
        streamed = await client.post(CHAT, json={**ASK, "tools": ["add"], "stream": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["content"], body["steps"], len(body["tool_calls"])) == ("".join(REPLY), 3, 2)
    received = events(streamed)
    names = [name for name, _ in received]
    assert names.count("tool_call") == names.count("tool_result") == 2
    assert received[-1][0] == "usage"
    assert received[-1][1]["steps"] == 3
    # Two rounds of tools, then one call that may not use them, for each request.
    assert upstream.calls == 6
    assert [r.get("tool_choice") for r in upstream.requests] == [None, None, "none"] * 2
    assert all(r["tools"] for r in upstream.requests)  # the history stays valid
    assert len(await ledger(app)) == 6
    assert ran == [("add", ALICE)] * 4


async def test_a_failing_tool_is_reported_to_the_model(
    make_app: MakeApp, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.tool_script = [[("explode", "{}"), ("slow", "{}")]]
    app = await tool_app(make_app, tool_timeout=0.2)
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # the app's logging setup replaced the root's handlers
    try:
        async with http(app) as client:
            response = await client.post(CHAT, json={**ASK, "tools": ["explode", "slow"]})
    finally:
        root.removeHandler(caplog.handler)
    assert response.status_code == 200, response.text
    body = response.json()
    failed, late = body["tool_calls"]
    assert failed["error"] == "RuntimeError: the tool broke"
    assert late["error"] == "The tool did not finish within 0.2 s."
    [broke, timed_out] = tool_messages(upstream.requests[1])
    assert json.loads(broke["content"]) == {"error": "RuntimeError: the tool broke"}
    assert "internals" not in response.text
    assert json.loads(timed_out["content"]) == {"error": "The tool did not finish within 0.2 s."}
    assert body["content"] == "".join(REPLY)  # the model answered after reading the errors
    # The exception is logged with its traceback, the timeout as a warning.
    [failure] = [r for r in caplog.records if "ai_tool_failed" in r.getMessage()]
    assert failure.levelno == logging.ERROR
    assert "'exc_info': True" in failure.getMessage()
    [timeout] = [r for r in caplog.records if "ai_tool_timeout" in r.getMessage()]
    assert timeout.levelno == logging.WARNING
    assert [r.outcome for r in await ledger(app)] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("add", '{"a": 2, "b":', "The arguments are not valid JSON"),
        ("add", '{"a": "two", "b": 3}', "Invalid arguments: a: Input should be a valid integer"),
        ("add", '{"a": 2}', "Invalid arguments: b: Field required"),
        ("add", "[1, 2]", "Invalid arguments"),
        ("get_usage", '{"user_id": "x"}', "Invalid arguments: user_id: Extra inputs"),
        ("explode", "{}", "No tool named 'explode'; the tools are: add, get_usage."),
        ("rm_rf", "{}", "No tool named 'rm_rf'"),
    ],
)
async def test_invalid_calls_are_reported_to_the_model(
    make_app: MakeApp, upstream: FakeUpstream, name: str, arguments: str, error: str
) -> None:
    upstream.tool_script = [[(name, arguments)]]
    app = await tool_app(make_app)
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "tools": ["add", "get_usage"]})
    assert response.status_code == 200, response.text
    [call] = response.json()["tool_calls"]
    assert call["error"].startswith(error), call["error"]
    [sent] = tool_messages(upstream.requests[1])
    assert json.loads(sent["content"]) == {"error": call["error"]}
    assert ran == []  # nothing ran: not even a tool the request did not offer


async def test_unknown_tools_in_the_request_are_422(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await tool_app(make_app)
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "tools": ["add", "drop_tables"]})
        no_tools = await client.post(CHAT, json={**ASK, "tools": []})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "drop_tables" in response.json()["detail"]
    assert no_tools.status_code == 200
    assert "steps" not in no_tools.json()
    assert upstream.calls == 1
    assert "tools" not in upstream.requests[0]  # plain chat, as without tools


async def test_streamed_clients_see_tool_calls_and_results(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.tool_script = [[("add", '{"a": 2, "b": 3}'), ("add", '{"a": 1}')]]
    app = await tool_app(make_app)
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "tools": ["add"], "stream": True})
    assert response.status_code == 200
    received = events(response)
    ids = [f"call_1_{n}" for n in range(2)]
    assert received[:4] == [
        ("tool_call", {"id": ids[0], "name": "add", "arguments": '{"a": 2, "b": 3}'}),
        ("tool_result", {"id": ids[0], "name": "add", "result": '{"sum":5}'}),
        ("tool_call", {"id": ids[1], "name": "add", "arguments": '{"a": 1}'}),
        (
            "tool_result",
            {"id": ids[1], "name": "add", "error": "Invalid arguments: b: Field required"},
        ),
    ]
    assert [data["content"] for name, data in received if name == "delta"] == REPLY
    name, final = received[-1]
    assert name == "usage"
    rows = await ledger(app)
    assert [(r.outcome, r.streamed) for r in rows] == [("ok", True)] * 2
    assert final["steps"] == 2
    assert final["total_tokens"] == sum(r.total_tokens for r in rows)
    assert rows[0].completion_tokens == 2 * TOOL_CALL_TOKENS
    # The streamed call's pieces were put back together for the next step.
    asked = upstream.requests[1]["messages"][1]
    assert [c["function"]["arguments"] for c in asked["tool_calls"]] == [
        '{"a": 2, "b": 3}',
        '{"a": 1}',
    ]
    assert [m["tool_call_id"] for m in tool_messages(upstream.requests[1])] == ids


async def test_a_step_over_the_quota_ends_the_loop_with_the_quota_problem(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    """The first step may use what is left (1 token, clamped); the second is refused."""
    upstream.always_call = [("add", '{"a": 1, "b": 1}')]
    app = await tool_app(make_app, monthly_token_quota=1)
    async with http(app) as client:
        plain = await client.post(CHAT, json={**ASK, "tools": ["add"]})
    assert plain.status_code == 429
    assert plain.headers["content-type"] == "application/problem+json"
    assert "quota" in plain.json()["detail"]
    assert upstream.calls == 1
    assert ran == [("add", ALICE)]
    [row] = await ledger(app)
    assert row.outcome == "ok"

    # Bob's month is his own: his stream runs its first step, then meets the quota.
    async with http(app) as client:
        streamed = await client.post(
            CHAT, json={**ASK, "tools": ["add"], "stream": True}, headers={"x-caller": "b"}
        )
    assert streamed.status_code == 200
    received = events(streamed)
    assert [name for name, _ in received] == ["tool_call", "tool_result", "error"]
    assert received[-1][1]["status"] == 429
    assert upstream.calls == 2
    assert [r.user_id for r in await ledger(app)] == [ALICE, BOB]


async def test_tools_read_only_the_callers_data(make_app: MakeApp, upstream: FakeUpstream) -> None:
    """get_usage answers for the caller of the request, whatever the model writes."""
    app = await tool_app(make_app)
    async with http(app) as client:
        for _ in range(3):  # Bob's usage: three plain calls
            assert (await client.post(CHAT, json=ASK, headers={"x-caller": "b"})).status_code == 200
        bob_tokens = sum(r.total_tokens for r in await ledger(app))
        upstream.tool_script = [
            [("get_usage", json.dumps({"user_id": str(BOB)}))],  # pointed at Bob: refused
            [("get_usage", "{}")],
        ]
        response = await client.post(CHAT, json={**ASK, "tools": ["get_usage"]})
    assert response.status_code == 200, response.text
    pointed, mine = response.json()["tool_calls"]
    assert pointed["error"].startswith("Invalid arguments: user_id: Extra inputs")
    alice_rows = [r for r in await ledger(app) if r.user_id == ALICE]
    usage = json.loads(mine["result"])
    assert (usage["tokens"], usage["requests"]) == (sum(r.total_tokens for r in alice_rows[:2]), 2)
    assert usage["tokens"] != bob_tokens
    for sent in upstream.requests[3:]:
        for message in tool_messages(sent):
            assert str(BOB) not in message["content"]
            assert json.loads(message["content"]).get("requests") != 3


async def test_the_tools_of_the_projects_modules_are_listed(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    async with http(app) as client:
        response = await client.get("/api/v1/ai/tools")
    assert response.status_code == 200
    listed = {t["name"]: t for t in response.json()}
    # A tool comes with the module whose data it reads: the plan's with the subscriptions.
    expected = {"get_usage"} | (
        {"get_subscription"} if "subscriptions" in Base.metadata.tables else set()
    )
    assert set(listed) == expected
    assert listed["get_usage"]["parameters"]["additionalProperties"] is False
    assert "usage" in listed["get_usage"]["description"]
    assert listed["get_usage"]["scopes"] == ["read"]


async def test_a_client_leaving_mid_loop_stops_it(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    """Gone during a tool: the tool is cancelled, the rounds so far charged, the slot freed."""
    upstream.tool_script = [[("slow", "{}")]]
    app = await tool_app(make_app, tool_timeout=20)
    streams = app.state.ai.metering.streams
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream(
            "POST", CHAT, json={**ASK, "tools": ["slow"], "stream": True}
        ) as res:
            assert res.status_code == 200
            async for line in res.aiter_lines():
                if line == "event: tool_call":
                    break  # the tool is about to run: hang up
        for _ in range(250):
            if not streams.open_streams and ran:
                break
            await asyncio.sleep(0.02)
    assert streams.open_streams == {}
    assert ran == [("slow", ALICE)]
    assert upstream.calls == 1  # no round after the tool
    [row] = await ledger(app)
    assert (row.outcome, row.streamed) == ("ok", True)
