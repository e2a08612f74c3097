"""The webhook: signatures, the ledger and its job, duplicates, failures and retries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.payments import service
from {{ cookiecutter.package_name }}.payments.models import (
    SUBJECT_KEY,
    StripeCustomer,
    StripeEvent,
    Subscription,
)
from tests.auth.conftest import assert_problem, count, signed_in
from tests.payments.conftest import (
    PRO_PRICE,
    WEBHOOK_SECRET,
    FakeStripe,
    apply,
    customer,
    deliver,
    drain,
    event,
    jobs,
    ledger,
    make_due,
    sign,
    stripe_event,
    subject_of,
    subscription,
    subscriptions,
)

T0 = 1_800_000_000


def test_our_signature_is_stripes() -> None:
    payload = b'{"id": "evt_1"}'
    ours = sign(payload, timestamp=T0)
    theirs = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), WEBHOOK_SECRET, timestamp=T0
    )
    assert ours == theirs


async def test_a_signed_event_is_recorded_and_applied(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "hook@example.com")
    body = stripe_event(
        fake_stripe,
        "evt_created",
        "customer.subscription.created",
        buyer.customer_id,
        T0,
        cancel_at_period_end=True,
    )
    response = await deliver(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "event_id": "evt_created", "outcome": "queued"}
    assert (await ledger(app))["evt_created"].payload == body  # committed before the answer

    await drain(app)  # the job applies it

    assert (await jobs(app))["payments.apply_event:evt_created"].status == "done"
    row = (await ledger(app))["evt_created"]
    assert row.type == "customer.subscription.created"
    assert row.payload == body
    assert row.stripe_created == datetime.fromtimestamp(T0, UTC)
    assert row.processed_at is not None
    assert (row.attempts, row.outcome, row.last_error) == (1, "applied", None)

    [sub] = (await subscriptions(app)).values()
    assert (sub.id, sub.status, sub.price_id) == ("sub_1", "active", PRO_PRICE)
    assert str(sub.subject_id) == buyer.subject_id
    assert sub.current_period_end == datetime.fromtimestamp(1_900_000_000, UTC)
    assert sub.cancel_at_period_end is True

    mine = (await client.get("/api/v1/payments/subscription", headers=buyer.headers)).json()
    assert mine["plan"] == "pro"
    assert mine["status"] == "active"
    assert mine["active"] is True
    assert mine["cancel_at_period_end"] is True
    assert mine["current_period_end"].startswith("2030-03-17")


@pytest.mark.parametrize(
    "case",
    ["missing", "wrong secret", "tampered", "stale", "garbage", "no v1 scheme"],
)
async def test_bad_signatures_are_400_and_change_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, case: str
) -> None:
    buyer = await customer(app, client, "forged@example.com")
    body = stripe_event(
        fake_stripe, "evt_forged", "customer.subscription.created", buyer.customer_id, T0
    )
    payload = json.dumps(body).encode()
    now = int(time.time())
    signature = {
        "missing": "",
        "wrong secret": sign(payload, "whsec_someone_else"),
        "tampered": sign(payload.replace(b"active", b"trialing")),
        "stale": sign(payload, timestamp=now - 301),  # Stripe's tolerance is 300 s
        "garbage": "not a signature",
        "no v1 scheme": sign(payload).replace("v1=", "v0="),
    }[case]
    headers = {"Content-Type": "application/json"}
    if signature:
        headers["Stripe-Signature"] = signature
    response = await client.post("/api/v1/payments/webhook", content=payload, headers=headers)
    assert_problem(response, 400)
    assert await count(app, StripeEvent) == 0
    assert await jobs(app) == {}
    assert await count(app, Subscription) == 0


async def test_a_signature_within_the_tolerance_is_accepted(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "late@example.com")
    body = stripe_event(
        fake_stripe, "evt_late", "customer.subscription.created", buyer.customer_id, T0
    )
    response = await deliver(client, body, timestamp=int(time.time()) - 240)
    assert response.status_code == 200, response.text


async def test_duplicate_delivery_answers_2xx_and_changes_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "dup@example.com")
    body = stripe_event(
        fake_stripe, "evt_dup", "customer.subscription.created", buyer.customer_id, T0
    )
    assert await apply(app, client, body) == "applied"
    before = (await subscriptions(app))["sub_1"].updated_at
    reads = len(fake_stripe.to("/v1/subscriptions/sub_1", "GET"))

    again = await deliver(client, body)

    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    assert await drain(app) == 0  # nothing new to run
    row = (await ledger(app))["evt_dup"]
    assert (row.attempts, row.outcome) == (1, "applied")
    assert (await subscriptions(app))["sub_1"].updated_at == before
    assert len(fake_stripe.to("/v1/subscriptions/sub_1", "GET")) == reads
    assert list(await jobs(app)) == ["payments.apply_event:evt_dup"]


async def test_concurrent_duplicates_are_applied_once(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = await customer(app, client, "race@example.com")
    body = stripe_event(
        fake_stripe, "evt_race", "customer.subscription.created", buyer.customer_id, T0
    )
    applied: list[str] = []
    original = service.HANDLERS["customer.subscription.created"]

    async def counting(
        session: AsyncSession, event: Mapping[str, Any], context: service.EventContext
    ) -> str:
        applied.append(event["id"])
        await asyncio.sleep(0.05)  # widen the window for the other deliveries
        return await original(session, event, context)

    monkeypatch.setitem(service.HANDLERS, "customer.subscription.created", counting)

    responses = await asyncio.gather(*(deliver(client, body) for _ in range(3)))
    await drain(app)

    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert {r.json()["outcome"] for r in responses} <= {"queued", "duplicate"}
    assert applied == ["evt_race"]
    assert (await ledger(app))["evt_race"].attempts == 1
    assert list(await jobs(app)) == ["payments.apply_event:evt_race"]


async def test_a_failing_handler_rolls_back_and_its_job_retries(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = await customer(app, client, "retry@example.com")
    body = stripe_event(
        fake_stripe, "evt_retry", "customer.subscription.created", buyer.customer_id, T0
    )

    async def broken(
        session: AsyncSession, event: Mapping[str, Any], context: service.EventContext
    ) -> str:
        row = await session.get(StripeCustomer, uuid.UUID(buyer.subject_id))
        assert row is not None
        row.customer_id = "cus_partial"
        await session.flush()  # a partial write, then the bug
        raise RuntimeError("the handler has a bug")

    with monkeypatch.context() as patch:
        patch.setitem(service.HANDLERS, "customer.subscription.created", broken)
        assert (await apply(app, client, body)) is None  # the job failed

    job = (await jobs(app))["payments.apply_event:evt_retry"]
    assert (job.status, job.attempts) == ("pending", 1)  # waiting for its retry
    assert job.last_error == "RuntimeError: the handler has a bug"
    row = (await ledger(app))["evt_retry"]
    assert row.payload == body  # recorded: nothing is lost
    assert row.processed_at is None
    assert row.attempts == 1
    assert row.last_error == "RuntimeError: the handler has a bug"
    assert await count(app, Subscription) == 0
    async with app.state.database.sessionmaker() as session:
        kept = await session.get(StripeCustomer, uuid.UUID(buyer.subject_id))
    assert kept is not None
    assert kept.customer_id == buyer.customer_id  # the partial write was rolled back

    await make_due(app, job.id)  # the retry's time
    await drain(app)

    assert (await jobs(app))[job.id].status == "done"
    row = (await ledger(app))["evt_retry"]
    assert row.outcome == "applied"
    assert row.processed_at is not None
    assert (row.attempts, row.last_error) == (2, None)
    assert (await subscriptions(app))["sub_1"].status == "active"


async def test_an_unknown_customer_is_retried_then_acknowledged(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    body = stripe_event(
        fake_stripe, "evt_stranger", "customer.subscription.created", "cus_nobody", T0
    )
    # its link may be on the way: the job tries again later
    assert await apply(app, client, body) is None
    assert (await jobs(app))["payments.apply_event:evt_stranger"].status == "pending"
    row = (await ledger(app))["evt_stranger"]
    assert row.processed_at is None
    assert row.last_error is not None
    assert "linked to the customer yet" in row.last_error
    assert await count(app, Subscription) == 0

    an_hour_ago = int(time.time()) - 3601  # PAYMENTS_UNKNOWN_CUSTOMER_RETRY_SECONDS
    old = stripe_event(
        fake_stripe, "evt_stranger_old", "customer.subscription.updated", "cus_nobody", an_hour_ago
    )
    assert await apply(app, client, old) == "unknown_customer"
    assert (await ledger(app))["evt_stranger_old"].processed_at is not None
    invoice = event(
        "evt_inv_stranger",
        "invoice.payment_failed",
        {"id": "in_1", "object": "invoice", "customer": "cus_nobody", "subscription": "sub_1"},
        an_hour_ago,
    )
    assert await apply(app, client, invoice) == "unknown_customer"
    assert await count(app, Subscription) == 0


async def test_checkout_completed_links_the_customer_and_stores_the_subscription(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "linked@example.com")
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    subject_id = await subject_of(app, user_id)  # who pays for the user
    fake_stripe.set_subscription(subscription("cus_elsewhere", sub_id="sub_7"))
    completed = event(
        "evt_cs",
        "checkout.session.completed",
        {
            "id": "cs_1",
            "object": "checkout.session",
            "mode": "subscription",
            "customer": "cus_elsewhere",
            "client_reference_id": subject_id,
            "subscription": "sub_7",
        },
        T0,
    )
    assert await apply(app, client, completed) == "applied"
    mine = (await client.get("/api/v1/payments/subscription", headers=headers)).json()
    assert mine["plan"] == "pro"  # without waiting for customer.subscription.created
    created = event("evt_sub7", "customer.subscription.created", {"id": "sub_7"}, T0 + 1)
    assert await apply(app, client, created) == "applied"
    assert await count(app, StripeCustomer) == 1


async def test_subscription_metadata_links_a_customer_we_never_stored(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "meta@example.com")
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    subject_id = await subject_of(app, user_id)  # who pays for the user
    created = stripe_event(
        fake_stripe,
        "evt_meta",
        "customer.subscription.created",
        "cus_lost",
        T0,
        metadata={SUBJECT_KEY: subject_id},
    )
    assert await apply(app, client, created) == "applied"
    assert await count(app, StripeCustomer) == 1


async def test_other_types_are_acknowledged_and_ignored(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    body = event("evt_other", "customer.created", {"id": "cus_1", "object": "customer"}, T0)
    response = await deliver(client, body)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert (await ledger(app))["evt_other"].processed_at is not None
    assert await jobs(app) == {}  # recorded as processed, no job to run
