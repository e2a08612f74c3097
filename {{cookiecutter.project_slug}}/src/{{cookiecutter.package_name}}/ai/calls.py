"""One metered upstream call: reserve, call, charge. Shared by chat and the tool loop.

And what a streamed answer holds from before its first call until it ends (a stream
slot), and the `error` events it ends with once it has started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from {{ cookiecutter.package_name }}.core.errors import ProblemError

from . import structured, tokens
from .dependencies import AI
from .exceptions import never_sent, upstream_failure
from .service import Caller, Entry
from .streaming import sse

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


class StreamSlot:
    """One of the caller's AI_MAX_CONCURRENT_STREAMS streamed answers on this instance.

    Taken before the first call (429 when all are in use) and held until the response
    ends, however it ends: `close` settles the stream (closes its upstream and charges
    it) once, shielded from the cancellation of a client that left, then gives the slot
    back. Chat and the tool loop both stream through one.
    """

    def __init__(self, ai: AI, caller: Caller) -> None:
        streams = ai.metering.streams
        if not streams.open(caller.rate_key):
            raise ProblemError(
                429,
                f"At most {streams.limit} streamed answers at a time per caller; retry when "
                "one has ended.",
                headers={"Retry-After": "1"},
            )
        self._streams = streams
        self._key = caller.rate_key
        self._closed = False

    async def close(self, settle: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run `settle` and give the slot back, the first time only."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                if settle is not None:
                    await settle()
            finally:
                self._streams.close(self._key)


def error_event(problem: ProblemError) -> bytes:
    """A failure after the stream started (an upstream error, the quota): `error`."""
    return sse("error", {"status": problem.status, "detail": problem.detail})


def invalid_output_event(errors: list[dict[str, Any]]) -> bytes:
    """The `error` event of an answer that does not conform to its `response_format`."""
    problem = structured.invalid_output(errors)
    data = {"status": problem.status, "type": problem.type, "detail": problem.detail}
    return sse("error", {**data, "errors": errors})
