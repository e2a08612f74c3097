"""Metering: the quota check before an upstream call and the ledger row after it.

The chat endpoint waits on a slow upstream, so it does not use the request's
session: holding a pooled connection across the call would cap throughput at
pool size / upstream latency. Instead:

* the quota check reads the caller's total for the month from memory: the writer
  refreshes it from every commit (its upsert returns the new total, other
  instances' usage included), and a total older than AI_QUOTA_CACHE_SECONDS is
  read again (one primary-key read; concurrent requests share it). Across
  several instances a caller may overshoot by what the others served in that
  window, as with any check-then-call quota;
* ledger rows are written by group commit: each request hands its row to one
  writer and waits until the transaction holding it has committed (for plain
  requests, before the response leaves). The writer commits at once whatever
  has queued up, and what queues meanwhile goes into its next commit: the rows
  plus one upsert of the month's total per caller (on PostgreSQL one statement,
  on SQLite an insert and the upserts in one transaction). Under load that is
  one short transaction for many requests, no two requests fight over the same
  total's row lock (every anonymous caller shares one), and the requests are
  woken a few at a time so that the event loop serves others in between.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Self, cast

import structlog
from sqlalchemy import Table, bindparam, insert, select, text
from sqlalchemy.dialects import sqlite

from {{ cookiecutter.package_name }}.core.cache import Recent
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.errors import ProblemError

from .models import ANONYMOUS, AIUsage, AIUsageTotal

log = structlog.get_logger(__name__)

# How long the ledger writer waits for more rows before it commits a batch. Zero:
# it commits at once, and the rows that queue meanwhile go into the next commit
# (group commit); under load the batches grow by themselves. A 1 ms wait gave
# fewer commits but a longer p99 at 64 callers (docs/ai.md).
LEDGER_LINGER_SECONDS = 0.0

# Requests woken per turn of the event loop once their rows are committed.
WAKE_AT_ONCE = 16

# Totals remembered for quota checks before stale ones are dropped.
MAX_REMEMBERED = 10_000

# Core tables: the writer inserts plain rows, with none of the ORM's per-object work.
USAGE = cast(Table, AIUsage.__table__)
TOTALS = cast(Table, AIUsageTotal.__table__)


# A batch of ledger rows (the columns of `Metering.record`'s row) and the totals they
# add to, in one PostgreSQL statement. The data-modifying CTE runs exactly once, whether
# or not the main statement reads it; each column arrives as one array, so the text
# never changes.
ONE_STATEMENT = text(
    """
    WITH ledger AS (
        INSERT INTO ai_usage (created_at, user_id, model, prompt_tokens, completion_tokens,
                              total_tokens, latency_ms, outcome, streamed, request_id)
        SELECT * FROM unnest(
            CAST(:created_at AS timestamptz[]), CAST(:user_id AS uuid[]),
            CAST(:model AS varchar[]), CAST(:prompt_tokens AS int[]),
            CAST(:completion_tokens AS int[]), CAST(:total_tokens AS int[]),
            CAST(:latency_ms AS int[]), CAST(:outcome AS varchar[]),
            CAST(:streamed AS boolean[]), CAST(:request_id AS varchar[])
        )
    )
    INSERT INTO ai_usage_totals (subject, period, tokens, requests)
    SELECT * FROM unnest(
        CAST(:subject AS uuid[]), CAST(:period AS date[]),
        CAST(:tokens AS bigint[]), CAST(:requests AS int[])
    )
    ON CONFLICT (subject, period) DO UPDATE SET
        tokens = ai_usage_totals.tokens + excluded.tokens,
        requests = ai_usage_totals.requests + excluded.requests
    RETURNING subject, period, tokens, requests
    """
)


def period_start(now: datetime) -> date:
    return now.date().replace(day=1)


def next_period(start: date) -> date:
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def at_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user (auth on) or everyone without one, and their allowance."""

    user_id: uuid.UUID | None
    monthly_quota: int | None  # tokens; None: unlimited
    rate_key: str  # what the rate limit counts under (user, or client address)

    @property
    def subject(self) -> uuid.UUID:
        return self.user_id or ANONYMOUS


@dataclass
class Entry:
    """One upstream request, as the ledger records it."""

    caller: Caller
    model: str
    streamed: bool
    request_id: str | None
    started: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: str = "ok"


@dataclass(frozen=True)
class Totals:
    tokens: int
    requests: int


