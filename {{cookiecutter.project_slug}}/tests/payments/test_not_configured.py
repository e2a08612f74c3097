"""Without Stripe keys the app starts and serves; the Stripe routes say what is missing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from tests.auth.conftest import assert_problem, signed_in
from tests.conftest import clear_tables
from tests.payments.conftest import (
    WEBHOOK_SECRET,
    deliver,
    event,
    jobs,
    ledger,
    subscription_event,
)


@pytest.fixture
async def bare_client(settings: Settings, migrated: Config) -> AsyncIterator[AsyncClient]:
    application: FastAPI = create_app(settings)
    application.state.auth_settings = AuthSettings(_env_file=None, cookie_secure=False)
    application.state.payments_settings = PaymentsSettings(_env_file=None)
    async with LifespanManager(application):
        transport = ASGITransport(app=application, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)


async def test_the_app_serves_and_stripe_routes_name_the_missing_setting(
    bare_client: AsyncClient,
) -> None:
    assert (await bare_client.get("/health/live")).status_code == 200
    plans = await bare_client.get("/api/v1/payments/plans")
    assert [p["key"] for p in plans.json()] == ["free"]
    headers = await signed_in(bare_client, "early@example.com")
    subscription = await bare_client.get("/api/v1/payments/subscription", headers=headers)
    assert subscription.json()["plan"] == "free"

    for path in ("/api/v1/payments/checkout", "/api/v1/payments/portal"):
        response = await bare_client.post(path, json={"plan": "pro"}, headers=headers)
        body = assert_problem(response, 503)
        assert "STRIPE_SECRET_KEY" in body["detail"]
        assert body["missing_setting"] == "STRIPE_SECRET_KEY"

    hook = await deliver(bare_client, event("evt_x", "invoice.paid", {}, 1_800_000_000))
    assert assert_problem(hook, 503)["missing_setting"] == "STRIPE_WEBHOOK_SECRET"


async def test_without_the_secret_key_the_webhook_records_and_asks_for_it(
    settings: Settings, migrated: Config
) -> None:
    """Handling reads subscriptions from Stripe: the event waits, unprocessed, for the key."""
    application: FastAPI = create_app(settings)
    application.state.auth_settings = AuthSettings(_env_file=None, cookie_secure=False)
    application.state.payments_settings = PaymentsSettings(
        _env_file=None, stripe_webhook_secret=SecretStr(WEBHOOK_SECRET)
    )
    async with LifespanManager(application):
        transport = ASGITransport(app=application, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            body = subscription_event("evt_k", "customer.subscription.updated", "cus_1", 1)
            response = await deliver(http, body)
            assert assert_problem(response, 503)["missing_setting"] == "STRIPE_SECRET_KEY"
            other = event("evt_o", "customer.created", {"id": "cus_1"}, 1)
            assert (await deliver(http, other)).json()["outcome"] == "ignored"
        rows = await ledger(application)
        assert rows["evt_k"].processed_at is None
        assert rows["evt_k"].last_error == "StripeNotConfigured: STRIPE_SECRET_KEY"
        assert await jobs(application) == {}  # nothing could apply it: Stripe sends it again
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)
