"""A fake OpenAI-compatible server on 127.0.0.1, with switches for the failures to test."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REPLY = ["Hello", " there", ",", " friend", "!"]
PROMPT_TOKENS = 12
UPSTREAM_SECRET = "upstream-internal-detail-do-not-leak"
TOOL_CALL_TOKENS = 9  # completion tokens the fake reports per tool call


@dataclass
class FakeUpstream:
    """Answers POST /v1/chat/completions. Set the switches before a request.

    mode: "ok", "429", "500", "400", "disconnect" (closes the connection unanswered).
    fail_times: answer `mode` this many times, then "ok" (None: always `mode`).
    """

    delay: float = 0.0
    mode: str = "ok"
    fail_times: int | None = None
    retry_after: str | None = None
    chunk_interval: float = 0.0
    break_after: int | None = None  # streams: drop the connection after this many chunks
    chunks: list[str] = field(default_factory=lambda: list(REPLY))
    prompt_tokens: int = PROMPT_TOKENS  # the prompt tokens it reports
    bill_max_tokens: bool = False  # report the request's max_tokens as the completion's
    calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    aborted_streams: int = 0
    finished_streams: int = 0
    url: str = ""
    # Tool calling: per request that offers tools (and does not say tool_choice "none"),
    # the next entry's calls are the answer: [(name, arguments JSON text), ...]. With
    # none left, it answers with `chunks` as usual. `always_call` answers every such
    # request with these calls (a model that never stops calling tools).
    tool_script: list[list[tuple[str, str]]] = field(default_factory=list)
    always_call: list[tuple[str, str]] | None = None

    def reset(self) -> None:
        fresh = FakeUpstream(url=self.url)
        self.__dict__.update(fresh.__dict__)

    @property
    def usage(self) -> dict[str, int]:
        return self.usage_for({})

    def usage_for(self, body: dict[str, Any]) -> dict[str, int]:
        completion = len(self.chunks)
        if self.bill_max_tokens:
            completion = int(body["max_tokens"])
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.json()
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.delay:
            await asyncio.sleep(self.delay)
        mode = self.mode
        if self.fail_times is not None:
            mode = mode if self.fail_times > 0 else "ok"
            self.fail_times -= 1
        if mode == "disconnect":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if mode != "ok":
            status = int(mode)
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            error = {"message": UPSTREAM_SECRET, "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=status, headers=headers)
        calls = self._tool_calls(body)
        if calls:
            return await self._tool_answer(request, body, calls)
        if body.get("stream"):
            return await self._stream(request, body)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(self.chunks)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self.usage_for(body),
            }
        )

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": choices,
                "usage": usage,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        try:
            for i, text in enumerate(self.chunks):
                if i == self.break_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                last = i == len(self.chunks) - 1
                choice = {
                    "index": 0,
                    "delta": {"content": text},
                    "finish_reason": "stop" if last else None,
                }
                await response.write(chunk([choice]))
                if self.chunk_interval:
                    await asyncio.sleep(self.chunk_interval)
            if (body.get("stream_options") or {}).get("include_usage"):
                await response.write(chunk([], self.usage_for(body)))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.aborted_streams += 1
            raise
        self.finished_streams += 1
        return response

    # --- tool calls ------------------------------------------------------------------

    def _tool_calls(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        if not body.get("tools") or body.get("tool_choice") == "none":
            return []
        if self.always_call is not None:
            return self.always_call
        return self.tool_script.pop(0) if self.tool_script else []

    async def _tool_answer(
        self, request: web.Request, body: dict[str, Any], calls: list[tuple[str, str]]
    ) -> web.StreamResponse:
        """An answer that calls tools (ids "call_<request>_<n>"), plain or streamed."""
        ids = [f"call_{self.calls}_{n}" for n in range(len(calls))]
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": TOOL_CALL_TOKENS * len(calls),
            "total_tokens": self.prompt_tokens + TOOL_CALL_TOKENS * len(calls),
        }
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": i, "type": "function", "function": {"name": name, "arguments": args}}
                    for i, (name, args) in zip(ids, calls, strict=True)
                ],
            }
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return web.json_response(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]], usage: Any = None) -> None:
            data = {**base, "object": "chat.completion.chunk", "choices": choices, "usage": usage}
            await response.write(f"data: {json.dumps(data)}\n\n".encode())

        for index, (call_id, (name, args)) in enumerate(zip(ids, calls, strict=True)):
            # The call in pieces, as OpenAI streams it: id and name first, then the arguments.
            head = {"index": index, "id": call_id, "type": "function"}
            head["function"] = {"name": name, "arguments": ""}
            await send([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}])
            middle = len(args) // 2
            for piece in (args[:middle], args[middle:]):
                delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                await send([{"index": 0, "delta": delta, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.finished_streams += 1
        return response


def json_chunks(value: Any, pieces: int = 3) -> list[str]:
    """An answer that is `value` as JSON, in `pieces` deltas (set as `FakeUpstream.chunks`).

    A string is taken as the answer's text as is (invalid JSON, for the failure cases).
    """
    text = value if isinstance(value, str) else json.dumps(value)
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


async def start(fake: FakeUpstream, port: int = 0) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/v1"
    return runner
