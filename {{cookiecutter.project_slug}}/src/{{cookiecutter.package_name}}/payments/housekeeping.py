"""Scheduled jobs of the payments module: purge the ledger, reconcile subscriptions.

- `payments.purge_ledger` (daily): processed webhook events older than
  PAYMENTS_EVENT_RETENTION_DAYS, with their finished jobs, and checkout rows whose session
  expired more than a day ago. Unprocessed events are never purged.
- `payments.reconcile` (daily): every subscription Stripe lists is compared with the
  stored one, page by page (100 a request); those that differ, those missing here (of a
  customer of ours), and those stored as live that Stripe no longer lists are read again
  from Stripe and stored, exactly as a webhook does (under the per-subscription lock).
  A lost or dead webhook is corrected within a day. Idempotent: a second run finds
  nothing to correct and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.db import Database, bypass_row_security
from {{ cookiecutter.package_name }}.core.jobs import JobContext, JobRecord, JobStatus, Tick, job
from {{ cookiecutter.package_name }}.payments import service, subjects, webhooks
from {{ cookiecutter.package_name }}.payments.client import PaymentsState, get_payments_state
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from {{ cookiecutter.package_name }}.payments.models import (
    StripeCheckout,
    StripeCustomer,
    StripeEvent,
    Subscription,
)

log = structlog.get_logger(__name__)

RECONCILE_PAGE_SIZE = 100  # Stripe's largest page
# A checkout row is kept this long after its session expired (it is only a lock by then).
CHECKOUT_KEEP = timedelta(days=1)


# --- the ledger's retention --------------------------------------------------------------


@dataclass(frozen=True)
class Purged:
    events: int
    checkouts: int


async def purge(session: AsyncSession, settings: PaymentsSettings, now: datetime) -> Purged:
    """Delete old processed events (and their done jobs) and stale checkout rows; flushes."""
    await bypass_row_security(session)  # every subject's checkouts (row-level security)
    cutoff = now - timedelta(days=settings.event_retention_days)
    old = StripeEvent.processed_at < cutoff
    # Their finished jobs go with them: a later delivery of one is then recorded and
    # applied again (it reads Stripe's state), not skipped for a job that stands.
    prefix = webhooks.job_id("")
    await session.execute(
        delete(JobRecord)
        .where(
            JobRecord.id.in_(select(literal(prefix) + StripeEvent.id).where(old)),
            JobRecord.status == JobStatus.DONE,
        )
        .execution_options(synchronize_session=False)
    )
    events = await session.execute(
        delete(StripeEvent).where(old).execution_options(synchronize_session=False)
    )
    stale = now - CHECKOUT_KEEP
    checkouts = await session.execute(
        delete(StripeCheckout)
        .where(
            or_(
                StripeCheckout.expires_at < stale,
                and_(StripeCheckout.expires_at.is_(None), StripeCheckout.updated_at < stale),
            )
        )
        .execution_options(synchronize_session=False)
    )
    return Purged(events.rowcount, checkouts.rowcount)  # type: ignore[attr-defined]


@job("payments.purge_ledger", schedule="37 3 * * *", max_attempts=3, backoff=60.0)
async def purge_ledger(ctx: JobContext, args: Tick) -> None:
    settings = get_payments_state(ctx.app).settings
    purged = await purge(ctx.session, settings, utcnow())
    log.info(
        "payments_purged",
        events=purged.events,
        checkouts=purged.checkouts,
        retention_days=settings.event_retention_days,
    )


# --- the daily reconcile -----------------------------------------------------------------


@dataclass
class Reconciled:
    listed: int = 0  # subscriptions Stripe listed
    read: int = 0  # read again one by one (differing, missing here, or not listed)
    corrected: list[str] = field(default_factory=list)


async def _suspects(database: Database, listed: list[dict[str, Any]]) -> list[str]:
    """The listed subscriptions whose stored state differs, or that are ours and missing."""
    ids = [obj["id"] for obj in listed]
    async with database.sessionmaker() as session:
        await bypass_row_security(session)  # every subject's rows (row-level security)
        rows = {
            row.id: row
            for row in (
                await session.execute(select(Subscription).where(Subscription.id.in_(ids)))
            ).scalars()
        }
        missing = [obj for obj in listed if obj["id"] not in rows]
        customers = {service.customer_of(obj) for obj in missing} - {None}
        known = set(
            (
                await session.execute(
                    select(StripeCustomer.customer_id).where(
                        StripeCustomer.customer_id.in_(customers)
                    )
                )
            ).scalars()
        )
        named: set[str] = set()  # missing ones whose metadata names a subject we have
        for obj in missing:
            subject_id = service.subject_in_metadata(obj)
            if subject_id is not None and await subjects.current().exists(session, subject_id):
                named.add(obj["id"])
    suspects: list[str] = []
    for obj in listed:
        row = rows.get(obj["id"])
        if row is None:
            ours = service.customer_of(obj) in known or obj["id"] in named
            if ours:
                suspects.append(obj["id"])
        elif service.drift(row, obj):
            suspects.append(obj["id"])
    return suspects


def _state(row: Subscription | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "status": row.status,
        "price_id": row.price_id,
        "current_period_end": row.current_period_end.isoformat()
        if row.current_period_end
        else None,
        "cancel_at_period_end": row.cancel_at_period_end,
        "latest_invoice_status": row.latest_invoice_status,
    }


async def reconcile(database: Database, payments: PaymentsState) -> Reconciled:
    """Compare every subscription with Stripe's and store Stripe's where they differ."""
    client = payments.stripe.client
    if client is None:
        raise service.StripeNotConfigured("STRIPE_SECRET_KEY")
    result = Reconciled()
    suspects: list[str] = []
    listed_ids: set[str] = set()
    started_after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": RECONCILE_PAGE_SIZE, "expand": ["data.latest_invoice"]}
        if started_after is not None:
            params["starting_after"] = started_after
        page = await client.v1.subscriptions.list_async(params)  # type: ignore[arg-type]
        listed = [item.to_dict() for item in page.data]
        result.listed += len(listed)
        listed_ids.update(obj["id"] for obj in listed)
        suspects += await _suspects(database, listed)
        if not page.has_more or not listed:
            break
        started_after = listed[-1]["id"]
    # Stripe lists every subscription that is not canceled: a live one of ours it did not
    # list has ended (or is gone).
    async with database.sessionmaker() as session:
        await bypass_row_security(session)
        live = (
            await session.execute(
                select(Subscription.id).where(Subscription.status.not_in(service.TERMINAL_STATUSES))
            )
        ).scalars()
        suspects += [sid for sid in live if sid not in listed_ids]
    for subscription_id in suspects:
        result.read += 1
        async with database.sessionmaker() as session, session.begin():
            await bypass_row_security(session)
            before = _state(await session.get(Subscription, subscription_id))
            outcome = await service.sync_subscription(session, client, subscription_id)
            after = _state(await session.get(Subscription, subscription_id, populate_existing=True))
        if before != after:
            result.corrected.append(subscription_id)
            log.warning(
                "subscription_reconciled",
                subscription_id=subscription_id,
                before=before,
                after=after,
                outcome=outcome,
            )
    return result


@job("payments.reconcile", schedule="47 4 * * *", max_attempts=3, backoff=300.0, timeout=1800.0)
async def reconcile_subscriptions(ctx: JobContext, args: Tick) -> None:
    payments = get_payments_state(ctx.app)
    if not payments.settings.reconcile:
        log.info("payments_reconcile_skipped", reason="PAYMENTS_RECONCILE is off")
        return
    if payments.stripe.client is None:
        log.info("payments_reconcile_skipped", missing_setting="STRIPE_SECRET_KEY")
        return
    result = await reconcile(ctx.app.state.database, payments)
    log.info(
        "payments_reconciled",
        listed=result.listed,
        read=result.read,
        corrected=len(result.corrected),
    )
