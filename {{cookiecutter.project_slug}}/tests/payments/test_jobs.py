"""Webhook events are applied by a job: enqueued in the transaction that records the event,
once per event, retried with backoff, dead after their attempts, and replayable."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.jobs import cli as jobs_cli
from {{ cookiecutter.package_name }}.payments import __main__ as payments_cli
from {{ cookiecutter.package_name }}.payments.webhooks import APPLY_MAX_ATTEMPTS, job_id
from tests.auth.conftest import assert_problem
from tests.payments.conftest import (
    FakeStripe,
    apply,
    customer,
    deliver,
    drain,
    jobs,
    ledger,
    make_due,
    stripe_event,
    subscriptions,
)

T0 = 1_800_000_000


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def test_a_duplicate_delivery_is_one_job_and_one_effect(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "twice@example.com")
    body = stripe_event(
        fake_stripe, "evt_twice", "customer.subscription.created", buyer.customer_id, T0
    )

    first = await deliver(client, body)
    second = await deliver(client, body)  # before the job ran, or after
    await drain(app)
    third = await deliver(client, body)  # after
    await drain(app)

    assert first.json()["outcome"] == "queued"
    assert second.json()["outcome"] in {"queued", "duplicate"}
    assert third.json()["outcome"] == "duplicate"
    assert list(await jobs(app)) == [job_id("evt_twice")]
    assert len(fake_stripe.to("/v1/subscriptions/sub_1", "GET")) == 1  # applied once
    row = (await ledger(app))["evt_twice"]
    assert (row.outcome, row.attempts) == ("applied", 1)


async def test_a_failing_event_is_retried_with_backoff_then_applied(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "flaky@example.com")
    body = stripe_event(
        fake_stripe, "evt_flaky", "customer.subscription.created", buyer.customer_id, T0
    )
    fake_stripe.fail_with = 503

    response = await deliver(client, body)
    assert response.status_code == 200  # answered at once: the job deals with Stripe
    await drain(app)
    delays: list[float] = []
    for attempt in (1, 2, 3):
        job = (await jobs(app))[job_id("evt_flaky")]
        assert (job.status, job.attempts) == ("pending", attempt)
        delays.append((_aware(job.run_at) - datetime.now(UTC)).total_seconds())
        row = (await ledger(app))["evt_flaky"]
        assert (row.processed_at, row.attempts) == (None, attempt)  # the ledger stays true
        assert row.last_error is not None
        assert "fake outage" in row.last_error
        assert await drain(app) == 0  # not due yet: nothing runs
        if attempt < 3:
            await make_due(app, job.id)
            await drain(app)
    # About 10 s, 20 s, 40 s (backoff doubling, up to a quarter less for jitter).
    assert 7.0 <= delays[0] <= 10.5, delays
    assert 14.5 <= delays[1] <= 20.5, delays
    assert 29.5 <= delays[2] <= 40.5, delays

    fake_stripe.fail_with = None
    await make_due(app, job_id("evt_flaky"))
    await drain(app)

    assert (await jobs(app))[job_id("evt_flaky")].status == "done"
    row = (await ledger(app))["evt_flaky"]
    assert (row.outcome, row.attempts, row.last_error) == ("applied", 4, None)
    assert (await subscriptions(app))["sub_1"].status == "active"


async def test_an_event_dead_after_its_attempts_is_replayed_from_the_jobs_cli(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, settings: Settings
) -> None:
    buyer = await customer(app, client, "dead@example.com")
    body = stripe_event(
        fake_stripe, "evt_dead", "customer.subscription.created", buyer.customer_id, T0
    )
    fake_stripe.fail_with = 500
    assert await apply(app, client, body) is None
    for _ in range(APPLY_MAX_ATTEMPTS - 1):
        await make_due(app, job_id("evt_dead"))
        await drain(app)

    job = (await jobs(app))[job_id("evt_dead")]
    assert (job.status, job.attempts) == ("dead", APPLY_MAX_ATTEMPTS)
    assert job.last_error is not None
    assert "fake outage" in job.last_error
    row = (await ledger(app))["evt_dead"]
    assert (row.processed_at, row.attempts) == (None, APPLY_MAX_ATTEMPTS)
    assert row.last_error is not None
    assert "fake outage" in row.last_error
    assert await drain(app) == 0  # dead: nothing runs it
    pending = await payments_cli.pending(settings)
    assert "evt_dead" in pending
    assert "job=dead" in pending

    fake_stripe.fail_with = None
    parser = argparse.ArgumentParser()
    jobs_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["jobs", "replay", job.id])  # python -m <package> jobs replay ID
    printed = await jobs_cli.run(args, app.state.database, lambda _settings: app)
    assert printed == f"{job.id}: replayed"
    await drain(app)

    assert (await jobs(app))[job.id].status == "done"
    row = (await ledger(app))["evt_dead"]
    assert (row.outcome, row.attempts, row.last_error) == ("applied", APPLY_MAX_ATTEMPTS + 1, None)
    assert (await subscriptions(app))["sub_1"].status == "active"
    assert await payments_cli.pending(settings) == "no unprocessed events"


async def test_the_payments_replay_applies_a_dead_event_and_clears_its_job(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, settings: Settings
) -> None:
    buyer = await customer(app, client, "inline@example.com")
    body = stripe_event(
        fake_stripe, "evt_gone", "customer.subscription.created", buyer.customer_id, T0
    )
    fake_stripe.fail_with = 500
    assert await apply(app, client, body) is None
    for _ in range(APPLY_MAX_ATTEMPTS - 1):
        await make_due(app, job_id("evt_gone"))
        await drain(app)
    assert (await jobs(app))[job_id("evt_gone")].status == "dead"

    fake_stripe.fail_with = None
    payments_settings = app.state.payments.settings
    printed = await payments_cli.replay(settings, payments_settings, "evt_gone")

    assert printed == "evt_gone: applied"
    assert (await ledger(app))["evt_gone"].outcome == "applied"
    assert job_id("evt_gone") not in await jobs(app)  # applied: nothing left to replay


async def test_a_rolled_back_request_enqueues_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "rollback@example.com")
    body = stripe_event(
        fake_stripe, "evt_rollback", "customer.subscription.created", buyer.customer_id, T0
    )

    def fail(session: Session) -> None:
        raise RuntimeError("the commit failed")

    event.listen(Session, "before_commit", fail)  # after the ledger row and the job are written
    try:
        response = await deliver(client, body)
    finally:
        event.remove(Session, "before_commit", fail)

    assert_problem(response, 500)
    assert await ledger(app) == {}
    assert await jobs(app) == {}
    assert await drain(app) == 0
    # Stripe delivers it again (it got no 2xx): recorded, enqueued and applied this time.
    assert await apply(app, client, body) == "applied"
