"""Tools in a conversation: the same loop as /chat, each round stored with the message.

Removed from projects without the auth module (conversations need an owner; see the
hook's table).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }}.ai.tools import registry
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import REPLY, FakeUpstream, json_chunks
from tests.ai.test_chat import events
from tests.ai.test_conversations import ADA, BASE, as_caller, conversation_app, create
from tests.ai.test_tools import ran, slow
from tests.loopback import serving


def stored(detail: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    return [
        (m["role"], m["content"], m["tool_calls"], m["tool_call_id"]) for m in detail["messages"]
    ]


async def test_a_message_runs_the_tool_loop_and_stores_each_round(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await conversation_app(make_app, monthly_token_quota=10**6)
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada, title="usage")
        upstream.tool_script = [[("get_usage", "{}")]]
        plain = await client.post(
            f"{BASE}/{conversation}/messages",
            json={"content": "How much have I used?", "tools": ["get_usage"]},
            headers=ada,
        )
        assert plain.status_code == 200, plain.text
        assert plain.json()["steps"] == 2
        upstream.tool_script = [[("get_usage", '{"user_id": "someone else"}')]]
        streamed = await client.post(
            f"{BASE}/{conversation}/messages",
            json={"content": "And now?", "tools": ["get_usage"], "stream": True},
            headers=ada,
        )
        assert streamed.status_code == 200
        detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
    names = [name for name, _ in events(streamed)]
    assert names[:2] == ["tool_call", "tool_result"]
    assert names[-1] == "usage"

    answer = "".join(REPLY)
    first_call = plain.json()["tool_calls"][0]
    rows = stored(detail)
    assert [row[0] for row in rows] == [
        "user", "assistant", "tool", "assistant",  # the first message: one round of tools
        "user", "assistant", "tool", "assistant",  # the second, streamed
    ]  # fmt: skip
    user, asked, result, final = rows[:4]
    assert user[1] == "How much have I used?"
    assert asked[2][0]["function"] == {"name": "get_usage", "arguments": "{}"}
    assert (result[3], json.loads(result[1])) == (
        asked[2][0]["id"],
        json.loads(first_call["result"]),
    )
    assert final[1] == answer
    refused = json.loads(rows[6][1])
    assert refused["error"].startswith("Invalid arguments: user_id: Extra inputs")
    assert rows[7][1] == answer
    # The stored answer carries the tokens of all its rounds, as the ledger charged them.
    charged = [r.total_tokens for r in await ledger(app)]
    messages = detail["messages"]
    assert messages[3]["input_tokens"] + messages[3]["output_tokens"] == sum(charged[:2])
    assert messages[7]["input_tokens"] + messages[7]["output_tokens"] == sum(charged[2:])
    # The next message's history holds the texts, not the tool rounds.
    sent = upstream.requests[2]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "How much have I used?"),
        ("assistant", answer),
        ("user", "And now?"),
    ]


@pytest.mark.parametrize("leave_at", ["tool_call", "answer"])
async def test_a_client_that_leaves_mid_loop_leaves_the_rounds_and_a_cut_off_answer(
    make_app: MakeApp, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture, leave_at: str
) -> None:
    """Streamed, with tools: the client hangs up while a tool runs, or once the answer after
    the tool round has begun. What was done is stored (the rounds, and the answer so far
    marked cut off, carrying what the ledger charged); nothing is logged as an error."""
    slow_tool = leave_at == "tool_call"
    upstream.tool_script = [[("slow", "{}") if slow_tool else ("get_usage", "{}")]]
    upstream.chunks = [f" word{i}" for i in range(100)]
    upstream.chunk_interval = 0.02  # two seconds in all, if nobody stops it
    app = await conversation_app(make_app, monthly_token_quota=10**6, tool_timeout=20)
    registry(app).add(slow)
    ran.clear()
    ada = as_caller(ADA)
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # the app's logging setup replaced the root's handlers
    streams = app.state.ai.metering.streams
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            conversation = await create(client, ada, title="gone")
            body = {"content": "Use the tool", "tools": ["slow", "get_usage"], "stream": True}
            path = f"{BASE}/{conversation}/messages"
            async with client.stream("POST", path, json=body, headers=ada) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if slow_tool and line == "event: tool_call":
                        break  # the tool is about to run: hang up
                    if line == "event: delta":
                        break  # the answer after the tool round has begun: hang up
            messages: list[dict[str, Any]] = []
            for _ in range(500):  # up to 10 s
                detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
                messages = detail["messages"]
                if messages and not streams.open_streams:
                    break
                await asyncio.sleep(0.02)
    finally:
        root.removeHandler(caplog.handler)

    roles = [(m["role"], m["cut_off"]) for m in messages]
    assert roles == [
        ("user", False),
        ("assistant", False),  # the model's call
        ("tool", False),  # its result
        ("assistant", True),  # the answer, cut off
    ]
    _, asked, result, answered = messages
    [call] = asked["tool_calls"]
    assert result["tool_call_id"] == call["id"]
    if slow_tool:
        # Cancelled with the request: the call stays answered, for whoever reads the thread.
        assert ran == [("slow", ADA)]
        assert "error" in json.loads(result["content"])
        assert answered["content"] == ""
        assert upstream.calls == 1  # no round after the tool
    else:
        assert json.loads(result["content"])["requests"] == 1
        assert answered["content"].startswith(" word0")
        assert len(answered["content"]) < len("".join(upstream.chunks))
    # The answer carries what the ledger charged for every round: the first finished, the
    # second (when there was one) cancelled with the client.
    charged = answered["input_tokens"] + answered["output_tokens"]
    rows = await ledger(app)
    for _ in range(500):  # the ledger writer commits in the background: up to 10 s
        if sum(r.total_tokens for r in rows) == charged:
            break
        await asyncio.sleep(0.02)
        rows = await ledger(app)
    assert [r.outcome for r in rows] == (["ok"] if slow_tool else ["ok", "cancelled"])
    assert all(r.streamed for r in rows)
    assert (answered["input_tokens"], answered["output_tokens"]) == (
        sum(r.prompt_tokens for r in rows),
        sum(r.completion_tokens for r in rows),
    )
    assert answered["output_tokens"] > 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_tools_and_a_response_format_in_a_conversation(
    make_app: MakeApp, upstream: FakeUpstream, stream: bool
) -> None:
    """The answer after the tool rounds is checked: a conforming one is stored with its
    rounds, an invalid one is the 502 problem and leaves nothing (the ledger has its calls)."""
    app = await conversation_app(make_app, monthly_token_quota=10**6)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    body = {
        "content": "count",
        "tools": ["get_usage"],
        "response_format": response_format,
        "stream": stream,
    }
    ada = as_caller(ADA)
    async with http(app) as client:
        conversation = await create(client, ada)
        url = f"{BASE}/{conversation}/messages"
        upstream.tool_script = [[("get_usage", "{}")]]
        upstream.chunks = json_chunks({"n": 3})
        good = await client.post(url, json=body, headers=ada)
        upstream.tool_script = [[("get_usage", "{}")]]
        upstream.chunks = json_chunks({"n": "three"})
        bad = await client.post(url, json=body, headers=ada)
        detail = (await client.get(f"{BASE}/{conversation}", headers=ada)).json()
    assert good.status_code == 200, good.text
    if stream:
        assert [name for name, _ in events(good)][-1] == "usage"
        assert bad.status_code == 200  # the stream had started
        name, error = events(bad)[-1]
        assert (name, error["status"]) == ("error", 502)
    else:
        assert json.loads(good.json()["content"]) == {"n": 3}
        assert bad.status_code == 502, bad.text
        error = bad.json()
    assert error["type"] == "ai-invalid-structured-output"
    rows = stored(detail)
    assert [row[0] for row in rows] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(rows[3][1]) == {"n": 3}
    assert len(await ledger(app)) == 4  # two rounds each
