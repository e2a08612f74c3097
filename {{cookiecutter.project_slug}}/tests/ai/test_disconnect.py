"""A client that leaves mid-stream: upstream cancelled, ledger row written, no error.

This needs a real server (uvicorn on loopback): only a real connection can be dropped.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from {{ cookiecutter.package_name }}.ai import tokens
from {{ cookiecutter.package_name }}.ai.schemas import Message
from tests.ai.conftest import MakeApp, ledger
from tests.ai.fake_upstream import FakeUpstream
from tests.loopback import serving


async def test_client_disconnect_mid_stream(
    make_app: MakeApp, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.chunks = [f" word{i}" for i in range(100)]
    upstream.chunk_interval = 0.02  # two seconds in all, if nobody stops it
    app = await make_app()
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # the app's logging setup replaced the root's handlers
    try:
        async with (
            serving(app) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            async with client.stream(
                "POST",
                "/api/v1/ai/chat",
                json={"messages": [{"role": "user", "content": "go"}], "stream": True},
            ) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break  # the first delta arrived: hang up
            rows = []
            for _ in range(500):  # up to 10 s
                rows = await ledger(app)
                if rows and upstream.aborted_streams:
                    break
                await asyncio.sleep(0.02)
    finally:
        root.removeHandler(caplog.handler)
    [row] = rows
    assert row.outcome == "cancelled"
    assert row.streamed is True
    # Charged the prompt's estimate (no usage came) and at least a token per delta relayed.
    assert row.prompt_tokens == tokens.prompt_tokens([Message(role="user", content="go")]) > 0
    assert 1 <= row.completion_tokens < len(upstream.chunks)
    assert upstream.aborted_streams == 1, "the upstream request was not cancelled"
    assert upstream.finished_streams == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
