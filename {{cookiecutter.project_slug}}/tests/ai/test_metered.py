"""Metered AI overage: tokens beyond a metered plan's allowance are billed, not refused.

The real `stripe` library reports the overage to the fake Stripe on 127.0.0.1 (which takes
an identifier once, like Stripe). Removed from projects without the payments module (see
the hook's table).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.config import Config
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import insert, select

from {{ cookiecutter.package_name }}.ai import billing, meter
from {{ cookiecutter.package_name }}.ai.billing import AIMeterBatch
from {{ cookiecutter.package_name }}.ai.models import AIUsage
from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import Job, JobRecord, JobStatus, Tick, enqueue, get_jobs
from {{ cookiecutter.package_name }}.payments.client import get_payments_state
from {{ cookiecutter.package_name }}.payments.models import Subscription
from tests.ai.conftest import http, make_ai_settings
from tests.ai.fake_upstream import FakeUpstream
from tests.payments import conftest as payments_fixtures
from tests.payments.conftest import (
    Customer,
    FakeStripe,
    customer,
    make_payments_settings,
    running_app,
)

CHAT = "/api/v1/ai/chat"
USAGE = "/api/v1/ai/usage"
METER_EVENTS = "/v1/billing/meter_events"
HELLO = {"messages": [{"role": "user", "content": "Say hello"}]}
ALLOWANCE = 10  # tokens a month: one chat goes past it
METERED_PRICE = "price_metered_base"
OVERAGE_PRICE = "price_ai_tokens_metered"
CAPPED_PRICE = "price_capped_base"
EVENT_NAME = "ai_tokens"

METERED_PLAN = {
    "key": "metered",
    "name": "Metered",
    "price_id": METERED_PRICE,
    "ai_monthly_tokens": ALLOWANCE,
    "ai_metered_price_id": OVERAGE_PRICE,
    "ai_meter_event_name": EVENT_NAME,
}
CAPPED_PLAN = {
    "key": "capped",
    "name": "Capped",
    "price_id": CAPPED_PRICE,
    "ai_monthly_tokens": ALLOWANCE,
}


# The fake Stripe API of the payments tests (one server for the session).
stripe_server, fake_stripe = payments_fixtures.stripe_server, payments_fixtures.fake_stripe


def start(
    settings: Settings, upstream: FakeUpstream, fake: FakeStripe, plans: list[dict[str, Any]]
) -> AbstractAsyncContextManager[FastAPI]:
    # Plans and totals read afresh on every request: the tests change them between calls.
    ai_settings = make_ai_settings(
        upstream, transport="fast", quota_cache_seconds=0, monthly_token_quota=10**9
    )
    payments_settings = make_payments_settings(fake.url, plans=plans)
    return running_app(settings, payments_settings, ai_settings=ai_settings)


@pytest.fixture
async def app(
    settings: Settings, migrated: Config, upstream: FakeUpstream, fake_stripe: FakeStripe
) -> AsyncIterator[FastAPI]:
    async with start(settings, upstream, fake_stripe, [METERED_PLAN, CAPPED_PLAN]) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with http(app) as c:
        yield c


async def subscriber(app: FastAPI, client: AsyncClient, email: str, price: str) -> Customer:
    """A signed-in user whose billing subject has an active subscription at this price."""
    found = await customer(app, client, email)
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        session.add(
            Subscription(
                id=f"sub_{uuid.uuid4().hex[:12]}",
                subject_id=uuid.UUID(found.subject_id),
                customer_id=found.customer_id,
                status="active",
                price_id=price,
                state_as_of=utcnow(),
            )
        )
    return found


async def chat(client: AsyncClient, who: Customer) -> int:
    response = await client.post(CHAT, json=HELLO, headers=who.headers)
    return response.status_code


async def usage(client: AsyncClient, who: Customer) -> dict[str, Any]:
    response = await client.get(USAGE, headers=who.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def run(app: FastAPI, job: Job[Tick]) -> None:
    """Run a scheduled job now, as its tick would (the scheduler is off in tests)."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await enqueue(session, job, Tick(at=datetime.now(UTC)))
    await get_jobs(app).drain()


async def make_all_due(app: FastAPI) -> None:
    """Time passes: the jobs waiting for a retry are due now."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        rows = await session.scalars(select(JobRecord).where(JobRecord.status == JobStatus.PENDING))
        for row in rows:
            row.run_at = datetime.now(UTC)


async def batches(app: FastAPI) -> list[AIMeterBatch]:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return list((await session.scalars(select(AIMeterBatch).order_by(AIMeterBatch.id))).all())


async def a_failed_batch(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, failure: str
) -> tuple[Customer, int, AIMeterBatch]:
    """A metered subscriber's overage, whose first report fails as `failure` says."""
    metered = await subscriber(app, client, "metered@example.com", METERED_PRICE)
    assert await chat(client, metered) == 200
    over = overage_of(await usage(client, metered))
    fake_stripe.meter_script.append(failure)
    await run(app, billing.report_usage)
    [batch] = await batches(app)
    assert batch.status == "failed"
    return metered, over, batch


