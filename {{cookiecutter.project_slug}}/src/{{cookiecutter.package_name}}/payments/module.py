"""The payments module's contribution: its routes, its jobs and the shared Stripe client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.payments import housekeeping, subjects, webhooks
from {{ cookiecutter.package_name }}.payments.client import PaymentsState, build_stripe_client
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, get_payments_settings
from {{ cookiecutter.package_name }}.payments.router import router

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Tests (or an embedding app) may put their own PaymentsSettings on app.state first.
    settings: PaymentsSettings = (
        getattr(app.state, "payments_settings", None) or get_payments_settings()
    )
    subjects.current()  # refuses tables that bill another subject than the one installed
    holder = build_stripe_client(settings)
    missing = [
        name
        for name, value in (
            ("STRIPE_SECRET_KEY", settings.stripe_secret_key),
            ("STRIPE_WEBHOOK_SECRET", settings.stripe_webhook_secret),
        )
        if value is None
    ]
    if missing:
        log.warning("payments_not_configured", missing=missing)
    app.state.payments = PaymentsState(settings, holder)
    try:
        yield
    finally:
        await holder.aclose()


module = Module(
    "payments",
    routers=(router,),
    lifespan=lifespan,
    # Webhook events are applied by a job; the ledger's purge and the reconcile run daily.
    jobs=(webhooks.apply_event, housekeeping.purge_ledger, housekeeping.reconcile_subscriptions),
)
