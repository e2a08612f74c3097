"""Test-only jobs, the table they write their effects to, and worker processes to run them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func, insert, select

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.core.jobs import JobContext, JobRecord, Tick, job
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from tests.conftest import PROJECT_ROOT

# Not one of the app's tables: made and dropped by the tests that use it.
effects_metadata = MetaData()
effects = Table(
    "test_job_effects",
    effects_metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("tag", String(255), nullable=False),
    Column("at", DateTime(timezone=True), server_default=func.now()),
)

# In-process only: what the flaky job does, and when each of its attempts ran.
FLAKY: dict[str, Any] = {"broken": True, "attempted_at": [], "hold": False}


class Effect(BaseModel):
    tag: str
    fail_first: int = 0  # attempts that fail (after writing their effect, which rolls back)


async def _write(ctx: JobContext, tag: str) -> None:
    await ctx.session.execute(
        insert(effects).values(job_id=ctx.job_id, attempt=ctx.attempt, pid=os.getpid(), tag=tag)
    )


@job("tests.effect", max_attempts=4, backoff=0.1)
async def effect(ctx: JobContext, args: Effect) -> None:
    await _write(ctx, args.tag)
    if ctx.attempt <= args.fail_first:
        raise RuntimeError(f"planned failure of attempt {ctx.attempt}")


@job("tests.slow", max_attempts=3, timeout=3.0, backoff=0.1)
async def slow(ctx: JobContext, args: Effect) -> None:
    """Writes its effect, then, on its first attempt, takes longer than anyone waits."""
    await _write(ctx, args.tag)
    if ctx.attempt == 1:
        await asyncio.sleep(60)


@job("tests.flaky", max_attempts=3, backoff=0.2)
async def flaky(ctx: JobContext, args: Effect) -> None:
    FLAKY["attempted_at"].append(time.monotonic())
    await _write(ctx, args.tag)
    if FLAKY["broken"]:
        raise RuntimeError("the flaky job's upstream is down")


@job("tests.held", max_attempts=3)
async def held(ctx: JobContext, args: Effect) -> None:
    """Writes its effect, then waits while FLAKY["hold"] is set."""
    await _write(ctx, args.tag)
    while FLAKY["hold"]:  # noqa: ASYNC110 - set by the test from outside the loop
        await asyncio.sleep(0.02)


@job("tests.tick", schedule="* * * * * *")  # every second (six fields: seconds first)
async def tick(ctx: JobContext, args: Tick) -> None:
    await _write(ctx, args.at.astimezone(UTC).isoformat())


JOBS = (effect, slow, flaky, held)
test_module = Module("tests", jobs=JOBS)
scheduled_module = Module("tests-scheduled", jobs=(tick,))


def app_with_test_jobs(settings: Settings, *, scheduled: bool = False) -> FastAPI:
    extra = (test_module, scheduled_module) if scheduled else (test_module,)
    return create_app(settings, modules=(*MODULES, *extra))


async def make_effects_table(database: Database) -> None:
    async with database.engine.begin() as connection:
        await connection.run_sync(effects_metadata.create_all)


async def drop_effects_table(database: Database) -> None:
    async with database.engine.begin() as connection:
        await connection.run_sync(effects_metadata.drop_all)


async def effect_rows(database: Database) -> list[dict[str, Any]]:
    async with database.engine.connect() as connection:
        result = await connection.execute(select(effects).order_by(effects.c.n))
        return [dict(row._mapping) for row in result]


async def job_row(database: Database, job_id: str) -> dict[str, Any]:
    async with database.engine.connect() as connection:
        result = await connection.execute(select(JobRecord.__table__).where(JobRecord.id == job_id))
        return dict(result.one()._mapping)


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` every 50 ms, at most `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def worker_environment(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.redis_url is not None
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key.get_secret_value(),
        "LOG_LEVEL": "INFO",
        "JOBS_QUEUE": settings.jobs_queue,
        "JOBS_POLL_SECONDS": str(settings.jobs_poll_seconds),
        "JOBS_LEASE_GRACE_SECONDS": str(settings.jobs_lease_grace_seconds),
        "JOBS_REQUEUE_SECONDS": str(settings.jobs_requeue_seconds),
        "JOBS_SHUTDOWN_SECONDS": str(settings.jobs_shutdown_seconds),
        "JOBS_SCHEDULER": "true" if settings.jobs_scheduler else "false",
        # The project's package and its tests, installed or not.
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)]),
    }
    env.update(extra)
    return env


class Worker:
    """`tests/core/job_worker.py` (the project's worker with the test jobs) in a process."""

    def __init__(self, env: Mapping[str, str], log_path: str) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.core.job_worker"],
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()

    def wait_started(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while "worker_started" not in self.output():
            assert self.process.poll() is None, f"the worker died:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{self.output()}"
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, within: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        return self.process.returncode


@contextmanager
def workers(env: Mapping[str, str], count: int, log_dir: str) -> Iterator[list[Worker]]:
    os.makedirs(log_dir, exist_ok=True)
    started = [Worker(env, f"{log_dir}/worker-{i}.log") for i in range(count)]
    try:
        for worker in started:
            worker.wait_started()
        yield started
    finally:
        for worker in started:
            worker.stop()


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
