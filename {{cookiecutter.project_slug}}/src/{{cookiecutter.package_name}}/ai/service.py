"""Metering: quota reservations before an upstream call, the ledger row after it.

The chat endpoint waits on a slow upstream, so it does not use the request's
session: holding a pooled connection across the call would cap throughput at
pool size / upstream latency. Instead everything goes through one writer task
per process, by group commit:

* before a call, a request asks the writer to reserve its estimated prompt plus
  max_tokens from the caller's month, clamped to what is left (429 when nothing
  is). The reservation is a conditional update of the caller's totals row in the
  database (`reserved`), so it holds across workers and instances: concurrent
  callers cannot overshoot the quota by more than one (clamped) reservation,
  plus what the provider counts above the prompt estimate;
* after it, the request hands its ledger row (charged `max(estimate, reported)`,
  see `Entry.charged`) to the writer with the reservation to give back, and
  waits until the transaction holding it has committed (for plain requests,
  before the response leaves);
* the writer commits at once whatever has queued up, and what queues meanwhile
  goes into its next commit: the rows, and per caller and month one upsert that
  adds the tokens, gives back the reservations and takes the new ones (on
  PostgreSQL all of it one statement, on SQLite an insert and the upserts in one
  transaction). Under load that is one short transaction for many requests, no
  two requests fight over the same total's row lock (every anonymous caller
  shares one), and the requests are woken a few at a time so that the event loop
  serves others in between;
* a quick check from memory refuses a caller whose month is known to be used up
  without a round trip: the writer refreshes the totals from every commit, and
  a total older than AI_QUOTA_CACHE_SECONDS is read again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Self, cast

import structlog
from sqlalchemy import DateTime, Table, and_, bindparam, case, func, insert, select, text
from sqlalchemy.dialects import sqlite

from {{ cookiecutter.package_name }}.core.cache import Recent
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.errors import ProblemError
from {{ cookiecutter.package_name }}.core.telemetry import model_call

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


# What a reservation left by a process that died mid-call (and so never gave it
# back) holds the caller's allowance for: once no reservation of the caller's was
# made for this long, the row's `reserved` counts as zero again.
STALE_RESERVATION_SECONDS = 3600.0


# A batch in one PostgreSQL statement: the ledger rows, and per caller and month the
# tokens they add, the reservations they give back, and the new reservations asked
# for (`want`, clamped to what `quota` leaves). The data-modifying CTE runs exactly
# once, whether or not the main statement reads it; each column arrives as one
# array, so the text never changes. The row is locked by the upsert, and the
# reservation computed from its current values, so concurrent batches of any
# number of instances never grant more than the quota leaves. `last_grant` carries
# the grant back (RETURNING sees only the new row).
BATCH_STATEMENT = """
    WITH ledger AS (
        INSERT INTO ai_usage (created_at, user_id, subject, model, prompt_tokens,
                              completion_tokens, total_tokens, latency_ms, outcome, streamed,
                              request_id)
        SELECT * FROM unnest(
            CAST(:created_at AS timestamptz[]), CAST(:user_id AS uuid[]),
            CAST(:row_subject AS uuid[]),
            CAST(:model AS varchar[]), CAST(:prompt_tokens AS int[]),
            CAST(:completion_tokens AS int[]), CAST(:total_tokens AS int[]),
            CAST(:latency_ms AS int[]), CAST(:outcome AS varchar[]),
            CAST(:streamed AS boolean[]), CAST(:request_id AS varchar[])
        )
    ), batch AS (
        SELECT b.* FROM {relaxed}unnest(
            CAST(:subject AS uuid[]), CAST(:period AS date[]),
            CAST(:tokens AS bigint[]), CAST(:requests AS int[]),
            CAST(:release AS bigint[]), CAST(:want AS bigint[]), CAST(:quota AS bigint[])
        ) AS b (subject, period, tokens, requests, release, want, quota)
    )
    INSERT INTO ai_usage_totals AS cur
        (subject, period, tokens, requests, reserved, last_grant, reserved_at)
    SELECT b.subject, b.period, b.tokens, b.requests, f.granted, f.granted,
           CASE WHEN b.want > 0 THEN CAST(:now AS timestamptz) END
    FROM batch AS b,
         LATERAL (SELECT LEAST(b.want, GREATEST(b.quota - b.tokens, 0)) AS granted) AS f
    ON CONFLICT (subject, period) DO UPDATE SET
        tokens = cur.tokens + excluded.tokens,
        requests = cur.requests + excluded.requests,
        (reserved, last_grant, reserved_at) = (
            SELECT h.held + g.granted, g.granted,
                   CASE WHEN b.want > 0 THEN CAST(:now AS timestamptz) ELSE cur.reserved_at END
            FROM batch AS b,
                 LATERAL (SELECT GREATEST(
                     CASE WHEN cur.reserved_at < CAST(:stale_before AS timestamptz)
                          THEN 0 ELSE cur.reserved END - b.release, 0) AS held) AS h,
                 LATERAL (SELECT LEAST(b.want, GREATEST(
                     b.quota - cur.tokens - excluded.tokens - h.held, 0)) AS granted) AS g
            WHERE b.subject = excluded.subject AND b.period = excluded.period
        )
    RETURNING subject, period, tokens, requests, last_grant
    """

ONE_STATEMENT = text(BATCH_STATEMENT.format(relaxed=""))
# A batch without ledger rows (reservations asked for or given back, nothing to
# bill) does not wait for the WAL flush: `synchronous_commit` off for this one
# transaction, set in the statement itself, so it stays one round trip. It is
# visible to every other instance at once; only a crash of the database server
# within a moment of it could lose it (docs/ai.md).
RESERVATIONS_STATEMENT = text(
    BATCH_STATEMENT.format(
        relaxed="(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed, "
    )
)

LEDGER_COLUMNS = (
    "created_at",
    "user_id",
    "subject",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms",
    "outcome",
    "streamed",
    "request_id",
)


def period_start(now: datetime) -> date:
    return now.date().replace(day=1)


def next_period(start: date) -> date:
    return date(start.year + (start.month == 12), start.month % 12 + 1, 1)


def at_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user (auth on) or everyone without one, and their allowance.

    The allowance charged is the caller's own, or a pool several callers share
    (`pool`: its id); ai/seams.py decides which.
    """

    user_id: uuid.UUID | None
    monthly_quota: int | None  # tokens; None: unlimited
    rate_key: str  # what the rate limit counts under (user, or client address)
    pool: uuid.UUID | None = None
    # Tokens beyond monthly_quota are billed (a metered plan), not refused: no quota check,
    # nothing reserved; ai/billing.py (with plans) reports the overage for billing.
    overage_billed: bool = False
    # The scopes of the request's credentials (token or API key), which the tools it may
    # run need (ai/tools.py); None: a project without accounts, where scopes do not exist.
    scopes: frozenset[str] | None = None

    @property
    def subject(self) -> uuid.UUID:
        """Whose monthly totals the caller's calls are charged to."""
        return self.pool or self.user_id or ANONYMOUS


