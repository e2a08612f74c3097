"""Liveness (the process answers) and readiness (its database, Redis and job queue answer).

The two routes are added to the app itself (`install`) rather than through an
included router, so a probe takes the shortest path: since FastAPI 0.137 a
request to a route of an included router also goes through that router's own
dispatch, about 9 µs a request on the benchmark machine, more than the whole
liveness handler costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel
from sqlalchemy import text

from .contract import problems, public
from .db import get_database
from .errors import ProblemError
from .jobs import get_jobs
from .ratelimit import get_rate_limiter

READY_TIMEOUT = 2.0


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, Literal["ok", "failed", "off"]]


@public("liveness probe")
async def live() -> Health:
    return Health()


async def _database_ok(request: Request) -> bool:
    async with get_database(request).engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


async def _check(probe: Awaitable[bool]) -> Literal["ok", "failed"]:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            return "ok" if await probe else "failed"
    except Exception:
        return "failed"


@public("readiness probe")
async def ready(request: Request) -> Readiness:
    checks: dict[str, Literal["ok", "failed", "off"]] = {
        "database": await _check(_database_ok(request)),
        "redis": "off",
        "jobs": "off",
    }
    if request.app.state.settings.redis_url:
        checks["redis"] = await _check(get_rate_limiter(request).healthy())
    jobs = get_jobs(request)
    if jobs.broker is not None:  # the queue in Redis: can this process hand jobs to it?
        checks["jobs"] = await _check(jobs.broker.healthy())
    else:  # jobs run here: are this process's job loops alive?
        checks["jobs"] = "ok" if jobs.healthy() else "failed"
    failed = [name for name, state in checks.items() if state == "failed"]
    if failed:
        raise ProblemError(503, f"Not ready: {', '.join(failed)} unreachable.", checks=checks)
    return Readiness(checks=checks)


def install(app: FastAPI) -> None:
    app.add_api_route("/health/live", live, methods=["GET"], tags=["health"])
    app.add_api_route(
        "/health/ready",
        ready,
        methods=["GET"],
        tags=["health"],
        responses=problems({503: "A dependency is down (the checks name it)"}),
    )
