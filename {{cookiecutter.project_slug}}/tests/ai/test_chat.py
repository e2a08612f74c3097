"""Chat through the real `openai` client against the fake upstream, on both backends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from httpx import Response

from tests.ai.conftest import API_KEY, SIGNED_IN, TEST_USER_ID, MakeApp, http, ledger
from tests.ai.fake_upstream import PROMPT_TOKENS, REPLY, UPSTREAM_SECRET, FakeUpstream, start
from tests.loopback import free_port

CHAT = "/api/v1/ai/chat"
HELLO = {"messages": [{"role": "user", "content": "Say hello"}]}


def events(response: Response) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def assert_clean(response: Response) -> None:
    """A problem document that leaks neither the key nor the upstream's own words."""
    assert response.headers["content-type"] == "application/problem+json"
    assert API_KEY not in response.text
    assert UPSTREAM_SECRET not in response.text


async def test_plain_chat(make_app: MakeApp, upstream: FakeUpstream) -> None:
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={**HELLO, "temperature": 0.2, "max_tokens": 50})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "content": "".join(REPLY),
        "model": "test-model",
        "finish_reason": "stop",
        "usage": upstream.usage,
    }
    sent = upstream.requests[0]
    assert sent["model"] == "test-model"
    assert sent["messages"] == HELLO["messages"]
    assert sent["temperature"] == 0.2
    assert sent["max_tokens"] == 50
    assert upstream.headers[0]["authorization"] == f"Bearer {API_KEY}"
    assert upstream.headers[0]["x-stainless-retry-count"] == "0"
    [row] = await ledger(app)
    assert (row.model, row.outcome, row.streamed) == ("test-model", "ok", False)
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_TOKENS, len(REPLY))
    assert row.total_tokens == upstream.usage["total_tokens"]
    assert row.user_id == TEST_USER_ID
    assert row.request_id == response.headers["x-request-id"]
    assert row.latency_ms >= 0


async def test_streamed_chat(make_app: MakeApp, upstream: FakeUpstream) -> None:
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    received = events(response)
    deltas = [data["content"] for name, data in received if name == "delta"]
    assert deltas == REPLY
    name, final = received[-1]
    assert name == "usage"
    assert final == {"model": "test-model", "finish_reason": "stop", **upstream.usage}
    assert upstream.requests[0]["stream"] is True
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    [row] = await ledger(app)
    assert (row.outcome, row.streamed) == ("ok", True)
    assert row.total_tokens == upstream.usage["total_tokens"]


async def test_usage_totals_for_the_caller(make_app: MakeApp, upstream: FakeUpstream) -> None:
    app = await make_app(monthly_token_quota=1000)
    async with http(app) as client:
        await client.post(CHAT, json=HELLO)
        await client.post(CHAT, json={**HELLO, "stream": True})
        response = await client.get("/api/v1/ai/usage")
    assert response.status_code == 200
    body = response.json()
    used = 2 * upstream.usage["total_tokens"]
    assert (body["tokens"], body["requests"]) == (used, 2)
    assert (body["quota"], body["remaining"]) == (1000, 1000 - used)
    assert body["period_start"] < body["resets_at"]


async def test_quota_exceeded_before_any_upstream_call(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app(monthly_token_quota=upstream.usage["total_tokens"])
    async with http(app) as client:
        first = await client.post(CHAT, json=HELLO)
        assert first.status_code == 200
        over = await client.post(CHAT, json=HELLO)
        streamed = await client.post(CHAT, json={**HELLO, "stream": True})
    assert upstream.calls == 1
    for response in (over, streamed):
        assert response.status_code == 429
        assert_clean(response)
        body = response.json()
        assert "quota" in body["detail"]
        assert body["resets_at"] in body["detail"]
        assert int(response.headers["retry-after"]) >= 1


async def test_quota_zero_means_unlimited(make_app: MakeApp, upstream: FakeUpstream) -> None:
    app = await make_app(monthly_token_quota=0)
    async with http(app) as client:
        for _ in range(3):
            assert (await client.post(CHAT, json=HELLO)).status_code == 200
        usage = (await client.get("/api/v1/ai/usage")).json()
    assert usage["quota"] is None
    assert usage["remaining"] is None


async def test_timeout_is_504(make_app: MakeApp, upstream: FakeUpstream) -> None:
    upstream.delay = 1.0
    app = await make_app(timeout=0.2)
    async with http(app) as client:
        response = await client.post(CHAT, json=HELLO)
        streamed = await client.post(CHAT, json={**HELLO, "stream": True})
    for r in (response, streamed):
        assert r.status_code == 504
        assert_clean(r)
    assert [row.outcome for row in await ledger(app)] == ["timeout", "timeout"]


async def test_upstream_429_gives_429_with_retry_after(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.mode, upstream.retry_after = "429", "7"
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json=HELLO)
        streamed = await client.post(CHAT, json={**HELLO, "stream": True})
    for r in (response, streamed):
        assert r.status_code == 429
        assert r.headers["retry-after"] == "7"
        assert_clean(r)
    assert [row.outcome for row in await ledger(app)] == ["rate_limited", "rate_limited"]


@pytest.mark.parametrize("mode", ["500", "400", "disconnect"])
async def test_upstream_failure_is_502(
    make_app: MakeApp, upstream: FakeUpstream, mode: str
) -> None:
    upstream.mode = mode
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json=HELLO)
        streamed = await client.post(CHAT, json={**HELLO, "stream": True})
    for r in (response, streamed):
        assert r.status_code == 502
        assert_clean(r)
    assert [row.outcome for row in await ledger(app)] == ["upstream_error"] * 2


