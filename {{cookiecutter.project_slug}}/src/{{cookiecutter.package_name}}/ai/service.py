"""Metering: the quota check before an upstream call and the ledger row after it.

The chat endpoint waits on a slow upstream; holding a pooled database connection
for that whole time would cap throughput at pool size / upstream latency. So the
ledger is not written through the request's session: the quota check is one
primary-key read on a connection borrowed for that read only, and the ledger row
plus the month's total are written in one short transaction after the call
(before the response leaves, for plain requests; when a stream ends, for streams).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite

from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.errors import ProblemError

from .models import ANONYMOUS, AIUsage, AIUsageTotal


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
    def __init__(self, database: Database) -> None:
        self.engine = database.engine
        name = self.engine.dialect.name
        self._upsert = postgresql.insert if name == "postgresql" else sqlite.insert

    async def totals(self, subject: uuid.UUID, period: date) -> Totals:
        query = select(AIUsageTotal.tokens, AIUsageTotal.requests).where(
            AIUsageTotal.subject == subject, AIUsageTotal.period == period
        )
        async with self.engine.connect() as conn:
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
        now = datetime.now(UTC)
        total = entry.prompt_tokens + entry.completion_tokens
        upsert = self._upsert(AIUsageTotal).values(
            subject=entry.caller.subject, period=period_start(now), tokens=total, requests=1
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[AIUsageTotal.subject, AIUsageTotal.period],
            set_={
                "tokens": AIUsageTotal.tokens + upsert.excluded.tokens,
                "requests": AIUsageTotal.requests + 1,
            },
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(AIUsage).values(
                    created_at=now,
                    user_id=entry.caller.user_id,
                    model=entry.model,
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    total_tokens=total,
                    latency_ms=round((time.perf_counter() - entry.started) * 1000),
                    outcome=entry.outcome,
                    streamed=entry.streamed,
                    request_id=entry.request_id,
                )
            )
            await conn.execute(upsert)
