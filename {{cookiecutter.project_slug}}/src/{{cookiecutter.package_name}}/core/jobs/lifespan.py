"""Starting and stopping the jobs of one process, from the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from .registry import Job, registry
from .runtime import JobRuntime


@asynccontextmanager
async def run_jobs(app: FastAPI, jobs: Iterable[Job[Any]]) -> AsyncIterator[JobRuntime]:
    """Entered after every module's lifespan (jobs use their state), left before them."""
    runtime = JobRuntime(app, registry(jobs), app.state.settings)
    app.state.jobs = runtime
    await runtime.start(role=getattr(app.state, "jobs_role", "app"))
    try:
        yield runtime
    finally:
        await runtime.stop()


def get_jobs(app: FastAPI | Request) -> JobRuntime:
    state = app.app.state if isinstance(app, Request) else app.state
    runtime: JobRuntime = state.jobs
    return runtime
