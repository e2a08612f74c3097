"""Enqueueing: a job is a row added to the caller's own transaction.

A rolled-back transaction enqueues nothing; a committed one holds its job in the
database, where a process hands it out (to Redis, or runs it) however it died.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Insert, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from {{ cookiecutter.package_name }}.core.db import insert_ignoring_conflicts
from {{ cookiecutter.package_name }}.core.telemetry import traceparent

from .models import JobRecord, JobStatus
from .registry import ArgsT, Job

_ENQUEUED = "jobs.enqueued"
# Callbacks of this process's job runners, called after a commit that enqueued a job.
_WAKERS: weakref.WeakSet[_Waker] = weakref.WeakSet()


class _Waker:
    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake


def on_commit(wake: Callable[[], None]) -> _Waker:
    """Call `wake` after every commit that enqueued a job (keep the returned object alive)."""
    waker = _Waker(wake)
    _WAKERS.add(waker)
    return waker


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_ENQUEUED, False):
        for waker in list(_WAKERS):
            waker.wake()


def insert_ignoring_duplicates(dialect: str, values: list[dict[str, Any]]) -> Insert:
    """INSERT INTO jobs that leaves alone a row whose id is taken (a key, a schedule's tick)."""
    return insert_ignoring_conflicts(dialect, JobRecord).values(values)


def now() -> datetime:
    return datetime.now(UTC)


def job_values(
    job: Job[ArgsT], args: ArgsT, *, key: str | None = None, run_at: datetime | None = None
) -> dict[str, Any]:
    if not isinstance(args, job.args_type):
        raise TypeError(f"job {job.name} takes {job.args_type.__name__}, not {type(args).__name__}")
    return {
        "id": f"{job.name}:{key}" if key is not None else uuid.uuid4().hex,
        "name": job.name,
        "args": args.model_dump(mode="json"),
        "status": JobStatus.PENDING,
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "run_at": run_at or now(),
    }


async def enqueue(
    session: AsyncSession,
    job: Job[ArgsT],
    args: ArgsT,
    *,
    key: str | None = None,
    delay: float = 0.0,
    run_at: datetime | None = None,
) -> str:
    """Add `job(args)` to the session's transaction; returns the job's id.

    With `key`, the id is "<job name>:<key>" and a second job with the same key is
    ignored (the first one stands), whatever state the first is in: use it for
    "once per thing" work such as one webhook event. `delay` or `run_at` hold the job
    back until then.
    """
    when = run_at or (now() + timedelta(seconds=delay) if delay else None)
    values = job_values(job, args, key=key, run_at=when)
    values["trace_parent"] = traceparent()  # its runs join the caller's trace (tracing on)
    if key is None:
        session.add(JobRecord(**values))
    else:
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignoring_duplicates(dialect, [values]))
    session.sync_session.info[_ENQUEUED] = True
    return str(values["id"])
