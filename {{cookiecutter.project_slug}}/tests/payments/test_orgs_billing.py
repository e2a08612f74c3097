"""Billing per organization (payments/orgs.py): the organization pays, per seat if its plan
says so, and deleting it cancels its subscription. Against the fake Stripe API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from {{ cookiecutter.package_name }}.auth.config import AuthSettings
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from {{ cookiecutter.package_name }}.orgs import events
from {{ cookiecutter.package_name }}.orgs.dependencies import OrgMember
from {{ cookiecutter.package_name }}.orgs.models import Membership, Organization
from {{ cookiecutter.package_name }}.payments import orgs as payments_orgs
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from {{ cookiecutter.package_name }}.payments.dependencies import require_plan
from {{ cookiecutter.package_name }}.payments.models import (
    StripeCheckout,
    StripeCustomer,
)
from {{ cookiecutter.package_name }}.payments.orgs import SEAT_PRORATION
from {{ cookiecutter.package_name }}.payments.service import get_entitlements
from tests.auth.conftest import assert_problem, sign_up, signed_in
from tests.conftest import clear_tables
from tests.contract import CHECKS, TIMEOUT, ContractCase, contract_test, document, stop
from tests.orgs.conftest import new_org
from tests.payments.conftest import (
    PRO_PRICE,
    FakeStripe,
    apply,
    drain,
    event,
    jobs,
    make_due,
    make_payments_settings,
    subject_of,
    subscription,
    subscriptions,
)

SEAT_PRICE = "price_seat_monthly"
ORGS = "/api/v1/orgs"


def billing(org_id: str, what: str) -> str:
    return f"{ORGS}/{org_id}/billing/{what}"


# A route of the project gated on the plan of the organization in its path.
gated = APIRouter()


@gated.get("/api/v1/orgs/{org_id}/reports", dependencies=[require_plan("seats")])
async def reports(access: OrgMember) -> dict[str, str]:
    return {"org": str(access.org_id)}


@pytest.fixture
def payments_settings(fake_stripe: FakeStripe) -> PaymentsSettings:
    settings = make_payments_settings(fake_stripe.url)
    seats: dict[str, Any] = {
        "key": "seats",
        "name": "Team (per seat)",
        "price_id": SEAT_PRICE,
        "per_seat": True,
        "features": ["reports"],
    }
    return make_payments_settings(
        fake_stripe.url, plans=[*(p.model_dump() for p in settings.plans), seats]
    )


@pytest.fixture
async def app(
    settings: Settings, migrated: Config, payments_settings: PaymentsSettings
) -> AsyncIterator[FastAPI]:
    application = create_app(settings, modules=(*MODULES, Module("tests", routers=(gated,))))
    application.state.auth_settings = AuthSettings(
        _env_file=None, cookie_secure=False, register_limit_per_client="100/minute"
    )
    application.state.payments_settings = payments_settings
    async with LifespanManager(application):
        yield application
        await drain(application)
        await application.state.rate_limiter.reset()
        await clear_tables(application.state.database)


async def user_id_of(client: AsyncClient, headers: dict[str, str]) -> uuid.UUID:
    me = await client.get("/api/v1/users/me", headers=headers)
    return uuid.UUID(me.json()["id"])


async def join(
    app: FastAPI, client: AsyncClient, org_id: str, email: str, role: str = "member"
) -> dict[str, str]:
    """A new account joins the organization, as the orgs routes make it join (the event
    in the same transaction)."""
    headers = await signed_in(client, email)
    user_id = await user_id_of(client, headers)
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        session.add(Membership(org_id=uuid.UUID(org_id), user_id=user_id, role=role))
        await session.flush()
        org = await session.get(Organization, uuid.UUID(org_id))
        assert org is not None
        await events.members_changed(session, org)
    return headers


async def team(app: FastAPI, client: AsyncClient, members: int = 2) -> tuple[str, dict[str, str]]:
    """An organization: its owner and `members` members; (its id, the owner's headers)."""
    owner = await signed_in(client, "owner@example.com")
    org_id = str((await new_org(client, owner, "Acme"))["id"])
    for n in range(members):
        await join(app, client, org_id, f"member{n}@example.com")
    return org_id, owner


async def subscribed(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    org_id: str,
    headers: dict[str, str],
    *,
    plan: str = "seats",
    price: str = SEAT_PRICE,
) -> str:
    """The organization buys the plan: checkout, paid at Stripe, its webhook applied.
    Returns the subscription id."""
    made = await client.post(billing(org_id, "checkout"), json={"plan": plan}, headers=headers)
    assert made.status_code == 200, made.text
    session_id = made.json()["id"]
    customer_id = fake_stripe.sessions[session_id]["customer"]
    quantity = int(fake_stripe.to("/v1/checkout/sessions")[-1].form["line_items[0][quantity]"])
    sub_id = f"sub_{org_id[:8]}"
    obj = subscription(customer_id, sub_id=sub_id, price=price, quantity=quantity)
    fake_stripe.complete_checkout(session_id, obj)
    completed = event(
        f"evt_cs_{sub_id}",
        "checkout.session.completed",
        {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": org_id,
            "subscription": sub_id,
        },
        1_800_000_000,
    )
    assert await apply(app, client, completed) == "applied"
    return sub_id


def quantity_at_stripe(fake_stripe: FakeStripe, sub_id: str) -> int:
    return int(fake_stripe.subscriptions[sub_id]["items"]["data"][0]["quantity"])


async def seat_jobs(app: FastAPI) -> list[JobRecord]:
    return [j for j in (await jobs(app)).values() if j.name == "payments.sync_seats"]


async def run_seat_jobs(app: FastAPI) -> None:
    """Time passes (the seat update waits a few seconds for more changes), then it runs."""
    for found in await seat_jobs(app):
        if found.status == "pending":
            await make_due(app, found.id)
    await drain(app)


# --- checkout, portal, subscription -----------------------------------------------------


async def test_an_admin_checks_out_for_the_org_with_a_seat_per_member(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, _ = await team(app, client, members=1)
    admin = await join(app, client, org_id, "admin@example.com", role="admin")

    response = await client.post(billing(org_id, "checkout"), json={"plan": "seats"}, headers=admin)

    assert response.status_code == 200, response.text
    [customer] = fake_stripe.to("/v1/customers")
    assert customer.form["metadata[org_id]"] == org_id
    assert customer.form["name"] == "Acme"
    assert customer.form["email"] == "admin@example.com"  # who bought it
    assert customer.headers["idempotency-key"] == f"customer-{org_id}"
    [made] = fake_stripe.to("/v1/checkout/sessions")
    assert made.form["client_reference_id"] == org_id
    assert made.form["line_items[0][price]"] == SEAT_PRICE
    assert made.form["line_items[0][quantity]"] == "3"  # owner, member, admin
    assert made.form["subscription_data[metadata][org_id]"] == org_id
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        [row] = (await session.execute(select(StripeCustomer))).scalars().all()
        assert str(row.org_id) == org_id
        [claim] = (await session.execute(select(StripeCheckout))).scalars().all()
        assert str(claim.org_id) == org_id
    # A plan that is not per seat is one seat, whatever the members.
    other = await team_of_one(app, client)
    flat = await client.post(billing(other[0], "checkout"), json={"plan": "pro"}, headers=other[1])
    assert flat.status_code == 200, flat.text
    assert fake_stripe.to("/v1/checkout/sessions")[-1].form["line_items[0][quantity]"] == "1"


async def team_of_one(app: FastAPI, client: AsyncClient) -> tuple[str, dict[str, str]]:
    owner = await signed_in(client, "solo@example.com")
    return str((await new_org(client, owner, "Solo"))["id"]), owner


async def test_members_may_see_the_plan_but_not_buy_and_strangers_see_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, _ = await team(app, client, members=1)
    member = await signed_in(client, "member9@example.com")
    await join_existing(app, client, org_id, member)
    stranger = await signed_in(client, "stranger@example.com")

    for what in ("checkout", "portal"):
        body = {"plan": "seats"} if what == "checkout" else None
        refused = await client.post(billing(org_id, what), json=body, headers=member)
        assert_problem(refused, 403)
        hidden = await client.post(billing(org_id, what), json=body, headers=stranger)
        assert_problem(hidden, 404)
        missing = await client.post(billing(str(uuid.uuid4()), what), json=body, headers=member)
        assert_problem(missing, 404)
    seen = await client.get(billing(org_id, "subscription"), headers=member)
    assert seen.status_code == 200, seen.text
    assert (seen.json()["plan"], seen.json()["status"]) == ("free", "none")
    assert_problem(await client.get(billing(org_id, "subscription"), headers=stranger), 404)
    assert fake_stripe.calls == []  # nothing reached Stripe


async def join_existing(
    app: FastAPI, client: AsyncClient, org_id: str, headers: dict[str, str]
) -> None:
    user_id = await user_id_of(client, headers)
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        session.add(Membership(org_id=uuid.UUID(org_id), user_id=user_id, role="member"))


async def test_the_webhook_gives_the_plan_to_the_org_and_every_member_sees_it(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    payments_settings: PaymentsSettings,
) -> None:
    org_id, owner = await team(app, client, members=1)
    member = await signed_in(client, "member9@example.com")
    await join_existing(app, client, org_id, member)

    sub_id = await subscribed(app, client, fake_stripe, org_id, owner)

    stored = (await subscriptions(app))[sub_id]
    assert str(stored.org_id) == org_id
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        plan = await get_entitlements(session, uuid.UUID(org_id), settings=payments_settings)
    assert (plan.plan, plan.active) == ("seats", True)
    seen = await client.get(billing(org_id, "subscription"), headers=member)
    assert (seen.json()["plan"], seen.json()["active"]) == ("seats", True)
    # The member's own (personal) organization did not buy anything.
    own = await client.get("/api/v1/payments/subscription", headers=member)
    assert own.json()["plan"] == "free"
    # Plan gating reads the plan of the organization in the path...
    allowed = await client.get(f"{ORGS}/{org_id}/reports", headers=member)
    assert allowed.status_code == 200, allowed.text
    # ... and the member's personal organization is on the free plan.
    personal = await subject_of(app, str(await user_id_of(client, member)))
    assert_problem(await client.get(f"{ORGS}/{personal}/reports", headers=member), 402)
    stranger = await signed_in(client, "stranger@example.com")
    assert_problem(await client.get(f"{ORGS}/{org_id}/reports", headers=stranger), 404)
    # The portal is the organization's customer.
    portal = await client.post(billing(org_id, "portal"), headers=owner)
    assert portal.status_code == 200, portal.text
    paying = fake_stripe.subscriptions[sub_id]["customer"]
    assert fake_stripe.to("/v1/billing_portal/sessions")[-1].form["customer"] == paying


async def test_the_user_level_routes_act_on_the_personal_org(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "me@example.com")
    personal = await subject_of(app, str(await user_id_of(client, headers)))
    response = await client.post("/api/v1/payments/checkout", json={"plan": "pro"}, headers=headers)
    assert response.status_code == 200, response.text
    assert fake_stripe.to("/v1/checkout/sessions")[-1].form["client_reference_id"] == personal
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        org = await session.get(Organization, uuid.UUID(personal))
        assert org is not None
        assert org.personal_for == await user_id_of(client, headers)


# --- seats ------------------------------------------------------------------------------


async def test_members_joining_make_one_seat_update_read_when_it_runs(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app runs due jobs by itself: on a slow machine the few seconds the update waits
    # for more changes could pass mid-test. An hour cannot; run_seat_jobs makes it due.
    monkeypatch.setattr(payments_orgs, "SEAT_SYNC_DELAY", 3600.0)
    org_id, owner = await team(app, client, members=1)
    assert await seat_jobs(app) == []  # nothing billed yet: nothing to update
    sub_id = await subscribed(app, client, fake_stripe, org_id, owner)
    assert quantity_at_stripe(fake_stripe, sub_id) == 2

    for n in range(3):  # a burst of joins
        await join(app, client, org_id, f"new{n}@example.com")
    [waiting] = await seat_jobs(app)
    assert waiting.status == "pending"
    # One more joins without the event: the job counts when it runs, not when enqueued.
    await join_existing(app, client, org_id, await signed_in(client, "quiet@example.com"))
    fake_stripe.calls.clear()

    await run_seat_jobs(app)

    assert quantity_at_stripe(fake_stripe, sub_id) == 6
    [update] = fake_stripe.to(f"/v1/subscription_items/si_{sub_id}")
    assert update.form["quantity"] == "6"
    assert update.form["proration_behavior"] == SEAT_PRORATION
    assert update.headers["idempotency-key"] == f"seats-{waiting.id}-6"
    assert [j.status for j in await seat_jobs(app)] == ["done"]

    # Someone leaves: a new job (the first one ran); the same count twice is one update.
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            delete(Membership).where(
                Membership.org_id == uuid.UUID(org_id),
                Membership.user_id == await user_id_of(client, owner),
            )
        )
        org = await session.get(Organization, uuid.UUID(org_id))
        assert org is not None
        await events.members_changed(session, org)
        await events.members_changed(session, org)
    await run_seat_jobs(app)
    assert quantity_at_stripe(fake_stripe, sub_id) == 5
    assert len(fake_stripe.to(f"/v1/subscription_items/si_{sub_id}")) == 2
    assert len(await seat_jobs(app)) == 2


async def test_a_seat_update_already_right_at_stripe_changes_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, owner = await team(app, client, members=1)
    sub_id = await subscribed(app, client, fake_stripe, org_id, owner)
    await join(app, client, org_id, "new@example.com")
    fake_stripe.subscriptions[sub_id]["items"]["data"][0]["quantity"] = 3  # done elsewhere
    fake_stripe.calls.clear()
    await run_seat_jobs(app)
    assert fake_stripe.to(f"/v1/subscription_items/si_{sub_id}") == []
    assert [j.status for j in await seat_jobs(app)] == ["done"]


async def test_a_plan_not_per_seat_keeps_its_quantity(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, owner = await team(app, client, members=1)
    sub_id = await subscribed(app, client, fake_stripe, org_id, owner, plan="pro", price=PRO_PRICE)
    await join(app, client, org_id, "new@example.com")
    await run_seat_jobs(app)
    assert quantity_at_stripe(fake_stripe, sub_id) == 1
    assert fake_stripe.to(f"/v1/subscription_items/si_{sub_id}") == []


async def test_a_stripe_failure_is_retried_then_the_seats_are_set(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, owner = await team(app, client, members=1)
    sub_id = await subscribed(app, client, fake_stripe, org_id, owner)
    await join(app, client, org_id, "new@example.com")

    fake_stripe.fail_with = 500
    await run_seat_jobs(app)
    [failed] = await seat_jobs(app)
    assert (failed.status, failed.attempts) == ("pending", 1)  # waiting for its retry
    assert failed.last_error is not None
    assert quantity_at_stripe(fake_stripe, sub_id) == 2

    fake_stripe.fail_with = None
    await run_seat_jobs(app)
    [done] = await seat_jobs(app)
    assert (done.status, done.attempts) == ("done", 2)
    assert quantity_at_stripe(fake_stripe, sub_id) == 3


# --- deleting the organization ----------------------------------------------------------


async def delete_org(app: FastAPI, org_id: str) -> None:
    """As the orgs routes delete one: the event, then the row, in one transaction."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        org = await session.get(Organization, uuid.UUID(org_id))
        assert org is not None
        await events.org_deleted(session, org)
        await session.delete(org)


async def test_deleting_the_org_cancels_its_subscription_at_stripe(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, owner = await team(app, client, members=1)
    sub_id = await subscribed(app, client, fake_stripe, org_id, owner)
    fake_stripe.fail_with = 503  # Stripe is down at first

    await delete_org(app, org_id)

    assert sub_id not in await subscriptions(app)  # the rows went with the organization
    await drain(app)
    cancel = (await jobs(app))[f"payments.cancel_subscription:{sub_id}"]
    assert (cancel.status, cancel.args["subscription_id"]) == ("pending", sub_id)
    assert fake_stripe.subscriptions[sub_id]["status"] == "active"

    fake_stripe.fail_with = None
    await make_due(app, cancel.id)
    await drain(app)
    assert (await jobs(app))[cancel.id].status == "done"
    assert fake_stripe.subscriptions[sub_id]["status"] == "canceled"
    [deleted] = fake_stripe.to(f"/v1/subscriptions/{sub_id}", method="DELETE")
    assert deleted.headers["idempotency-key"] == f"cancel-{sub_id}"


async def test_an_org_without_a_live_subscription_is_deleted_without_stripe(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    org_id, owner = await team(app, client, members=0)
    sub_id = await subscribed(app, client, fake_stripe, org_id, owner)
    fake_stripe.subscriptions[sub_id]["status"] = "canceled"
    renewed = event(f"evt_{sub_id}_end", "customer.subscription.deleted", {"id": sub_id}, 1)
    assert await apply(app, client, renewed) == "applied"
    fake_stripe.calls.clear()
    await delete_org(app, org_id)
    await drain(app)
    assert [j.name for j in (await jobs(app)).values() if "cancel" in j.name] == []
    assert fake_stripe.calls == []


# --- the migration ----------------------------------------------------------------------


def _keyed_by(column: str) -> dict[str, sa.TableClause]:
    """The three tables as they are on either side of 0013 (keyed by `column`)."""
    return {
        "stripe_customers": sa.table(
            "stripe_customers", sa.column(column, sa.Uuid()), sa.column("customer_id")
        ),
        "subscriptions": sa.table(
            "subscriptions",
            sa.column(column, sa.Uuid()),
            sa.column("id"),
            sa.column("customer_id"),
            sa.column("status"),
            sa.column("state_as_of", sa.DateTime(timezone=True)),
        ),
        "stripe_checkouts": sa.table("stripe_checkouts", sa.column(column, sa.Uuid())),
    }


ROWS: dict[str, dict[str, Any]] = {
    "stripe_customers": {"customer_id": "cus_old"},
    "subscriptions": {
        "id": "sub_old",
        "customer_id": "cus_old",
        "status": "active",
        "state_as_of": datetime(2026, 1, 1, tzinfo=UTC),
    },
    "stripe_checkouts": {},
}


def test_the_migration_moves_each_users_billing_to_their_personal_org(
    migrated: Config, settings: Settings
) -> None:
    """Rows made before 0013 (keyed by the user) move to the user's personal organization,
    and back to the user on downgrade; another organization's rows cannot go back."""
    command.downgrade(migrated, "0013_payments_orgs-1")
    user_id, org_id, team_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def run(work: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        database = Database.from_settings(settings)
        try:
            async with database.engine.begin() as conn:
                return await work(conn)
        finally:
            await database.engine.dispose()

    async def before(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(User).values(id=user_id, email="old@example.com", hashed_password=None)
        )
        await conn.execute(insert(Organization).values(id=org_id, name="Old", personal_for=user_id))
        await conn.execute(insert(Organization).values(id=team_id, name="Team"))
        for name, table in _keyed_by("user_id").items():
            await conn.execute(table.insert().values(user_id=user_id, **ROWS[name]))

    async def read(conn: AsyncConnection, column: str) -> list[list[uuid.UUID]]:
        return [
            list((await conn.execute(select(table.c[column]))).scalars())
            for table in _keyed_by(column).values()
        ]

    async def add_team_rows(conn: AsyncConnection) -> None:
        await conn.execute(_keyed_by("org_id")["stripe_checkouts"].insert().values(org_id=team_id))

    try:
        asyncio.run(run(before))
        command.upgrade(migrated, "0013_payments_orgs")
        assert asyncio.run(run(lambda conn: read(conn, "org_id"))) == [[org_id]] * 3
        asyncio.run(run(add_team_rows))
        command.downgrade(migrated, "0013_payments_orgs-1")
        assert asyncio.run(run(lambda conn: read(conn, "user_id"))) == [[user_id]] * 3
    finally:
        command.upgrade(migrated, "head")
        asyncio.run(run(lambda conn: conn.execute(delete(User))))
        asyncio.run(run(lambda conn: conn.execute(delete(Organization))))


# --- the OpenAPI contract of the organization's billing routes (tests/contract.py) ---------


@pytest.fixture(scope="module")
def org_billing_app(
    settings: Settings, migrated: Config, stripe_server: FakeStripe
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    stripe_server.reset()
    app = create_app(settings)
    app.state.auth_settings = AuthSettings(_env_file=None, cookie_secure=False)
    app.state.payments_settings = make_payments_settings(stripe_server.url)
    yield app, sign_up(app, "org-billing-contract@example.com")
    stop(app, settings)


@contract_test(document().include(path_regex="^/api/v1/orgs/[^/]+/billing/"))
def test_org_billing_routes_keep_the_contract(
    case: ContractCase, org_billing_app: tuple[FastAPI, dict[str, str]]
) -> None:
    app, headers = org_billing_app
    case.call_and_validate(app=app, headers=headers, checks=CHECKS, timeout=TIMEOUT)
