"""Support commands for the Stripe event ledger.

    python -m {{ cookiecutter.package_name }}.payments pending          # events not processed yet
    python -m {{ cookiecutter.package_name }}.payments replay evt_123   # handle a stored event again

Replaying runs here and now (no worker needed) and prints the outcome; once the event is
applied, its dead job (if any) is deleted. It is safe: handling reads the subscription's
state from Stripe, so an old event stores today's state, never the one it carried.
"""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy import literal, select

from {{ cookiecutter.package_name }} import modules  # noqa: F401 - every table, for the foreign keys
from {{ cookiecutter.package_name }}.core.config import Settings, get_settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobRecord
from {{ cookiecutter.package_name }}.payments import webhooks
from {{ cookiecutter.package_name }}.payments.client import PaymentsState, build_stripe_client
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, get_payments_settings
from {{ cookiecutter.package_name }}.payments.models import StripeEvent


async def replay(settings: Settings, payments_settings: PaymentsSettings, event_id: str) -> str:
    database = Database.from_settings(settings)
    payments = PaymentsState(payments_settings, build_stripe_client(payments_settings))
    try:
        outcome = await webhooks.replay(database, payments, event_id)
    except LookupError as exc:
        raise SystemExit(f"error: {exc}") from None
    except webhooks.EventHandlingError as exc:
        if exc.missing_setting is not None:
            raise SystemExit(f"error: handling {event_id} needs {exc.missing_setting}") from None
        raise SystemExit(f"error: handling {event_id} failed: {exc.__cause__!r}") from None
    finally:
        await payments.stripe.aclose()
        await database.engine.dispose()
    return f"{event_id}: {outcome}"


async def pending(settings: Settings) -> str:
    database = Database.from_settings(settings)
    try:
        async with database.sessionmaker() as session:
            result = await session.execute(
                select(StripeEvent, JobRecord.status)
                .outerjoin(JobRecord, JobRecord.id == literal(webhooks.job_id("")) + StripeEvent.id)
                .where(StripeEvent.processed_at.is_(None))
                .order_by(StripeEvent.received_at)
            )
            rows = result.all()
    finally:
        await database.engine.dispose()
    # job=pending|queued|running: its job will apply it; dead: out of attempts (replay it);
    # none: no job (recorded while STRIPE_SECRET_KEY was unset, or before jobs existed).
    lines = [
        f"{row.id}\t{row.type}\tattempts={row.attempts}\tjob={status or 'none'}"
        f"\t{row.last_error or ''}"
        for row, status in rows
    ]
    return "\n".join(lines) if lines else "no unprocessed events"


def main(
    argv: list[str] | None = None,
    settings: Settings | None = None,
    payments_settings: PaymentsSettings | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog="python -m {{ cookiecutter.package_name }}.payments")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pending", help="list the events not processed yet")
    again = sub.add_parser("replay", help="handle a stored event again")
    again.add_argument("event_id")
    args = parser.parse_args(argv)
    settings = settings or get_settings()
    if args.command == "replay":
        payments_settings = payments_settings or get_payments_settings()
        print(asyncio.run(replay(settings, payments_settings, args.event_id)))
    else:
        print(asyncio.run(pending(settings)))


if __name__ == "__main__":
    main()
