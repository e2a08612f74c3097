"""The webhook ledger: verify; record and enqueue (one transaction); a job applies it.

Nothing is lost: the endpoint commits the event to `stripe_events` together with a job
(`payments.apply_event`, keyed by the event id) before it answers, so a rolled-back
request leaves neither, and a committed one always has its job. The job applies the event
in its session, which also sets `processed_at` and commits with the job's "done" mark: the
changes and the mark commit together or not at all. A failure rolls them back, notes the
error on the ledger row (`attempts`, `last_error`), and the job is retried with backoff;
after its attempts it is dead (`python -m <package> jobs replay` runs it again, or
`python -m <package>.payments replay`, which applies it here and now).

`apply` needs a session, the payments state (settings and Stripe client) and the event id:
it reads the event from the ledger and the subscription from Stripe, so it runs anywhere
(the job, a replay), any number of times. `process` is `apply` in a transaction of its
own, for the replay command and the admin.

Duplicates: a second delivery finds the row: processed, it is a "duplicate"; not yet, its
job (keyed by the event id) stands, so nothing new is enqueued. Applying reads the row,
handles the event (Stripe is read before anything is written: on SQLite a write takes the
database's one write lock, not to be held across a network call), then marks the row with
a conditional update (`... WHERE processed_at IS NULL`): a job and a replay running at
once both store Stripe's state (in read order, see `service.sync_subscription`), and the
one that marks second answers "duplicate".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.db import Database, bypass_row_security
from {{ cookiecutter.package_name }}.core.jobs import JobContext, RetryLater, enqueue, job
from {{ cookiecutter.package_name }}.core.jobs.dead import forget
from {{ cookiecutter.package_name }}.core.telemetry import observe
from {{ cookiecutter.package_name }}.payments import exceptions, service
from {{ cookiecutter.package_name }}.payments.client import PaymentsState, get_payments_state
from {{ cookiecutter.package_name }}.payments.models import StripeEvent
from {{ cookiecutter.package_name }}.payments.sdk import stripe

log = structlog.get_logger(__name__)

QUEUED = "queued"  # recorded; its job applies it
DUPLICATE = "duplicate"  # processed already
ERROR_LENGTH = 2000
# The job's retries wait about 10 s, 20 s, 40 s, ... (at most an hour each): its 16
# attempts span about seven hours, past PAYMENTS_UNKNOWN_CUSTOMER_RETRY_SECONDS' default.
APPLY_MAX_ATTEMPTS = 16
APPLY_BACKOFF = 10.0
APPLY_TIMEOUT = 180.0


class EventHandlingError(Exception):
    """Handling a recorded event failed; it stays unprocessed.

    `deferred`: it cannot be applied yet (it is tried again later); `missing_setting`:
    the setting it needs is not set.
    """

    def __init__(
        self, event_id: str, *, deferred: bool = False, missing_setting: str | None = None
    ) -> None:
        super().__init__(event_id)
        self.deferred = deferred
        self.missing_setting = missing_setting


class NotInLedger(LookupError):
    """A replay of an event the ledger does not hold."""


def verify(payload: bytes, header: str | None, secret: str, tolerance: int) -> dict[str, Any]:
    """The event, if `Stripe-Signature` is valid for this payload and recent enough; else 400."""
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise exceptions.bad_signature() from exc
    except (ValueError, IndexError, UnicodeDecodeError) as exc:  # a malformed header
        raise exceptions.bad_signature() from exc
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise exceptions.bad_signature("The payload is not JSON.") from exc
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not event["id"]
        or len(event["id"]) > 200
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
        or not isinstance(event.get("data"), dict)
    ):
        raise exceptions.bad_signature("The payload is not a Stripe event.")
    return event


# --- the endpoint's part: record and enqueue -----------------------------------------------


@dataclass(frozen=True)
class Received:
    event_id: str
    outcome: str  # queued | duplicate | ignored
    missing_setting: str | None = None  # recorded, but nothing can apply it until this is set


async def receive(
    session: AsyncSession, payments: PaymentsState, event: dict[str, Any]
) -> Received:
    """Record a verified event and enqueue its job, in the caller's transaction.

    A type this module does not handle is recorded as processed (`ignored`), with no job.
    A handled type while STRIPE_SECRET_KEY is unset is recorded unprocessed, with no job
    (nothing could apply it): the caller answers 503 so that Stripe delivers it again.
    """
    event_id: str = event["id"]
    handled = event["type"] in service.HANDLERS
    now = utcnow()
    values: dict[str, Any] = {
        "id": event_id,
        "type": event["type"][:100],
        "payload": event,
        "stripe_created": datetime.fromtimestamp(event["created"], UTC),
        "received_at": now,
        "attempts": 0,
    }
    if not handled:
        values.update(processed_at=now, outcome=service.IGNORED, attempts=1)
    inserted = await session.execute(service.insert_ignoring_conflict(session, StripeEvent, values))
    if inserted.rowcount == 0:  # type: ignore[attr-defined]
        row = await session.get(StripeEvent, event_id, populate_existing=True)
        if row is None or row.processed_at is not None:
            return Received(event_id, DUPLICATE)
    elif not handled:
        return Received(event_id, service.IGNORED)
    if payments.stripe.client is None:
        missing = "STRIPE_SECRET_KEY"
        await session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id)
            .values(last_error=f"StripeNotConfigured: {missing}")
            .execution_options(synchronize_session=False)
        )
        log.error("stripe_event_waiting", event_id=event_id, missing_setting=missing)
        return Received(event_id, QUEUED, missing_setting=missing)
    # Recorded before and not processed: its job stands (the key), or is added now.
    await enqueue(session, apply_event, ApplyEvent(event_id=event_id), key=event_id)
    return Received(event_id, QUEUED)


# --- applying: the job, and replays -------------------------------------------------------


async def apply(
    session: AsyncSession, payments: PaymentsState, event_id: str, *, replay: bool = False
) -> str:
    """Handle a recorded event in the caller's transaction (it flushes, never commits).

    Returns the outcome, or "duplicate" when it was processed already; `replay` handles it
    again even then. Raises `NotInLedger` (replay only), or whatever handling raised: the
    caller rolls back and notes it (`failed`).

    Nothing is written before the handling has read Stripe: on SQLite the first write takes
    the database's one write lock, which must not be held across a call to Stripe. The row
    is marked processed last, by a conditional update; should another run (a job and a
    replay at once) have marked it meanwhile, this run's writes stand too (they store
    Stripe's state as read, like any handling) and it answers "duplicate".
    """
    # An event acts for whichever subject Stripe names: past row-level security (PostgreSQL).
    await bypass_row_security(session)
    row = await session.get(StripeEvent, event_id, populate_existing=True)
    if row is None:
        if replay:
            raise NotInLedger(f"no event {event_id} in the ledger")
        return DUPLICATE
    if row.processed_at is not None and not replay:
        return DUPLICATE
    outcome = await service.handle_event(
        session, row.payload, client=payments.stripe.client, settings=payments.settings
    )
    processed_at = utcnow()
    mark = (
        update(StripeEvent)
        .where(StripeEvent.id == event_id)
        .values(
            attempts=StripeEvent.attempts + 1,
            processed_at=processed_at,
            outcome=outcome,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if not replay:
        mark = mark.where(StripeEvent.processed_at.is_(None))
    marked = await session.execute(mark)
    if getattr(marked, "rowcount", 0) == 0:
        return DUPLICATE
    observe(
        "payments_webhook_lag_seconds",
        "From a webhook's arrival to its processing",
        (processed_at - _aware(row.received_at)).total_seconds(),  # SQLite: naive, UTC
    )
    return outcome


async def failed(database: Database, event_id: str, exc: Exception) -> EventHandlingError:
    """Log a failed handling and note it on the ledger row; the error to raise for it."""
    if isinstance(exc, service.NotYetApplicable):
        log.info("stripe_event_deferred", event_id=event_id, reason=str(exc))
        error = EventHandlingError(event_id, deferred=True)
    elif isinstance(exc, service.StripeNotConfigured):
        log.error("stripe_event_failed", event_id=event_id, missing_setting=str(exc))
        error = EventHandlingError(event_id, missing_setting=str(exc))
    elif isinstance(exc, stripe.StripeError):  # Stripe unreachable or refusing: try again later
        log.warning("stripe_event_deferred", event_id=event_id, error=str(exc))
        error = EventHandlingError(event_id, deferred=True)
    else:
        log.error("stripe_event_failed", event_id=event_id, error=repr(exc), exc_info=exc)
        error = EventHandlingError(event_id)
    await _note_failure(database, event_id, exc)
    return error


async def _note_failure(database: Database, event_id: str, exc: Exception) -> None:
    """Count the attempt and keep the error; best effort (the database may be what failed)."""
    try:
        async with database.sessionmaker() as session, session.begin():
            await session.execute(
                update(StripeEvent)
                .where(StripeEvent.id == event_id)
                .values(
                    attempts=StripeEvent.attempts + 1,
                    last_error=f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH],
                )
            )
    except Exception as note_exc:
        log.error("stripe_event_note_failed", event_id=event_id, error=repr(note_exc))


async def process(
    database: Database, payments: PaymentsState, event_id: str, *, replay: bool = False
) -> str:
    """`apply` in a transaction of its own (the replay command, the admin).

    Raises `NotInLedger`, or `EventHandlingError` after noting the error on the row.
    """
    try:
        async with database.sessionmaker() as session, session.begin():
            outcome = await apply(session, payments, event_id, replay=replay)
    except NotInLedger:
        raise
    except Exception as exc:
        raise await failed(database, event_id, exc) from exc
    log.info("stripe_event", event_id=event_id, outcome=outcome, replay=replay)
    return outcome


class ApplyEvent(BaseModel):
    event_id: str = Field(min_length=1, max_length=255)


@job(
    "payments.apply_event",
    max_attempts=APPLY_MAX_ATTEMPTS,
    backoff=APPLY_BACKOFF,
    timeout=APPLY_TIMEOUT,
)
async def apply_event(ctx: JobContext, args: ApplyEvent) -> None:
    """Apply one recorded event; its writes commit with the job's "done" mark.

    An event that cannot be applied yet, or Stripe unreachable: retried later (backoff).
    Anything else: retried too, then dead. Either way the ledger row notes the attempt.
    """
    try:
        outcome = await apply(ctx.session, get_payments_state(ctx.app), args.event_id)
    except Exception as exc:
        await ctx.session.rollback()  # before noting it: SQLite has one writer
        error = await failed(ctx.app.state.database, args.event_id, exc)
        if error.deferred:
            raise RetryLater(f"{type(exc).__name__}: {exc}") from exc
        raise
    log.info("stripe_event", event_id=args.event_id, outcome=outcome, attempt=ctx.attempt)


def job_id(event_id: str) -> str:
    """The id of the job that applies this event (`enqueue` with the event id as key)."""
    return f"{apply_event.name}:{event_id}"


async def replay(database: Database, payments: PaymentsState, event_id: str) -> str:
    """Handle a stored event again, here and now (the replay command, the admin).

    Once it is applied, its dead job, if any, is deleted: nothing is left to replay.
    Raises like `process`.
    """
    outcome = await process(database, payments, event_id, replay=True)
    async with database.engine.begin() as connection:
        await forget(connection, [job_id(event_id)])
    return outcome


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
