"""The application factory; `uvicorn {{ cookiecutter.package_name }}.main:app` serves it."""

from __future__ import annotations

import gc

# No collections while the app is imported: they would scan the few hundred thousand
# objects being made, all of them alive, at about a fifth of the start-up's CPU
# (docs/benchmarks.md, start-up). tune_gc(), at the end of this file, turns it back on.
gc.disable()

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from .core.config import Settings, get_settings
from .core.contract import install_contract
from .core.db import Database
from .core.errors import install_error_handlers
from .core.jobs import run_jobs
from .core.logging import RequestContextMiddleware, configure_logging
from .core.plugin import Module
from .core.ratelimit import RateLimiter
from .core.security import install_http_security, install_trusted_proxies, security_headers
from .core.telemetry import Telemetry, TelemetrySettings
from .modules import MODULES


def create_app(
    settings: Settings | None = None,
    modules: Sequence[Module] = MODULES,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """The app of these modules (tests add a module of their own, e.g. with test jobs).

    Traces, metrics and error reports follow the environment (core/telemetry.py) unless
    `telemetry` says otherwise (tests).
    """
    settings = settings or get_settings()
    if telemetry is None:
        telemetry = Telemetry.from_settings(
            TelemetrySettings(), environment=settings.environment, workers=settings.web_concurrency
        )
    configure_logging(settings, trace_ids=telemetry.tracing)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(app.state.database.engine.dispose)
            await stack.enter_async_context(telemetry.running(app))
            for module in modules:
                if module.lifespan is not None:
                    await stack.enter_async_context(module.lifespan(app))
            # Last in, first out: jobs stop before the modules whose state they use.
            await stack.enter_async_context(run_jobs(app, (j for m in modules for j in m.jobs)))
            yield

    app = FastAPI(
        title="{{ cookiecutter.project_name.encode('unicode_escape').decode() | replace('"', '\\x22') }}",
        description="{{ cookiecutter.description.encode('unicode_escape').decode() | replace('"', '\\x22') }}",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None if settings.is_production else "/openapi.json",
        telemetry=telemetry.fastapi_options(),
    )
    app.state.settings = settings
    app.state.telemetry = telemetry
    app.state.database = Database.from_settings(settings)
    app.state.rate_limiter = RateLimiter(settings.redis_url)

    install_error_handlers(app)
    install_contract(app)
    install_http_security(app, settings)
    app.add_middleware(
        RequestContextMiddleware,
        security_headers=security_headers(settings),
        access_log=logging.getLevelName(settings.log_level) <= logging.INFO,
    )
    install_trusted_proxies(app, settings)
    telemetry.install(app)
    for module in modules:
        for router in module.routers:
            app.include_router(router)
        if module.install is not None:
            module.install(app)
    return app


def tune_gc() -> None:
    """Keep the garbage collector from stalling the event loop under load.

    What is loaded at import (frameworks, SDK types: most of the heap) lives as long
    as the process; frozen, full collections no longer scan it. A larger young
    generation makes collections rarer. Measured with many concurrent requests (see
    the AI docs' benchmark): collections took ~20% of the CPU and paused the loop for
    up to 300 ms before, a few percent and far shorter pauses after.

    The collector was off while the app was imported (top of this file); it is frozen
    without a full collection first, which would scan all of it for the little garbage
    an import leaves (the peak and resident memory come out the same).
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
    gc.enable()


app = create_app()
tune_gc()
