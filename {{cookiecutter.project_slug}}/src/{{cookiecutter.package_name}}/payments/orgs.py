"""Billing per organization: where the payments module meets the orgs module.

Present only with both (the template drops it without orgs). Importing it (modules.py
does) installs organizations as the billing subject (payments/subjects.py), so:

- customers, subscriptions, checkouts and entitlements are an organization's;
- /api/v1/orgs/{org_id}/billing/checkout|portal (owners and admins) and
  /subscription (any member) act on that organization; the user-level routes
  (/api/v1/payments/checkout|portal|subscription) act on the caller's personal one;
- plan gating (`require_plan`, ...) reads the plan of the organization in the route's
  path, else the caller's personal organization's;
- a per-seat plan's quantity is the member count: when members join or leave, the job
  `payments.sync_seats` sets it at Stripe (prorated), reading the count when it runs;
- deleting an organization cancels its live subscriptions at Stripe, at once
  (`payments.cancel_subscription`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.dependencies import require_session_scopes
from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.core.jobs import (
    JobContext,
    JobRecord,
    JobStatus,
    enqueue,
    job,
)
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.orgs import events
from {{ cookiecutter.package_name }}.orgs import exceptions as org_exceptions
from {{ cookiecutter.package_name }}.orgs.dependencies import OrgAdmin, OrgMember
from {{ cookiecutter.package_name }}.orgs.models import Membership, Organization
from {{ cookiecutter.package_name }}.orgs.scoping import activation, enter_org
from {{ cookiecutter.package_name }}.orgs.service import personal_org
from {{ cookiecutter.package_name }}.payments import service, subjects
from {{ cookiecutter.package_name }}.payments.client import (
    PaymentsSettingsDep,
    StripeDep,
    get_payments_state,
)
from {{ cookiecutter.package_name }}.payments.models import Subscription
from {{ cookiecutter.package_name }}.payments.router import STRIPE, subscription_read
from {{ cookiecutter.package_name }}.payments.schemas import (
    CheckoutRequest,
    RedirectUrl,
    SubscriptionRead,
)
from {{ cookiecutter.package_name }}.payments.sdk import stripe

if TYPE_CHECKING:
    from stripe.params import CustomerCreateParams

log = structlog.get_logger(__name__)

# Stripe's proration when the seat count changes: credit and charge the difference for
# the rest of the period, on the next invoice (Stripe's default, said explicitly).
SEAT_PRORATION = "create_prorations"
# Members joining or leaving within this many seconds make one seat update.
SEAT_SYNC_DELAY = 5.0


# --- the billing subject: the organization ----------------------------------------------


async def member_count(session: AsyncSession, org_id: uuid.UUID) -> int:
    found = await session.scalar(
        select(func.count()).select_from(Membership).where(Membership.org_id == org_id)
    )
    return int(found or 0)


class OrgSubjects(subjects.Subjects):
    """The billing subject is the organization; a user acts for their personal one."""

    key = "org_id"

    async def exists(self, session: AsyncSession, subject_id: uuid.UUID) -> bool:
        return await session.get(Organization, subject_id) is not None

    async def of_user(self, session: AsyncSession, user: User) -> uuid.UUID:
        """The user's personal organization, entered for the transaction (row-level
        security: the user-level routes read and write its billing rows)."""
        org = await personal_org(session, user.id)
        if org is None:  # every account gets one at sign-up (or from the orgs migration)
            raise org_exceptions.org_not_found()
        await enter_org(session, org.id)
        return org.id

    async def of_request(
        self, session: AsyncSession, user: User, path: Mapping[str, Any]
    ) -> uuid.UUID:
        """The organization in the path if the user is a member of it (else 404, as for
        every org-scoped route), or the user's personal organization."""
        if "org_id" not in path:
            return await self.of_user(session, user)
        try:
            org_id = uuid.UUID(str(path["org_id"]))
        except ValueError:
            raise org_exceptions.org_not_found() from None
        # The membership, and the organization entered for the transaction, in one statement.
        member = (
            await session.execute(
                select(Membership.user_id, activation(session, org_id)).where(
                    Membership.org_id == org_id, Membership.user_id == user.id
                )
            )
        ).first()
        if member is None:
            raise org_exceptions.org_not_found()
        return org_id

    async def customer(
        self, session: AsyncSession, subject_id: uuid.UUID, user: User
    ) -> CustomerCreateParams:
        org = await session.get(Organization, subject_id)
        fields: CustomerCreateParams = {
            "email": user.email,
            "metadata": {self.key: str(subject_id)},
        }
        if org is not None:
            fields["name"] = org.name
        return fields

    async def seats(self, session: AsyncSession, subject_id: uuid.UUID) -> int:
        return max(1, await member_count(session, subject_id))

    async def enter(self, session: AsyncSession, subject_id: uuid.UUID) -> None:
        await enter_org(session, subject_id)


