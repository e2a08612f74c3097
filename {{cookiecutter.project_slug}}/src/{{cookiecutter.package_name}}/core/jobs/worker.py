"""The worker process: the app without its HTTP server, taking jobs from Redis.

`python -m {{ cookiecutter.package_name }} worker` (or `make worker`). It starts the app's
lifespan (database, the modules' clients, the relay, sweeper and scheduler), takes jobs
until SIGTERM or SIGINT, lets the running ones finish within JOBS_SHUTDOWN_SECONDS and
gives the others back for another worker.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from fastapi import FastAPI

from .runtime import JobRuntime

log = structlog.get_logger("jobs")


async def serve(app: FastAPI, stop: asyncio.Event | None = None) -> None:
    if not app.state.settings.jobs_use_redis:
        raise SystemExit(
            "the worker takes jobs from Redis: set REDIS_URL (without it, jobs run inside the "
            "app process and no worker is needed)"
        )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app.state.jobs_role = "worker"
    async with app.router.lifespan_context(app):
        runtime: JobRuntime = app.state.jobs
        assert runtime.broker is not None
        log.info("worker_started", queue=runtime.settings.jobs_queue)
        await runtime.broker.work(stop)
        log.info("worker_stopping")
        await runtime.finish_running(0)  # the receiver waited already: give back the rest
