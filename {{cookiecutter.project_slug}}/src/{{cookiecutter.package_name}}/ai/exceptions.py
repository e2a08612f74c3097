"""Upstream failures as clear answers. Never the key, never the upstream's raw error."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import structlog

from {{ cookiecutter.package_name }}.core.errors import ProblemError

if TYPE_CHECKING:  # at run time only failures need the SDK, and it is loaded by then
    import openai

log = structlog.get_logger(__name__)

# Retry-After sent to our caller when the upstream's 429 gives none (seconds).
DEFAULT_RETRY_AFTER = 1


def not_configured() -> ProblemError:
    return ProblemError(
        503,
        "The AI service is not configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for a "
        "server other than OpenAI).",
        missing_setting="OPENAI_API_KEY",
    )


def _retry_after(exc: openai.APIStatusError) -> int:
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = exc.response.headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds > 0:
            return max(1, math.ceil(seconds))
    return DEFAULT_RETRY_AFTER


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, a few levels down."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def never_sent(exc: BaseException) -> bool:
    """Whether a failed call provably never reached the provider.

    True only when the connection could not be opened (refused, DNS failure, TLS
    handshake, connect timeout): nothing was sent. Anything else (a timeout while
    waiting for the answer, a connection dropped after the request was written, any
    status answer) may have reached it, and it may be running and billing the request.
    """
    import aiohttp  # loaded with the SDK's transport (client.py) before any call fails

    return any(
        isinstance(seen, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
        for seen in _causes(exc)
    )


def _timed_out(exc: openai.APITimeoutError) -> bool:
    """Whether a "timeout" really was one.

    The SDK's aiohttp transport reports a connection the server dropped as a
    connect timeout; its cause tells them apart (aiohttp's timeouts are TimeoutError).
    """
    import aiohttp

    return not any(
        isinstance(seen, aiohttp.ClientConnectionError) and not isinstance(seen, TimeoutError)
        for seen in _causes(exc)
    )


def upstream_failure(exc: openai.OpenAIError, *, timeout: float) -> tuple[ProblemError, str]:
    """The problem to answer with, and the outcome to record in the ledger."""
    import openai

    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    log.warning("ai_upstream_failed", error=type(exc).__name__, upstream_status=status)
    if isinstance(exc, openai.APITimeoutError) and _timed_out(exc):
        return ProblemError(504, f"The AI provider did not answer within {timeout:g} s."), "timeout"
    if isinstance(exc, openai.RateLimitError):
        seconds = _retry_after(exc)
        return ProblemError(
            429,
            f"The AI provider is rate limiting requests; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        ), "rate_limited"
    if isinstance(exc, openai.APIConnectionError):
        return ProblemError(502, "The AI provider could not be reached."), "upstream_error"
    if status is not None:
        return ProblemError(
            502,
            f"The AI provider answered with an error (status {status}).",
            upstream_status=status,
        ), "upstream_error"
    return ProblemError(502, "The AI provider's answer could not be used."), "upstream_error"