subjects.install(OrgSubjects())


# --- routes -----------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1/orgs/{org_id}/billing", tags=["payments"])


@router.post(
    "/checkout",
    responses={**STRIPE, **problems({409: "Already subscribed", 422: "Unknown plan"})},
)
async def org_checkout(
    body: CheckoutRequest,
    access: OrgAdmin,
    session: SessionDep,
    settings: PaymentsSettingsDep,
    client: StripeDep,
) -> RedirectUrl:
    """A Stripe Checkout Session for the organization's subscription (owners and admins).
    A per-seat plan's quantity is the member count."""
    session_id, url = await service.create_checkout(
        session, client, settings, access.org_id, access.user, body.plan
    )
    return RedirectUrl(id=session_id, url=url)


@router.post("/portal", dependencies=[require_session_scopes("write")], responses=STRIPE)
async def org_portal(
    access: OrgAdmin, session: SessionDep, settings: PaymentsSettingsDep, client: StripeDep
) -> RedirectUrl:
    """The Stripe customer portal of the organization (owners and admins)."""
    url = await service.create_portal(session, client, settings, access.org_id, access.user)
    return RedirectUrl(url=url)


@router.get("/subscription")
async def org_subscription(
    access: OrgMember, session: SessionDep, settings: PaymentsSettingsDep
) -> SubscriptionRead:
    """The organization's plan and subscription state (any member may see the plan)."""
    return subscription_read(
        await service.get_entitlements(session, access.org_id, settings=settings)
    )


# --- seats: the subscription's quantity follows the member count ------------------------


class OrgSeats(BaseModel):
    org_id: uuid.UUID


class CancelSubscription(BaseModel):
    subscription_id: str
    org_id: uuid.UUID  # for the log: the organization is gone by the time it runs


async def _live_subscriptions(session: AsyncSession, org_id: uuid.UUID) -> list[Subscription]:
    result = await session.execute(
        select(Subscription)
        .where(Subscription.org_id == org_id)
        .where(Subscription.status.not_in(service.TERMINAL_STATUSES))
    )
    return list(result.scalars())


def _client(ctx: JobContext) -> stripe.StripeClient:
    client = get_payments_state(ctx.app).stripe.client
    if client is None:
        raise service.StripeNotConfigured("STRIPE_SECRET_KEY")
    return client