def overage_of(body: dict[str, Any]) -> int:
    return int(body["tokens"]) - ALLOWANCE


async def test_overage_is_billed_on_a_metered_plan_and_refused_on_another(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    metered = await subscriber(app, client, "metered@example.com", METERED_PRICE)
    capped = await subscriber(app, client, "capped@example.com", CAPPED_PRICE)
    assert [await chat(client, metered) for _ in range(3)] == [200, 200, 200]
    assert [await chat(client, capped) for _ in range(2)] == [200, 429]

    mine = await usage(client, metered)
    assert mine["quota"] == ALLOWANCE
    assert mine["remaining"] == 0
    over = overage_of(mine)
    assert over > 0
    assert mine["overage"] == {"tokens": over, "billed": 0, "unbilled": over}
    assert (await usage(client, capped))["overage"] is None
    assert fake_stripe.to(METER_EVENTS) == []  # reported by the job, not by the request


async def test_the_job_sends_one_event_per_customer_and_a_second_run_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    metered = await subscriber(app, client, "metered@example.com", METERED_PRICE)
    other = await subscriber(app, client, "other@example.com", METERED_PRICE)
    for who in (metered, metered, metered, other, other):
        assert await chat(client, who) == 200
    await run(app, billing.report_usage)

    sent = fake_stripe.to(METER_EVENTS)
    assert len(sent) == 2  # one event per customer, whatever the number of calls
    by_customer = {c.form["payload[stripe_customer_id]"]: c.form for c in sent}
    for who in (metered, other):
        form = by_customer[who.customer_id]
        assert form["event_name"] == EVENT_NAME
        assert int(form["payload[value]"]) == overage_of(await usage(client, who))
        assert form["identifier"].startswith("ai-overage-")
        assert (await usage(client, who))["overage"]["unbilled"] == 0

    await run(app, billing.report_usage)  # nothing new: nothing sent
    assert len(fake_stripe.to(METER_EVENTS)) == 2

    assert await chat(client, metered) == 200  # more overage: one more event, the difference
    billed_before = fake_stripe.billed(metered.customer_id)
    await run(app, billing.report_usage)
    [last] = fake_stripe.to(METER_EVENTS)[2:]
    total = overage_of(await usage(client, metered))
    assert int(last.form["payload[value]"]) == total - billed_before
    assert fake_stripe.billed(metered.customer_id) == total
    assert len({c.form["identifier"] for c in fake_stripe.to(METER_EVENTS)}) == 3
    assert (await usage(client, metered))["overage"] == {
        "tokens": total,
        "billed": total,
        "unbilled": 0,
    }


@pytest.mark.parametrize("failure", ["fail", "lost"])
async def test_a_failure_then_a_retry_sends_the_same_identifier_and_bills_once(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, failure: str
) -> None:
    """ "fail": Stripe answered 500 and recorded nothing; "lost": it recorded the event but
    the answer never came. Either way the retry is the same event, billed once."""
    metered, over, batch = await a_failed_batch(app, client, fake_stripe, failure)
    assert (batch.status, batch.attempts) == ("failed", 1)
    assert (await usage(client, metered))["overage"]["unbilled"] == over

    await make_all_due(app)  # the job's retry (RetryLater), a minute later
    await get_jobs(app).drain()
    first, second = fake_stripe.to(METER_EVENTS)
    assert first.form["identifier"] == second.form["identifier"] == batch.identifier
    assert first.form["timestamp"] == second.form["timestamp"]
    assert fake_stripe.billed(metered.customer_id) == over  # once
    [batch] = await batches(app)
    assert (batch.status, batch.attempts) == ("sent", 2)
    assert (await usage(client, metered))["overage"] == {
        "tokens": over,
        "billed": over,
        "unbilled": 0,
    }


async def test_the_reconcile_reports_what_the_ledger_holds_and_retries_failed_batches(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    metered = await subscriber(app, client, "metered@example.com", METERED_PRICE)
    assert await chat(client, metered) == 200
    fake_stripe.meter_script.append("fail")
    await run(app, billing.report_usage)  # fails; its retry is not due yet
    [failed] = await batches(app)
    assert failed.status == "failed"

    # Usage in the ledger that the monthly totals did not count (the report reads those).
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            insert(AIUsage).values(
                created_at=datetime.now(UTC),
                user_id=uuid.UUID(metered.user_id),
                subject=uuid.UUID(metered.subject_id),
                model="test-model",
                prompt_tokens=40,
                completion_tokens=2,
                total_tokens=42,
                latency_ms=1,
                outcome="ok",
                streamed=False,
                request_id=None,
            )
        )
    plans = billing.metered_plans(get_payments_state(app).settings)
    # The totals' overage is claimed already: from them, no new batch.
    assert await billing.add_batches(database, plans, utcnow(), from_ledger=False) == 0

    await run(app, billing.reconcile_usage)
    resent, added = await batches(app)
    assert (resent.identifier, resent.status) == (failed.identifier, "sent")
    assert (added.start_tokens, added.end_tokens - added.start_tokens) == (failed.end_tokens, 42)
    assert added.status == "sent"
    identifiers = [c.form["identifier"] for c in fake_stripe.to(METER_EVENTS)]
    assert identifiers.count(failed.identifier) == 2  # failed, then sent by the reconcile
    assert fake_stripe.billed(metered.customer_id) == failed.end_tokens + 42


async def test_two_reports_at_once_claim_the_overage_once(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    metered = await subscriber(app, client, "metered@example.com", METERED_PRICE)
    assert await chat(client, metered) == 200
    payments = get_payments_state(app)
    plans = billing.metered_plans(payments.settings)
    database: Database = app.state.database
    added = await asyncio.gather(
        *(billing.add_batches(database, plans, utcnow(), from_ledger=False) for _ in range(4))
    )
    assert sum(added) == 1
    await run(app, billing.report_usage)
    assert len(fake_stripe.to(METER_EVENTS)) == 1


async def test_nothing_is_sent_without_metered_plans(
    settings: Settings, migrated: Config, upstream: FakeUpstream, fake_stripe: FakeStripe
) -> None:
    async with start(settings, upstream, fake_stripe, [CAPPED_PLAN]) as app:
        async with http(app) as client:
            capped = await subscriber(app, client, "capped@example.com", CAPPED_PRICE)
            assert [await chat(client, capped) for _ in range(2)] == [200, 429]
            assert (await usage(client, capped))["overage"] is None
            await run(app, billing.report_usage)
            await run(app, billing.reconcile_usage)
        assert fake_stripe.to(METER_EVENTS) == []
        assert await batches(app) == []


@pytest.mark.parametrize("failure", ["fail", "lost"])
async def test_a_batch_not_accepted_within_a_day_expires_and_a_person_resends_it(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    settings: Settings,
    failure: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Past the resend window the job stops sending a batch (an earlier attempt may have
    reached Stripe, which no longer knows the identifier); `python -m <package>.ai.meter`
    lists it and sends it again, once, with its identifier and its month's timestamp."""
    metered, over, batch = await a_failed_batch(app, client, fake_stripe, failure)
    payments = get_payments_state(app)
    database: Database = app.state.database

    later = batch.created_at + billing.RESEND_WINDOW + timedelta(minutes=1)
    result = await billing.report(database, payments.settings, payments.stripe.client, now=later)
    assert (result.sent, result.expired) == (0, 1)
    assert len(fake_stripe.to(METER_EVENTS)) == 1  # not sent again by the job
    [expired] = await batches(app)
    assert (expired.status, expired.attempts) == ("expired", 1)
    assert (await usage(client, metered))["overage"]["unbilled"] == over

    payments_settings = make_payments_settings(fake_stripe.url, plans=[METERED_PLAN])
    await asyncio.to_thread(meter.main, ["list"], settings)
    listed = capsys.readouterr().out
    assert f"{batch.id}\texpired\t{batch.identifier}" in listed
    assert f"tokens={over}" in listed

    await asyncio.to_thread(meter.main, ["resend", str(batch.id)], settings, payments_settings)
    assert capsys.readouterr().out.strip().startswith(f"{batch.id}: sent {over} tokens")
    first, again = fake_stripe.to(METER_EVENTS)
    assert again.form["identifier"] == first.form["identifier"] == batch.identifier
    assert again.form["timestamp"] == first.form["timestamp"]  # billed in its own month
    assert fake_stripe.billed(metered.customer_id) == over  # once, whichever way it failed
    [sent] = await batches(app)
    assert sent.status == "sent"
    assert (await usage(client, metered))["overage"]["unbilled"] == 0

    await asyncio.to_thread(meter.main, ["list"], settings)
    assert capsys.readouterr().out.strip() == "every batch is sent"
    with pytest.raises(SystemExit, match="is sent already"):
        await asyncio.to_thread(meter.main, ["resend", str(batch.id)], settings, payments_settings)
    assert len(fake_stripe.to(METER_EVENTS)) == 2


async def test_mark_sent_stops_reporting_a_batch_without_sending_it(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, batch = await a_failed_batch(app, client, fake_stripe, "fail")
    with pytest.raises(SystemExit, match="is failed: the report job sends it"):
        await asyncio.to_thread(meter.main, ["mark-sent", str(batch.id)], settings)
    with pytest.raises(SystemExit, match="no batch 999"):
        await asyncio.to_thread(meter.main, ["mark-sent", "999"], settings)

    payments = get_payments_state(app)
    later = batch.created_at + billing.RESEND_WINDOW + timedelta(minutes=1)
    await billing.report(app.state.database, payments.settings, payments.stripe.client, now=later)
    await asyncio.to_thread(meter.main, ["mark-sent", str(batch.id)], settings)
    assert capsys.readouterr().out.strip() == f"{batch.id}: marked sent (nothing sent to Stripe)"
    [done] = await batches(app)
    assert (done.status, done.attempts) == ("sent", 1)
    assert len(fake_stripe.to(METER_EVENTS)) == 1  # only the failed attempt
    await billing.report(app.state.database, payments.settings, payments.stripe.client, now=later)
    assert len(fake_stripe.to(METER_EVENTS)) == 1
