"""Plans, checkout and the customer portal: the real `stripe` client against the fake API."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.payments.models import SUBJECT_KEY, StripeCustomer
from tests.auth.conftest import assert_problem, count, signed_in, verified_signed_in
from tests.payments.conftest import (
    PRO_PRICE,
    SECRET_KEY,
    TEAM_PRICE,
    FakeStripe,
    apply,
    customer,
    stripe_event,
    subject_of,
)

CHECKOUT = "/api/v1/payments/checkout"
PORTAL = "/api/v1/payments/portal"


async def test_plans_are_listed_with_the_free_plan_first(client: AsyncClient) -> None:
    response = await client.get("/api/v1/payments/plans")
    assert response.status_code == 200
    plans = response.json()
    assert [p["key"] for p in plans] == ["free", "pro", "team"]
    assert plans[0]["purchasable"] is False
    assert plans[1]["ai_monthly_tokens"] == 1_000_000
    assert plans[2]["features"] == ["sso"]
    assert "price_id" not in plans[1]


async def test_checkout_carries_customer_price_and_reference(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "buyer@example.com")
    user_id = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    subject_id = await subject_of(app, user_id)  # who pays for the user

    response = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["url"].startswith("https://checkout.stripe.test/")
    [made] = fake_stripe.to("/v1/customers")
    assert made.form["email"] == "buyer@example.com"
    assert made.form[f"metadata[{SUBJECT_KEY}]"] == subject_id
    assert made.headers["idempotency-key"] == f"customer-{subject_id}"
    assert made.headers["authorization"] == f"Bearer {SECRET_KEY}"
    [session] = fake_stripe.to("/v1/checkout/sessions")
    assert session.form["mode"] == "subscription"
    assert session.form["customer"] == "cus_fake1"
    assert session.form["client_reference_id"] == subject_id
    assert session.form["line_items[0][price]"] == PRO_PRICE
    assert session.form["line_items[0][quantity]"] == "1"
    assert session.form[f"subscription_data[metadata][{SUBJECT_KEY}]"] == subject_id
    assert session.form["success_url"] == "http://frontend.test/billing/done"
    assert session.form["cancel_url"] == "http://frontend.test/billing"
    assert session.headers["idempotency-key"].startswith("checkout-")
    assert await count(app, StripeCustomer) == 1


async def test_one_customer_per_user_and_a_double_click_gets_one_session(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    headers = await signed_in(client, "twice@example.com")
    first = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)
    second = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)
    assert first.status_code == second.status_code == 200, second.text
    assert first.json() == second.json()  # the open session, handed back
    team = await client.post(CHECKOUT, json={"plan": "team"}, headers=headers)
    assert team.json()["url"] != first.json()["url"]
    assert len(fake_stripe.to("/v1/customers")) == 1  # stored after the first call
    sessions = fake_stripe.to("/v1/checkout/sessions")
    assert len(sessions) == 2
    assert {s.form["customer"] for s in sessions} == {"cus_fake1"}
    assert sessions[1].form["line_items[0][price]"] == TEAM_PRICE
    # Another plan: the pro session was expired first, so it can no longer be paid.
    assert [c.path for c in fake_stripe.calls if c.path.endswith("/expire")] == [
        f"/v1/checkout/sessions/{first.json()['id']}/expire"
    ]
    assert fake_stripe.sessions[first.json()["id"]]["status"] == "expired"
    assert await count(app, StripeCustomer) == 1


@pytest.mark.parametrize("plan", ["enterprise", "free"])
async def test_unknown_or_free_plan_is_422(
    client: AsyncClient, fake_stripe: FakeStripe, plan: str
) -> None:
    headers = await signed_in(client, "typo@example.com")
    response = await client.post(CHECKOUT, json={"plan": plan}, headers=headers)
    assert plan in assert_problem(response, 422)["detail"]
    assert fake_stripe.calls == []


async def test_checkout_needs_a_user(client: AsyncClient, fake_stripe: FakeStripe) -> None:
    assert_problem(await client.post(CHECKOUT, json={"plan": "pro"}), 401)
    assert fake_stripe.calls == []


async def test_a_subscriber_is_sent_to_the_portal_instead(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "subscribed@example.com")
    created = stripe_event(
        fake_stripe, "evt_1", "customer.subscription.created", buyer.customer_id, 1_800_000_000
    )
    assert await apply(app, client, created) == "applied"
    response = await client.post(CHECKOUT, json={"plan": "team"}, headers=buyer.headers)
    assert_problem(response, 409)
    assert fake_stripe.to("/v1/checkout/sessions") == []


async def test_portal_carries_the_customer_and_return_url(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "portal@example.com")
    response = await client.post(PORTAL, headers=buyer.headers)
    assert response.status_code == 200
    assert response.json()["url"].startswith("https://billing.stripe.test/")
    portals = fake_stripe.to("/v1/billing_portal/sessions")
    assert [p.form["customer"] for p in portals] == [buyer.customer_id] * 2
    assert portals[-1].form["return_url"] == "http://frontend.test/account"
    assert len(fake_stripe.to("/v1/customers")) == 1


@pytest.mark.parametrize(
    ("status", "detail"), [(500, "could not be reached"), (400, "refused the request")]
)
async def test_stripe_errors_are_502_and_store_nothing(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, status: int, detail: str
) -> None:
    headers = await signed_in(client, "outage@example.com")
    fake_stripe.fail_with = status
    response = await client.post(CHECKOUT, json={"plan": "pro"}, headers=headers)
    assert detail in assert_problem(response, 502)["detail"]
    assert await count(app, StripeCustomer) == 0


async def test_an_api_key_cannot_open_the_portal(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    """The portal controls billing (plan, cancel, card), so it takes a signed-in session."""
    headers = await verified_signed_in(app, client, "keyholder@example.com")
    created = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201, created.text
    assert "write" in created.json()["scopes"]
    key = {"X-API-Key": created.json()["key"]}
    assert_problem(await client.post(PORTAL, headers=key), 403)
    assert fake_stripe.to("/v1/billing_portal/sessions") == []
    assert (await client.post(PORTAL, headers=headers)).status_code == 200
