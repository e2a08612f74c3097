"""The auth module's contribution: its routes, its runtime state and its jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from {{ cookiecutter.package_name }}.auth.config import AuthSettings, get_auth_settings
from {{ cookiecutter.package_name }}.auth.dependencies import AuthState
from {{ cookiecutter.package_name }}.auth.jobs import (
    purge_expired,
    send_email_change,
    send_reset,
    send_verification,
)
from {{ cookiecutter.package_name }}.auth.router import router
from {{ cookiecutter.package_name }}.core.config import UnsafeSettingsError
from {{ cookiecutter.package_name }}.core.plugin import Module


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Tests (or an embedding app) may put their own AuthSettings on app.state first.
    settings: AuthSettings = getattr(app.state, "auth_settings", None) or get_auth_settings()
    if app.state.settings.is_production and (problems := settings.production_problems()):
        raise UnsafeSettingsError(problems)
    app.state.auth = AuthState.create(settings, app.state.settings.secret_key.get_secret_value())
    yield


module = Module(
    "auth",
    routers=(router,),
    lifespan=lifespan,
    jobs=(send_verification, send_reset, send_email_change, purge_expired),
)
