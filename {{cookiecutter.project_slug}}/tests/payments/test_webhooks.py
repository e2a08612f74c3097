"""The webhook: signatures, the ledger, duplicates, ordering, failures and retries."""

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
from {{ cookiecutter.package_name }}.payments.models import StripeCustomer, StripeEvent, Subscription
from tests.auth.conftest import assert_problem, count, signed_in
from tests.payments.conftest import (
    PRO_PRICE,
    TEAM_PRICE,
    WEBHOOK_SECRET,
    FakeStripe,
    customer,
    deliver,
    event,
    ledger,
    sign,
    subscription_event,
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
    body = subscription_event(
        "evt_created",
        "customer.subscription.created",
        buyer.customer_id,
        T0,
        cancel_at_period_end=True,
    )
    response = await deliver(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "event_id": "evt_created", "outcome": "applied"}

    row = (await ledger(app))["evt_created"]
    assert row.type == "customer.subscription.created"
    assert row.payload == body
    assert row.stripe_created == datetime.fromtimestamp(T0, UTC)
    assert row.processed_at is not None
    assert (row.attempts, row.outcome, row.last_error) == (1, "applied", None)

    [sub] = (await subscriptions(app)).values()
    assert (sub.id, sub.status, sub.price_id) == ("sub_1", "active", PRO_PRICE)
    assert str(sub.user_id) == buyer.user_id
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
    body = subscription_event("evt_forged", "customer.subscription.created", buyer.customer_id, T0)
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
    assert await count(app, Subscription) == 0


async def test_a_signature_within_the_tolerance_is_accepted(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "late@example.com")
    body = subscription_event("evt_late", "customer.subscription.created", buyer.customer_id, T0)
    response = await deliver(client, body, timestamp=int(time.time()) - 240)
    assert response.status_code == 200, response.text


async def test_duplicate_delivery_answers_2xx_and_changes_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "dup@example.com")
    body = subscription_event("evt_dup", "customer.subscription.created", buyer.customer_id, T0)
    assert (await deliver(client, body)).json()["outcome"] == "applied"
    before = (await subscriptions(app))["sub_1"].updated_at

    again = await deliver(client, body)

    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    row = (await ledger(app))["evt_dup"]
    assert (row.attempts, row.outcome) == (1, "applied")
    assert (await subscriptions(app))["sub_1"].updated_at == before


