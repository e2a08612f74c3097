"""HTTP routes of the payments module, under /api/v1/payments. Rules live in service.py.

Checkout, portal and subscription act for the caller's billing subject (payments/subjects.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from {{ cookiecutter.package_name }}.auth.dependencies import (
    CurrentUser,
    require_scopes,
    require_session_scopes,
)
from {{ cookiecutter.package_name }}.core.contract import problems, public
from {{ cookiecutter.package_name }}.core.db import SessionDep, get_database
from {{ cookiecutter.package_name }}.payments import exceptions, service, subjects, webhooks
from {{ cookiecutter.package_name }}.payments.client import (
    PaymentsSettingsDep,
    StripeDep,
    get_payments_state,
)
from {{ cookiecutter.package_name }}.payments.dependencies import CurrentEntitlements
from {{ cookiecutter.package_name }}.payments.schemas import (
    CheckoutRequest,
    PlanRead,
    RedirectUrl,
    SubscriptionRead,
    WebhookAck,
)
from {{ cookiecutter.package_name }}.payments.service import Entitlements

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])

NOT_CONFIGURED: dict[int | str, dict[str, Any]] = problems(
    {503: "Stripe is not configured (the setting is named)"}
)
STRIPE: dict[int | str, dict[str, Any]] = {
    **NOT_CONFIGURED,
    **problems({502: "Stripe failed or could not be reached"}),
}


@router.get("/plans")
@public("the plans and their prices, for a pricing page")
async def list_plans(settings: PaymentsSettingsDep) -> list[PlanRead]:
    return [
        PlanRead(
            key=plan.key,
            name=plan.name,
            ai_monthly_tokens=plan.ai_monthly_tokens,
            features=plan.features,
            purchasable=plan.price_id is not None,
            ai_overage_billed=plan.ai_overage_billed,
        )
        for plan in (settings.free_plan, *settings.plans)
    ]


@router.post(
    "/checkout",
    dependencies=[require_scopes("write")],
    responses={
        **STRIPE,
        **problems({409: "Already subscribed", 422: "Unknown plan"}),
    },
)
async def checkout(
    body: CheckoutRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: PaymentsSettingsDep,
    client: StripeDep,
) -> RedirectUrl:
    """A Stripe Checkout Session for a subscription to the plan; send the browser to `url`."""
    subject_id = await subjects.current().of_user(session, user)
    session_id, url = await service.create_checkout(
        session, client, settings, subject_id, user, body.plan
    )
    return RedirectUrl(id=session_id, url=url)


@router.post("/portal", dependencies=[require_session_scopes("write")], responses=STRIPE)
async def portal(
    user: CurrentUser, session: SessionDep, settings: PaymentsSettingsDep, client: StripeDep
) -> RedirectUrl:
    """A Stripe customer-portal URL: change plan, cancel, update the card, see invoices."""
    subject_id = await subjects.current().of_user(session, user)
    return RedirectUrl(url=await service.create_portal(session, client, settings, subject_id, user))


@router.get("/subscription", dependencies=[require_scopes("read")])
async def subscription(entitlements: CurrentEntitlements) -> SubscriptionRead:
    return subscription_read(entitlements)


def subscription_read(entitlements: Entitlements) -> SubscriptionRead:
    current = entitlements.subscription
    return SubscriptionRead(
        plan=entitlements.plan,
        plan_name=entitlements.plan_name,
        status=entitlements.status,
        active=entitlements.active,
        current_period_end=current.current_period_end if current else None,
        cancel_at_period_end=current.cancel_at_period_end if current else False,
        ai_monthly_tokens=entitlements.ai_monthly_tokens,
    )


@router.post(
    "/webhook",
    responses=problems(
        {
            400: "Missing, invalid or stale signature",
            503: "Stripe is not configured (the setting is named; the event is recorded), "
            "or the database is busy: Stripe will send it again",
        }
    ),
)
@public("Stripe's signature is checked")
async def webhook(request: Request, settings: PaymentsSettingsDep) -> WebhookAck:
    """Stripe's webhook endpoint: verify, then record the event and enqueue the job that
    applies it, in one transaction committed before the answer (`outcome`: `queued`,
    `duplicate` or `ignored`)."""
    if settings.stripe_webhook_secret is None:
        raise exceptions.not_configured("STRIPE_WEBHOOK_SECRET")
    event = webhooks.verify(
        await request.body(),
        request.headers.get("stripe-signature"),
        settings.stripe_webhook_secret.get_secret_value(),
        settings.webhook_tolerance,
    )
    # Its own transaction rather than the request's: a 503 below keeps what it recorded.
    async with get_database(request).sessionmaker() as session, session.begin():
        received = await webhooks.receive(session, get_payments_state(request.app), event)
    if received.missing_setting is not None:
        raise exceptions.not_configured(received.missing_setting)
    return WebhookAck(event_id=received.event_id, outcome=received.outcome)