@job("payments.sync_seats", max_attempts=10, backoff=30.0, timeout=120.0)
async def sync_seats(ctx: JobContext, args: OrgSeats) -> None:
    """Set the quantity of the organization's per-seat subscription to its member count.

    The count is read now, when the job runs (so a burst of changes needs one run), and
    set only where Stripe's differs; the idempotency key holds the job and the count, so
    a retry of the same change is the same request. Stripe errors: retried.
    """
    settings = get_payments_state(ctx.app).settings
    await enter_org(ctx.session, args.org_id)  # row-level security: its subscriptions
    for row in await _live_subscriptions(ctx.session, args.org_id):
        plan = settings.plan_for_price(row.price_id)
        if plan is None or not plan.per_seat or plan.price_id is None:
            continue
        seats = await subjects.current().seats(ctx.session, args.org_id)
        client = _client(ctx)
        try:
            found = await client.v1.subscriptions.retrieve_async(row.id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:  # gone at Stripe: its webhook will say so
                continue
            raise
        items = (found.to_dict().get("items") or {}).get("data") or []
        item = next((i for i in items if service._id(i.get("price")) == plan.price_id), None)
        if item is None:
            log.warning("seat_item_not_found", subscription_id=row.id, price_id=plan.price_id)
            continue
        if item.get("quantity") == seats:
            continue
        await client.v1.subscription_items.update_async(
            str(item["id"]),
            {"quantity": seats, "proration_behavior": SEAT_PRORATION},
            {"idempotency_key": f"seats-{ctx.job_id}-{seats}"},
        )
        log.info("seats_updated", org_id=str(args.org_id), subscription_id=row.id, seats=seats)


SEAT_JOB_PREFIX = f"{sync_seats.name}:"


@events.on_members_changed
async def members_changed(session: AsyncSession, org: Organization) -> None:
    """Someone joined or left: one seat update, unless one is waiting to run already.

    A waiting job (pending or queued, not yet taken) reads the count when it runs, after
    this transaction: it is locked here until then (PostgreSQL; SQLite has one writer),
    so it cannot be taken in between. A job already running may have read the count
    before this change: then a new one is enqueued.
    """
    await enter_org(session, org.id)  # row-level security: wherever the change came from
    if not await _live_subscriptions(session, org.id):
        return  # nothing billed; the checkout counts the members
    waiting = await session.scalar(
        select(JobRecord.id)
        .where(JobRecord.id.startswith(f"{SEAT_JOB_PREFIX}{org.id}:", autoescape=True))
        .where(JobRecord.status.in_([JobStatus.PENDING, JobStatus.QUEUED]))
        .limit(1)
        .with_for_update()
    )
    if waiting is None:
        await enqueue(
            session,
            sync_seats,
            OrgSeats(org_id=org.id),
            key=f"{org.id}:{uuid.uuid4().hex}",
            delay=SEAT_SYNC_DELAY,
        )


# --- deleting an organization cancels its subscription ----------------------------------


@job("payments.cancel_subscription", max_attempts=12, backoff=30.0, timeout=60.0)
async def cancel_subscription(ctx: JobContext, args: CancelSubscription) -> None:
    """Cancel the subscription at Stripe now (no proration credit, no final invoice:
    Stripe's defaults). Idempotent: one already over is left as it is."""
    client = _client(ctx)
    try:
        found = await client.v1.subscriptions.retrieve_async(args.subscription_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return
        raise
    if found.status in service.TERMINAL_STATUSES:
        return
    await client.v1.subscriptions.cancel_async(
        args.subscription_id,
        {"cancellation_details": {"comment": "organization deleted"}},
        {"idempotency_key": f"cancel-{args.subscription_id}"},
    )
    log.info(
        "subscription_canceled_with_org",
        org_id=str(args.org_id),
        subscription_id=args.subscription_id,
    )


@events.on_org_deleted
async def org_deleted(session: AsyncSession, org: Organization) -> None:
    """The organization is being deleted: its live subscriptions are cancelled by jobs
    (their ids are in the jobs' arguments; the rows go with the organization)."""
    await enter_org(session, org.id)  # row-level security: wherever the deletion came from
    for row in await _live_subscriptions(session, org.id):
        await enqueue(
            session,
            cancel_subscription,
            CancelSubscription(subscription_id=row.id, org_id=org.id),
            key=row.id,
        )


module = Module("payments.orgs", routers=(router,), jobs=(sync_seats, cancel_subscription))