async def test_concurrent_duplicates_are_applied_once(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = await customer(app, client, "race@example.com")
    body = subscription_event("evt_race", "customer.subscription.created", buyer.customer_id, T0)
    applied: list[str] = []
    original = service.HANDLERS["customer.subscription.created"]

    async def counting(session: AsyncSession, event: Mapping[str, Any], as_of: datetime) -> str:
        applied.append(event["id"])
        await asyncio.sleep(0.05)  # widen the window for the other deliveries
        return await original(session, event, as_of)

    monkeypatch.setitem(service.HANDLERS, "customer.subscription.created", counting)

    responses = await asyncio.gather(*(deliver(client, body) for _ in range(3)))

    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert sorted(r.json()["outcome"] for r in responses) == ["applied", "duplicate", "duplicate"]
    assert applied == ["evt_race"]
    assert (await ledger(app))["evt_race"].attempts == 1


async def test_out_of_order_updates_never_overwrite_newer_state(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "order@example.com")
    cid = buyer.customer_id
    newer = subscription_event(
        "evt_new", "customer.subscription.updated", cid, T0 + 20, price=TEAM_PRICE
    )
    older = subscription_event(
        "evt_old", "customer.subscription.updated", cid, T0 + 10, status="past_due"
    )
    oldest = subscription_event("evt_first", "customer.subscription.created", cid, T0)

    for body in (newer, older, oldest):
        assert (await deliver(client, body)).status_code == 200

    sub = (await subscriptions(app))["sub_1"]
    assert (sub.status, sub.price_id) == ("active", TEAM_PRICE)
    assert sub.state_as_of == datetime.fromtimestamp(T0 + 20, UTC)
    outcomes = {k: v.outcome for k, v in (await ledger(app)).items()}
    assert outcomes == {"evt_new": "applied", "evt_old": "stale", "evt_first": "stale"}
    mine = (await client.get("/api/v1/payments/subscription", headers=buyer.headers)).json()
    assert mine["plan"] == "team"

    # A newer update still applies.
    latest = subscription_event(
        "evt_latest", "customer.subscription.updated", cid, T0 + 30, status="past_due"
    )
    assert (await deliver(client, latest)).json()["outcome"] == "applied"
    assert (await subscriptions(app))["sub_1"].status == "past_due"


async def test_deletion_downgrades_the_user_even_against_a_same_second_update(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "leaving@example.com")
    cid = buyer.customer_id
    await deliver(client, subscription_event("evt_c", "customer.subscription.created", cid, T0))
    mine = await client.get("/api/v1/payments/subscription", headers=buyer.headers)
    assert mine.json()["plan"] == "pro"

    deleted = subscription_event(
        "evt_d", "customer.subscription.deleted", cid, T0 + 50, status="canceled"
    )
    assert (await deliver(client, deleted)).json()["outcome"] == "applied"
    late = subscription_event("evt_u", "customer.subscription.updated", cid, T0 + 50)
    assert (await deliver(client, late)).json()["outcome"] == "stale"

    mine = (await client.get("/api/v1/payments/subscription", headers=buyer.headers)).json()
    assert (mine["plan"], mine["status"], mine["active"]) == ("free", "canceled", False)
    assert mine["ai_monthly_tokens"] == 1000


async def test_a_failing_handler_answers_5xx_and_a_retry_succeeds(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = await customer(app, client, "retry@example.com")
    body = subscription_event("evt_retry", "customer.subscription.created", buyer.customer_id, T0)

    async def broken(session: AsyncSession, event: Mapping[str, Any], as_of: datetime) -> str:
        row = await session.get(StripeCustomer, uuid.UUID(buyer.user_id))
        assert row is not None
        row.customer_id = "cus_partial"
        await session.flush()  # a partial write, then the bug
        raise RuntimeError("the handler has a bug")

    with monkeypatch.context() as patch:
        patch.setitem(service.HANDLERS, "customer.subscription.created", broken)
        failed = await deliver(client, body)

    assert failed.status_code >= 500
    assert failed.headers["content-type"] == "application/problem+json"
    row = (await ledger(app))["evt_retry"]
    assert row.payload == body  # recorded: nothing is lost
    assert row.processed_at is None
    assert row.attempts == 1
    assert row.last_error == "RuntimeError: the handler has a bug"
    assert await count(app, Subscription) == 0
    async with app.state.database.sessionmaker() as session:
        kept = await session.get(StripeCustomer, uuid.UUID(buyer.user_id))
    assert kept is not None
    assert kept.customer_id == buyer.customer_id  # the partial write was rolled back

    retried = await deliver(client, body)  # Stripe's retry

    assert retried.status_code == 200
    assert retried.json()["outcome"] == "applied"
    row = (await ledger(app))["evt_retry"]
    assert row.processed_at is not None
    assert (row.attempts, row.last_error) == (2, None)
    assert (await subscriptions(app))["sub_1"].status == "active"


async def test_an_unknown_customer_is_recorded_and_acknowledged(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    body = subscription_event("evt_stranger", "customer.subscription.created", "cus_nobody", T0)
    response = await deliver(client, body)
    assert response.status_code == 200
    assert response.json()["outcome"] == "unknown_customer"
    row = (await ledger(app))["evt_stranger"]
    assert row.processed_at is not None
    assert await count(app, Subscription) == 0
    invoice = event(
        "evt_inv_stranger",
        "invoice.payment_failed",
        {"id": "in_1", "object": "invoice", "customer": "cus_nobody", "subscription": "sub_9"},
        T0,
    )
    assert (await deliver(client, invoice)).json()["outcome"] == "unknown_customer"


async def test_checkout_completed_links_the_customer_of_the_reference(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "linked@example.com")
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    completed = event(
        "evt_cs",
        "checkout.session.completed",
        {
            "id": "cs_1",
            "object": "checkout.session",
            "mode": "subscription",
            "customer": "cus_elsewhere",
            "client_reference_id": user_id,
            "subscription": "sub_7",
        },
        T0,
    )
    assert (await deliver(client, completed)).json()["outcome"] == "applied"
    created = subscription_event(
        "evt_sub7", "customer.subscription.created", "cus_elsewhere", T0 + 1, sub_id="sub_7"
    )
    assert (await deliver(client, created)).json()["outcome"] == "applied"
    mine = (await client.get("/api/v1/payments/subscription", headers=headers)).json()
    assert mine["plan"] == "pro"


async def test_subscription_metadata_links_a_customer_we_never_stored(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "meta@example.com")
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    created = subscription_event(
        "evt_meta",
        "customer.subscription.created",
        "cus_lost",
        T0,
        metadata={"user_id": user_id},
    )
    assert (await deliver(client, created)).json()["outcome"] == "applied"
    assert await count(app, StripeCustomer) == 1


async def test_invoice_events_are_kept_in_order(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "invoices@example.com")
    cid = buyer.customer_id
    await deliver(client, subscription_event("evt_s", "customer.subscription.created", cid, T0))

    def invoice(event_id: str, type_: str, created: int) -> dict[str, Any]:
        obj = {
            "id": f"in_{event_id}",
            "object": "invoice",
            "customer": cid,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": "sub_1"},
            },
        }
        return event(event_id, type_, obj, created)

    assert (await deliver(client, invoice("e1", "invoice.paid", T0 + 30))).status_code == 200
    late = await deliver(client, invoice("e2", "invoice.payment_failed", T0 + 10))
    assert late.json()["outcome"] == "stale"
    assert (await subscriptions(app))["sub_1"].latest_invoice_status == "paid"
    failed = await deliver(client, invoice("e3", "invoice.payment_failed", T0 + 40))
    assert failed.json()["outcome"] == "applied"
    assert (await subscriptions(app))["sub_1"].latest_invoice_status == "payment_failed"


async def test_other_types_are_acknowledged_and_ignored(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    body = event("evt_other", "customer.created", {"id": "cus_1", "object": "customer"}, T0)
    response = await deliver(client, body)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert (await ledger(app))["evt_other"].processed_at is not None
