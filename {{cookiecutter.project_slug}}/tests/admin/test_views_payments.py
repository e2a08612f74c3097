"""Payments in the admin: customers, subscriptions and the event ledger listed; replay works."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.payments import subjects
from {{ cookiecutter.package_name }}.payments.models import StripeCustomer, StripeEvent, Subscription
from tests.admin.conftest import make_user


async def add_event(app: FastAPI, event_id: str, *, processed: bool = False) -> None:
    database: Database = app.state.database
    created = datetime.now(UTC) - timedelta(minutes=5)
    event = {
        "id": event_id,
        "type": "customer.created",  # a type the module ignores
        "created": int(created.timestamp()),
        "data": {"object": {"id": "cus_admin_test"}},
    }
    async with database.sessionmaker() as session:
        session.add(
            StripeEvent(
                id=event_id,
                type=event["type"],
                payload=event,
                stripe_created=created,
                processed_at=datetime.now(UTC) if processed else None,
                outcome="ignored" if processed else None,
                attempts=1 if processed else 0,
            )
        )
        await session.commit()


async def get_event(app: FastAPI, event_id: str) -> StripeEvent:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        row = await session.get(StripeEvent, event_id)
        assert row is not None
        return row


async def test_customers_and_subscriptions_are_listed(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    user = await make_user(app, "payer@example.com")
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        payer = await subjects.current().of_user(session, user)  # who pays for the user
        session.add(StripeCustomer(subject_id=payer, customer_id="cus_admin_1"))
        session.add(
            Subscription(
                id="sub_admin_1",
                subject_id=payer,
                customer_id="cus_admin_1",
                status="active",
                price_id="price_pro",
                state_as_of=datetime.now(UTC),
            )
        )
        await session.commit()
    customers = await admin_client.get("/admin/stripe-customer/list")
    assert customers.status_code == 200
    assert "cus_admin_1" in customers.text
    subscriptions = await admin_client.get("/admin/subscription/list", params={"status": "active"})
    assert subscriptions.status_code == 200
    assert "sub_admin_1" in subscriptions.text
    assert "price_pro" in subscriptions.text
    edit = await admin_client.get("/admin/subscription/edit/sub_admin_1")
    assert edit.status_code == 403


async def test_the_event_ledger_is_listed_filtered_and_read_only(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    await add_event(app, "evt_done", processed=True)
    await add_event(app, "evt_waiting")
    everything = await admin_client.get("/admin/stripe-event/list")
    assert "evt_done" in everything.text
    assert "evt_waiting" in everything.text
    pending = await admin_client.get("/admin/stripe-event/list", params={"processed": "false"})
    assert "evt_waiting" in pending.text
    assert "evt_done" not in pending.text
    assert (await admin_client.get("/admin/stripe-event/edit/evt_done")).status_code == 403
    assert (await admin_client.get("/admin/stripe-event/details/evt_done")).status_code == 200


async def test_replay_handles_stored_events_again(
    app: FastAPI, admin_client: AsyncClient, superuser: User
) -> None:
    await add_event(app, "evt_waiting")
    await add_event(app, "evt_done", processed=True)
    response = await admin_client.get(
        "/admin/stripe-event/action/replay", params={"pks": "evt_waiting,evt_done,evt_missing"}
    )
    assert response.status_code == 302
    waiting = await get_event(app, "evt_waiting")
    assert waiting.processed_at is not None
    assert waiting.outcome == "ignored"
    assert waiting.attempts == 1
    assert (await get_event(app, "evt_done")).attempts == 2
    listing = await admin_client.get("/admin/stripe-event/list")
    assert "evt_waiting: ignored" in listing.text
    assert "evt_missing: not in the ledger" in listing.text
