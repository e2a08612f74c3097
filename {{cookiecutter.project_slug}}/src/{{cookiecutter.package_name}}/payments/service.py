"""Business rules of the payments module. Functions flush; the caller's transaction commits.

`get_entitlements` is the one question other modules ask (the AI module, for quotas).
Customers, subscriptions and entitlements are the billing subject's (payments/subjects.py):
the user, or what another module bills instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import false, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import User, utcnow
from {{ cookiecutter.package_name }}.core.db import Base, insert_ignoring_conflicts
from {{ cookiecutter.package_name }}.payments import exceptions, subjects
from {{ cookiecutter.package_name }}.payments.config import (
    PaymentsSettings,
    Plan,
    get_payments_settings,
)
from {{ cookiecutter.package_name }}.payments.models import (
    StripeCheckout,
    StripeCustomer,
    Subscription,
)
from {{ cookiecutter.package_name }}.payments.sdk import stripe

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite
    from stripe.params.checkout import SessionCreateParamsLineItem

log = structlog.get_logger(__name__)

# Subscriptions in these states keep their plan (past_due: Stripe is still retrying the card).
ENTITLED_STATUSES = frozenset({"active", "trialing", "past_due"})
# Stripe never moves a subscription out of these states. Any other state (incomplete,
# unpaid, paused too) is a live subscription: its user cannot start a second one.
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
# An open Checkout Session is handed back again only if it stays payable this much longer.
CHECKOUT_REUSE_MARGIN = 120


# --- entitlements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entitlements:
    """What a subject may do now: the plan of its subscription, or the free plan."""

    plan: str
    plan_name: str
    active: bool  # a paid subscription in good standing
    status: str  # Stripe's status of the subscription, or "none"
    ai_monthly_tokens: int | None  # None: no limit
    features: frozenset[str]
    subscription: Subscription | None
    # AI tokens beyond ai_monthly_tokens are billed through a Stripe meter, not refused.
    ai_overage_billed: bool = False


async def current_subscription(session: AsyncSession, subject_id: uuid.UUID) -> Subscription | None:
    """The subject's entitled subscription if any, else its most recent one."""
    result = await session.execute(
        select(Subscription)
        .where(Subscription.subject_id == subject_id)
        .order_by(Subscription.state_as_of.desc(), Subscription.created_at.desc())
    )
    rows = result.scalars().all()
    return next((s for s in rows if s.status in ENTITLED_STATUSES), rows[0] if rows else None)


async def get_entitlements(
    session: AsyncSession, subject_id: uuid.UUID, *, settings: PaymentsSettings | None = None
) -> Entitlements:
    """The entitlements of a billing subject (see payments/subjects.py): its active plan's,
    or the free plan's."""
    settings = settings or get_payments_settings()
    subscription = await current_subscription(session, subject_id)
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
        ai_overage_billed=plan.ai_overage_billed,
    )


# --- customers, checkout, portal ----------------------------------------------------------------


def insert_ignoring_conflict(
    session: AsyncSession, model: type[Base], values: dict[str, Any]
) -> postgresql.Insert | sqlite.Insert:
    """`INSERT ... ON CONFLICT DO NOTHING`, on PostgreSQL and SQLite."""
    dialect = session.get_bind().dialect.name
    return insert_ignoring_conflicts(dialect, model).values(**values)


async def subject_for_customer(session: AsyncSession, customer_id: str) -> uuid.UUID | None:
    result = await session.execute(
        select(StripeCustomer.subject_id).where(StripeCustomer.customer_id == customer_id)
    )
    return result.scalar_one_or_none()


