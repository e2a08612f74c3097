"""HTTP endpoints of the AI module: chat (plain or streamed) and the caller's usage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from fastapi import APIRouter, Request, Response

from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.errors import ProblemError
from {{ cookiecutter.package_name }}.core.ratelimit import get_rate_limiter

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
from .config import AISettings
from .dependencies import AI, AIState, ai_state, require_ai
from .exceptions import never_sent, upstream_failure
from .loop import ToolLoop
from .schemas import ChatRequest, ChatResponse, ToolRead, Usage, UsageSummary
from .seams import CallerDep, overage_billing
from .service import Caller, Entry, at_midnight, next_period, period_start
from .streaming import EventStreamResponse, sse
from .tools import Tool, registry

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk

    from .client import ChatStream

log = structlog.get_logger(__name__)


async def enforce_rate_limit(request: Request, settings: AISettings, caller: Caller) -> None:
    """Count this request against AI_RATE_LIMIT for the caller."""
    item = settings.rate_limit_item
    if item is None:
        return
    route = request.scope.get("route")
    # Not getattr(route, "path", request.url.path): building request.url costs more.
    scope = f"ai:{route.path}" if route is not None else "ai"
    retry_after = await get_rate_limiter(request).hit(item, scope, caller.rate_key)
    if retry_after is not None:
        seconds = max(1, round(retry_after))
        raise ProblemError(
            429,
            f"Rate limit of {settings.rate_limit} exceeded; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )


router = APIRouter(prefix="/api/v1/ai", tags=["ai"])

PROBLEMS: dict[int | str, dict[str, Any]] = problems(
    {
        413: "More messages than AI_MAX_MESSAGES, or characters than AI_MAX_INPUT_CHARS",
        422: "Invalid request, or a model not in AI_ALLOWED_MODELS",
        429: "Rate limit, monthly quota, AI_MAX_CONCURRENT_STREAMS, or the provider's limit",
        502: "The AI provider failed or could not be reached",
        503: "OPENAI_API_KEY is not set",
        504: "The AI provider did not answer within AI_TIMEOUT",
    }
)


def upstream_body(
    chat: ChatRequest, model: str, max_tokens: int, settings: AISettings
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in chat.messages],
        # Always sent: what a call may use must be bounded to be reserved.
        settings.max_tokens_parameter: max_tokens,
    }
    if chat.temperature is not None:
        body["temperature"] = chat.temperature
    if chat.response_format is not None:
        body["response_format"] = chat.response_format.model_dump(by_alias=True, exclude_none=True)
    return body


def check_size(settings: AISettings, chat: ChatRequest) -> int:
    """413 for input over AI_MAX_MESSAGES / AI_MAX_INPUT_CHARS; the call's max_tokens."""
    if len(chat.messages) > settings.max_messages:
        raise ProblemError(
            413,
            f"At most {settings.max_messages} messages per request.",
            max_messages=settings.max_messages,
        )
    chars = sum(len(m.content) for m in chat.messages)
    if chars > settings.max_input_chars:
        raise ProblemError(
            413,
            f"At most {settings.max_input_chars} characters of messages per request.",
            max_input_chars=settings.max_input_chars,
        )
    if chat.max_tokens is None:
        return settings.max_tokens
    if chat.max_tokens > settings.max_tokens:
        raise ProblemError(
            422,
            f"max_tokens may be at most {settings.max_tokens}.",
            errors=[
                {"loc": ["body", "max_tokens"], "msg": "above AI_MAX_TOKENS", "type": "value_error"}
            ],
        )
    return chat.max_tokens


def choose_tools(request: Request, names: list[str], caller: Caller) -> list[Tool[Any]]:
    """The registered tools a request names (422 for any other name), each one the caller's
    credentials hold the scopes for (403 otherwise)."""
    tools = registry(request.app)
    wanted = list(dict.fromkeys(names))
    found = [t for t in map(tools.get, wanted) if t is not None]
    if len(found) < len(wanted):
        unknown = ", ".join(name for name in wanted if tools.get(name) is None)
        offered = ", ".join(t.name for t in tools) or "none"
        raise ProblemError(
            422,
            f"No such tool: {unknown}; the tools are: {offered}.",
            errors=[{"loc": ["body", "tools"], "msg": "unknown tool", "type": "value_error"}],
        )
    refused = {t.name: t.missing_scopes(caller.scopes) for t in found}
    refused = {name: missing for name, missing in refused.items() if missing}
    if refused:
        missing = sorted({scope for lacking in refused.values() for scope in lacking})
        raise ProblemError(
            403,
            f"Missing scope: {' '.join(missing)}, which the tool(s) {', '.join(refused)} need; "
            "the token or API key does not hold it.",
            missing_scopes=missing,
            tools=list(refused),
        )
    return found


