"""Tools in a conversation: the same loop as /chat, each round stored with the message.

Removed from projects without the auth module (conversations need an owner; see the
hook's table).
"""

from __future__ import annotations

import json
from typing import Any

from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import REPLY, FakeUpstream
from tests.ai.test_chat import events
from tests.ai.test_conversations import ADA, BASE, as_caller, conversation_app, create


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
