"""SQL statements one registration costs: in the request, and in the jobs it enqueued.

    python bench/register_statements.py <project>/src <package> <database-url>

Runs the app in-process (httpx's ASGI transport, no Redis: jobs run in this process),
registers one user after a warm-up registration, counts the statements the engine sends
while the request runs, then runs the jobs it left (if the project has background jobs)
and counts theirs, less what looking for jobs costs when there are none. Then times
200 more registrations with Argon2 replaced by a fixed hash: the process's CPU per
registration for everything else, the jobs it runs included. Prints one JSON object:
{"request": n, "jobs": n, "jobs_run": n, "cpu_ms_without_argon2": ms}. bench/ab.py
prints it for both sides.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import json
import os
import sys
import time
import uuid
from typing import Any

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event

PASSWORD = "bench-password-123456"
REGISTRATIONS = 200  # timed, one after the other, without Argon2
IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("in_request", default=False)


async def count(package: str, url: str) -> dict[str, Any]:
    config = importlib.import_module(f"{package}.core.config")
    main = importlib.import_module(f"{package}.main")
    quiet: dict[str, Any] = {}
    if "jobs_poll_seconds" in config.Settings.model_fields:
        # The runners look for jobs only when a commit wakes them (and drain() below).
        quiet = {"jobs_poll_seconds": 3600.0, "jobs_scheduler": False}
    settings = config.Settings(
        _env_file=None,
        environment="test",
        database_url=url,
        secret_key="s" * 48,
        log_level="WARNING",
        redis_url=None,
        **quiet,
    )
    app = main.create_app(settings)
    counts = {"request": 0, "jobs": 0}

    show = bool(os.environ.get("BENCH_SHOW_STATEMENTS"))

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        where = "request" if IN_REQUEST.get() else "jobs"
        counts[where] += 1
        if show:
            print(f"{where}: {' '.join(statement.split())[:160]}", file=sys.stderr)

    event.listen(app.state.database.engine.sync_engine, "before_cursor_execute", record)
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bench") as http:

            async def register() -> None:
                email = f"count-{uuid.uuid4().hex[:8]}@example.com"
                answer = await http.post(
                    "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
                )
                answer.raise_for_status()

            runtime = getattr(app.state, "jobs", None)
            await register()  # warm-up: the first request loads what it needs
            if runtime is not None:
                await runtime.drain()
            await asyncio.sleep(0.2)  # whatever the warm-up started in the background
            done_before = await finished_jobs(app)
            counts.update(request=0, jobs=0)
            if runtime is not None:  # what drain() costs when there is nothing to run
                await runtime.drain()
            idle = counts["jobs"]
            counts.update(request=0, jobs=0)
            token = IN_REQUEST.set(True)
            try:
                await register()
            finally:
                IN_REQUEST.reset(token)
            if runtime is not None:
                await runtime.drain()
            await asyncio.sleep(0.2)  # a runner that took a job before the drain finishes it
            found = {"request": counts["request"], "jobs": counts["jobs"] - idle}
            ran = await finished_jobs(app) - done_before

            # The CPU of a registration without Argon2 (one fixed hash instead): what the
            # rest of the request, and the jobs it leaves, cost this process.
            service = importlib.import_module(f"{package}.auth.service")
            fixed = await service.hash_password(PASSWORD)

            async def cheap_hash(_password: str) -> str:
                return fixed

            service.hash_password = cheap_hash
            started = time.process_time()
            for _ in range(REGISTRATIONS):
                await register()
            if runtime is not None:
                await runtime.drain()
            cpu_ms = (time.process_time() - started) * 1000 / REGISTRATIONS
    return {**found, "jobs_run": ran, "cpu_ms_without_argon2": cpu_ms}


async def finished_jobs(app: Any) -> int:
    """Jobs done or dead so far (0 for a project without background jobs)."""
    if getattr(app.state, "jobs", None) is None:
        return 0
    async with app.state.database.engine.connect() as connection:
        result = await connection.exec_driver_sql(
            "SELECT count(*) FROM jobs WHERE status IN ('done', 'dead')"
        )
        return int(result.scalar_one())


if __name__ == "__main__":
    src, package, url = sys.argv[1:]
    # Counted still, never reached (the module's settings come from the environment).
    os.environ["AUTH_REGISTER_LIMIT_PER_CLIENT"] = "100000000/minute"
    sys.path.insert(0, src)
    print(json.dumps(asyncio.run(count(package, url))))
