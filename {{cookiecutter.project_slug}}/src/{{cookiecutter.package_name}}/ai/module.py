"""The AI module's contribution: its router, and the shared client for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.plugin import Module

from . import models  # noqa: F401 - registers the ledger tables
from .config import AISettings
from .dependencies import AIState, LazyBackend
from .router import router
from .service import Metering
from .tools import provide
from .usage_tool import get_usage

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Make way for the one shared client (built at its first use) and close it at shutdown.

    Tests (or an app factory) may put `AISettings` on `app.state.ai_settings` first.
    """
    settings: AISettings = getattr(app.state, "ai_settings", None) or AISettings()
    metering = Metering(
        app.state.database,
        cache_seconds=settings.quota_cache_seconds,
        max_streams=settings.max_concurrent_streams,
    )
    async with metering:
        if settings.openai_api_key is None:
            log.warning("ai_not_configured", missing="OPENAI_API_KEY")
            app.state.ai = AIState(settings, metering, None)
            yield
            return
        backend = LazyBackend(settings)
        app.state.ai = AIState(settings, metering, backend)
        try:
            yield
        finally:
            await backend.aclose()


module = Module("ai", routers=(router,), lifespan=lifespan, install=provide(get_usage))
