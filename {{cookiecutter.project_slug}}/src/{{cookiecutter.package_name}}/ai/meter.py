"""Support commands for metered AI billing: the overage batches Stripe has not accepted.

    python -m {{ cookiecutter.package_name }}.ai.meter list          # not sent: pending, failed, expired
    python -m {{ cookiecutter.package_name }}.ai.meter list --all    # every batch
    python -m {{ cookiecutter.package_name }}.ai.meter resend 42     # an expired batch, again
    python -m {{ cookiecutter.package_name }}.ai.meter mark-sent 42  # Stripe has it after all

The report job sends pending and failed batches on its own. A batch Stripe has not
accepted within a day of its first attempt is `expired` instead (ai/billing.py): by then
Stripe may no longer recognise its identifier, so if an earlier attempt did reach
Stripe, sending it again would bill it twice. A person decides: look for an event with
the batch's identifier on the meter in Stripe's Dashboard; if it is there, `mark-sent`;
if not, `resend`. A resend keeps the identifier and the timestamp (so the tokens bill
in the month they were used), except that a batch older than Stripe's backdating limit
goes with the time of the resend, in the current billing period; the command says so.
"""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy import select

from {{ cookiecutter.package_name }} import modules  # noqa: F401 - every table, for the foreign keys
from {{ cookiecutter.package_name }}.auth.models import utcnow
from {{ cookiecutter.package_name }}.core.config import Settings, get_settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.payments.client import build_stripe_client
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings, get_payments_settings

from .billing import BACKDATE_LIMIT, EXPIRED, SENT, AIMeterBatch, mark, send_event


async def list_batches(settings: Settings, *, every: bool = False) -> str:
    database = Database.from_settings(settings)
    try:
        async with database.sessionmaker() as session:
            query = select(AIMeterBatch).order_by(AIMeterBatch.id)
            if not every:
                query = query.where(AIMeterBatch.status != SENT)
            batches = (await session.scalars(query)).all()
    finally:
        await database.engine.dispose()
    lines = [
        f"{b.id}\t{b.status}\t{b.identifier}\tcustomer={b.customer_id}\ttokens={b.tokens}"
        f"\tattempts={b.attempts}\tcreated={b.created_at:%Y-%m-%dT%H:%M:%SZ}\t{b.last_error or ''}"
        for b in batches
    ]
    return "\n".join(lines) if lines else ("no batches" if every else "every batch is sent")


async def _expired(database: Database, batch_id: int) -> AIMeterBatch:
    async with database.sessionmaker() as session:
        batch = await session.get(AIMeterBatch, batch_id)
    if batch is None:
        raise SystemExit(f"error: no batch {batch_id}")
    if batch.status == SENT:
        raise SystemExit(f"error: batch {batch_id} is sent already")
    if batch.status != EXPIRED:
        raise SystemExit(f"error: batch {batch_id} is {batch.status}: the report job sends it")
    return batch


async def resend(settings: Settings, payments_settings: PaymentsSettings, batch_id: int) -> str:
    database = Database.from_settings(settings)
    stripe = build_stripe_client(payments_settings)
    try:
        batch = await _expired(database, batch_id)
        client = stripe.client
        if client is None:
            raise SystemExit("error: resending needs STRIPE_SECRET_KEY")
        now = utcnow()
        late = now - batch.created_at > BACKDATE_LIMIT
        error = await send_event(client, batch, now if late else batch.created_at)
        if error is not None:
            await mark(database, batch.id, EXPIRED, error)
            raise SystemExit(f"error: Stripe did not take batch {batch_id}: {error}")
        await mark(database, batch.id, SENT, None)
    finally:
        await stripe.aclose()
        await database.engine.dispose()
    when = "with today's timestamp (past Stripe's backdating limit)" if late else "as of its month"
    return f"{batch_id}: sent {batch.tokens} tokens for {batch.customer_id} {when}"


async def mark_sent(settings: Settings, batch_id: int) -> str:
    database = Database.from_settings(settings)
    try:
        batch = await _expired(database, batch_id)
        await mark(database, batch.id, SENT, batch.last_error, attempt=False)
    finally:
        await database.engine.dispose()
    return f"{batch_id}: marked sent (nothing sent to Stripe)"


def main(
    argv: list[str] | None = None,
    settings: Settings | None = None,
    payments_settings: PaymentsSettings | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog="python -m {{ cookiecutter.package_name }}.ai.meter")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the batches not sent (with --all: every batch)")
    listing.add_argument("--all", action="store_true", dest="every")
    again = sub.add_parser("resend", help="send an expired batch again")
    again.add_argument("batch_id", type=int)
    done = sub.add_parser("mark-sent", help="an expired batch Stripe has: stop reporting it")
    done.add_argument("batch_id", type=int)
    args = parser.parse_args(argv)
    settings = settings or get_settings()
    if args.command == "resend":
        payments_settings = payments_settings or get_payments_settings()
        print(asyncio.run(resend(settings, payments_settings, args.batch_id)))
    elif args.command == "mark-sent":
        print(asyncio.run(mark_sent(settings, args.batch_id)))
    else:
        print(asyncio.run(list_batches(settings, every=args.every)))


if __name__ == "__main__":
    main()
