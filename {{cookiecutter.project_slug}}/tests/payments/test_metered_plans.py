"""Plans that bill AI usage beyond their allowance through a Stripe meter (docs/payments.md).

Checkout adds the metered price as a second line item; the subscription's plan is found by
its licensed item, whichever order Stripe lists the items in.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, Plan
from {{ cookiecutter.package_name }}.payments.service import get_entitlements
from tests.payments.conftest import (
    PRO_PRICE,
    FakeStripe,
    apply,
    customer,
    event,
    make_payments_settings,
    subscription,
)

CHECKOUT = "/api/v1/payments/checkout"
METERED_PRICE = "price_metered_monthly"
OVERAGE_PRICE = "price_ai_tokens_metered"
METERED = {
    "key": "metered",
    "name": "Metered",
    "price_id": METERED_PRICE,
    "ai_monthly_tokens": 500_000,
    "ai_metered_price_id": OVERAGE_PRICE,
    "ai_meter_event_name": "ai_tokens",
}
PRO = {"key": "pro", "name": "Pro", "price_id": PRO_PRICE, "ai_monthly_tokens": 1_000_000}


@pytest.fixture
def payments_settings(fake_stripe: FakeStripe) -> PaymentsSettings:
    return make_payments_settings(fake_stripe.url, plans=[PRO, METERED])


async def test_checkout_of_a_metered_plan_adds_the_metered_price_without_quantity(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "metered@example.com")
    response = await client.post(CHECKOUT, json={"plan": "metered"}, headers=buyer.headers)
    assert response.status_code == 200, response.text
    [session] = fake_stripe.to("/v1/checkout/sessions")
    assert session.form["line_items[0][price]"] == METERED_PRICE
    assert session.form["line_items[0][quantity]"] == "1"
    assert session.form["line_items[1][price]"] == OVERAGE_PRICE
    assert "line_items[1][quantity]" not in session.form  # Stripe refuses one on a metered price
    assert "line_items[2][price]" not in session.form


async def test_the_plans_tell_which_bill_tokens_beyond_the_allowance(
    client: AsyncClient,
) -> None:
    plans = (await client.get("/api/v1/payments/plans")).json()
    assert {p["key"]: p["ai_overage_billed"] for p in plans} == {
        "free": False,
        "pro": False,
        "metered": True,
    }
    assert "ai_metered_price_id" not in plans[2]


async def test_checkout_of_a_plain_plan_has_one_line_item(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe
) -> None:
    buyer = await customer(app, client, "pro@example.com")
    response = await client.post(CHECKOUT, json={"plan": "pro"}, headers=buyer.headers)
    assert response.status_code == 200, response.text
    [session] = fake_stripe.to("/v1/checkout/sessions")
    assert "line_items[1][price]" not in session.form


async def test_the_plan_is_the_licensed_item_whichever_comes_first(
    app: FastAPI, client: AsyncClient, fake_stripe: FakeStripe, payments_settings: PaymentsSettings
) -> None:
    buyer = await customer(app, client, "order@example.com")
    obj: dict[str, Any] = subscription(buyer.customer_id, price=METERED_PRICE)
    licensed = obj["items"]["data"][0]
    metered_item = {
        "id": "si_metered",
        "object": "subscription_item",
        "current_period_end": licensed["current_period_end"],
        "price": {
            "id": OVERAGE_PRICE,
            "object": "price",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": "mtr_1"},
        },
    }
    obj["items"]["data"] = [metered_item, licensed]  # Stripe promises no order
    fake_stripe.set_subscription(obj)
    outcome = await apply(
        app, client, event("evt_m1", "customer.subscription.created", obj, int(time.time()))
    )
    assert outcome == "applied"
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        plan = await get_entitlements(
            session, uuid.UUID(buyer.subject_id), settings=payments_settings
        )
    assert (plan.plan, plan.ai_monthly_tokens, plan.ai_overage_billed) == ("metered", 500_000, True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ai_metered_price_id": OVERAGE_PRICE}, "go together"),
        ({"ai_meter_event_name": "ai_tokens"}, "go together"),
        (
            {
                "ai_monthly_tokens": None,
                "ai_metered_price_id": OVERAGE_PRICE,
                "ai_meter_event_name": "ai_tokens",
            },
            "must be set",
        ),
    ],
)
def test_a_metered_plan_needs_its_price_its_meter_and_an_allowance(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Plan(**{**PRO, **fields})


def test_metered_prices_are_not_plan_prices_nor_free() -> None:
    with pytest.raises(ValidationError, match="cannot be a plan's price_id"):
        make_payments_settings(
            "http://x", plans=[PRO, {**METERED, "ai_metered_price_id": PRO_PRICE}]
        )
    with pytest.raises(ValidationError, match="free plan cannot bill"):
        make_payments_settings(
            "http://x",
            free_plan={**METERED, "key": "free", "price_id": None},
        )
