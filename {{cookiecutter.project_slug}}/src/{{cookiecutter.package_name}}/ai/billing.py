"""Metered AI overage: tokens beyond a plan's allowance, billed through Stripe's billing meters.

Present only with both the AI and the payments modules (the template drops it otherwise).
A plan with `ai_meter_event_name` (and `ai_metered_price_id`, which checkout adds as a
second line item) lets its subscribers go on past `ai_monthly_tokens`: ai/seams.py marks
their caller `overage_billed`, so nothing is refused or reserved, and the ledger records
every token as always. This file turns the ledger into meter events:

- A billing subject's **overage** in a month is its tokens beyond the plan's allowance.
  What has been claimed for billing is a chain of **batches** (`ai_meter_batches`):
  [0, e1), [e1, e2), ... in overage tokens; the end of the last one is the subject's
  reported-up-to marker for the month.
- `ai.report_usage` (every 10 minutes) adds, per subject and month whose overage grew past
  the marker, one batch [marker, overage), and commits it BEFORE anything is sent; then it
  sends every batch Stripe has not accepted yet as one meter event (the customer, the
  batch's tokens) whose `identifier` is made from the batch (subject, month, range). A
  retry is the same event with the same identifier, which Stripe refuses as a duplicate
  ("An event already exists with identifier ..."): taken as delivered, so a retry never
  bills twice. A batch's start is unique per subject and month, so two runs at once cannot
  claim the same tokens twice.
- `ai.reconcile_usage` (daily) does the same from the ledger's rows (`ai_usage`) instead of
  the monthly totals, for this month and the last, and sends again what failed.

A batch that Stripe has not accepted is sent again on each run while Stripe still
deduplicates its identifier (`RESEND_WINDOW`, inside Stripe's "at least 24 hours"); after
that it is `expired`, logged as an error and left for a person to look at (sending it again
could bill it twice if an earlier attempt did reach Stripe): `python -m <package>.ai.meter`
lists such batches, sends one again or marks it sent (ai/meter.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Date,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from {{ cookiecutter.package_name }}.auth.models import UTCDateTime, utcnow
from {{ cookiecutter.package_name }}.core.db import Base, Database
from {{ cookiecutter.package_name }}.core.jobs import JobContext, RetryLater, Tick, job
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.payments.client import get_payments_state
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, Plan
from {{ cookiecutter.package_name }}.payments.models import Subscription
from {{ cookiecutter.package_name }}.payments.sdk import stripe
from {{ cookiecutter.package_name }}.payments.service import (
    ENTITLED_STATUSES,
    insert_ignoring_conflict,
)

from .models import AIUsage, AIUsageTotal
from .schemas import OverageBilling
from .service import at_midnight, next_period, period_start

log = structlog.get_logger(__name__)

# Every 10 minutes (UTC): usage is billed within minutes, in few events.
REPORT_SCHEDULE = "*/10 * * * *"
RECONCILE_SCHEDULE = "53 4 * * *"
# A batch not accepted yet is sent again for this long after it was made: Stripe refuses a
# second event with the same identifier "within a rolling period of at least 24 hours".
RESEND_WINDOW = timedelta(hours=23)
# Stripe takes events up to 35 days old; a batch never tried is sent within this.
BACKDATE_LIMIT = timedelta(days=34)
# Stripe's answer to a second event with an identifier it has (HTTP 400).
DUPLICATE = "An event already exists with identifier"
IDENTIFIER_PREFIX = "ai-overage"

PENDING, SENT, FAILED, EXPIRED = "pending", "sent", "failed", "expired"


class AIMeterBatch(Base):
    """Overage tokens [start_tokens, end_tokens) of a subject's month, sent as one meter event."""

    __tablename__ = "ai_meter_batches"
    __table_args__ = (
        # The chain's compare-and-set: a second batch from the same marker is not added.
        UniqueConstraint("subject", "period", "start_tokens", name="uq_ai_meter_batches_start"),
        Index("ix_ai_meter_batches_status", "status"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    subject: Mapped[uuid.UUID] = mapped_column(Uuid())  # the billing subject (totals' subject)
    period: Mapped[date] = mapped_column(Date())  # the month (its first day, UTC)
    start_tokens: Mapped[int] = mapped_column(BigInteger())
    end_tokens: Mapped[int] = mapped_column(BigInteger())
    customer_id: Mapped[str] = mapped_column(String(255))
    event_name: Mapped[str] = mapped_column(String(100))
    identifier: Mapped[str] = mapped_column(String(100), unique=True)
    # pending (not sent yet) | sent (Stripe accepted it) | failed (tried; sent again) | expired
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer(), default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # also the event's timestamp
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def tokens(self) -> int:
        return self.end_tokens - self.start_tokens


def identifier(subject: uuid.UUID, period: date, start: int, end: int) -> str:
    """The meter event's identifier: the batch's place in the subject's month (<= 100 chars)."""
    return f"{IDENTIFIER_PREFIX}-{subject.hex}-{period:%Y%m}-{start}-{end}"


# --- what the usage endpoints show --------------------------------------------------------


async def billed_overage(
    database: Database, subject: uuid.UUID, period: date, overage: int
) -> OverageBilling:
    """Of the month's overage, what Stripe has accepted, and what is still to be billed."""
    query = select(
        func.coalesce(func.sum(AIMeterBatch.end_tokens - AIMeterBatch.start_tokens), 0)
    ).where(
        AIMeterBatch.subject == subject,
        AIMeterBatch.period == period,
        AIMeterBatch.status == SENT,
    )
    async with database.read_engine.connect() as conn:
        billed = int((await conn.execute(query)).scalar_one())
    return OverageBilling(tokens=overage, billed=billed, unbilled=max(0, overage - billed))


# --- reporting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overage:
    subject: uuid.UUID
    period: date
    customer_id: str
    event_name: str
    tokens: int  # beyond the allowance


@dataclass
class Reported:
    batches: int = 0  # added by this run
    sent: int = 0
    failed: int = 0
    expired: int = 0
    errors: list[str] = field(default_factory=list)


def metered_plans(settings: PaymentsSettings) -> list[Plan]:
    return [plan for plan in settings.plans if plan.ai_overage_billed]


def _months(now: datetime) -> tuple[date, date]:
    """This month and the last (usage just before a month ended is reported after it)."""
    current = period_start(now)
    previous = period_start(at_midnight(current) - timedelta(days=1))
    return previous, current


async def overages(
    session: AsyncSession, plans: Sequence[Plan], now: datetime, *, from_ledger: bool
) -> list[Overage]:
    """Subjects on a metered plan whose month went beyond the allowance, by how much.

    From the monthly totals (one row per subject and month), or `from_ledger` by summing
    the ledger's rows (the reconcile).
    """
    found: list[Overage] = []
    subject = Subscription.subject_id
    for plan in plans:
        assert plan.ai_monthly_tokens is not None
        assert plan.ai_meter_event_name is not None
        on_plan = (Subscription.price_id == plan.price_id) & Subscription.status.in_(
            ENTITLED_STATUSES
        )
        for period in _months(now):
            if from_ledger:
                tokens: Any = func.sum(AIUsage.total_tokens)
                query = (
                    select(subject, Subscription.customer_id, tokens)
                    .join(AIUsage, AIUsage.subject == subject)
                    .where(
                        on_plan,
                        AIUsage.created_at >= at_midnight(period),
                        AIUsage.created_at < at_midnight(next_period(period)),
                    )
                    .group_by(subject, Subscription.customer_id)
                    .having(tokens > plan.ai_monthly_tokens)
                )
            else:
                query = (
                    select(subject, Subscription.customer_id, AIUsageTotal.tokens)
                    .join(AIUsageTotal, AIUsageTotal.subject == subject)
                    .where(
                        on_plan,
                        AIUsageTotal.period == period,
                        AIUsageTotal.tokens > plan.ai_monthly_tokens,
                    )
                )
            for subject_id, customer_id, used in await session.execute(query):
                found.append(
                    Overage(
                        subject_id,
                        period,
                        customer_id,
                        plan.ai_meter_event_name,
                        int(used) - plan.ai_monthly_tokens,
                    )
                )
    return found


async def add_batches(
    database: Database, plans: Sequence[Plan], now: datetime, *, from_ledger: bool
) -> int:
    """One batch per subject and month whose overage grew past its marker; committed here."""
    added = 0
    async with database.sessionmaker() as session, session.begin():
        found = await overages(session, plans, now, from_ledger=from_ledger)
        if not found:
            return 0
        markers = {
            (row.subject, row.period): int(row.marker)
            for row in await session.execute(
                select(
                    AIMeterBatch.subject,
                    AIMeterBatch.period,
                    func.max(AIMeterBatch.end_tokens).label("marker"),
                )
                .where(AIMeterBatch.period.in_(_months(now)))
                .group_by(AIMeterBatch.subject, AIMeterBatch.period)
            )
        }
        for over in found:
            start = markers.get((over.subject, over.period), 0)
            if over.tokens <= start:
                continue
            result = await session.execute(
                insert_ignoring_conflict(
                    session,
                    AIMeterBatch,
                    {
                        "subject": over.subject,
                        "period": over.period,
                        "start_tokens": start,
                        "end_tokens": over.tokens,
                        "customer_id": over.customer_id,
                        "event_name": over.event_name,
                        "identifier": identifier(over.subject, over.period, start, over.tokens),
                        "status": PENDING,
                        "attempts": 0,
                        "created_at": now,
                    },
                )
            )
            added += result.rowcount  # type: ignore[attr-defined]
    return added


async def mark(
    database: Database, batch_id: int, status: str, error: str | None, *, attempt: bool = True
) -> bool:
    """Record a batch's new status (`attempt`: after sending it); False if it was sent already."""
    values: dict[str, Any] = {"status": status, "last_error": error}
    if attempt:
        values["attempts"] = AIMeterBatch.attempts + 1
    if status == SENT:
        values["sent_at"] = utcnow()
    async with database.sessionmaker() as session, session.begin():
        result = await session.execute(
            update(AIMeterBatch)
            .where(AIMeterBatch.id == batch_id, AIMeterBatch.status != SENT)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    return bool(getattr(result, "rowcount", 0))


async def send_batches(
    database: Database, client: stripe.StripeClient, now: datetime, result: Reported
) -> None:
    """Send every batch Stripe has not accepted, each with its own identifier.

    No transaction is open while Stripe is called (on SQLite it would hold the database's
    one write lock); each outcome is written in a short one of its own.
    """
    async with database.sessionmaker() as session:
        batches = (
            await session.scalars(
                select(AIMeterBatch)
                .where(AIMeterBatch.status.in_((PENDING, FAILED)))
                .order_by(AIMeterBatch.id)
            )
        ).all()
    for batch in batches:
        age = now - batch.created_at
        if age > BACKDATE_LIMIT or (batch.attempts > 0 and age > RESEND_WINDOW):
            await mark(database, batch.id, EXPIRED, batch.last_error, attempt=False)
            result.expired += 1
            log.error(
                "ai_meter_batch_expired",
                identifier=batch.identifier,
                customer_id=batch.customer_id,
                tokens=batch.tokens,
                attempts=batch.attempts,
                last_error=batch.last_error,
            )
            continue
        error = await send_event(client, batch, batch.created_at)
        if error is not None:
            await mark(database, batch.id, FAILED, error)
            result.failed += 1
            result.errors.append(error)
            log.warning("ai_meter_event_failed", identifier=batch.identifier, error=error)
            continue
        await mark(database, batch.id, SENT, None)
        result.sent += 1


async def send_event(
    client: stripe.StripeClient, batch: AIMeterBatch, timestamp: datetime
) -> str | None:
    """Send the batch's meter event: None once Stripe has it (now, or already), else the error.

    Stripe refusing the identifier as a duplicate means an earlier attempt got through.
    """
    params: dict[str, Any] = {
        "event_name": batch.event_name,
        "identifier": batch.identifier,
        "timestamp": int(timestamp.timestamp()),
        "payload": {"stripe_customer_id": batch.customer_id, "value": str(batch.tokens)},
    }
    try:
        await client.v1.billing.meter_events.create_async(params)  # type: ignore[arg-type]
    except stripe.InvalidRequestError as exc:
        if DUPLICATE not in str(exc):
            return f"{type(exc).__name__}: {exc}"[:2000]
        log.info("ai_meter_event_duplicate", identifier=batch.identifier)
    except stripe.StripeError as exc:
        return f"{type(exc).__name__}: {exc}"[:2000]
    return None


async def report(
    database: Database,
    settings: PaymentsSettings,
    client: stripe.StripeClient | None,
    *,
    from_ledger: bool = False,
    now: datetime | None = None,
) -> Reported:
    """Add the batches the overage calls for, then send every batch not accepted yet."""
    result = Reported()
    plans = metered_plans(settings)
    if not plans:
        return result  # no metered plan: nothing is ever sent
    if client is None:
        log.info("ai_meter_skipped", missing_setting="STRIPE_SECRET_KEY")
        return result
    now = now or utcnow()
    result.batches = await add_batches(database, plans, now, from_ledger=from_ledger)
    await send_batches(database, client, now, result)
    return result


async def _run(ctx: JobContext, *, from_ledger: bool) -> Reported:
    payments = get_payments_state(ctx.app)
    result = await report(
        ctx.app.state.database, payments.settings, payments.stripe.client, from_ledger=from_ledger
    )
    if result.batches or result.sent or result.failed or result.expired:
        log.info(
            "ai_meter_reported",
            source="ledger" if from_ledger else "totals",
            batches=result.batches,
            sent=result.sent,
            failed=result.failed,
            expired=result.expired,
        )
    return result


@job("ai.report_usage", schedule=REPORT_SCHEDULE, max_attempts=3, backoff=60.0, timeout=600.0)
async def report_usage(ctx: JobContext, args: Tick) -> None:
    """Report the overage of metered plans to Stripe (every 10 minutes)."""
    result = await _run(ctx, from_ledger=False)
    if result.failed:
        # Sooner than the next tick; the batches are sent again with the same identifiers.
        raise RetryLater(f"{result.failed} meter event(s) failed: {result.errors[0]}", seconds=60)


@job(
    "ai.reconcile_usage", schedule=RECONCILE_SCHEDULE, max_attempts=3, backoff=300.0, timeout=1800.0
)
async def reconcile_usage(ctx: JobContext, args: Tick) -> None:
    """The ledger's rows against what was claimed for billing; failed batches sent again."""
    result = await _run(ctx, from_ledger=True)
    if result.failed:
        raise RetryLater(f"{result.failed} meter event(s) failed: {result.errors[0]}", seconds=300)


module = Module("ai-billing", jobs=(report_usage, reconcile_usage))