def choose_model(ai: AI, chat: ChatRequest) -> str:
    model = chat.model or ai.settings.default_model
    if model not in ai.settings.models:
        allowed = ", ".join(sorted(ai.settings.models))
        raise ProblemError(
            422,
            f"Model {model!r} is not allowed; choose one of: {allowed}.",
            errors=[{"loc": ["body", "model"], "msg": "model not allowed", "type": "value_error"}],
        )
    return model


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "The completion, or with `stream: true` its deltas as events",
        },
        **PROBLEMS,
    },
)
async def chat(chat: ChatRequest, request: Request, caller: CallerDep) -> Response:
    return await answer(chat, request, caller)


async def answer(
    chat: ChatRequest, request: Request, caller: Caller, on_answer: OnAnswer | None = None
) -> Response:
    """A chat endpoint's work for a caller its dependency resolved (plain or streamed).

    `on_answer` (conversations) gets the answer to store: a complete one that conforms
    to the `response_format` if any, or a streamed one cut off by the client or the
    upstream. Never an error before the first byte, nor an invalid structured answer.
    """
    # In the body rather than in a dependency of their own, as /usage does: each
    # dependency costs FastAPI a few percent of this endpoint's CPU (docs/ai.md).
    ai = require_ai(request)
    await enforce_rate_limit(request, ai.settings, caller)
    model = choose_model(ai, chat)
    max_tokens = check_size(ai.settings, chat)
    if chat.tools:
        tools = choose_tools(request, chat.tools, caller)
        await ai.metering.check(caller)
        body = upstream_body(chat, model, max_tokens, ai.settings)
        loop = ToolLoop.for_chat(ai, caller, chat, request, body, max_tokens, tools, on_answer)
        return await loop.run()
    await ai.metering.check(caller)
    entry = Entry(
        caller=caller,
        model=model,
        streamed=chat.stream,
        request_id=getattr(request.state, "request_id", None),
        started=time.perf_counter(),
        estimated_prompt=tokens.prompt_tokens(chat.messages),
    )
    body = upstream_body(chat, model, max_tokens, ai.settings)
    if chat.stream:
        body["stream_options"] = {"include_usage": True}
        return await _stream(ai, entry, body, max_tokens, on_answer)
    completion = await complete_metered(ai, entry, body, max_tokens)
    choice = completion.choices[0] if completion.choices else None
    content = (choice.message.content or "") if choice else ""
    prompt, completion_tokens = entry.charged()
    if "response_format" in body:
        errors = structured.answer_problems(body["response_format"], content)
        if errors:
            raise structured.invalid_output(errors)
    model = completion.model or model
    if on_answer is not None:
        await on_answer(Answered(content, model, prompt, completion_tokens, cut_off=False))
    answer = ChatResponse.model_construct(
        content=content,
        model=model,
        finish_reason=choice.finish_reason if choice else None,
        usage=Usage.model_construct(
            prompt_tokens=prompt,
            completion_tokens=completion_tokens,
            total_tokens=prompt + completion_tokens,
        ),
    )
    return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json")


