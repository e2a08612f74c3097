"""The tool loop: ask the model, run the tools it calls, send the results back, repeat.

Each round is one upstream call, metered like any chat call (`calls.complete_metered`,
or the same reservation and ledger row for a streamed step): its estimated prompt
plus `max_tokens` is reserved before it (the usual 429 when the quota is used up,
which ends the loop) and it is charged after it, one ledger row per step. After
AI_MAX_TOOL_STEPS rounds of tool calls the model is asked once more with
`tool_choice: "none"` for its final answer (the tools stay listed, so the history
stays valid); tool calls it makes anyway are not run.

Used by `POST /chat` with `tools`; `ToolLoop(...)` takes any message history, and
`added` holds what the loop appended to it (assistant tool-call messages, the tool
results, the final answer) for a caller that stores the exchange.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from fastapi import FastAPI, Request, Response

from {{ cookiecutter.package_name }}.core.errors import ProblemError

from . import structured, tokens
from .calls import (
    Answered,
    OnAnswer,
    StreamSlot,
    complete_metered,
    error_event,
    gone_or_failed,
    invalid_output_event,
)
from .dependencies import AI
from .exceptions import never_sent, upstream_failure
from .schemas import ChatRequest, ChatResponse, ToolCallRead, Usage
from .service import Caller, Entry
from .streaming import EventStreamResponse, sse
from .tools import Tool, ToolCall, run_call

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessage

    from .client import ChatStream


def calls_of(message: ChatCompletionMessage | None) -> list[ToolCall]:
    """The function calls of an answer (ids made up where a server gives none)."""
    calls: list[ToolCall] = []
    for number, call in enumerate((message.tool_calls if message else None) or ()):
        function: Any = getattr(call, "function", None)
        if function is None:
            continue
        calls.append(
            ToolCall(
                id=call.id or f"call_{number}",
                name=function.name or "",
                arguments=function.arguments or "",
            )
        )
    return calls


class _Collected:
    """The tool calls of a streamed answer, put together from their pieces."""

    def __init__(self) -> None:
        self.parts: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.size = 0

    def add(self, chunk: ChatCompletionChunk) -> None:
        if not chunk.choices:
            return
        for piece in chunk.choices[0].delta.tool_calls or ():
            parts = self.parts.setdefault(piece.index, ["", "", ""])
            if piece.id:
                parts[0] = piece.id
            if piece.function is not None:
                name, arguments = piece.function.name or "", piece.function.arguments or ""
                parts[1] += name
                parts[2] += arguments
                self.size += tokens.text_size(name + arguments)

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=parts[0] or f"call_{index}", name=parts[1], arguments=parts[2])
            for index, parts in sorted(self.parts.items())
        ]


class ToolLoop:
    """One request's rounds of tool calls (plain with `respond`, streamed with `stream`)."""

    def __init__(
        self,
        ai: AI,
        caller: Caller,
        *,
        app: FastAPI,
        model: str,
        max_tokens: int,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        tools: list[Tool[Any]],
        request_id: str | None,
        streamed: bool,
        on_answer: OnAnswer | None = None,
    ) -> None:
        self.ai = ai
        self.caller = caller
        self.app = app
        self.model = model
        self.max_tokens = max_tokens
        self.body = body  # model, cap, temperature...: all but the messages and tools
        self.messages = messages  # what goes upstream; the loop appends to it
        self.tools = tools
        self.request_id = request_id
        self.streamed = streamed
        self.on_answer = on_answer  # called once with the answer, as `router.answer` does
        self.added: list[dict[str, Any]] = []  # what the loop appended
        self.calls: list[ToolCall] = []
        self.steps = 0
        self.prompt_tokens = 0  # charged, all steps together
        self.completion_tokens = 0
        self.schemas = [t.schema for t in tools]
        self._schema_tokens = tokens.text_tokens(json.dumps(self.schemas))

    @classmethod
    def for_chat(
        cls,
        ai: AI,
        caller: Caller,
        chat: ChatRequest,
        request: Request,
        body: dict[str, Any],
        max_tokens: int,
        tools: list[Tool[Any]],
        on_answer: OnAnswer | None = None,
    ) -> ToolLoop:
        """The loop of a chat request whose upstream body (`router.upstream_body`) is `body`."""
        rest = {k: v for k, v in body.items() if k != "messages"}
        return cls(
            ai,
            caller,
            app=request.app,
            model=body["model"],
            max_tokens=max_tokens,
            body=rest,
            messages=list(body["messages"]),
            tools=tools,
            request_id=getattr(request.state, "request_id", None),
            streamed=chat.stream,
            on_answer=on_answer,
        )

    async def run(self) -> Response:
        return await (self.stream() if self.streamed else self.respond())

    # --- one step ----------------------------------------------------------------

    def _body(self, final: bool) -> dict[str, Any]:
        body = {**self.body, "messages": self.messages, "tools": self.schemas}
        if final:
            body["tool_choice"] = "none"
        if self.streamed:
            body["stream_options"] = {"include_usage": True}
        return body

    def _entry(self) -> Entry:
        return Entry(
            caller=self.caller,
            model=self.model,
            streamed=self.streamed,
            request_id=self.request_id,
            started=time.perf_counter(),
            estimated_prompt=tokens.message_tokens(self.messages) + self._schema_tokens,
        )

    def _charge(self, entry: Entry) -> None:
        prompt, completion = entry.charged()
        self.steps += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def _add(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.added.append(message)

    def _asked(self, content: str, calls: list[ToolCall]) -> None:
        self._add(
            {
                "role": "assistant",
                "content": content or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in calls
                ],
            }
        )

    async def _run(self, call: ToolCall) -> ToolCall:
        settings = self.ai.settings
        try:
            await run_call(
                call,
                self.tools,
                app=self.app,
                caller=self.caller,
                request_id=self.request_id,
                seconds=settings.tool_timeout,
                max_chars=settings.max_tool_result_chars,
            )
        except BaseException:
            # Cancelled mid-tool (the client left): the call is answered all the same, so
            # the rounds stored with a cut-off answer never hold a call without its result.
            call.fail("The request ended before the tool finished.")
            raise
        finally:
            self.calls.append(call)
            self._add(call.message)
        return call

    def _problems(self, content: str) -> list[dict[str, Any]]:
        """What is wrong with a final answer under the request's `response_format`."""
        response_format = self.body.get("response_format")
        return structured.answer_problems(response_format, content) if response_format else []

    async def _store(self, content: str, model: str, *, cut_off: bool) -> None:
        """Hand the answer, with the rounds before it, to `on_answer` (once)."""
        call, self.on_answer = self.on_answer, None
        if call is None:
            return
        steps = self.added if cut_off else self.added[:-1]  # not the final answer itself
        answered = Answered(
            content,
            model,
            self.prompt_tokens,
            self.completion_tokens,
            cut_off=cut_off,
            steps=list(steps),
        )
        with anyio.CancelScope(shield=True):
            await call(answered)

    def _usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )

    # --- plain ---------------------------------------------------------------------

    async def respond(self) -> Response:
        limit = self.ai.settings.max_tool_steps
        for step in range(limit + 1):
            final = step == limit
            entry = self._entry()
            body = self._body(final)
            completion = await complete_metered(self.ai, entry, body, self.max_tokens)
            self._charge(entry)
            choice = completion.choices[0] if completion.choices else None
            message = choice.message if choice else None
            content = (message.content or "") if message else ""
            calls = calls_of(message)
            if calls and not final:
                self._asked(content, calls)
                for call in calls:
                    await self._run(call)
                continue
            errors = self._problems(content)
            if errors:
                raise structured.invalid_output(errors)
            self._add({"role": "assistant", "content": content})
            model = completion.model or self.model
            await self._store(content, model, cut_off=False)
            answer = ChatResponse(
                content=content,
                model=model,
                finish_reason=choice.finish_reason if choice else None,
                usage=self._usage(),
                steps=self.steps,
                tool_calls=[self._read(call) for call in self.calls],
            )
            return Response(answer.model_dump_json(), media_type="application/json")
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _read(call: ToolCall) -> ToolCallRead:
        return ToolCallRead(
            id=call.id,
            name=call.name,
            arguments=call.arguments,
            result=call.result,
            error=call.error,
        )

    # --- streamed ------------------------------------------------------------------

    async def stream(self) -> Response:
        """Deltas, `tool_call` and `tool_result` events, and one `usage` at the end.

        The first step opens before the response starts (its failures are problem
        answers, as for plain chat); a later step's failure, the quota included, is an
        `error` event. The request holds one of the caller's stream slots throughout.
        """
        import openai  # imported by the backend already

        ai, caller = self.ai, self.caller
        slot = StreamSlot(ai, caller)
        upstream: ChatStream | None = None
        entry: Entry | None = None  # the step in flight: reserved, not yet charged

        async def settle_step() -> None:
            """Close the step's upstream and charge it (once)."""
            nonlocal upstream, entry
            with anyio.CancelScope(shield=True):
                current, upstream = upstream, None
                step, entry = entry, None
                try:
                    if current is not None:
                        await current.aclose()
                finally:
                    if step is not None:
                        await ai.metering.record(step)
                        self._charge(step)

        async def finish() -> None:
            await slot.close(settle_step)

        async def open_step(final: bool) -> ChatStream:
            """Reserve and open one step (its upstream failures raise OpenAIError)."""
            nonlocal entry, upstream
            step = self._entry()
            step.outcome = "cancelled"  # until its answer has been read to the end
            step.reservation = await ai.metering.reserve(
                caller, step.estimated_prompt + self.max_tokens
            )
            entry = step
            try:
                upstream = await ai.backend.open_stream(self._body(final))
            except openai.OpenAIError as exc:
                step.reached = not never_sent(exc)
                raise
            return upstream

        try:
            first = await open_step(final=False)
        except openai.OpenAIError as exc:
            problem, outcome = upstream_failure(exc, timeout=ai.settings.timeout)
            if entry is not None:
                entry.outcome = outcome
            await finish()
            raise problem from None
        except BaseException as exc:
            if entry is not None:
                entry.outcome = gone_or_failed(exc)
            await finish()
            raise

        limit = ai.settings.max_tool_steps

        async def events() -> AsyncIterator[bytes]:
            current: ChatStream | None = first
            model, finish_reason = self.model, None
            content = ""  # the answer so far of the round in flight
            try:
                for step in range(limit + 1):
                    final = step == limit
                    if current is None:
                        try:
                            current = await open_step(final)
                        except ProblemError as refused:  # the quota, before this step's call
                            yield error_event(refused)
                            return
                    assert entry is not None
                    entry.outcome = "cancelled"
                    relayed, collected = tokens.Relayed(), _Collected()
                    content = ""
                    async for chunk in current:
                        model = chunk.model or model
                        if chunk.usage is not None:
                            entry.prompt_tokens = chunk.usage.prompt_tokens
                            entry.completion_tokens = chunk.usage.completion_tokens
                        if not chunk.choices:
                            continue
                        choice = chunk.choices[0]
                        finish_reason = choice.finish_reason or finish_reason
                        collected.add(chunk)
                        text = choice.delta.content or ""
                        if text:
                            content += text
                            relayed.add(text)
                            yield sse("delta", {"content": text})
                        size = relayed.size + collected.size
                        entry.estimated_completion = max(
                            relayed.pieces, size // tokens.BYTES_PER_TOKEN
                        )
                    entry.outcome = "ok"
                    current = None
                    await settle_step()
                    calls = collected.calls()
                    if calls and not final:
                        self._asked(content, calls)
                        for call in calls:
                            yield sse(
                                "tool_call",
                                {"id": call.id, "name": call.name, "arguments": call.arguments},
                            )
                            await self._run(call)
                            result: dict[str, Any] = {"id": call.id, "name": call.name}
                            if call.error is None:
                                result["result"] = call.result
                            else:
                                result["error"] = call.error
                            yield sse("tool_result", result)
                        content = ""
                        continue
                    errors = self._problems(content)
                    if errors:
                        self.on_answer = None  # an invalid answer is not stored
                        yield invalid_output_event(errors)
                        return
                    self._add({"role": "assistant", "content": content})
                    await self._store(content, model, cut_off=False)
                    usage = self._usage()
                    yield sse(
                        "usage",
                        {
                            "model": model,
                            "finish_reason": finish_reason,
                            **usage.model_dump(),
                            "steps": self.steps,
                        },
                    )
                    return
            except openai.OpenAIError as exc:
                problem, outcome = upstream_failure(exc, timeout=ai.settings.timeout)
                if entry is not None:
                    entry.outcome = outcome
                yield error_event(problem)
            finally:
                await finish()
                try:
                    await self._store(content, model, cut_off=True)  # unless stored already
                except Exception as exc:  # the client has gone: nobody to tell but the log
                    log.error("ai_answer_not_stored", exc_info=exc)

        return EventStreamResponse(events(), on_close=finish)
