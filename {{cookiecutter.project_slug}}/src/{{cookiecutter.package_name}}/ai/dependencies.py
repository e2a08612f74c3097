"""The AI service of the running app, as dependencies (tests may override them).

The plain functions (`ai_state`, `require_ai`) serve this module's own endpoints,
which resolve everything in one dependency: each extra FastAPI dependency costs
measurable CPU on an endpoint built to serve many callers per core. Dependencies
are `async def`: a plain `def` would cost a thread hop per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .config import AISettings
from .exceptions import not_configured
from .service import Metering

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from .client import ChatBackend


class LazyBackend:
    """The shared chat backend, built at its first use and closed at shutdown.

    Building it imports the OpenAI SDK and aiohttp (`client.py`): about a third of a
    second and 20 MB that a process pays when it first needs them, not before it can
    answer (docs/benchmarks.md, start-up). Built from a running event loop (a request),
    once: nothing awaits in between, so two first calls cannot build two.
    """

    def __init__(self, settings: AISettings) -> None:
        self.settings = settings
        self._backend: ChatBackend | None = None

    def get(self) -> ChatBackend:
        if self._backend is None:
            from .client import build_backend

            self._backend = build_backend(self.settings)
        return self._backend

    async def aclose(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.aclose()


@dataclass(frozen=True)
class AIState:
    settings: AISettings
    metering: Metering
    lazy_backend: LazyBackend | None  # None: OPENAI_API_KEY is not set

    @property
    def backend(self) -> ChatBackend | None:
        """The chat backend (built now if this is its first use); None when not configured."""
        return None if self.lazy_backend is None else self.lazy_backend.get()


@dataclass(frozen=True)
class AI:
    settings: AISettings
    metering: Metering
    backend: ChatBackend

    @property
    def client(self) -> AsyncOpenAI:
        """The shared SDK client, for anything beyond chat (embeddings, images...)."""
        return self.backend.client


def ai_state(request: Request) -> AIState:
    state: AIState = request.app.state.ai
    return state


def require_ai(request: Request) -> AI:
    """The configured AI service; 503 naming OPENAI_API_KEY when it is not set."""
    state = ai_state(request)
    if state.backend is None:
        raise not_configured()
    return AI(state.settings, state.metering, state.backend)


async def get_ai_state(request: Request) -> AIState:
    return ai_state(request)


async def get_ai(request: Request) -> AI:
    return require_ai(request)


AIStateDep = Annotated[AIState, Depends(get_ai_state)]
AIDep = Annotated[AI, Depends(get_ai)]
