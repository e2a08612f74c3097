"""Every outcome is charged at least the estimate; only a request that never left is free."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.ai import tokens
from {{ cookiecutter.package_name }}.ai.schemas import Message
from tests.ai.conftest import MakeApp, http, ledger
from tests.ai.fake_upstream import REPLY, FakeUpstream
from tests.loopback import free_port

CHAT = "/api/v1/ai/chat"
# Long enough that the estimate is well above the fake's reported 12 prompt tokens.
PROMPT = "Please summarise the following paragraph in one sentence. " * 20
ASK = {"messages": [{"role": "user", "content": PROMPT}]}
ESTIMATE = tokens.prompt_tokens([Message(role="user", content=PROMPT)])


def test_the_estimate_is_about_four_bytes_per_token() -> None:
    hello = [Message(role="user", content="Say hello")]
    assert tokens.prompt_tokens(hello) == 3 + 4 + 2
    assert tokens.text_tokens("x" * 400) == 100
    assert tokens.text_tokens("日本語" * 100) == 225  # 3 bytes a character
    assert ESTIMATE > 12


@pytest.mark.parametrize("stream", [False, True])
async def test_a_timeout_is_charged_the_prompt_estimate(
    make_app: MakeApp, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.delay = 1.0
    app = await make_app(timeout=0.2)
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "stream": stream})
    assert response.status_code == 504
    [row] = await ledger(app)
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("timeout", ESTIMATE, 0)
    assert row.total_tokens == ESTIMATE


@pytest.mark.parametrize("mode", ["500", "disconnect"])
async def test_an_upstream_failure_after_sending_is_charged_the_estimate(
    make_app: MakeApp, upstream: FakeUpstream, mode: str
) -> None:
    upstream.mode = mode
    app = await make_app()
    async with http(app) as client:
        assert (await client.post(CHAT, json=ASK)).status_code == 502
    [row] = await ledger(app)
    assert (row.outcome, row.prompt_tokens) == ("upstream_error", ESTIMATE)


async def test_a_request_that_never_left_is_not_charged(make_app: MakeApp) -> None:
    app = await make_app(openai_base_url=f"http://127.0.0.1:{free_port()}/v1")
    async with http(app) as client:
        assert (await client.post(CHAT, json=ASK)).status_code == 502
    [row] = await ledger(app)
    assert (row.outcome, row.total_tokens) == ("upstream_error", 0)


@pytest.mark.parametrize("stream", [False, True])
async def test_reported_usage_below_the_estimate_is_charged_the_estimate(
    make_app: MakeApp, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.prompt_tokens = 1
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "stream": stream})
    assert response.status_code == 200
    [row] = await ledger(app)
    assert (row.prompt_tokens, row.completion_tokens) == (ESTIMATE, len(REPLY))


async def test_a_stream_that_breaks_is_charged_the_prompt_and_what_was_relayed(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.chunks = ["word " * 40] * 5  # 200 bytes a delta: about 50 tokens each
    upstream.break_after = 2
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={**ASK, "stream": True})
    assert response.status_code == 200
    [row] = await ledger(app)
    assert row.outcome == "upstream_error"
    assert (row.prompt_tokens, row.completion_tokens) == (ESTIMATE, 100)
