"""What other modules ask (`get_entitlements`) and the plan-gating dependencies."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from {{ cookiecutter.package_name }}.payments.dependencies import (
    require_active_subscription,
    require_plan,
)
from {{ cookiecutter.package_name }}.payments.service import Entitlements, get_entitlements
from tests.auth.conftest import assert_problem
from tests.payments.conftest import (
    TEAM_PRICE,
    FakeStripe,
    apply,
    customer,
    stripe_event,
)

T0 = 1_800_000_000


def gated_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/gated")

    @router.get("/any", dependencies=[require_active_subscription])
    async def any_plan() -> dict[str, str]:
        return {"ok": "yes"}

    @router.get("/team")
    async def team_only(
        entitlements: Annotated[Entitlements, require_plan("team")],
    ) -> dict[str, str]:
        return {"plan": entitlements.plan}

    app.include_router(router)


async def entitlements_of(app: FastAPI, user_id: str, settings: PaymentsSettings) -> Entitlements:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return await get_entitlements(session, uuid.UUID(user_id), settings=settings)


async def test_plans_gate_routes_and_tell_the_ai_allowance(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    payments_settings: PaymentsSettings,
) -> None:
    gated_routes(app)
    buyer = await customer(app, client, "gated@example.com")
    cid = buyer.customer_id

    free = await entitlements_of(app, buyer.subject_id, payments_settings)
    assert (free.plan, free.active, free.status, free.ai_monthly_tokens) == (
        "free",
        False,
        "none",
        1000,
    )
    assert_problem(await client.get("/gated/any", headers=buyer.headers), 402)
    assert_problem(await client.get("/gated/team", headers=buyer.headers), 402)

    await apply(
        app, client, stripe_event(fake_stripe, "e1", "customer.subscription.created", cid, T0)
    )
    pro = await entitlements_of(app, buyer.subject_id, payments_settings)
    assert (pro.plan, pro.active, pro.ai_monthly_tokens) == ("pro", True, 1_000_000)
    assert (await client.get("/gated/any", headers=buyer.headers)).status_code == 200
    body = assert_problem(await client.get("/gated/team", headers=buyer.headers), 402)
    assert body["required_plans"] == ["team"]

    upgrade = stripe_event(
        fake_stripe, "e2", "customer.subscription.updated", cid, T0 + 5, price=TEAM_PRICE
    )
    await apply(app, client, upgrade)
    team = await entitlements_of(app, buyer.subject_id, payments_settings)
    assert (team.plan, team.ai_monthly_tokens, team.features) == ("team", None, frozenset({"sso"}))
    assert (await client.get("/gated/team", headers=buyer.headers)).json() == {"plan": "team"}

    unpaid = stripe_event(
        fake_stripe,
        "e3",
        "customer.subscription.updated",
        cid,
        T0 + 9,
        price=TEAM_PRICE,
        status="unpaid",
    )
    await apply(app, client, unpaid)
    assert (await entitlements_of(app, buyer.subject_id, payments_settings)).plan == "free"
    assert_problem(await client.get("/gated/any", headers=buyer.headers), 402)


async def test_past_due_keeps_the_plan_while_stripe_retries(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    payments_settings: PaymentsSettings,
) -> None:
    buyer = await customer(app, client, "pastdue@example.com")
    event = stripe_event(
        fake_stripe, "e1", "customer.subscription.created", buyer.customer_id, T0, status="past_due"
    )
    await apply(app, client, event)
    assert (await entitlements_of(app, buyer.subject_id, payments_settings)).plan == "pro"


async def test_a_price_no_plan_declares_gives_the_free_plan(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    payments_settings: PaymentsSettings,
) -> None:
    buyer = await customer(app, client, "legacy@example.com")
    event = stripe_event(
        fake_stripe,
        "e1",
        "customer.subscription.created",
        buyer.customer_id,
        T0,
        price="price_retired",
    )
    await apply(app, client, event)
    found = await entitlements_of(app, buyer.subject_id, payments_settings)
    assert (found.plan, found.active, found.status) == ("free", False, "active")