@pytest.mark.parametrize("failure", ["500", "429", "disconnect", "timeout"])
async def test_a_request_the_provider_may_have_received_is_never_retried(
    make_app: MakeApp, upstream: FakeUpstream, failure: str
) -> None:
    """The SDK would retry each of these (up to 3 bills for one answer); we never do."""
    if failure == "timeout":
        upstream.delay = 1.0
    else:
        upstream.mode, upstream.retry_after = failure, "0.01"
    app = await make_app(max_retries=2, timeout=0.3)
    async with http(app) as client:
        plain = await client.post(CHAT, json=HELLO)
        streamed = await client.post(CHAT, json={**HELLO, "stream": True})
    assert plain.status_code >= 429
    assert streamed.status_code == plain.status_code
    assert upstream.calls == 2  # one each
    assert [h["x-stainless-retry-count"] for h in upstream.headers] == ["0", "0"]


async def test_a_refused_connection_is_retried(make_app: MakeApp, upstream: FakeUpstream) -> None:
    """Nothing listens at first: the request never left, so it is safe to send again.

    The upstream starts listening `delay` seconds after the request: after the client's
    first attempt and, mostly, before its first retry (which waits at least 0.5 s). On a
    busy machine the first attempt may come later than that; the upstream then answers it
    at once (retry count 0) and the scenario runs again with a longer delay (bounded). A
    busy machine may also start listening after the first retry: the second one (count 2)
    shows the same thing.
    """
    url = upstream.url
    counts: list[str] = []
    for delay in (0.1, 0.25, 0.4, 0.8):
        port = free_port()
        app = await make_app(max_retries=2, openai_base_url=f"http://127.0.0.1:{port}/v1")
        runner: web.AppRunner | None = None

        async def listen_soon(port: int = port, delay: float = delay) -> None:
            nonlocal runner
            await asyncio.sleep(delay)
            runner = await start(upstream, port)

        # The client is built at the first chat: now, so its first attempt comes early.
        assert app.state.ai.backend is not None
        before = upstream.calls
        try:
            async with http(app) as client:
                listening = asyncio.create_task(listen_soon())
                response = await client.post(CHAT, json=HELLO)
                await listening
        finally:
            if runner is not None:
                await runner.cleanup()
            upstream.url = url
        assert response.status_code == 200, response.text
        assert upstream.calls == before + 1  # refused attempts never reached it
        counts.append(upstream.headers[-1]["x-stainless-retry-count"])
        if counts[-1] != "0":
            break
    assert counts[-1] in ("1", "2"), f"no attempt came before the upstream listened: {counts}"


async def test_disallowed_model_is_422(make_app: MakeApp, upstream: FakeUpstream) -> None:
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={**HELLO, "model": "gpt-expensive"})
        allowed = await client.post(CHAT, json={**HELLO, "model": "other-model"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "gpt-expensive" in response.json()["detail"]
    assert allowed.status_code == 200
    assert upstream.calls == 1


async def test_invalid_body_is_422(make_app: MakeApp, upstream: FakeUpstream) -> None:
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={"messages": [], "temperature": 9})
    assert response.status_code == 422
    assert upstream.calls == 0


@pytest.mark.skipif(SIGNED_IN, reason="with auth the limit counts per user")
async def test_rate_limited_per_address_without_auth(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    app = await make_app(rate_limit="2/minute")
    async with http(app) as client:
        statuses = [(await client.post(CHAT, json=HELLO)).status_code for _ in range(3)]
        limited = await client.post(CHAT, json=HELLO)
    assert statuses == [200, 200, 429]
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) >= 1
    assert upstream.calls == 2


async def test_upstream_breaking_mid_stream_ends_with_an_error_event(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    upstream.break_after = 2
    app = await make_app()
    async with http(app) as client:
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    assert response.status_code == 200  # the stream had started
    received = events(response)
    assert [name for name, _ in received] == ["delta", "delta", "error"]
    assert received[-1][1]["status"] == 502
    assert API_KEY not in response.text
    [row] = await ledger(app)
    assert (row.outcome, row.completion_tokens) == ("upstream_error", 2)


async def test_both_backends_send_the_same_request(
    make_app: MakeApp, upstream: FakeUpstream
) -> None:
    for transport in ("fast", "sdk"):
        app = await make_app(transport=transport)
        async with http(app) as client:
            assert (await client.post(CHAT, json=HELLO)).status_code == 200
            assert (await client.post(CHAT, json={**HELLO, "stream": True})).status_code == 200
    fast_plain, fast_stream, sdk_plain, sdk_stream = upstream.requests
    assert fast_plain == sdk_plain
    assert fast_stream == sdk_stream
    # The same headers, apart from what the transport itself decides.
    transport_headers = {"host", "content-length", "accept-encoding", "connection"}
    fast, _, sdk, _ = (
        {k: v for k, v in h.items() if k not in transport_headers} for h in upstream.headers
    )
    assert fast == sdk
