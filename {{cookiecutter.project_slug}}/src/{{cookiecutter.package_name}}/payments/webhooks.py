"""The webhook ledger: verify, record (own commit), then handle (own transaction).

Nothing is lost: an event is committed to `stripe_events` before anything else happens.
Handling (`process`) runs in a second transaction that also sets `processed_at`, so the
changes and the mark commit together or not at all. A failure, or an event that cannot be
applied yet, rolls them back, notes the error on the row and answers 5xx, so Stripe
delivers the event again (or `replay` runs it).

`process` needs only the database, the payments state (settings and Stripe client) and
the event id: it reads the event from the ledger and the subscription from Stripe, so it
can run anywhere (a request today, a background job later), any number of times.

Duplicates: the handling transaction first claims the row with a conditional update
(`... WHERE processed_at IS NULL`). Two instances handling the same event serialize on
that row (PostgreSQL row lock, SQLite's single writer); the second finds it processed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
import structlog
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.payments import exceptions, service
from {{ cookiecutter.package_name }}.payments.client import PaymentsState
from {{ cookiecutter.package_name }}.payments.models import StripeEvent

log = structlog.get_logger(__name__)

DUPLICATE = "duplicate"
ERROR_LENGTH = 2000


class EventHandlingError(Exception):
    """Handling a recorded event failed; it stays unprocessed.

    `deferred`: it cannot be applied yet (Stripe will deliver it again); `missing_setting`:
    the setting it needs is not set.
    """

    def __init__(
        self, event_id: str, *, deferred: bool = False, missing_setting: str | None = None
    ) -> None:
        super().__init__(event_id)
        self.deferred = deferred
        self.missing_setting = missing_setting


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
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
        or not isinstance(event.get("data"), dict)
    ):
        raise exceptions.bad_signature("The payload is not a Stripe event.")
    return event


async def record(database: Database, event: dict[str, Any]) -> bool:
    """Commit the event to the ledger; False when it was already there."""
    try:
        async with database.sessionmaker() as session, session.begin():
            session.add(
                StripeEvent(
                    id=event["id"],
                    type=event["type"],
                    payload=event,
                    stripe_created=datetime.fromtimestamp(event["created"], UTC),
                    attempts=0,
                )
            )
    except IntegrityError:
        return False
    return True


async def process(
    database: Database, payments: PaymentsState, event_id: str, *, replay: bool = False
) -> str:
    """Handle a recorded event once; `replay` runs it again even if it was processed.

    Returns the outcome, or "duplicate" when it was processed already. Raises
    `EventHandlingError` (after noting the error on the row) when handling fails.
    """
    try:
        async with database.sessionmaker() as session, session.begin():
            claim = (
                update(StripeEvent)
                .where(StripeEvent.id == event_id)
                .values(attempts=StripeEvent.attempts + 1)
            )
            if not replay:
                claim = claim.where(StripeEvent.processed_at.is_(None))
            claimed = await session.execute(claim)
            if getattr(claimed, "rowcount", 0) == 0:
                if replay:
                    raise LookupError(f"no event {event_id} in the ledger")
                return DUPLICATE
            row = await session.get(StripeEvent, event_id, populate_existing=True)
            assert row is not None
            outcome = await service.handle_event(
                session, row.payload, client=payments.stripe.client, settings=payments.settings
            )
            row.processed_at = utcnow()
            row.outcome = outcome
            row.last_error = None
    except LookupError:
        raise
    except service.NotYetApplicable as exc:
        log.info("stripe_event_deferred", event_id=event_id, reason=str(exc))
        await _note_failure(database, event_id, exc)
        raise EventHandlingError(event_id, deferred=True) from exc
    except service.StripeNotConfigured as exc:
        log.error("stripe_event_failed", event_id=event_id, missing_setting=str(exc))
        await _note_failure(database, event_id, exc)
        raise EventHandlingError(event_id, missing_setting=str(exc)) from exc
    except stripe.StripeError as exc:  # Stripe unreachable or refusing: try again later
        log.warning("stripe_event_deferred", event_id=event_id, error=str(exc))
        await _note_failure(database, event_id, exc)
        raise EventHandlingError(event_id, deferred=True) from exc
    except Exception as exc:
        log.error("stripe_event_failed", event_id=event_id, error=repr(exc), exc_info=exc)
        await _note_failure(database, event_id, exc)
        raise EventHandlingError(event_id) from exc
    log.info("stripe_event", event_id=event_id, outcome=outcome)
    return outcome


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


@dataclass(frozen=True)
class Received:
    event_id: str
    outcome: str


async def receive(database: Database, payments: PaymentsState, event: dict[str, Any]) -> Received:
    """Record, then handle, one verified event."""
    await record(database, event)
    return Received(event["id"], await process(database, payments, event["id"]))
