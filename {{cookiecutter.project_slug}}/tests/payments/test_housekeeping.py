"""The scheduled jobs: the ledger's purge, and the daily reconcile against Stripe."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import Job, JobRecord, get_jobs
from {{ cookiecutter.package_name }}.payments import housekeeping
from {{ cookiecutter.package_name }}.payments.client import PaymentsState, StripeClientHolder
from {{ cookiecutter.package_name }}.payments.models import StripeCheckout, StripeEvent
from {{ cookiecutter.package_name }}.payments.webhooks import job_id
from tests.auth.conftest import signed_in
from tests.payments.conftest import (
    TEAM_PRICE,
    FakeStripe,
    apply,
    customer,
    drain,
    jobs,
    ledger,
    stripe_event,
    subject_of,
    subscription,
    subscriptions,
)

T0 = 1_800_000_000


async def run_scheduled(app: FastAPI, job: Job[Any], minutes_ago: int = 1) -> None:
    """The scheduler's tick of `job`, as every instance adds it; then run it."""
    tick = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    await get_jobs(app).schedule_ticks([(job, tick)])
    await drain(app)
    assert (await jobs(app))[f"{job.name}:{tick:%Y-%m-%dT%H:%M:%SZ}"].status == "done"


async def test_the_housekeeping_jobs_run_daily(app: FastAPI) -> None:
    registered = get_jobs(app).jobs
    for name in ("payments.purge_ledger", "payments.reconcile"):
        schedule = registered[name].schedule
        assert schedule is not None
        ticks = croniter(schedule, datetime(2030, 1, 1, tzinfo=UTC))
        first, second = ticks.get_next(datetime), ticks.get_next(datetime)
        assert second - first == timedelta(days=1)
    assert registered["payments.apply_event"].schedule is None


# --- the purge ----------------------------------------------------------------------------


async def test_the_purge_deletes_only_old_processed_events_and_stale_checkouts(
    app: FastAPI, client: AsyncClient
) -> None:
    now = datetime.now(UTC)
    database: Database = app.state.database
    for email in ("stale@example.com", "open@example.com", "recent@example.com"):
        await signed_in(client, email)
    async with database.sessionmaker() as session:
        users = list((await session.execute(select(User.id).order_by(User.email))).scalars())
    payers = [uuid.UUID(await subject_of(app, str(user_id))) for user_id in users]
    ages = {  # event id: (days since received, processed?)
        "evt_old_done": (100, True),
        "evt_kept_done": (80, True),  # PAYMENTS_EVENT_RETENTION_DAYS is 90
        "evt_old_waiting": (100, False),  # unprocessed: never purged
    }
    async with database.sessionmaker() as session, session.begin():
        for event_id, (days, processed) in ages.items():
            at = now - timedelta(days=days)
            session.add(
                StripeEvent(
                    id=event_id,
                    type="invoice.paid",
                    payload={"id": event_id},
                    stripe_created=at,
                    received_at=at,
                    processed_at=at if processed else None,
                    outcome="applied" if processed else None,
                    attempts=1,
                )
            )
            session.add(
                JobRecord(
                    id=job_id(event_id),
                    name="payments.apply_event",
                    args={"event_id": event_id},
                    status="done" if processed else "dead",
                    attempts=1,
                    max_attempts=16,
                    run_at=at,
                    finished_at=at,
                )
            )
        open_user, recent_user, stale_user = payers  # by email
        for user_id, expires in (
            (stale_user, now - timedelta(days=2)),  # expired two days ago
            (recent_user, now - timedelta(hours=1)),  # expired, kept a day
            (open_user, now + timedelta(minutes=30)),  # still payable
        ):
            session.add(
                StripeCheckout(subject_id=user_id, session_id=f"cs_{user_id}", expires_at=expires)
            )

    await run_scheduled(app, housekeeping.purge_ledger)

    assert set(await ledger(app)) == {"evt_kept_done", "evt_old_waiting"}
    left = await jobs(app)
    assert job_id("evt_old_done") not in left  # its finished job went with it
    assert {job_id("evt_kept_done"), job_id("evt_old_waiting")} <= set(left)
    async with database.sessionmaker() as session:
        kept = set((await session.execute(select(StripeCheckout.subject_id))).scalars())
    assert kept == {open_user, recent_user}


