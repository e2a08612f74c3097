"""One metered upstream call: reserve, call, charge. Shared by chat and the tool loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from . import tokens
from .dependencies import AI
from .exceptions import never_sent, upstream_failure
from .service import Entry

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionMessage


@dataclass(frozen=True)
class Answered:
    """An answer as a conversation stores it: its text, model and the tokens charged."""

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cut_off: bool  # stopped early: the client left, or the upstream broke mid-stream
    # With tools: the rounds before the answer, as upstream messages (the assistant's
    # calls with `tool_calls`, each result as a `tool` message with `tool_call_id`).
    steps: Sequence[dict[str, Any]] = ()


# Called once with the answer (also a cut-off one), before the client sees its usage.
OnAnswer = Callable[[Answered], Awaitable[None]]


def gone_or_failed(exc: BaseException) -> str:
    """The outcome of a call that ended in something other than an upstream error."""
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "upstream_error"


async def settle(ai: AI, entry: Entry) -> None:
    """Charge the entry and give back its reservation, even if the caller is cancelled."""
    with anyio.CancelScope(shield=True):
        await ai.metering.record(entry)


def answer_text(message: ChatCompletionMessage | None) -> str:
    """What an answer's completion is estimated from: its text and any tool calls."""
    if message is None:
        return ""
    text = message.content or ""
    for call in message.tool_calls or ():
        function: Any = getattr(call, "function", None)
        if function is not None:
            text += (function.name or "") + (function.arguments or "")
    return text


async def complete_metered(
    ai: AI, entry: Entry, body: dict[str, Any], max_tokens: int
) -> ChatCompletion:
    """One plain completion: reserve the entry's estimate plus `max_tokens` (429 when
    the quota is used up), call, and charge the entry whatever happens.

    Upstream failures raise the problem to answer with.
    """
    import openai  # imported by the backend (require_ai builds it at its first use)

    entry.reservation = await ai.metering.reserve(entry.caller, entry.estimated_prompt + max_tokens)
    try:
        completion = await ai.backend.complete(body)
        usage = completion.usage
        choice = completion.choices[0] if completion.choices else None
        entry.prompt_tokens = usage.prompt_tokens if usage else 0
        entry.completion_tokens = usage.completion_tokens if usage else 0
        entry.estimated_completion = tokens.completion_tokens(
            answer_text(choice.message if choice else None)
        )
    except openai.OpenAIError as exc:
        problem, entry.outcome = upstream_failure(exc, timeout=ai.settings.timeout)
        entry.reached = not never_sent(exc)
        await settle(ai, entry)
        raise problem from None
    except BaseException as exc:
        entry.outcome = gone_or_failed(exc)
        await settle(ai, entry)
        raise
    await settle(ai, entry)
    return completion
