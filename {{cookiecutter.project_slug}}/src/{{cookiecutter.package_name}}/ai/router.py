"""HTTP endpoints of the AI module: chat (plain or streamed) and the caller's usage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import openai
import structlog
from fastapi import APIRouter, Request, Response
from openai.types.chat import ChatCompletionChunk

from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.errors import ProblemError
from {{ cookiecutter.package_name }}.core.ratelimit import get_rate_limiter

from .config import AISettings
from .dependencies import AI, ai_state, require_ai
from .exceptions import upstream_failure
from .schemas import ChatRequest, ChatResponse, Usage, UsageSummary
from .seams import CallerDep
from .service import Caller, Entry, at_midnight, next_period, period_start
from .streaming import EventStreamResponse, sse

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
        422: "Invalid request, or a model not in AI_ALLOWED_MODELS",
        429: "Rate limit, monthly quota, or the provider's rate limit",
        502: "The AI provider failed or could not be reached",
        503: "OPENAI_API_KEY is not set",
        504: "The AI provider did not answer within AI_TIMEOUT",
    }
)


def upstream_body(chat: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in chat.messages],
    }
    if chat.temperature is not None:
        body["temperature"] = chat.temperature
    if chat.max_tokens is not None:
        body["max_tokens"] = chat.max_tokens
    return body


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
    # In the body rather than in a dependency of their own, as /usage does: each
    # dependency costs FastAPI a few percent of this endpoint's CPU (docs/ai.md).
    ai = require_ai(request)
    await enforce_rate_limit(request, ai.settings, caller)
    model = choose_model(ai, chat)
    await ai.metering.check(caller)
    entry = Entry(
        caller=caller,
        model=model,
        streamed=chat.stream,
        request_id=getattr(request.state, "request_id", None),
        started=time.perf_counter(),
    )
    body = upstream_body(chat, model)
    if chat.stream:
        return await _stream(ai, entry, {**body, "stream_options": {"include_usage": True}})
    try:
        completion = await ai.backend.complete(body)
    except openai.OpenAIError as exc:
        problem, entry.outcome = upstream_failure(exc, timeout=ai.settings.timeout)
        await ai.metering.record(entry)
        raise problem from None
    usage = completion.usage
    entry.prompt_tokens = usage.prompt_tokens if usage else 0
    entry.completion_tokens = usage.completion_tokens if usage else 0
    await ai.metering.record(entry)
    choice = completion.choices[0] if completion.choices else None
    answer = ChatResponse.model_construct(
        content=(choice.message.content or "") if choice else "",
        model=completion.model or model,
        finish_reason=choice.finish_reason if choice else None,
        usage=Usage.model_construct(
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            total_tokens=entry.prompt_tokens + entry.completion_tokens,
        ),
    )
    return Response(answer.model_dump_json(), media_type="application/json")


async def _stream(ai: AI, entry: Entry, body: dict[str, Any]) -> Response:
    try:
        upstream = await ai.backend.open_stream(body)
    except openai.OpenAIError as exc:
        problem, entry.outcome = upstream_failure(exc, timeout=ai.settings.timeout)
        await ai.metering.record(entry)
        raise problem from None

    async def events() -> AsyncIterator[bytes]:
        entry.outcome = "cancelled"
        model, finish_reason, deltas = entry.model, None, 0
        reported = False
        try:
            async for chunk in upstream:
                model = chunk.model or model
                content, finish = _delta(chunk)
                finish_reason = finish or finish_reason
                if chunk.usage is not None:
                    entry.prompt_tokens = chunk.usage.prompt_tokens
                    entry.completion_tokens = chunk.usage.completion_tokens
                    reported = True
                if content:
                    deltas += 1
                    yield sse("delta", {"content": content})
            entry.outcome = "ok"
            yield sse(
                "usage",
                {
                    "model": model,
                    "finish_reason": finish_reason,
                    "prompt_tokens": entry.prompt_tokens,
                    "completion_tokens": entry.completion_tokens,
                    "total_tokens": entry.prompt_tokens + entry.completion_tokens,
                },
            )
        except openai.OpenAIError as exc:
            problem, entry.outcome = upstream_failure(exc, timeout=ai.settings.timeout)
            yield sse("error", {"status": problem.status, "detail": problem.detail})
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()
                if not reported:
                    # The upstream never reported usage (client gone, or it failed):
                    # meter what was relayed, about one token per delta.
                    entry.completion_tokens = deltas
                await ai.metering.record(entry)

    return EventStreamResponse(events())


def _delta(chunk: ChatCompletionChunk) -> tuple[str, str | None]:
    if not chunk.choices:
        return "", None
    choice = chunk.choices[0]
    return choice.delta.content or "", choice.finish_reason


@router.get("/usage", responses={429: PROBLEMS[429]})
async def usage(request: Request, caller: CallerDep) -> UsageSummary:
    """Tokens and requests of the current calendar month (UTC) for the caller."""
    state = ai_state(request)
    await enforce_rate_limit(request, state.settings, caller)
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