# --- the reconcile ------------------------------------------------------------------------


async def test_reconcile_corrects_drift_and_leaves_correct_subscriptions_alone(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(housekeeping, "RECONCILE_PAGE_SIZE", 2)  # several pages
    drifting = await customer(app, client, "drift@example.com")
    steady = await customer(app, client, "steady@example.com")
    leaving = await customer(app, client, "leaving@example.com")
    lost = await customer(app, client, "lost@example.com")
    for event_id, buyer, sub_id in (
        ("evt_a", drifting, "sub_a"),
        ("evt_b", steady, "sub_b"),
        ("evt_c", leaving, "sub_c"),
        ("evt_e", leaving, "sub_e"),
    ):
        body = stripe_event(
            fake_stripe,
            event_id,
            "customer.subscription.created",
            buyer.customer_id,
            T0,
            sub_id=sub_id,
        )
        assert await apply(app, client, body) == "applied"
    stored = await subscriptions(app)
    assert {s.status for s in stored.values()} == {"active"}
    # What changed at Stripe while its webhooks were lost:
    fake_stripe.set_subscription(
        subscription(
            drifting.customer_id, sub_id="sub_a", price=TEAM_PRICE, cancel_at_period_end=True
        )
    )
    fake_stripe.set_subscription(
        subscription(leaving.customer_id, sub_id="sub_c", status="canceled")
    )
    del fake_stripe.subscriptions["sub_e"]  # gone from Stripe
    fake_stripe.set_subscription(subscription(lost.customer_id, sub_id="sub_d"))  # never told
    fake_stripe.set_subscription(subscription("cus_another_app", sub_id="sub_x"))  # not ours
    fake_stripe.calls.clear()

    with caplog.at_level(logging.WARNING):
        await run_scheduled(app, housekeeping.reconcile_subscriptions, minutes_ago=2)

    after = await subscriptions(app)
    assert (after["sub_a"].price_id, after["sub_a"].cancel_at_period_end) == (TEAM_PRICE, True)
    assert after["sub_c"].status == "canceled"
    assert after["sub_e"].status == "canceled"
    assert after["sub_d"].status == "active"
    assert str(after["sub_d"].subject_id) == lost.subject_id
    assert "sub_x" not in after
    assert after["sub_b"].updated_at == stored["sub_b"].updated_at  # left alone
    assert after["sub_b"].state_as_of == stored["sub_b"].state_as_of
    # Listed in pages of two (sub_a, sub_b, sub_d, sub_x: not the canceled one), then only
    # the suspects read one by one.
    assert len(fake_stripe.to("/v1/subscriptions", "GET")) == 2
    read = {c.path.rsplit("/", 1)[1] for c in fake_stripe.calls if c.path.count("/") == 3}
    assert read == {"sub_a", "sub_c", "sub_d", "sub_e"}
    for sub_id in ("sub_a", "sub_c", "sub_d", "sub_e"):
        assert f"'subscription_id': '{sub_id}'" in caplog.text
    assert "'subscription_id': 'sub_b'" not in caplog.text
    mine = (await client.get("/api/v1/payments/subscription", headers=drifting.headers)).json()
    assert (mine["plan"], mine["cancel_at_period_end"]) == ("team", True)

    # Idempotent: the next day finds nothing to correct and writes nothing.
    fake_stripe.calls.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await run_scheduled(app, housekeeping.reconcile_subscriptions, minutes_ago=1)
    again = await subscriptions(app)
    assert {k: v.updated_at for k, v in again.items()} == {
        k: v.updated_at for k, v in after.items()
    }
    assert [c.path for c in fake_stripe.calls] == ["/v1/subscriptions", "/v1/subscriptions"]
    assert "subscription_reconciled" not in caplog.text


async def test_reconcile_without_stripe_keys_does_nothing(
    app: FastAPI, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    unconfigured = PaymentsState(app.state.payments.settings, StripeClientHolder(None))
    monkeypatch.setattr(app.state, "payments", unconfigured)
    await run_scheduled(app, housekeeping.reconcile_subscriptions)  # done, not failed
    assert fake_stripe.calls == []
