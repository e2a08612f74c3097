"""Running jobs: hand them out, run them, retry them, schedule them.

Every process (each app instance, each worker) runs one `JobRuntime`. The database
row is the truth about a job; Redis only carries its id to a worker:

- the relay hands due `pending` jobs out: to Redis (`queued`) when jobs go through
  workers, or straight to this process's own runner when they run in the app;
- a run first takes the row (`running`, attempt + 1) in one conditional UPDATE, so
  a job delivered twice runs once; the job's own writes commit together with its
  `done` mark, which only the attempt that took it may write;
- a failure puts the job back to `pending` at a later time (backoff), or `dead`;
- the sweeper gives back what a dead process left: `running` rows past their
  timeout plus a grace, `queued` rows that no worker started (Redis lost them);
- the scheduler adds one row per cron tick under an id made of the job's name and
  the tick, so every process may add it and the job still runs once.

Delivery is at least once; a job's database writes apply once; what a job does
outside the database (an email, a call to a provider) may be repeated after a crash, so
such steps must be safe to repeat (the job id as an idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from croniter import croniter
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import and_, select, update

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database

from .models import JobRecord, JobStatus
from .outbox import insert_ignoring_duplicates, job_values, now, on_commit
from .registry import Job, JobContext, RetryLater, Tick

if TYPE_CHECKING:
    from .broker import Broker

log = structlog.get_logger("jobs")

SWEEPS_PER_POLL = 10  # a look for jobs a dead process left, every ten polls
BATCH = 100  # jobs the relay hands out per round
MAX_ERROR_CHARS = 2000
DEFAULT_TIMEOUT = 60.0  # for a row whose job this process does not know


@dataclass(frozen=True)
class Claimed:
    id: str
    name: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int


_CLAIMED_COLUMNS = (
    JobRecord.id,
    JobRecord.name,
    JobRecord.args,
    JobRecord.attempts,
    JobRecord.max_attempts,
)


def _claimed(rows: Iterable[Any]) -> list[Claimed]:
    return [Claimed(r.id, r.name, r.args, r.attempts, r.max_attempts) for r in rows]


def _runnable(at: datetime, names: Iterable[str]) -> Any:
    """Due, free, and a job this process knows (an older version leaves a newer one's jobs)."""
    return and_(
        JobRecord.status.in_([JobStatus.PENDING, JobStatus.QUEUED]),
        JobRecord.run_at <= at,
        JobRecord.name.in_(list(names)),
    )


class JobRuntime:
    """One per process: see the module's docstring."""

    def __init__(self, app: FastAPI, jobs: dict[str, Job[Any]], settings: Settings) -> None:
        self.app = app
        self.jobs = jobs
        self.settings = settings
        self.broker: Broker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[Any]] = set()  # job runs in this process
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._handing_out = asyncio.Lock()  # one claim at a time in this process
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waker: object = None

    @property
    def database(self) -> Database:
        database: Database = self.app.state.database
        return database

    @property
    def uses_redis(self) -> bool:
        return self.settings.jobs_use_redis

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, role: str = "app") -> None:
        """Start the loops of this process: relay, sweeper, scheduler, and the runner in-process."""
        self._loop = asyncio.get_running_loop()
        self._waker = on_commit(self.wake)
        if self.uses_redis:
            from .broker import Broker  # Taskiq is loaded only with Redis

            self.broker = Broker(self.settings, self.execute)
            await self.broker.start(worker=role == "worker")
        self._spawn(self._relay_loop(), "relay")
        self._spawn(self._sweep_loop(), "sweeper")
        if self.settings.jobs_scheduler and any(j.schedule for j in self.jobs.values()):
            self._spawn(self._scheduler_loop(), "scheduler")

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.ensure_future(work))
        self._tasks[-1].set_name(f"jobs-{name}")

    async def stop(self) -> None:
        """Stop handing out; running jobs get JOBS_SHUTDOWN_SECONDS to finish, the rest go back."""
        self._stopping.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        # The running jobs first: on SQLite a loop's statement may be waiting for the write
        # lock a running job holds, and only ends once that job commits or rolls back.
        await self.finish_running(self.settings.jobs_shutdown_seconds)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.broker is not None:
            await self.broker.stop()

    async def finish_running(self, within: float) -> None:
        running = set(self._running)
        if running:
            log.info("jobs_stopping", running=len(running), wait_seconds=within)
            _, left = (
                await asyncio.wait(running, timeout=within) if within > 0 else (set(), running)
            )
            for task in left:
                task.cancel()  # the run gives its job back (pending, attempt not counted)
            if left:
                await asyncio.wait(left)

    def wake(self) -> None:
        """Look for due jobs now (after a commit that enqueued one)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def healthy(self) -> bool:
        return all(not task.done() for task in self._tasks)

    @staticmethod
    async def _pause(seconds: float, until: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await until.wait()

    async def _guarded(
        self, step: Callable[[], Awaitable[float]], what: str, wake: asyncio.Event
    ) -> None:
        """Repeat `step` (it returns how long to pause, or `wake` ends the pause sooner).

        A failing step is logged and retried with backoff. `wake` is cleared before each
        step, so a wake-up that comes while the step runs is not lost.
        """
        failures = 0
        while not self._stopping.is_set():
            if wake is not self._stopping:
                wake.clear()
            try:
                pause = await step()
                failures = 0
            except Exception as error:
                failures += 1
                pause = min(self.settings.jobs_poll_seconds * 2**failures, 30.0)
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning(f"jobs_{what}_failed", error=repr(error), failures=failures)
            if pause > 0:
                await self._pause(pause, wake)

    # --- handing out -------------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        await self._guarded(self.relay_once, "relay", self._wake)

    async def relay_once(self) -> float:
        """Hand out due jobs once; returns how long to pause before the next round."""
        if self.broker is not None:
            if not await self._any_due(JobRecord.status == JobStatus.PENDING):
                return self.settings.jobs_poll_seconds
            sent = await self._publish_due()
            return 0 if sent == BATCH else self.settings.jobs_poll_seconds
        if not await self._any_due(_runnable(now(), self.jobs)):
            return self.settings.jobs_poll_seconds
        async with self._handing_out:
            free = self.settings.jobs_concurrency - len(self._running)
            if free <= 0 or self._stopping.is_set():
                return self.settings.jobs_poll_seconds
            claimed = await self.claim_due(free)
            for item in claimed:
                self._start_run(item)
        return 0 if len(claimed) == free else self.settings.jobs_poll_seconds

    async def _any_due(self, condition: Any) -> bool:
        """A read before the claiming write: most polls find nothing, and a read takes no lock
        (on SQLite a write would hold the database's one write lock, however briefly)."""
        at = now()
        async with self.database.read_engine.connect() as connection:
            found = await connection.scalar(
                select(JobRecord.id).where(condition, JobRecord.run_at <= at).limit(1)
            )
        return found is not None

    def _start_run(self, item: Claimed) -> None:
        task = asyncio.ensure_future(self._run(item))
        self._running.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._running.discard(finished)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _publish_due(self) -> int:
        assert self.broker is not None
        at = now()
        async with self.database.engine.begin() as connection:
            due = (
                select(JobRecord.id)
                .where(JobRecord.status == JobStatus.PENDING, JobRecord.run_at <= at)
                .order_by(JobRecord.run_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            result = await connection.execute(
                update(JobRecord)
                .where(
                    JobRecord.id.in_(due.scalar_subquery()), JobRecord.status == JobStatus.PENDING
                )
                .values(status=JobStatus.QUEUED, queued_at=at)
                .returning(JobRecord.id)
            )
            ids = list(result.scalars())
        if not ids:
            return 0
        try:
            await self.broker.publish(ids)
        except BaseException:
            # Not in Redis: back to pending, for the next round (or another process).
            async with self.database.engine.begin() as connection:
                await connection.execute(
                    update(JobRecord)
                    .where(JobRecord.id.in_(ids), JobRecord.status == JobStatus.QUEUED)
                    .values(status=JobStatus.PENDING, queued_at=None)
                )
            raise
        return len(ids)

    async def claim_due(self, limit: int) -> list[Claimed]:
        """Take up to `limit` due jobs for this process (in-process running, `jobs run`)."""
        at = now()
        async with self.database.engine.begin() as connection:
            due = (
                select(JobRecord.id)
                .where(_runnable(at, self.jobs))
                .order_by(JobRecord.run_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            result = await connection.execute(
                update(JobRecord)
                .where(JobRecord.id.in_(due.scalar_subquery()), _runnable(at, self.jobs))
                .values(
                    status=JobStatus.RUNNING,
                    attempts=JobRecord.attempts + 1,
                    started_at=at,
                    queued_at=None,
                )
                .returning(*_CLAIMED_COLUMNS)
            )
            return _claimed(result)

    async def claim(self, job_id: str) -> Claimed | None:
        """Take one job by id, if it is due and nobody has it (a message from Redis)."""
        at = now()
        async with self.database.engine.begin() as connection:
            result = await connection.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, _runnable(at, self.jobs))
                .values(
                    status=JobStatus.RUNNING,
                    attempts=JobRecord.attempts + 1,
                    started_at=at,
                    queued_at=None,
                )
                .returning(*_CLAIMED_COLUMNS)
            )
            found = _claimed(result)
        return found[0] if found else None

    # --- running -----------------------------------------------------------------------------

    async def execute(self, job_id: str) -> str:
        """Run the job with this id if it is due and free; what a worker does with a message."""
        item = await self.claim(job_id)
        if item is None:
            log.debug("job_skipped", id=job_id, detail="already taken, finished or not due")
            return "skipped"
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            return await self._run(item)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _run(self, item: Claimed) -> str:
        started = time.perf_counter()
        job = self.jobs.get(item.name)
        outcome = "done"
        error: BaseException | None = None
        try:
            if job is None:
                raise LookupError(f"no job named {item.name!r} in this process")
            args = job.args_type.model_validate(item.args)
            async with self.database.sessionmaker() as session:
                context = JobContext(self.app, session, item.id, item.name, item.attempt)
                async with asyncio.timeout(job.timeout):
                    await job.handler(context, args)
                finished = await session.execute(
                    update(JobRecord)
                    .where(*self._owned(item))
                    .values(status=JobStatus.DONE, finished_at=now(), last_error=None)
                )
                if finished.rowcount == 1:  # type: ignore[attr-defined]
                    await session.commit()
                else:  # another process took it over (we were presumed lost): undo
                    await session.rollback()
                    outcome = "lost"
        except asyncio.CancelledError:
            outcome = "given_back"
            await asyncio.shield(self._give_back(item))
            raise
        except Exception as failure:
            error = failure
            outcome = await self._failed(item, job, failure)
        finally:
            fields: dict[str, Any] = {
                "id": item.id,
                "name": item.name,
                "attempt": item.attempt,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "outcome": outcome,
            }
            if error is not None:
                fields["error"] = _describe(error)
            (log.info if outcome in ("done", "given_back") else log.warning)("job", **fields)
        return outcome

    @staticmethod
    def _owned(item: Claimed) -> tuple[Any, ...]:
        return (
            JobRecord.id == item.id,
            JobRecord.status == JobStatus.RUNNING,
            JobRecord.attempts == item.attempt,
        )

    async def _failed(self, item: Claimed, job: Job[Any] | None, error: Exception) -> str:
        hopeless = isinstance(error, ValidationError)  # its stored arguments will never fit
        if hopeless or item.attempt >= item.max_attempts:
            values: dict[str, Any] = {"status": JobStatus.DEAD, "finished_at": now()}
            outcome = "dead"
        else:
            if isinstance(error, RetryLater) and error.seconds is not None:
                delay = error.seconds
            elif job is not None:
                delay = job.retry_delay(item.attempt)
            else:
                delay = min(60.0 * item.attempt, 3600.0)
            values = {"status": JobStatus.PENDING, "run_at": now() + timedelta(seconds=delay)}
            outcome = "retry"
        values["last_error"] = _describe(error)
        async with self.database.engine.begin() as connection:
            result = await connection.execute(
                update(JobRecord).where(*self._owned(item)).values(**values)
            )
        return outcome if result.rowcount == 1 else "lost"

    async def _give_back(self, item: Claimed) -> None:
        """A run stopped from outside (shutdown): pending again, the attempt not counted."""
        async with self.database.engine.begin() as connection:
            await connection.execute(
                update(JobRecord)
                .where(*self._owned(item))
                .values(
                    status=JobStatus.PENDING,
                    attempts=JobRecord.attempts - 1,
                    run_at=now(),
                    started_at=None,
                )
            )

    async def drain(self, within: float = 30.0) -> int:
        """Run every due job here and now, until none is due or running; returns how many ran.

        For tests and `jobs run`. Safe alongside the runners: each job is taken once.
        """
        ran = 0
        async with asyncio.timeout(within):
            while True:
                async with self._handing_out:  # what the relay took is in _running after this
                    claimed = await self.claim_due(self.settings.jobs_concurrency)
                if claimed:
                    await asyncio.gather(*(self._run(item) for item in claimed))
                    ran += len(claimed)
                    continue
                if not self._running:
                    return ran
                await asyncio.wait(set(self._running))

    # --- what dead processes left ------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        # On its own clock: only stopping ends its pause (commits wake the relay alone).
        await self._guarded(self._sweep_step, "sweep", self._stopping)

    async def _sweep_step(self) -> float:
        await self.sweep()
        return self.settings.jobs_poll_seconds * SWEEPS_PER_POLL

    async def sweep(self) -> int:
        """Give back jobs whose process is gone; returns how many.

        It reads first and writes only what it found: every process sweeps, most sweeps find
        nothing, and a write (even one that matches no row) would take SQLite's one write lock.
        Each write re-checks the row, so a job that moved on meanwhile is left alone.
        """
        at = now()
        grace = timedelta(seconds=self.settings.jobs_lease_grace_seconds)
        stale_queue = at - timedelta(seconds=self.settings.jobs_requeue_seconds)
        left_queued = and_(JobRecord.status == JobStatus.QUEUED, JobRecord.queued_at < stale_queue)
        async with self.database.read_engine.connect() as connection:
            requeue = await connection.scalar(select(JobRecord.id).where(left_queued).limit(1))
            running = await connection.execute(
                select(
                    JobRecord.id,
                    JobRecord.name,
                    JobRecord.attempts,
                    JobRecord.max_attempts,
                    JobRecord.started_at,
                )
                .where(JobRecord.status == JobStatus.RUNNING, JobRecord.started_at < at - grace)
                .limit(1000)
            )
            lost_rows = [row for row in running.all() if self._timed_out(row, at, grace)]
        if requeue is None and not lost_rows:
            return 0
        found = 0
        async with self.database.engine.begin() as connection:
            if requeue is not None:
                requeued = await connection.execute(
                    update(JobRecord)
                    .where(left_queued)
                    .values(status=JobStatus.PENDING, queued_at=None)
                )
                found += requeued.rowcount
            for row in lost_rows:
                lost = f"lost: the process running attempt {row.attempts} stopped answering"
                values: dict[str, Any] = (
                    {"status": JobStatus.DEAD, "finished_at": at, "last_error": lost}
                    if row.attempts >= row.max_attempts
                    else {"status": JobStatus.PENDING, "run_at": at, "last_error": lost}
                )
                result = await connection.execute(
                    update(JobRecord)
                    .where(
                        JobRecord.id == row.id,
                        JobRecord.status == JobStatus.RUNNING,
                        JobRecord.attempts == row.attempts,
                    )
                    .values(**values)
                )
                if result.rowcount:
                    found += 1
                    log.warning("job_lost", id=row.id, name=row.name, attempt=row.attempts)
        if found:
            self._wake.set()
        return found

    def _timed_out(self, row: Any, at: datetime, grace: timedelta) -> bool:
        job = self.jobs.get(row.name)
        timeout = job.timeout if job is not None else DEFAULT_TIMEOUT
        return bool(_aware(row.started_at) + timedelta(seconds=timeout) + grace <= at)

    # --- the scheduler -----------------------------------------------------------------------

    async def _scheduler_loop(self) -> None:
        scheduled = [j for j in self.jobs.values() if j.schedule]
        upcoming = {j.name: _next_tick(j, now()) for j in scheduled}
        while not self._stopping.is_set():
            soonest = min(upcoming.values())
            wait = (soonest - now()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopping.wait()
                continue
            due = [j for j in scheduled if upcoming[j.name] <= soonest]
            try:
                await self.schedule_ticks([(j, upcoming[j.name]) for j in due])
            except Exception as error:
                log.warning("jobs_scheduler_failed", error=repr(error), tick=soonest.isoformat())
            for j in due:
                upcoming[j.name] = _next_tick(j, soonest)

    async def schedule_ticks(self, ticks: Sequence[tuple[Job[Any], datetime]]) -> None:
        """Add one run per (job, tick); a tick another process added already is left alone."""
        values = [
            job_values(j, Tick(at=tick), key=tick.strftime("%Y-%m-%dT%H:%M:%SZ"), run_at=tick)
            for j, tick in ticks
        ]
        if not values:
            return
        async with self.database.engine.begin() as connection:
            await connection.execute(insert_ignoring_duplicates(connection.dialect.name, values))
        self._wake.set()


def _next_tick(job: Job[Any], after: datetime) -> datetime:
    assert job.schedule is not None
    tick: datetime = croniter(job.schedule, after, second_at_beginning=True).get_next(datetime)
    return tick


def _aware(value: datetime) -> datetime:
    """SQLite gives back naive datetimes; every time stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text[:MAX_ERROR_CHARS]
