"""The jobs table's own housekeeping: finished jobs are kept JOBS_KEEP_DONE_DAYS days."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from .models import JobRecord, JobStatus
from .outbox import now
from .registry import JobContext, Tick, job


@job("core.purge_finished_jobs", schedule="23 3 * * *", max_attempts=3)
async def purge_finished_jobs(ctx: JobContext, args: Tick) -> None:
    """Delete jobs finished more than JOBS_KEEP_DONE_DAYS ago; dead jobs stay until replayed."""
    days = ctx.app.state.settings.jobs_keep_done_days
    await ctx.session.execute(
        delete(JobRecord).where(
            JobRecord.status == JobStatus.DONE,
            JobRecord.finished_at < now() - timedelta(days=days),
        )
    )
