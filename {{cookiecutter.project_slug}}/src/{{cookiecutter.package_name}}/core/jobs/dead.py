"""Dead jobs: list them, replay them (CLI and admin), delete them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import JobRecord, JobStatus
from .outbox import now


async def list_jobs(
    connection: AsyncConnection, status: JobStatus | None = JobStatus.DEAD, limit: int = 100
) -> Sequence[Row[Any]]:
    """The newest jobs (by default the dead ones), newest first."""
    query = select(*JobRecord.__table__.columns).order_by(JobRecord.created_at.desc())
    if status is not None:
        query = query.where(JobRecord.status == status)
    result = await connection.execute(query.limit(limit))
    return result.all()


async def replay(connection: AsyncConnection, job_ids: Sequence[str]) -> list[str]:
    """Dead jobs get a fresh set of attempts and run as soon as possible; returns those replayed."""
    result = await connection.execute(
        update(JobRecord)
        .where(JobRecord.id.in_(job_ids), JobRecord.status == JobStatus.DEAD)
        .values(status=JobStatus.PENDING, attempts=0, run_at=now(), finished_at=None)
        .returning(JobRecord.id)
    )
    return list(result.scalars())


async def forget(connection: AsyncConnection, job_ids: Sequence[str]) -> list[str]:
    """Delete dead jobs for good; returns those deleted."""
    result = await connection.execute(
        delete(JobRecord)
        .where(JobRecord.id.in_(job_ids), JobRecord.status == JobStatus.DEAD)
        .returning(JobRecord.id)
    )
    return list(result.scalars())
