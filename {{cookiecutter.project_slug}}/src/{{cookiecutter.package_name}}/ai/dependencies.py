"""The AI service of the running app, as a dependency tests can override."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from openai import AsyncOpenAI

from .client import ChatBackend
from .config import AISettings
from .exceptions import not_configured
from .service import Metering


@dataclass(frozen=True)
class AIState:
    settings: AISettings
    metering: Metering
    backend: ChatBackend | None  # None: OPENAI_API_KEY is not set


async def get_ai_state(request: Request) -> AIState:
    state: AIState = request.app.state.ai
    return state


@dataclass(frozen=True)
class AI:
    settings: AISettings
    metering: Metering
    backend: ChatBackend

    @property
    def client(self) -> AsyncOpenAI:
        """The shared SDK client, for anything beyond chat (embeddings, images...)."""
        return self.backend.client


async def get_ai(request: Request) -> AI:
    """The configured AI service; 503 naming OPENAI_API_KEY when it is not set.

    Dependencies here are `async def`: a plain `def` would cost a thread hop per request.
    """
    state = await get_ai_state(request)
    if state.backend is None:
        raise not_configured()
    return AI(state.settings, state.metering, state.backend)


AIStateDep = Annotated[AIState, Depends(get_ai_state)]
AIDep = Annotated[AI, Depends(get_ai)]
