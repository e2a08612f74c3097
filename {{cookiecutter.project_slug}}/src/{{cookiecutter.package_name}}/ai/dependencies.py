"""The AI service of the running app, as dependencies (tests may override them).

The plain functions (`ai_state`, `require_ai`) serve this module's own endpoints,
which resolve everything in one dependency: each extra FastAPI dependency costs
measurable CPU on an endpoint built to serve many callers per core. Dependencies
are `async def`: a plain `def` would cost a thread hop per request.
"""

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
