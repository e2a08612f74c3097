"""Business rules of the payments module. Functions flush; the caller's transaction commits.

`get_entitlements` is the one question other modules ask (the AI module, for quotas).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.payments import exceptions
from {{ cookiecutter.package_name }}.payments.config import (
    PaymentsSettings,
    Plan,
    get_payments_settings,
)
from {{ cookiecutter.package_name }}.payments.models import StripeCustomer, Subscription

log = structlog.get_logger(__name__)

# Subscriptions in these states keep their plan (past_due: Stripe is still retrying the card).
ENTITLED_STATUSES = frozenset({"active", "trialing", "past_due"})
# Stripe never moves a subscription out of these states.
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
# A double click within this many seconds gets the same Checkout Session back.
CHECKOUT_IDEMPOTENCY_WINDOW = 60


# --- entitlements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entitlements:
    """What a user may do now: the plan of their subscription, or the free plan."""

    plan: str
    plan_name: str
    active: bool  # a paid subscription in good standing
    status: str  # Stripe's status of the subscription, or "none"
    ai_monthly_tokens: int | None  # None: no limit
    features: frozenset[str]
    subscription: Subscription | None


async def current_subscription(session: AsyncSession, user_id: uuid.UUID) -> Subscription | None:
    """The user's entitled subscription if any, else their most recent one."""
    result = await session.execute(
        select(Subscription)
        .where(Subscription.user_id == user_id)
        .order_by(Subscription.state_as_of.desc(), Subscription.created_at.desc())
    )
    rows = result.scalars().all()
    return next((s for s in rows if s.status in ENTITLED_STATUSES), rows[0] if rows else None)


async def get_entitlements(
    session: AsyncSession, user_id: uuid.UUID, *, settings: PaymentsSettings | None = None
) -> Entitlements:
    """The entitlements of a user: their active plan's, or the free plan's."""
    settings = settings or get_payments_settings()
    subscription = await current_subscription(session, user_id)
    plan = settings.free_plan
    active = False
    if subscription is not None and subscription.status in ENTITLED_STATUSES:
        found = settings.plan_for_price(subscription.price_id)
        if found is None:
            log.warning("subscription_price_not_in_plans", price_id=subscription.price_id)
        else:
            plan, active = found, True
    return Entitlements(
        plan=plan.key,
        plan_name=plan.name,
        active=active,
        status=subscription.status if subscription is not None else "none",
        ai_monthly_tokens=plan.ai_monthly_tokens,
        features=frozenset(plan.features),
        subscription=subscription,
    )


# --- customers, checkout, portal ----------------------------------------------------------------


async def user_for_customer(session: AsyncSession, customer_id: str) -> uuid.UUID | None:
    result = await session.execute(
        select(StripeCustomer.user_id).where(StripeCustomer.customer_id == customer_id)
    )
    return result.scalar_one_or_none()


