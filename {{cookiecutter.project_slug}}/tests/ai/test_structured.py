"""Structured output on /chat: `response_format` sent upstream, the answer checked after."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import FakeUpstream, json_chunks

CHAT = "/api/v1/ai/chat"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True},
}


def ask(response_format: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Plan a trip"}],
        "response_format": response_format,
        "stream": stream,
    }


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        found.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


@pytest.mark.parametrize(
    "response_format", [JSON_SCHEMA, {"type": "json_object"}], ids=["json_schema", "json_object"]
)
async def test_a_conforming_answer_passes(
    make_app: MakeApp, upstream: FakeUpstream, response_format: dict[str, Any]
) -> None:
    app = await make_app()
    upstream.chunks = json_chunks({"city": "Lisbon", "days": 3})
    async with http(app) as client:
        response = await client.post(CHAT, json=ask(response_format))
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["content"]) == {"city": "Lisbon", "days": 3}
    # Passed upstream as OpenAI's shape.
    assert upstream.requests[0]["response_format"] == response_format


@pytest.mark.parametrize(
    ("response_format", "answer", "message"),
    [
        (JSON_SCHEMA, {"city": "Lisbon", "days": 0}, "0 is less than the minimum of 1"),
        (JSON_SCHEMA, {"city": "Lisbon"}, "'days' is a required property"),
        (JSON_SCHEMA, "Sure! Here is your trip: Lisbon", "not JSON"),
        ({"type": "json_object"}, [1, 2], "not a JSON object"),
    ],
    ids=["out-of-range", "missing", "prose", "not-an-object"],
)
async def test_an_invalid_answer_is_a_502_problem(
    make_app: MakeApp,
    upstream: FakeUpstream,
    response_format: dict[str, Any],
    answer: Any,
    message: str,
) -> None:
    app = await make_app()
    upstream.chunks = json_chunks(answer)
    async with http(app) as client:
        response = await client.post(CHAT, json=ask(response_format))
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "ai-invalid-structured-output"
    assert any(message in error["message"] for error in problem["errors"]), problem
    # The call reached the model and is charged like any other.
    [row] = await ledger(app)
    assert row.outcome == "ok"
    assert row.total_tokens > 0


async def test_streamed_answers_are_checked_at_the_end(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app()
    async with http(app) as client:
        upstream.chunks = json_chunks({"city": "Lisbon", "days": 2})
        good = await client.post(CHAT, json=ask(JSON_SCHEMA, stream=True))
        upstream.chunks = json_chunks({"city": "Lisbon", "days": "two"})
        bad = await client.post(CHAT, json=ask(JSON_SCHEMA, stream=True))
    assert good.status_code == 200
    assert [name for name, _ in events(good.text)][-1] == "usage"
    assert bad.status_code == 200  # the stream had started
    *deltas, (name, error) = events(bad.text)
    assert {n for n, _ in deltas} == {"delta"}
    assert name == "error"
    assert error["status"] == 502
    assert error["type"] == "ai-invalid-structured-output"
    assert "'two' is not of type 'integer'" in error["errors"][0]["message"]


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "nonsense"}}},
        {"type": "json_schema", "json_schema": {"name": "t", "schema": {"minimum": "one"}}},
        {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": SCHEMA}},
        {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
        {"type": "xml"},
    ],
    ids=["unknown-type", "bad-keyword", "bad-name", "no-name", "unknown-format"],
)
async def test_a_bad_schema_is_422_and_nothing_is_sent(
    make_app: MakeApp, upstream: FakeUpstream, response_format: dict[str, Any]
) -> None:
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json=ask(response_format))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert upstream.calls == 0
    assert await ledger(app) == []


# --- with tools: the final answer, after the tool rounds, is the one checked ----------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_with_tools_the_final_answer_is_checked(
    make_app: MakeApp, upstream: FakeUpstream, stream: bool
) -> None:
    """A round of tool calls first (no text to check), then the answer: a conforming one
    passes; an invalid one is the 502 problem (for a stream, its `error` event), and every
    round, the tool's included, stays charged."""
    app = await make_app(monthly_token_quota=10**6)
    request = {**ask(JSON_SCHEMA, stream=stream), "tools": ["get_usage"]}
    async with http(app) as client:
        upstream.tool_script = [[("get_usage", "{}")]]
        upstream.chunks = json_chunks({"city": "Lisbon", "days": 3})
        good = await client.post(CHAT, json=request)
        upstream.tool_script = [[("get_usage", "{}")]]
        upstream.chunks = json_chunks({"city": "Lisbon", "days": 0})
        bad = await client.post(CHAT, json=request)
    assert good.status_code == 200, good.text
    # Every round went upstream with the format and the tools.
    assert len(upstream.requests) == 4
    assert all(r["response_format"] == JSON_SCHEMA for r in upstream.requests)
    assert all(r["tools"][0]["function"]["name"] == "get_usage" for r in upstream.requests)
    if stream:
        found = events(good.text)
        assert [name for name, _ in found][:2] == ["tool_call", "tool_result"]
        assert found[-1][0] == "usage"
        assert found[-1][1]["steps"] == 2
        text = "".join(data["content"] for name, data in found if name == "delta")
        assert json.loads(text) == {"city": "Lisbon", "days": 3}
        assert bad.status_code == 200  # the stream had started
        *before, (name, error) = events(bad.text)
        assert [n for n, _ in before][:2] == ["tool_call", "tool_result"]
        assert name == "error"
    else:
        assert good.json()["steps"] == 2
        assert json.loads(good.json()["content"]) == {"city": "Lisbon", "days": 3}
        assert bad.status_code == 502, bad.text
        assert bad.headers["content-type"] == "application/problem+json"
        error = bad.json()
    assert error["status"] == 502
    assert error["type"] == "ai-invalid-structured-output"
    assert "0 is less than the minimum of 1" in error["errors"][0]["message"]
    rows = await ledger(app)
    assert [(r.outcome, r.streamed) for r in rows] == [("ok", stream)] * 4