class Metering:
    """Quota checks and the ledger; `async with` runs its writer."""

    def __init__(self, database: Database, *, cache_seconds: float = 1.0) -> None:
        self.engine = database.engine
        self.reader = database.read_engine  # autocommit: one round trip per statement
        # PostgreSQL writes a batch with ONE_STATEMENT; SQLite (no DML in a CTE) with
        # these two in a transaction, built once so SQLAlchemy reuses their compiled forms.
        self._one_statement = self.engine.dialect.name == "postgresql"
        values = sqlite.insert(TOTALS).values(
            subject=bindparam("subject"),
            period=bindparam("period"),
            tokens=bindparam("tokens"),
            requests=bindparam("requests"),
        )
        self._add_to_totals = values.on_conflict_do_update(
            index_elements=["subject", "period"],
            set_={
                "tokens": TOTALS.c.tokens + values.excluded.tokens,
                "requests": TOTALS.c.requests + values.excluded.requests,
            },
        ).returning(TOTALS.c.tokens, TOTALS.c.requests)
        self._add_to_ledger = insert(USAGE)
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        # (subject, period) -> totals read or written a moment ago
        self.known: Recent[tuple[uuid.UUID, date], Totals] = Recent(cache_seconds, MAX_REMEMBERED)

    async def __aenter__(self) -> Self:
        self._writer = asyncio.create_task(self._write_forever(), name="ai-ledger-writer")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            self._closing = True
            self._wakeup.set()
            await writer  # drains what is queued, then ends

    async def totals(self, subject: uuid.UUID, period: date, *, fresh: bool = False) -> Totals:
        """The month's totals: from memory when recent enough, else one shared read."""
        key = (subject, period)
        if fresh:
            totals = await self._read(subject, period)
            self.known.put(key, totals)
            return totals
        return await self.known.fetch(key, lambda: self._read(subject, period))

    async def _read(self, subject: uuid.UUID, period: date) -> Totals:
        query = select(TOTALS.c.tokens, TOTALS.c.requests).where(
            TOTALS.c.subject == subject, TOTALS.c.period == period
        )
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return Totals(row.tokens, row.requests) if row else Totals(0, 0)

    async def check(self, caller: Caller) -> None:
        """Raise 429 when the caller's allowance for this month is used up."""
        if caller.monthly_quota is None:
            return
        now = datetime.now(UTC)
        start = period_start(now)
        used = await self.totals(caller.subject, start)
        if used.tokens >= caller.monthly_quota:
            resets = at_midnight(next_period(start))
            seconds = max(1, int((resets - now).total_seconds()))
            raise ProblemError(
                429,
                f"The monthly AI token quota of {caller.monthly_quota} is used up; it resets "
                f"at {resets.isoformat()}.",
                headers={"Retry-After": str(seconds)},
                quota=caller.monthly_quota,
                used=used.tokens,
                resets_at=resets.isoformat(),
            )

    async def record(self, entry: Entry) -> None:
        """Write the entry's ledger row; return once it is committed."""
        now = datetime.now(UTC)
        row = {
            "created_at": now,
            "user_id": entry.caller.user_id,
            "model": entry.model,
            "prompt_tokens": entry.prompt_tokens,
            "completion_tokens": entry.completion_tokens,
            "total_tokens": entry.prompt_tokens + entry.completion_tokens,
            "latency_ms": round((time.perf_counter() - entry.started) * 1000),
            "outcome": entry.outcome,
            "streamed": entry.streamed,
            "request_id": entry.request_id,
        }
        if self._writer is None or self._writer.done():  # not running: write directly
            await self._commit([row])
            return
        done = asyncio.get_running_loop().create_future()
        self._queue.append((row, done))
        self._wakeup.set()
        # Shielded: a caller that goes away still gets its row written.
        await asyncio.shield(done)

    async def _write_forever(self) -> None:
        while self._queue or not self._closing:
            await self._wakeup.wait()
            if not self._closing:
                # Let the rows of requests already running join (one turn of the loop).
                await asyncio.sleep(LEDGER_LINGER_SECONDS)
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        failed: Exception | None = None
        try:
            await self._commit([row for row, _ in batch])
        except Exception as exc:
            log.error("ai_ledger_write_failed", rows=len(batch), exc_info=exc)
            failed = exc
        # Wake the waiting requests a few at a time, and let the event loop poll for
        # I/O in between: woken all at once after a slow commit (a large batch), they
        # ran back to back while new requests and health checks waited (docs/ai.md).
        for count, (_, done) in enumerate(batch, 1):
            if not done.done():
                if failed is None:
                    done.set_result(None)
                else:
                    done.set_exception(failed)
            if count % WAKE_AT_ONCE == 0 and count < len(batch):
                await asyncio.sleep(0)

    async def _commit(self, rows: list[dict[str, Any]]) -> None:
        totals: dict[tuple[uuid.UUID, date], list[int]] = defaultdict(lambda: [0, 0])
        for row in rows:
            key = (row["user_id"] or ANONYMOUS, period_start(row["created_at"]))
            totals[key][0] += row["total_tokens"]
            totals[key][1] += 1
        if self._one_statement:
            await self._commit_in_one_statement(rows, totals)
            return
        fresh: dict[tuple[uuid.UUID, date], Totals] = {}
        async with self.engine.begin() as conn:
            await conn.execute(self._add_to_ledger, rows)
            for (subject, period), (tokens, requests) in totals.items():
                added = {
                    "subject": subject,
                    "period": period,
                    "tokens": tokens,
                    "requests": requests,
                }
                new = (await conn.execute(self._add_to_totals, added)).one()
                fresh[(subject, period)] = Totals(new.tokens, new.requests)
        for key, value in fresh.items():
            self.known.put(key, value)

    async def _commit_in_one_statement(
        self, rows: list[dict[str, Any]], totals: dict[tuple[uuid.UUID, date], list[int]]
    ) -> None:
        """PostgreSQL: the rows and the totals in one statement, one round trip.

        Atomic on its own (autocommit); each column is one array, so the text is
        the same for any number of rows and is compiled and prepared once.
        """
        params: dict[str, list[Any]] = {column: [row[column] for row in rows] for column in rows[0]}
        params["subject"] = [subject for subject, _period in totals]
        params["period"] = [period for _subject, period in totals]
        params["tokens"] = [tokens for tokens, _requests in totals.values()]
        params["requests"] = [requests for _tokens, requests in totals.values()]
        async with self.reader.connect() as conn:
            result = await conn.execute(ONE_STATEMENT, params)
        for new in result:
            self.known.put((new.subject, new.period), Totals(new.tokens, new.requests))