async def ensure_customer(session: AsyncSession, client: stripe.StripeClient, user: User) -> str:
    """The user's Stripe customer id, creating the customer on first need.

    The idempotency key is the user's: should this transaction not commit, the next
    attempt gets the same customer from Stripe instead of a second one.
    """
    row = await session.get(StripeCustomer, user.id)
    if row is not None:
        return row.customer_id
    try:
        customer = await client.v1.customers.create_async(
            {"email": user.email, "metadata": {"user_id": str(user.id)}},
            {"idempotency_key": f"customer-{user.id}"},
        )
    except stripe.StripeError as exc:
        log.error("stripe_error", call="customers.create", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    session.add(StripeCustomer(user_id=user.id, customer_id=customer.id))
    await session.flush()
    return customer.id


def checkout_idempotency_key(user: User, plan: Plan, now: float | None = None) -> str:
    window = int((now if now is not None else time.time()) // CHECKOUT_IDEMPOTENCY_WINDOW)
    digest = hashlib.sha256(f"{user.id}:{plan.key}:{plan.price_id}:{window}".encode())
    return f"checkout-{digest.hexdigest()[:32]}"


async def create_checkout(
    session: AsyncSession,
    client: stripe.StripeClient,
    settings: PaymentsSettings,
    user: User,
    plan_key: str,
) -> tuple[str, str]:
    """A Checkout Session (subscription mode) for the plan: (its id, its URL)."""
    plan = settings.plan(plan_key)
    if plan is None or plan.price_id is None:
        raise exceptions.unknown_plan(plan_key)
    current = await current_subscription(session, user.id)
    if current is not None and current.status in ENTITLED_STATUSES:
        raise exceptions.already_subscribed()
    customer_id = await ensure_customer(session, client, user)
    try:
        checkout = await client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": str(user.id),
                "line_items": [{"price": plan.price_id, "quantity": 1}],
                "success_url": settings.success_url,
                "cancel_url": settings.cancel_url,
                "metadata": {"user_id": str(user.id), "plan": plan.key},
                "subscription_data": {"metadata": {"user_id": str(user.id), "plan": plan.key}},
            },
            {"idempotency_key": checkout_idempotency_key(user, plan)},
        )
    except stripe.StripeError as exc:
        log.error("stripe_error", call="checkout.sessions.create", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    if not checkout.url:
        raise exceptions.stripe_failed()
    return checkout.id, checkout.url


async def create_portal(
    session: AsyncSession, client: stripe.StripeClient, settings: PaymentsSettings, user: User
) -> str:
    """A customer-portal URL where the user manages their subscription and cards."""
    customer_id = await ensure_customer(session, client, user)
    try:
        portal = await client.v1.billing_portal.sessions.create_async(
            {"customer": customer_id, "return_url": settings.portal_return_url}
        )
    except stripe.StripeError as exc:
        log.error("stripe_error", call="billing_portal.sessions.create", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    return portal.url


# --- webhook events -------------------------------------------------------------------------------

# What handling an event did; stored in the ledger.
APPLIED = "applied"
STALE = "stale"  # older than the state already stored
IGNORED = "ignored"  # a type this module does not act on
UNKNOWN_CUSTOMER = "unknown_customer"
UNKNOWN_SUBSCRIPTION = "unknown_subscription"


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) else None


def _id(value: Any) -> str | None:
    """An id from an expandable field: "cus_123" or {"id": "cus_123", ...}."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


async def _user_exists(session: AsyncSession, value: Any) -> uuid.UUID | None:
    try:
        user_id = uuid.UUID(str(value))
    except ValueError:
        return None
    return user_id if await session.get(User, user_id) is not None else None


async def _resolve_user(session: AsyncSession, customer_id: str, metadata: Any) -> uuid.UUID | None:
    """The user of a customer; else the user named in the metadata we set at checkout."""
    user_id = await user_for_customer(session, customer_id)
    if user_id is not None or not isinstance(metadata, Mapping):
        return user_id
    user_id = await _user_exists(session, metadata.get("user_id"))
    if user_id is not None and await session.get(StripeCustomer, user_id) is None:
        session.add(StripeCustomer(user_id=user_id, customer_id=customer_id))
        await session.flush()
    return user_id


def _subscription_fields(obj: Mapping[str, Any]) -> tuple[str | None, datetime | None]:
    """(price id, current period end); the period lives on the items since API 2025-03-31."""
    items = (obj.get("items") or {}).get("data") or [{}]
    first = items[0]
    price = _id(first.get("price"))
    period_end = _timestamp(first.get("current_period_end") or obj.get("current_period_end"))
    return price, period_end


async def apply_subscription(
    session: AsyncSession, obj: Mapping[str, Any], as_of: datetime, *, deleted: bool = False
) -> str:
    """Store the subscription's state unless what is stored is newer."""
    subscription_id, customer_id = _id(obj.get("id")), _id(obj.get("customer"))
    if subscription_id is None or customer_id is None:
        raise ValueError("subscription object without id or customer")
    user_id = await _resolve_user(session, customer_id, obj.get("metadata"))
    if user_id is None:
        return UNKNOWN_CUSTOMER
    status = "canceled" if deleted else str(obj.get("status") or "")
    price_id, period_end = _subscription_fields(obj)
    row = await session.get(Subscription, subscription_id, with_for_update=True)
    if row is None:
        row = Subscription(id=subscription_id, user_id=user_id, customer_id=customer_id)
        session.add(row)
    elif (
        as_of < row.state_as_of
        or (row.status in TERMINAL_STATUSES and status not in TERMINAL_STATUSES)
        or (as_of == row.state_as_of and row.status in TERMINAL_STATUSES)
    ):
        return STALE
    row.status = status
    row.price_id = price_id
    row.current_period_end = period_end
    row.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
    row.state_as_of = as_of
    await session.flush()
    return APPLIED


async def _subscription_event(
    session: AsyncSession, event: Mapping[str, Any], as_of: datetime
) -> str:
    deleted = event["type"] == "customer.subscription.deleted"
    return await apply_subscription(session, event["data"]["object"], as_of, deleted=deleted)


async def _checkout_completed(
    session: AsyncSession, event: Mapping[str, Any], as_of: datetime
) -> str:
    """Link the customer to the user the session was made for (the state comes with
    the customer.subscription.* events)."""
    obj = event["data"]["object"]
    customer_id = _id(obj.get("customer"))
    if obj.get("mode") != "subscription" or customer_id is None:
        return IGNORED
    if await user_for_customer(session, customer_id) is not None:
        return APPLIED
    user_id = await _user_exists(session, obj.get("client_reference_id"))
    if user_id is None:
        return UNKNOWN_CUSTOMER
    if await session.get(StripeCustomer, user_id) is None:
        session.add(StripeCustomer(user_id=user_id, customer_id=customer_id))
        await session.flush()
    return APPLIED


async def _invoice_event(session: AsyncSession, event: Mapping[str, Any], as_of: datetime) -> str:
    obj = event["data"]["object"]
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    subscription_id = _id(details.get("subscription")) or _id(obj.get("subscription"))
    if subscription_id is None:
        return IGNORED  # a one-off invoice
    row = await session.get(Subscription, subscription_id, with_for_update=True)
    if row is None:
        customer_id = _id(obj.get("customer"))
        if customer_id is None or await user_for_customer(session, customer_id) is None:
            return UNKNOWN_CUSTOMER
        return UNKNOWN_SUBSCRIPTION
    if row.latest_invoice_as_of is not None and as_of < row.latest_invoice_as_of:
        return STALE
    row.latest_invoice_status = "paid" if event["type"] == "invoice.paid" else "payment_failed"
    row.latest_invoice_as_of = as_of
    await session.flush()
    if event["type"] == "invoice.payment_failed":
        log.warning("invoice_payment_failed", subscription_id=row.id, user_id=str(row.user_id))
    return APPLIED


Handler = Callable[[AsyncSession, Mapping[str, Any], datetime], Awaitable[str]]

HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout_completed,
    "customer.subscription.created": _subscription_event,
    "customer.subscription.updated": _subscription_event,
    "customer.subscription.deleted": _subscription_event,
    "invoice.paid": _invoice_event,
    "invoice.payment_failed": _invoice_event,
}


async def handle_event(session: AsyncSession, event: Mapping[str, Any]) -> str:
    """Apply one verified event; returns the outcome. Raises when it cannot be handled."""
    handler = HANDLERS.get(str(event.get("type")))
    if handler is None:
        return IGNORED
    as_of = _timestamp(event.get("created"))
    if as_of is None:
        raise ValueError("event without a created timestamp")
    return await handler(session, event, as_of)