Key = tuple[uuid.UUID, date]  # (subject, period)


@dataclass(frozen=True)
class Reservation:
    """Tokens taken from a caller's month before a call, given back when it is charged."""

    key: Key
    tokens: int


@dataclass
class Entry:
    """One upstream request, as the ledger records it.

    `prompt_tokens` and `completion_tokens` are what the upstream reported (0: it
    did not); the estimates are made before the call and from the text relayed.
    The request is charged the larger of each pair, unless it provably never
    reached the provider (`reached` False: the connection could not be opened).
    """

    caller: Caller
    model: str
    streamed: bool
    request_id: str | None
    started: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: str = "ok"
    estimated_prompt: int = 0
    estimated_completion: int = 0
    reached: bool = True
    reservation: Reservation | None = None

    def charged(self) -> tuple[int, int]:
        """(prompt, completion) tokens to charge."""
        if not self.reached:
            return 0, 0
        return (
            max(self.estimated_prompt, self.prompt_tokens),
            max(self.estimated_completion, self.completion_tokens),
        )


@dataclass(frozen=True)
class Totals:
    tokens: int
    requests: int


@dataclass
class _Op:
    """One item for the writer: a ledger row (with the reservation it settles), or an ask."""

    row: dict[str, Any] | None = None
    release: Reservation | None = None
    ask: Key | None = None
    want: int = 0
    quota: int = 0
    granted: int = 0


