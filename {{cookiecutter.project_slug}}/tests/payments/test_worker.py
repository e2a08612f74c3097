"""With Redis: the app records the event and publishes its job; a worker process applies it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from alembic.config import Config
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from {{ cookiecutter.package_name }}.payments.webhooks import job_id
from tests.conftest import clear_tables, make_settings
from tests.core.jobkit import wait_for, worker_environment, workers
from tests.payments.conftest import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    FakeStripe,
    customer,
    deliver,
    jobs,
    ledger,
    stripe_event,
    subscriptions,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to test with Redis")


async def test_a_worker_applies_the_event_through_redis(
    settings: Settings,
    migrated: Config,
    payments_settings: PaymentsSettings,
    fake_stripe: FakeStripe,
    tmp_path: Path,
) -> None:
    assert REDIS_URL is not None
    queue = f"test-payments-{uuid.uuid4().hex[:8]}"
    redis_settings = make_settings(
        settings.database_url, redis_url=REDIS_URL, jobs_queue=queue, jobs_poll_seconds=0.2
    )
    application = create_app(redis_settings)  # publishes job ids only: the worker runs them
    application.state.auth_settings = AuthSettings(_env_file=None, cookie_secure=False)
    application.state.payments_settings = payments_settings
    env = worker_environment(
        redis_settings,
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=fake_stripe.url,
        PAYMENTS_STRIPE_MAX_NETWORK_RETRIES="0",
        PAYMENTS_PLANS=json.dumps([p.model_dump() for p in payments_settings.plans]),
    )
    async with LifespanManager(application):
        transport = ASGITransport(app=application, raise_app_exceptions=False)
        try:
            async with AsyncClient(transport=transport, base_url="http://testserver") as client:
                buyer = await customer(application, client, "worker@example.com")
                with workers(env, 1, str(tmp_path)) as (worker,):
                    body = stripe_event(
                        fake_stripe,
                        "evt_worker",
                        "customer.subscription.created",
                        buyer.customer_id,
                        1_800_000_000,
                    )
                    response = await deliver(client, body)
                    assert response.json()["outcome"] == "queued"

                    async def applied() -> bool:
                        return (await ledger(application))["evt_worker"].processed_at is not None

                    await wait_for(applied, what="the worker to apply the event")
                    output = worker.output()
            assert (await ledger(application))["evt_worker"].outcome == "applied"
            assert (await subscriptions(application))["sub_1"].status == "active"
            assert (await jobs(application))[job_id("evt_worker")].status == "done"
            assert f"id={job_id('evt_worker')}" in output
            assert "outcome=done" in output
        finally:
            await application.state.rate_limiter.reset()
            await clear_tables(application.state.database)
            async with Redis.from_url(REDIS_URL) as redis:
                await redis.delete(queue)
