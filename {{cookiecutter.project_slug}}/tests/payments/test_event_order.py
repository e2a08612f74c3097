"""Stripe's events arrive in any order, more than once, in the same second, or before what
they refer to: the stored subscription converges to Stripe's (the fake's) state, and an
event that cannot be applied yet is retried (its job, with backoff), not dropped."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.payments.models import Subscription
from tests.auth.conftest import assert_problem, count, signed_in
from tests.payments.conftest import (
    TEAM_PRICE,
    FakeStripe,
    apply,
    customer,
    deliver,
    drain,
    event,
    invoice,
    jobs,
    ledger,
    make_due,
    stripe_event,
    subscription,
    subscriptions,
)

T0 = 1_800_000_000  # every event of a scenario in this one second: arrival order decides nothing


def lifecycle(fake: FakeStripe, cid: str) -> dict[str, dict[str, Any]]:
    """A checkout's events as Stripe emits them, each with its snapshot; the fake ends
    with an active Team subscription whose latest invoice is paid."""
    created = stripe_event(
        fake,
        "evt_created",
        "customer.subscription.created",
        cid,
        T0,
        status="incomplete",
        latest_invoice=invoice("in_1", "open", attempted=False),
    )
    active = stripe_event(
        fake,
        "evt_active",
        "customer.subscription.updated",
        cid,
        T0,
        latest_invoice=invoice("in_1", "paid"),
    )
    paid = event("evt_paid", "invoice.paid", invoice("in_1", "paid"), T0)
    team = stripe_event(
        fake,
        "evt_team",
        "customer.subscription.updated",
        cid,
        T0,
        price=TEAM_PRICE,
        latest_invoice=invoice("in_1", "paid"),
    )
    return {e["id"]: e for e in (created, active, paid, team)}


ORDERS = {
    "in order": ["evt_created", "evt_active", "evt_paid", "evt_team"],
    "updated before created": ["evt_team", "evt_active", "evt_created", "evt_paid"],
    "invoice.paid before the subscription exists": [
        "evt_paid",
        "evt_team",
        "evt_created",
        "evt_active",
    ],
    "duplicates": [
        "evt_team",
        "evt_created",
        "evt_team",
        "evt_paid",
        "evt_created",
        "evt_active",
        "evt_paid",
    ],
}


@pytest.mark.parametrize("order", ORDERS)
async def test_out_of_order_deliveries_converge_to_stripes_state(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, order: str
) -> None:
    buyer = await customer(app, client, "order@example.com")
    events = lifecycle(fake_stripe, buyer.customer_id)

    for event_id in ORDERS[order]:
        response = await deliver(client, events[event_id])
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] in {"queued", "duplicate"}
        await drain(app)  # applied in the order delivered

    [sub] = (await subscriptions(app)).values()
    truth = fake_stripe.subscriptions["sub_1"]
    assert (sub.status, sub.price_id, sub.cancel_at_period_end) == (
        truth["status"],
        TEAM_PRICE,
        False,
    )
    assert sub.latest_invoice_status == "paid"
    assert all(row.processed_at is not None for row in (await ledger(app)).values())
    mine = (await client.get("/api/v1/payments/subscription", headers=buyer.headers)).json()
    assert (mine["plan"], mine["status"], mine["active"]) == ("team", "active", True)


async def test_concurrent_deliveries_converge_to_stripes_state(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "together@example.com")
    events = lifecycle(fake_stripe, buyer.customer_id)
    bodies = [*events.values(), *events.values()]
    responses = await asyncio.gather(*(deliver(client, body) for body in bodies))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert len(await jobs(app)) == len(events)  # one job per event, duplicates or not
    await drain(app)  # the jobs run concurrently
    [sub] = (await subscriptions(app)).values()
    assert (sub.status, sub.price_id, sub.latest_invoice_status) == ("active", TEAM_PRICE, "paid")


async def test_deleted_before_updated_stays_canceled(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "leaving@example.com")
    cid = buyer.customer_id
    created = stripe_event(fake_stripe, "evt_c", "customer.subscription.created", cid, T0)
    updated = stripe_event(
        fake_stripe, "evt_u", "customer.subscription.updated", cid, T0, cancel_at_period_end=True
    )
    deleted = stripe_event(
        fake_stripe, "evt_d", "customer.subscription.deleted", cid, T0, status="canceled"
    )
    for body in (deleted, updated, created, updated):
        await apply(app, client, body)

    assert (await subscriptions(app))["sub_1"].status == "canceled"
    mine = (await client.get("/api/v1/payments/subscription", headers=buyer.headers)).json()
    assert (mine["plan"], mine["status"], mine["active"]) == ("free", "canceled", False)
    assert mine["ai_monthly_tokens"] == 1000


async def test_a_late_snapshot_does_not_win_in_the_same_second(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    """Card declined, then the dunning succeeded: both events carry the same second."""
    buyer = await customer(app, client, "dunning@example.com")
    cid = buyer.customer_id
    past_due = stripe_event(
        fake_stripe,
        "evt_pd",
        "customer.subscription.updated",
        cid,
        T0,
        status="past_due",
        latest_invoice=invoice("in_2", "open"),
    )
    failed = event("evt_failed", "invoice.payment_failed", invoice("in_2", "open"), T0)
    recovered = stripe_event(
        fake_stripe,
        "evt_ok",
        "customer.subscription.updated",
        cid,
        T0,
        latest_invoice=invoice("in_2", "paid"),
    )
    for body in (recovered, failed, past_due):
        await apply(app, client, body)
    sub = (await subscriptions(app))["sub_1"]
    assert (sub.status, sub.latest_invoice_status) == ("active", "paid")


async def test_a_stripe_outage_leaves_the_event_for_the_retry(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "outage@example.com")
    body = stripe_event(
        fake_stripe, "evt_o", "customer.subscription.created", buyer.customer_id, T0
    )
    fake_stripe.fail_with = 500

    assert await apply(app, client, body) is None

    row = (await ledger(app))["evt_o"]
    assert (row.processed_at, row.attempts) == (None, 1)
    assert row.last_error is not None
    assert "fake outage" in row.last_error
    assert await count(app, Subscription) == 0
    job = (await jobs(app))["payments.apply_event:evt_o"]
    assert (job.status, job.attempts) == ("pending", 1)
    assert job.last_error is not None
    assert job.last_error.startswith("RetryLater: APIError")

    fake_stripe.fail_with = None
    await make_due(app, job.id)
    await drain(app)  # the job's retry
    assert (await ledger(app))["evt_o"].outcome == "applied"
    assert (await subscriptions(app))["sub_1"].status == "active"


async def test_an_event_before_its_customer_is_linked_is_retried_not_dropped(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    """A subscription whose customer Checkout made (no metadata): its link comes with
    checkout.session.completed, which may arrive after the subscription's events."""
    headers = await signed_in(client, "linkless@example.com")
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    early = stripe_event(fake_stripe, "evt_early", "customer.subscription.created", "cus_new", T0)

    assert await apply(app, client, early) is None  # not yet: its job waits for a retry

    completed = event(
        "evt_done",
        "checkout.session.completed",
        {
            "id": "cs_9",
            "object": "checkout.session",
            "mode": "subscription",
            "customer": "cus_new",
            "client_reference_id": user_id,
            "subscription": "sub_1",
        },
        T0,
    )
    assert await apply(app, client, completed) == "applied"
    await make_due(app, "payments.apply_event:evt_early")
    await drain(app)
    assert (await ledger(app))["evt_early"].outcome == "applied"
    mine = (await client.get("/api/v1/payments/subscription", headers=headers)).json()
    assert (mine["plan"], mine["active"]) == ("pro", True)