@dataclass
class _Change:
    """What one batch does to one (subject, period) totals row."""

    tokens: int = 0
    requests: int = 0
    release: int = 0
    want: int = 0
    quota: int | None = None
    asks: list[_Op] = field(default_factory=list)


class StreamSlots:
    """Streams open per caller in this process, at most `limit` each (0: no cap).

    Per process on purpose: it guards this instance's connections and memory, and a
    count in the database would outlive a process killed mid-stream. With several
    workers a caller may hold `limit` streams on each.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open_streams: dict[str, int] = {}

    def open(self, key: str) -> bool:
        count = self.open_streams.get(key, 0)
        if self.limit and count >= self.limit:
            return False
        self.open_streams[key] = count + 1
        return True

    def close(self, key: str) -> None:
        count = self.open_streams.pop(key, 0) - 1
        if count > 0:
            self.open_streams[key] = count


def quota_used_up(caller: Caller, used: int, now: datetime) -> ProblemError:
    quota = caller.monthly_quota
    resets = at_midnight(next_period(period_start(now)))
    seconds = max(1, int((resets - now).total_seconds()))
    return ProblemError(
        429,
        f"The monthly AI token quota of {quota} is used up; it resets at {resets.isoformat()}.",
        headers={"Retry-After": str(seconds)},
        quota=quota,
        used=used,
        resets_at=resets.isoformat(),
    )


class Metering:
    """Quota reservations, checks and the ledger; `async with` runs its writer."""

    def __init__(
        self, database: Database, *, cache_seconds: float = 1.0, max_streams: int = 0
    ) -> None:
        self.streams = StreamSlots(max_streams)
        self.engine = database.engine
        self.reader = database.read_engine  # autocommit: one round trip per statement
        # PostgreSQL writes a batch with ONE_STATEMENT; SQLite (no DML in a CTE) with
        # these in a transaction, built once so SQLAlchemy reuses their compiled forms.
        self._one_statement = self.engine.dialect.name == "postgresql"
        values = sqlite.insert(TOTALS).values(
            subject=bindparam("subject"),
            period=bindparam("period"),
            tokens=bindparam("tokens"),
            requests=bindparam("requests"),
            reserved=bindparam("fresh_grant"),
            last_grant=bindparam("fresh_grant"),
            reserved_at=bindparam("fresh_at", type_=DateTime(timezone=True)),
        )
        # The same arithmetic as ONE_STATEMENT, on the row's current values.
        stale = and_(
            TOTALS.c.reserved_at.is_not(None),
            TOTALS.c.reserved_at < bindparam("stale_before", type_=DateTime(timezone=True)),
        )
        held: Any = func.max(case((stale, 0), else_=TOTALS.c.reserved) - bindparam("release"), 0)
        granted: Any = func.min(
            bindparam("want"),
            func.max(bindparam("quota") - TOTALS.c.tokens - values.excluded.tokens - held, 0),
        )
        self._add_to_totals = values.on_conflict_do_update(
            index_elements=["subject", "period"],
            set_={
                "tokens": TOTALS.c.tokens + values.excluded.tokens,
                "requests": TOTALS.c.requests + values.excluded.requests,
                "reserved": held + granted,
                "last_grant": granted,
                "reserved_at": case(
                    (bindparam("want") > 0, bindparam("now", type_=DateTime(timezone=True))),
                    else_=TOTALS.c.reserved_at,
                ),
            },
        ).returning(TOTALS.c.tokens, TOTALS.c.requests, TOTALS.c.last_grant)
        self._add_to_ledger = insert(USAGE)
        self._queue: list[tuple[_Op, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        # (subject, period) -> totals read or written a moment ago
        self.known: Recent[Key, Totals] = Recent(cache_seconds, MAX_REMEMBERED)

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
        """Raise 429 when the caller's allowance for this month is known to be used up.

        A quick refusal from memory; what holds under concurrency is `reserve`.
        """
        if caller.monthly_quota is None or caller.overage_billed:
            return
        now = datetime.now(UTC)
        used = await self.totals(caller.subject, period_start(now))
        if used.tokens >= caller.monthly_quota:
            raise quota_used_up(caller, used.tokens, now)

    async def reserve(self, caller: Caller, tokens: int) -> Reservation | None:
        """Take up to `tokens` of the caller's allowance for one call, atomically.

        Clamped to what the month has left; 429 when nothing is left. It goes
        through the ledger's writer, so under load the reservations and the
        charges of many requests share one statement (one round trip). None:
        the caller has no quota (or is billed beyond it), nothing to reserve.
        """
        if caller.monthly_quota is None or caller.overage_billed:
            return None
        now = datetime.now(UTC)
        key = (caller.subject, period_start(now))
        op = _Op(ask=key, want=max(1, tokens), quota=caller.monthly_quota)
        done = self._enqueue(op)
        if done is None:
            await self._commit([op])
        else:
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                # The caller went away; what its ask gets once committed goes back.
                done.add_done_callback(lambda _: self._give_back(op))
                raise
        if op.granted <= 0:
            known = self.known.get(key)
            raise quota_used_up(caller, known.tokens if known else caller.monthly_quota, now)
        return Reservation(key, op.granted)

    async def release(self, reservation: Reservation | None) -> None:
        """Give a reservation back unused (the call was never made)."""
        if reservation is not None:
            await self._submit(_Op(release=reservation))

    async def record(self, entry: Entry) -> None:
        """Write the entry's ledger row and give back its reservation; return once committed."""
        now = datetime.now(UTC)
        prompt, completion = entry.charged()
        row = {
            "created_at": now,
            "user_id": entry.caller.user_id,
            "subject": entry.caller.subject,
            "model": entry.model,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "latency_ms": round((time.perf_counter() - entry.started) * 1000),
            "outcome": entry.outcome,
            "streamed": entry.streamed,
            "request_id": entry.request_id,
        }
        reservation, entry.reservation = entry.reservation, None  # given back once
        # On the request's span (tracing on) and in the token counts (metrics on).
        model_call(
            system="openai",
            model=entry.model,
            input_tokens=prompt,
            output_tokens=completion,
            outcome=entry.outcome,
        )
        await self._submit(_Op(row=row, release=reservation))

    def _give_back(self, op: _Op) -> None:
        if op.ask is not None and op.granted > 0:
            done = self._enqueue(_Op(release=Reservation(op.ask, op.granted)))
            if done is not None:
                done.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _enqueue(self, op: _Op) -> asyncio.Future[None] | None:
        """Queue for the writer; None when it is not running."""
        if self._writer is None or self._writer.done():
            return None
        done = asyncio.get_running_loop().create_future()
        self._queue.append((op, done))
        self._wakeup.set()
        return done

    async def _submit(self, op: _Op) -> None:
        done = self._enqueue(op)
        if done is None:  # not running: write directly
            await self._commit([op])
            return
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

    async def _flush(self, batch: list[tuple[_Op, asyncio.Future[None]]]) -> None:
        failed: Exception | None = None
        try:
            await self._commit([op for op, _ in batch])
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

    async def _commit(self, ops: list[_Op]) -> None:
        """Write a batch; each ask's `granted` is set from what its row granted."""
        rows: list[dict[str, Any]] = []
        changes: dict[Key, _Change] = defaultdict(_Change)
        for op in ops:
            if op.row is not None:
                rows.append(op.row)
                subject = op.row["subject"]
                change = changes[(subject, period_start(op.row["created_at"]))]
                change.tokens += op.row["total_tokens"]
                change.requests += 1
            if op.release is not None:
                changes[op.release.key].release += op.release.tokens
            if op.ask is not None:
                change = changes[op.ask]
                change.want += op.want
                change.quota = op.quota if change.quota is None else min(change.quota, op.quota)
                change.asks.append(op)
        now = datetime.now(UTC)
        stale_before = now - timedelta(seconds=STALE_RESERVATION_SECONDS)
        if self._one_statement:
            granted = await self._commit_in_one_statement(rows, changes, now, stale_before)
        else:
            granted = await self._commit_in_a_transaction(rows, changes, now, stale_before)
        for key, change in changes.items():
            left = granted.get(key, 0)
            for op in change.asks:  # in the order they were asked
                op.granted = min(op.want, left)
                left -= op.granted

    async def _commit_in_a_transaction(
        self,
        rows: list[dict[str, Any]],
        changes: dict[Key, _Change],
        now: datetime,
        stale_before: datetime,
    ) -> dict[Key, int]:
        fresh: dict[Key, Totals] = {}
        granted: dict[Key, int] = {}
        async with self.engine.begin() as conn:
            if rows:
                await conn.execute(self._add_to_ledger, rows)
            for (subject, period), change in changes.items():
                quota = change.quota or 0
                params = {
                    "subject": subject,
                    "period": period,
                    "tokens": change.tokens,
                    "requests": change.requests,
                    "release": change.release,
                    "want": change.want,
                    "quota": quota,
                    "fresh_grant": min(change.want, max(quota - change.tokens, 0)),
                    "fresh_at": now if change.want > 0 else None,
                    "now": now,
                    "stale_before": stale_before,
                }
                new = (await conn.execute(self._add_to_totals, params)).one()
                fresh[(subject, period)] = Totals(new.tokens, new.requests)
                granted[(subject, period)] = new.last_grant
        for key, value in fresh.items():
            self.known.put(key, value)
        return granted

    async def _commit_in_one_statement(
        self,
        rows: list[dict[str, Any]],
        changes: dict[Key, _Change],
        now: datetime,
        stale_before: datetime,
    ) -> dict[Key, int]:
        """PostgreSQL: the rows, the totals and the reservations in one statement.

        Atomic on its own (autocommit); each column is one array, so the text is
        the same for any batch and is compiled and prepared once.
        """
        params: dict[str, Any] = {c: [row[c] for row in rows] for c in LEDGER_COLUMNS}
        params["row_subject"] = params.pop("subject")  # `subject` is the totals' array
        params["subject"] = [subject for subject, _period in changes]
        params["period"] = [period for _subject, period in changes]
        params["tokens"] = [c.tokens for c in changes.values()]
        params["requests"] = [c.requests for c in changes.values()]
        params["release"] = [c.release for c in changes.values()]
        params["want"] = [c.want for c in changes.values()]
        params["quota"] = [c.quota or 0 for c in changes.values()]
        params["now"] = now
        params["stale_before"] = stale_before
        async with self.reader.connect() as conn:
            statement = ONE_STATEMENT if rows else RESERVATIONS_STATEMENT
            result = await conn.execute(statement, params)
        granted: dict[Key, int] = {}
        for new in result:
            self.known.put((new.subject, new.period), Totals(new.tokens, new.requests))
            granted[(new.subject, new.period)] = new.last_grant
        return granted