async def ensure_customer(
    session: AsyncSession, client: stripe.StripeClient, subject_id: uuid.UUID, user: User
) -> str:
    """The subject's Stripe customer id, creating the customer on first need (`user`: who
    asks; the customer's email is theirs).

    The idempotency key is the subject's: should this transaction not commit, or two
    requests race, Stripe hands back the same customer instead of a second one, and the
    row is inserted once (a conflicting insert does nothing).
    """
    row = await session.get(StripeCustomer, subject_id)
    if row is not None:
        return row.customer_id
    fields = await subjects.current().customer(session, subject_id, user)
    try:
        customer = await client.v1.customers.create_async(
            fields, {"idempotency_key": f"customer-{subject_id}"}
        )
    except stripe.StripeError as exc:
        log.error("stripe_error", call="customers.create", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    await session.execute(
        insert_ignoring_conflict(
            session,
            StripeCustomer,
            {"subject_id": subject_id, "customer_id": customer.id, "created_at": utcnow()},
        )
    )
    row = await session.get(StripeCustomer, subject_id, populate_existing=True)
    assert row is not None
    return row.customer_id


async def _lock_checkout(session: AsyncSession, subject_id: uuid.UUID) -> StripeCheckout:
    """The subject's checkout row, created if missing, locked until this transaction ends.

    PostgreSQL: a second transaction's insert waits for the first to commit, then its
    `FOR UPDATE` waits for the lock. SQLite: the insert takes the database's write lock.
    Either way a subject's checkouts run one at a time, across every instance.
    """
    for _ in range(2):  # twice: the daily purge may delete an old row in between
        now = utcnow()
        await session.execute(
            insert_ignoring_conflict(
                session,
                StripeCheckout,
                {"subject_id": subject_id, "created_at": now, "updated_at": now},
            )
        )
        result = await session.execute(
            select(StripeCheckout)
            .where(StripeCheckout.subject_id == subject_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        found = result.scalar_one_or_none()
        if found is not None:
            return found
    raise RuntimeError(f"the checkout row of {subject_id} keeps disappearing")


async def has_live_subscription(session: AsyncSession, subject_id: uuid.UUID) -> bool:
    """Whether the subject has a subscription Stripe may still charge (incomplete included)."""
    result = await session.execute(
        select(Subscription.id)
        .where(Subscription.subject_id == subject_id)
        .where(Subscription.status.not_in(TERMINAL_STATUSES))
        .limit(1)
    )
    return result.first() is not None


async def _previous_checkout(
    session: AsyncSession,
    client: stripe.StripeClient,
    claim: StripeCheckout,
    plan: Plan,
) -> tuple[str, str] | None:
    """Settle the subject's previous Checkout Session, as Stripe knows it now.

    Open for this plan: it is handed back (a double click, a second tab), unless it is
    about to expire. Open otherwise: it is expired first, so it can no longer be paid.
    Completed: its subscription is read from Stripe and stored (the webhooks may not
    have arrived), so the caller's check sees it. Expired: nothing to do.
    """
    assert claim.session_id is not None
    try:
        previous = await client.v1.checkout.sessions.retrieve_async(claim.session_id)
        payable_for = (previous.expires_at or 0) - utcnow().timestamp()
        if (
            previous.status == "open"
            and claim.plan == plan.key
            and previous.url
            and payable_for > CHECKOUT_REUSE_MARGIN
        ):
            return previous.id, previous.url
        if previous.status == "open":
            try:
                previous = await client.v1.checkout.sessions.expire_async(previous.id)
            except stripe.InvalidRequestError:  # completed (or expired) meanwhile
                previous = await client.v1.checkout.sessions.retrieve_async(claim.session_id)
        subscription_id = _id(previous.to_dict().get("subscription"))
        if previous.status == "complete" and subscription_id is not None:
            await sync_subscription(session, client, subscription_id, subject_id=claim.subject_id)
        elif previous.status == "open":
            raise exceptions.stripe_failed()
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            log.error("stripe_error", call="checkout.sessions", error=str(exc))
            raise exceptions.stripe_failed(exc) from exc
    except stripe.StripeError as exc:
        log.error("stripe_error", call="checkout.sessions", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    return None


async def create_checkout(
    session: AsyncSession,
    client: stripe.StripeClient,
    settings: PaymentsSettings,
    subject_id: uuid.UUID,
    user: User,
    plan_key: str,
) -> tuple[str, str]:
    """A Checkout Session (subscription mode) for the plan: (its id, its URL).

    `subject_id` is who pays (the caller checked `user` may buy for it). One at a time per
    subject: its checkout row is locked first; an open session for the same plan is
    handed back, one for another plan is expired at Stripe, and a subject with a live
    subscription (incomplete included) gets 409. A per-seat plan's quantity is the
    subject's seats now (later changes: the subject's module updates it).
    """
    plan = settings.plan(plan_key)
    if plan is None or plan.price_id is None:
        raise exceptions.unknown_plan(plan_key)
    claim = await _lock_checkout(session, subject_id)
    if claim.session_id is not None:
        resumed = await _previous_checkout(session, client, claim, plan)
        if resumed is not None:
            return resumed
    if await has_live_subscription(session, subject_id):
        raise exceptions.already_subscribed()
    customer_id = await ensure_customer(session, client, subject_id, user)
    quantity = await subjects.current().seats(session, subject_id) if plan.per_seat else 1
    line_items: list[SessionCreateParamsLineItem] = [{"price": plan.price_id, "quantity": quantity}]
    if plan.ai_metered_price_id is not None:  # usage-based: Stripe takes no quantity for it
        line_items.append({"price": plan.ai_metered_price_id})
    key = subjects.current().key
    expires_at = utcnow() + timedelta(seconds=settings.checkout_expires_seconds)
    try:
        checkout = await client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": str(subject_id),
                "line_items": line_items,
                "success_url": settings.success_url,
                "cancel_url": settings.cancel_url,
                "expires_at": int(expires_at.timestamp()),
                "metadata": {key: str(subject_id), "plan": plan.key},
                "subscription_data": {"metadata": {key: str(subject_id), "plan": plan.key}},
            },
            # The library's own retries reuse it; a new request (after a rollback) makes a
            # new session, whose URL nobody saw: it expires unused.
            {"idempotency_key": f"checkout-{uuid.uuid4().hex}"},
        )
    except stripe.StripeError as exc:
        log.error("stripe_error", call="checkout.sessions.create", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    if not checkout.url:
        raise exceptions.stripe_failed()
    claim.session_id, claim.plan, claim.expires_at = checkout.id, plan.key, expires_at
    await session.flush()
    return checkout.id, checkout.url


async def create_portal(
    session: AsyncSession,
    client: stripe.StripeClient,
    settings: PaymentsSettings,
    subject_id: uuid.UUID,
    user: User,
) -> str:
    """A customer-portal URL where the subject's subscription and cards are managed."""
    customer_id = await ensure_customer(session, client, subject_id, user)
    try:
        portal = await client.v1.billing_portal.sessions.create_async(
            {"customer": customer_id, "return_url": settings.portal_return_url}
        )
    except stripe.StripeError as exc:
        log.error("stripe_error", call="billing_portal.sessions.create", error=str(exc))
        raise exceptions.stripe_failed(exc) from exc
    return portal.url


# --- webhook events -------------------------------------------------------------------------------
#
# Stripe does not promise order, and several events may share one `created` second. So an
# event is only a hint of *which* subscription changed: its state is read from Stripe when
# the event is handled, under a lock per subscription, and stored as it is. Whichever event
# is handled last read Stripe last, so the stored state converges to Stripe's whatever the
# delivery order, duplicates included.

# What handling an event did; stored in the ledger.
APPLIED = "applied"
IGNORED = "ignored"  # a type this module does not act on
UNKNOWN_CUSTOMER = "unknown_customer"  # no subject is linked to the customer (see the setting)
UNKNOWN_SUBSCRIPTION = "unknown_subscription"  # Stripe does not know it (anymore)


class NotYetApplicable(Exception):
    """The event cannot be applied yet: it stays unprocessed, and its job tries again later."""


class StripeNotConfigured(Exception):
    """Handling needs the Stripe API and STRIPE_SECRET_KEY is not set."""


@dataclass(frozen=True)
class EventContext:
    """What handling an event needs besides the database: Stripe, the settings, its time."""

    client: stripe.StripeClient | None
    settings: PaymentsSettings
    created: datetime  # the event's `created`

    @property
    def stripe(self) -> stripe.StripeClient:
        if self.client is None:
            raise StripeNotConfigured("STRIPE_SECRET_KEY")
        return self.client


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) else None


def _id(value: Any) -> str | None:
    """An id from an expandable field: "cus_123" or {"id": "cus_123", ...}."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def customer_of(obj: Mapping[str, Any]) -> str | None:
    """The customer id of a Stripe object (expanded or not)."""
    return _id(obj.get("customer"))


def subject_in_metadata(obj: Mapping[str, Any]) -> uuid.UUID | None:
    """The subject id we put in a subscription's metadata at checkout, if it holds one."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    try:
        return uuid.UUID(str(metadata.get(subjects.current().key)))
    except ValueError:
        return None


async def _subject_exists(session: AsyncSession, value: Any) -> uuid.UUID | None:
    try:
        subject_id = uuid.UUID(str(value))
    except ValueError:
        return None
    return subject_id if await subjects.current().exists(session, subject_id) else None


async def _link_customer(session: AsyncSession, subject_id: uuid.UUID, customer_id: str) -> None:
    """Remember the subject's customer, unless the subject has one already."""
    await session.execute(
        insert_ignoring_conflict(
            session,
            StripeCustomer,
            {"subject_id": subject_id, "customer_id": customer_id, "created_at": utcnow()},
        )
    )


async def _resolve_subject(
    session: AsyncSession, customer_id: str, metadata: Any
) -> uuid.UUID | None:
    """The subject of a customer; else the subject named in the metadata we set at checkout."""
    subject_id = await subject_for_customer(session, customer_id)
    if subject_id is not None or not isinstance(metadata, Mapping):
        return subject_id
    subject_id = await _subject_exists(session, metadata.get(subjects.current().key))
    if subject_id is not None:
        await _link_customer(session, subject_id, customer_id)
    return subject_id


def _subscription_fields(obj: Mapping[str, Any]) -> tuple[str | None, datetime | None]:
    """(price id, current period end); the period lives on the items since API 2025-03-31.

    The plan's price is the first item's that is not usage-based: a plan with metered AI
    overage has a second item, on its metered price, in no promised order.
    """
    items = (obj.get("items") or {}).get("data") or [{}]
    first = next((item for item in items if not _metered(item)), items[0])
    price = _id(first.get("price"))
    period_end = _timestamp(first.get("current_period_end") or obj.get("current_period_end"))
    return price, period_end


def _metered(item: Mapping[str, Any]) -> bool:
    price = item.get("price")
    recurring = price.get("recurring") if isinstance(price, Mapping) else None
    return isinstance(recurring, Mapping) and recurring.get("usage_type") == "metered"


def _invoice_status(invoice: Any) -> str | None:
    """The latest invoice's state: paid, payment_failed (tried, still open), or Stripe's."""
    if not isinstance(invoice, Mapping):
        return None
    status = invoice.get("status")
    if status == "open" and (invoice.get("attempted") or invoice.get("attempt_count")):
        return "payment_failed"
    return str(status) if status else None


async def _lock_subscription(session: AsyncSession, subscription_id: str) -> None:
    """Serialize the handling of one subscription until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock on the id (the row may not exist yet).
    SQLite: the database's write lock, taken now by a write that changes nothing (a
    transaction that has written already holds it), which serializes every writer; so
    `sync_subscription` takes it there only once Stripe has answered.
    """
    if _is_postgresql(session):
        key = func.hashtextextended(subscription_id, 0)
        await session.execute(select(func.pg_advisory_xact_lock(key)))
    else:
        await session.execute(
            update(Subscription)
            .where(false())
            .values(status=Subscription.status)
            .execution_options(synchronize_session=False)
        )


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _read_later(row: Subscription | None, read_at: datetime, *, locked_first: bool) -> bool:
    """Whether the stored row holds a state read from Stripe after `read_at`.

    Only where Stripe is read before the lock is taken (SQLite, see `sync_subscription`): a
    handling that read later may have stored its state meanwhile, and the later read stays.
    """
    if locked_first or row is None or row.state_as_of <= read_at:
        return False
    log.info("subscription_read_superseded", subscription_id=row.id)
    return True


async def sync_subscription(
    session: AsyncSession,
    client: stripe.StripeClient,
    subscription_id: str,
    *,
    subject_id: uuid.UUID | None = None,
) -> str:
    """Read the subscription from Stripe and store it as it is now.

    One subscription at a time, and the state read last is the one stored. PostgreSQL: the
    advisory lock is taken before Stripe is read, so reads are in lock order. SQLite: its
    lock is the whole database's one write lock, which no transaction may hold across a call
    to Stripe (every other writer would wait on it, then fail with "database is locked"),
    so Stripe is read first and the lock taken after; a state read earlier than the one
    stored is then left out (`state_as_of`). The caller must not have written before this
    in its transaction (it would hold the lock across the call).

    `subject_id` links its customer to that subject when none is linked yet (the
    `client_reference_id` of a checkout). Raises `stripe.StripeError` when Stripe cannot
    answer (the event stays unprocessed and is retried).
    """
    locked_first = _is_postgresql(session)
    if locked_first:
        await _lock_subscription(session, subscription_id)
    read_at = utcnow()
    try:
        found: stripe.Subscription | None = await client.v1.subscriptions.retrieve_async(
            subscription_id, {"expand": ["latest_invoice"]}
        )
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:
            raise
        found = None
    if not locked_first:
        await _lock_subscription(session, subscription_id)
    if found is None:
        return await _subscription_gone(session, subscription_id, read_at, locked_first)
    obj: dict[str, Any] = found.to_dict()
    customer_id = _id(obj.get("customer"))
    if customer_id is None:
        raise ValueError(f"subscription {subscription_id} without a customer")
    if subject_id is not None and await subject_for_customer(session, customer_id) is None:
        await _link_customer(session, subject_id, customer_id)
    owner = await _resolve_subject(session, customer_id, obj.get("metadata")) or subject_id
    if owner is None:
        return UNKNOWN_CUSTOMER
    row = await session.get(
        Subscription, subscription_id, with_for_update=True, populate_existing=True
    )
    if _read_later(row, read_at, locked_first=locked_first):
        return APPLIED
    if row is None:
        row = Subscription(id=subscription_id, subject_id=owner, customer_id=customer_id)
        session.add(row)
    price_id, period_end = _subscription_fields(obj)
    row.status = str(obj.get("status") or "")
    row.price_id = price_id
    row.current_period_end = period_end
    row.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
    row.state_as_of = read_at
    invoice_status = _invoice_status(obj.get("latest_invoice"))
    if invoice_status is not None:
        if invoice_status == "payment_failed" and row.latest_invoice_status != invoice_status:
            log.warning("invoice_payment_failed", subscription_id=row.id, subject_id=str(owner))
        row.latest_invoice_status = invoice_status
        row.latest_invoice_as_of = read_at
    await session.flush()
    return APPLIED


def drift(row: Subscription | None, obj: Mapping[str, Any]) -> list[str]:
    """The fields where the stored subscription differs from Stripe's object ("missing": no row)."""
    price_id, period_end = _subscription_fields(obj)
    invoice_status = _invoice_status(obj.get("latest_invoice"))
    if row is None:
        return ["missing"]
    found = {
        "status": row.status != str(obj.get("status") or ""),
        "price_id": row.price_id != price_id,
        "current_period_end": row.current_period_end != period_end,
        "cancel_at_period_end": row.cancel_at_period_end != bool(obj.get("cancel_at_period_end")),
        "latest_invoice_status": invoice_status is not None
        and row.latest_invoice_status != invoice_status,
    }
    return [name for name, differs in found.items() if differs]


async def _subscription_gone(
    session: AsyncSession, subscription_id: str, read_at: datetime, locked_first: bool
) -> str:
    """Stripe answers 404 (deleted test data, another account): it is over, if we had it."""
    row = await session.get(
        Subscription, subscription_id, with_for_update=True, populate_existing=True
    )
    if row is None:
        return UNKNOWN_SUBSCRIPTION
    if _read_later(row, read_at, locked_first=locked_first):
        return APPLIED
    row.status, row.state_as_of = "canceled", read_at
    await session.flush()
    return APPLIED


async def _subscription_event(
    session: AsyncSession, event: Mapping[str, Any], context: EventContext
) -> str:
    subscription_id = _id(event["data"]["object"].get("id"))
    if subscription_id is None:
        raise ValueError("subscription event without a subscription id")
    return await sync_subscription(session, context.stripe, subscription_id)


async def _checkout_completed(
    session: AsyncSession, event: Mapping[str, Any], context: EventContext
) -> str:
    """Link the customer to the subject the session was made for, and store its subscription."""
    obj = event["data"]["object"]
    customer_id = _id(obj.get("customer"))
    if obj.get("mode") != "subscription" or customer_id is None:
        return IGNORED
    subject_id = await subject_for_customer(session, customer_id)
    if subject_id is None:
        subject_id = await _subject_exists(session, obj.get("client_reference_id"))
    subscription_id = _id(obj.get("subscription"))
    if subscription_id is not None:
        return await sync_subscription(
            session, context.stripe, subscription_id, subject_id=subject_id
        )
    if subject_id is None:
        return UNKNOWN_CUSTOMER
    await _link_customer(session, subject_id, customer_id)
    return APPLIED


async def _invoice_event(
    session: AsyncSession, event: Mapping[str, Any], context: EventContext
) -> str:
    """An invoice of a subscription: store the subscription (and its latest invoice) as now."""
    obj = event["data"]["object"]
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    subscription_id = _id(details.get("subscription")) or _id(obj.get("subscription"))
    if subscription_id is None:
        return IGNORED  # a one-off invoice
    return await sync_subscription(session, context.stripe, subscription_id)


Handler = Callable[[AsyncSession, Mapping[str, Any], EventContext], Awaitable[str]]

HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout_completed,
    "customer.subscription.created": _subscription_event,
    "customer.subscription.updated": _subscription_event,
    "customer.subscription.deleted": _subscription_event,
    "customer.subscription.paused": _subscription_event,
    "customer.subscription.resumed": _subscription_event,
    "invoice.paid": _invoice_event,
    "invoice.payment_failed": _invoice_event,
}


async def handle_event(
    session: AsyncSession,
    event: Mapping[str, Any],
    *,
    client: stripe.StripeClient | None,
    settings: PaymentsSettings,
) -> str:
    """Apply one verified event; returns the outcome.

    Idempotent: it reads the state from Stripe, so handling an event again (a duplicate, a
    replay, a retry) stores Stripe's state of that moment. Raises `NotYetApplicable` when
    the event cannot be applied yet, and anything else when it cannot be handled.
    """
    handler = HANDLERS.get(str(event.get("type")))
    if handler is None:
        return IGNORED
    created = _timestamp(event.get("created"))
    if created is None:
        raise ValueError("event without a created timestamp")
    outcome = await handler(session, event, EventContext(client, settings, created))
    if outcome == UNKNOWN_CUSTOMER:
        age = (utcnow() - created).total_seconds()
        if age < settings.unknown_customer_retry_seconds:
            raise NotYetApplicable(
                f"nothing is linked to the customer yet (retried until the event is "
                f"{settings.unknown_customer_retry_seconds} s old)"
            )
    return outcome