async def test_a_slow_stripe_read_holds_up_no_other_write(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    """Applying an event reads the subscription from Stripe with no write pending: on SQLite
    a write would hold the database's one write lock across the call, and a sign-up meanwhile
    would wait for it, then fail ("database is locked")."""
    buyer = await customer(app, client, "patient@example.com")
    body = stripe_event(
        fake_stripe, "evt_slow", "customer.subscription.created", buyer.customer_id, T0
    )
    gate = fake_stripe.hold = threading.Event()
    assert (await deliver(client, body)).status_code == 200
    applying = asyncio.ensure_future(drain(app))
    try:
        assert await asyncio.to_thread(fake_stripe.holding.wait, 10), "the job never read Stripe"
        headers = await signed_in(client, "meanwhile@example.com")  # a user, a session, a job
        me = await client.get("/api/v1/users/me", headers=headers)
        assert me.status_code == 200, me.text
        assert not applying.done()  # Stripe's answer is still on its way: nobody waited for it
    finally:
        gate.set()
        await applying
    assert (await ledger(app))["evt_slow"].outcome == "applied"
    assert (await subscriptions(app))["sub_1"].status == "active"


async def test_an_older_read_that_arrives_last_is_not_stored(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    """One subscription's events handled at once: the first one's answer from Stripe is slow,
    the second one reads the newer state and stores it first; the older read stays out."""
    buyer = await customer(app, client, "overtaken@example.com")
    cid = buyer.customer_id
    early = stripe_event(
        fake_stripe, "evt_early", "customer.subscription.created", cid, T0, status="incomplete"
    )
    gate = fake_stripe.hold = threading.Event()
    assert (await deliver(client, early)).status_code == 200
    slow = asyncio.ensure_future(drain(app))
    try:
        assert await asyncio.to_thread(fake_stripe.holding.wait, 10), "the job never read Stripe"
        fake_stripe.hold = None  # the next read is answered at once
        late = stripe_event(fake_stripe, "evt_late", "customer.subscription.updated", cid, T0)
        assert (await deliver(client, late)).status_code == 200
        fast = asyncio.ensure_future(drain(app))
        # SQLite: the second event is stored while the first read waits. PostgreSQL: the
        # second waits for the subscription's lock, which the first holds while it reads.
        for _ in range(60):  # up to 3 s
            if "sub_1" in await subscriptions(app):
                break
            await asyncio.sleep(0.05)
    finally:
        gate.set()
        await slow
    await fast
    await drain(app)
    [sub] = (await subscriptions(app)).values()
    assert sub.status == "active"
    assert {e: r.outcome for e, r in (await ledger(app)).items()} == {
        "evt_early": "applied",
        "evt_late": "applied",
    }


# --- one checkout at a time --------------------------------------------------------------------

CHECKOUT = "/api/v1/payments/checkout"


def open_sessions(fake: FakeStripe) -> list[dict[str, Any]]:
    return [s for s in fake.sessions.values() if s["status"] == "open"]


async def test_concurrent_checkouts_of_one_user_make_one_session(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "eager@example.com")
    responses = await asyncio.gather(
        *(client.post(CHECKOUT, json={"plan": "pro"}, headers=headers) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(fake_stripe.to("/v1/checkout/sessions")) == 1
    assert len(fake_stripe.to("/v1/customers")) == 1


async def test_concurrent_checkouts_for_two_plans_leave_one_payable_session(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "undecided@example.com")
    plans = ["pro", "team"] * 3
    responses = await asyncio.gather(
        *(client.post(CHECKOUT, json={"plan": plan}, headers=headers) for plan in plans)
    )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    [payable] = open_sessions(fake_stripe)
    assert payable["id"] in {r.json()["id"] for r in responses}


async def test_an_incomplete_subscription_blocks_a_second_checkout(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "incomplete@example.com")
    body = stripe_event(
        fake_stripe,
        "evt_i",
        "customer.subscription.created",
        buyer.customer_id,
        T0,
        status="incomplete",
    )
    assert await apply(app, client, body) == "applied"
    assert_problem(await client.post(CHECKOUT, json={"plan": "pro"}, headers=buyer.headers), 409)
    assert fake_stripe.to("/v1/checkout/sessions") == []

    # Stripe expires it after 23 hours; then the user may start again.
    expired = stripe_event(
        fake_stripe,
        "evt_x",
        "customer.subscription.updated",
        buyer.customer_id,
        T0 + 82_800,
        status="incomplete_expired",
    )
    assert await apply(app, client, expired) == "applied"
    again = await client.post(CHECKOUT, json={"plan": "pro"}, headers=buyer.headers)
    assert again.status_code == 200, again.text


async def test_a_paid_checkout_blocks_another_before_its_webhooks_arrive(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "quick@example.com")
    first = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)
    made = fake_stripe.sessions[first.json()["id"]]
    fake_stripe.complete_checkout(made["id"], subscription(made["customer"], sub_id="sub_paid"))

    second = await client.post(CHECKOUT, json={"plan": "team"}, headers=headers)

    assert_problem(second, 409)
    assert len(fake_stripe.to("/v1/checkout/sessions")) == 1
    # Stripe was asked: the session is complete, its subscription active.
    assert fake_stripe.to("/v1/subscriptions/sub_paid", "GET") != []


async def test_an_expired_checkout_lets_the_user_start_again(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "later@example.com")
    first = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)
    fake_stripe.expire_checkout(first.json()["id"])

    second = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)

    assert second.status_code == 200, second.text
    assert second.json()["id"] != first.json()["id"]
    assert [s["id"] for s in open_sessions(fake_stripe)] == [second.json()["id"]]


async def test_a_checkout_session_expires_on_its_own(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    """An abandoned session stops being payable after PAYMENTS_CHECKOUT_EXPIRES_SECONDS (3600)."""
    headers = await signed_in(client, "abandon@example.com")
    before = int(time.time())
    assert (await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)).status_code == 200
    [made] = fake_stripe.to("/v1/checkout/sessions")
    assert before + 3600 <= int(made.form["expires_at"]) <= int(time.time()) + 3600


async def test_a_session_about_to_expire_is_not_handed_back(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "slow@example.com")
    first = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)
    fake_stripe.sessions[first.json()["id"]]["expires_at"] = int(time.time()) + 30

    second = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)

    assert second.json()["id"] != first.json()["id"]
    assert fake_stripe.sessions[first.json()["id"]]["status"] == "expired"
    assert [s["id"] for s in open_sessions(fake_stripe)] == [second.json()["id"]]