async def _stream(
    ai: AI, entry: Entry, body: dict[str, Any], max_tokens: int, on_answer: OnAnswer | None
) -> Response:
    import openai  # imported by the backend already

    slot = StreamSlot(ai, entry.caller)
    try:
        want = entry.estimated_prompt + max_tokens
        entry.reservation = await ai.metering.reserve(entry.caller, want)
    except BaseException:
        await slot.close()
        raise
    # From here on the request may reach the provider: it is settled exactly once,
    # whichever way it ends (also when the response is never started).
    upstream: ChatStream | None = None

    async def settle() -> None:
        if upstream is not None:
            await upstream.aclose()
        await ai.metering.record(entry)

    async def finish() -> None:
        await slot.close(settle)

    try:
        upstream = await ai.backend.open_stream(body)
    except openai.OpenAIError as exc:
        problem, entry.outcome = upstream_failure(exc, timeout=ai.settings.timeout)
        entry.reached = not never_sent(exc)
        await finish()
        raise problem from None
    except BaseException as exc:
        entry.outcome = gone_or_failed(exc)
        await finish()
        raise

    response_format: dict[str, Any] | None = body.get("response_format")
    # The text relayed, kept when it is checked or stored at the end.
    parts: list[str] | None = [] if on_answer or response_format else None
    pending = on_answer  # called once: at the end, or with what was relayed when cut off

    async def store(model: str, cut_off: bool) -> None:
        nonlocal pending
        call, pending = pending, None
        if call is not None:
            prompt, completion = entry.charged()
            text = "".join(parts or ())
            with anyio.CancelScope(shield=True):
                await call(Answered(text, model, prompt, completion, cut_off=cut_off))

    async def events() -> AsyncIterator[bytes]:
        nonlocal pending
        assert upstream is not None
        entry.outcome = "cancelled"
        model, finish_reason = entry.model, None
        relayed = tokens.Relayed()
        try:
            async for chunk in upstream:
                model = chunk.model or model
                content, finished = _delta(chunk)
                finish_reason = finished or finish_reason
                if chunk.usage is not None:
                    entry.prompt_tokens = chunk.usage.prompt_tokens
                    entry.completion_tokens = chunk.usage.completion_tokens
                if content:
                    entry.estimated_completion = relayed.add(content)
                    if parts is not None:
                        parts.append(content)
                    yield sse("delta", {"content": content})
            entry.outcome = "ok"
            prompt, completion = entry.charged()
            if response_format is not None:
                errors = structured.answer_problems(response_format, "".join(parts or ()))
                if errors:
                    pending = None  # an invalid answer is not stored, as without streaming
                    yield invalid_output_event(errors)
                    return
            await store(model, cut_off=False)
            yield sse(
                "usage",
                {
                    "model": model,
                    "finish_reason": finish_reason,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            )
        except openai.OpenAIError as exc:
            problem, entry.outcome = upstream_failure(exc, timeout=ai.settings.timeout)
            yield error_event(problem)
        finally:
            await finish()
            try:
                await store(model, cut_off=True)
            except Exception as exc:  # the client has gone: nobody to tell but the log
                log.error("ai_answer_not_stored", exc_info=exc)

    return EventStreamResponse(events(), on_close=finish)


def _delta(chunk: ChatCompletionChunk) -> tuple[str, str | None]:
    if not chunk.choices:
        return "", None
    choice = chunk.choices[0]
    return choice.delta.content or "", choice.finish_reason


@router.get("/usage", responses=problems({429: "AI_RATE_LIMIT exceeded (with Retry-After)"}))
async def usage(request: Request, caller: CallerDep) -> UsageSummary:
    """Tokens and requests of the current calendar month (UTC) for the caller."""
    return await summary(request, caller)


async def summary(request: Request, caller: Caller) -> UsageSummary:
    """The month's totals of the caller's allowance (rate limited like chat)."""
    state = ai_state(request)
    await enforce_rate_limit(request, state.settings, caller)
    month = await month_of(state, caller)
    month.overage = await overage_billing(request, caller, month.period_start.date(), month.tokens)
    return month


async def month_of(state: AIState, caller: Caller) -> UsageSummary:
    """The month's totals of the caller's allowance, read now."""
    start = period_start(datetime.now(UTC))
    totals = await state.metering.totals(caller.subject, start, fresh=True)
    quota = caller.monthly_quota
    return UsageSummary(
        period_start=at_midnight(start),
        resets_at=at_midnight(next_period(start)),
        tokens=totals.tokens,
        requests=totals.requests,
        quota=quota,
        remaining=None if quota is None else max(0, quota - totals.tokens),
    )


@router.get("/tools", responses=problems({429: "AI_RATE_LIMIT exceeded (with Retry-After)"}))
async def list_tools(request: Request, caller: CallerDep) -> list[ToolRead]:
    """The tools the caller's chat requests may name in `tools` (none of them run unless
    named): those whose scopes the token or API key holds."""
    await enforce_rate_limit(request, ai_state(request).settings, caller)
    return [
        ToolRead(
            name=t.name, description=t.description, parameters=t.parameters, scopes=sorted(t.scopes)
        )
        for t in registry(request.app).usable(caller.scopes)
    ]
