"""Two API instances (separate uvicorn processes) and two workers on one PostgreSQL and one
Redis: a Stripe webhook received by one instance, applied by a worker, is what the other
instance answers; the event ledger is one for both (a redelivery to the other is a
duplicate).

The real app and the real worker (tests/scaleout.py), against the fake Stripe API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from alembic.config import Config
from sqlalchemy import select

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, JobStatus
from {{ cookiecutter.package_name }}.payments.models import StripeCustomer
from {{ cookiecutter.package_name }}.payments.webhooks import job_id
from tests.auth.conftest import PASSWORD
from tests.core.jobkit import wait_for
from tests.payments.conftest import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    FakeStripe,
    make_payments_settings,
    sign,
    stripe_event,
)
from tests.scaleout import (
    Instances,
    environment,
    needs_postgresql_and_redis,
    running,
    shared_database,
)

pytestmark = needs_postgresql_and_redis


@pytest.fixture(scope="module")
async def database(settings: Settings, migrated: Config) -> AsyncIterator[Database]:
    async with shared_database(settings) as database:
        yield database


@pytest.fixture(scope="module")
def started(
    settings: Settings,
    database: Database,
    stripe_server: FakeStripe,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Instances]:
    plans = make_payments_settings(stripe_server.url).plans
    env = environment(
        settings,
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=stripe_server.url,
        PAYMENTS_STRIPE_MAX_NETWORK_RETRIES="0",
        PAYMENTS_PLANS=json.dumps([plan.model_dump() for plan in plans]),
        AUTH_COOKIE_SECURE="false",
        AUTH_REGISTER_LIMIT_PER_CLIENT="1000/minute",
        AUTH_LOGIN_LIMIT_PER_CLIENT="1000/minute",
    )
    with running(env, tmp_path_factory.mktemp("scaleout-payments")) as instances:
        yield instances


@pytest.fixture
def instances(started: Instances) -> Instances:
    started.assert_running()
    started.mark()
    return started


async def deliver(http: httpx.AsyncClient, url: str, body: dict[str, object]) -> httpx.Response:
    payload = json.dumps(body).encode()
    return await http.post(
        f"{url}/api/v1/payments/webhook",
        content=payload,
        headers={"Stripe-Signature": sign(payload), "Content-Type": "application/json"},
    )


async def test_a_webhook_received_by_one_instance_is_seen_through_the_other(
    instances: Instances, database: Database, fake_stripe: FakeStripe
) -> None:
    a, b = (api.url for api in instances.apis)
    email = f"payer-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(timeout=15) as http:
        account = {"email": email, "password": PASSWORD}
        registered = await http.post(f"{a}/api/v1/auth/register", json=account)
        assert registered.status_code == 201, registered.text
        form = {"username": email, "password": PASSWORD}
        tokens = (await http.post(f"{b}/api/v1/auth/login", data=form)).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        portal = await http.post(f"{a}/api/v1/payments/portal", headers=headers)
        assert portal.status_code == 200, portal.text  # the Stripe customer, made through A
        async with database.sessionmaker() as session:
            (customer_id,) = (await session.scalars(select(StripeCustomer.customer_id))).all()

        before = await http.get(f"{b}/api/v1/payments/subscription", headers=headers)
        assert before.status_code == 200, before.text
        assert before.json()["plan"] == "free"

        event_id = f"evt_{uuid.uuid4().hex[:12]}"
        body = stripe_event(
            fake_stripe, event_id, "customer.subscription.created", customer_id, int(time.time())
        )
        received = await deliver(http, a, body)
        assert received.status_code == 200, received.text
        assert received.json()["outcome"] == "queued"

        async def seen_through_b() -> bool:
            answer = await http.get(f"{b}/api/v1/payments/subscription", headers=headers)
            assert answer.status_code == 200, answer.text
            return bool(answer.json()["plan"] == "pro" and answer.json()["active"])

        await wait_for(seen_through_b, within=30, what="B to answer the new subscription")

        # Stripe sends it again, this time to B: one ledger, so a duplicate.
        again = await deliver(http, b, body)
        assert again.status_code == 200, again.text
        assert again.json()["outcome"] == "duplicate"

    async with database.sessionmaker() as session:
        job = await session.get(JobRecord, job_id(event_id))
    assert job is not None
    assert job.status == JobStatus.DONE
    assert job.attempts == 1
    ran = [w for w in instances.workers if f"id={job_id(event_id)}" in w.since_mark()]
    assert len(ran) == 1, "a worker runs the job that applies the event, once"
