"""Metered AI overage of an organization: its members' usage is one pool, billed to its customer.

Removed from projects without the orgs or the payments module (see the hook's table).
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from {{ cookiecutter.package_name }}.ai import billing
from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.payments.models import StripeCustomer, Subscription
from tests.ai import test_metered as metered
from tests.ai.test_metered import ALLOWANCE, EVENT_NAME, HELLO, METER_EVENTS, METERED_PRICE, run
from tests.ai.test_orgs import add_member, user_id
from tests.auth.conftest import signed_in
from tests.orgs.conftest import new_org
from tests.payments.conftest import FakeStripe

# The app with a metered plan and the fake Stripe (tests/ai/test_metered.py).
stripe_server, fake_stripe, app, client = (
    metered.stripe_server,
    metered.fake_stripe,
    metered.app,
    metered.client,
)


async def test_the_pool_of_an_organization_is_billed_to_its_customer(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    owner = await signed_in(client, "owner@example.com")
    member = await signed_in(client, "member@example.com")
    org_id = (await new_org(client, owner, "Acme"))["id"]
    await add_member(app, org_id, await user_id(client, member))
    portal = await client.post(f"/api/v1/orgs/{org_id}/billing/portal", headers=owner)
    assert portal.status_code == 200, portal.text
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        customer_id = await session.scalar(
            select(StripeCustomer.customer_id).where(StripeCustomer.subject_id == uuid.UUID(org_id))
        )
        assert customer_id is not None
        session.add(
            Subscription(
                id="sub_org",
                subject_id=uuid.UUID(org_id),
                customer_id=customer_id,
                status="active",
                price_id=METERED_PRICE,
                state_as_of=utcnow(),
            )
        )

    for headers in (owner, member, member):
        response = await client.post(f"/api/v1/orgs/{org_id}/ai/chat", json=HELLO, headers=headers)
        assert response.status_code == 200, response.text
    usage = (await client.get(f"/api/v1/orgs/{org_id}/ai/usage", headers=member)).json()
    over = usage["tokens"] - ALLOWANCE
    assert usage["overage"] == {"tokens": over, "billed": 0, "unbilled": over}

    await run(app, billing.report_usage)
    [sent] = fake_stripe.to(METER_EVENTS)  # one event for the pool, not one per member
    assert sent.form["payload[stripe_customer_id]"] == customer_id
    assert sent.form["event_name"] == EVENT_NAME
    assert int(sent.form["payload[value]"]) == over
    usage = (await client.get(f"/api/v1/orgs/{org_id}/ai/usage", headers=owner)).json()
    assert usage["overage"] == {"tokens": over, "billed": over, "unbilled": 0}
    # A personal organization without the plan is still capped: nothing billed for it.
    mine = (await client.get("/api/v1/ai/usage", headers=member)).json()
    assert mine["overage"] is None
