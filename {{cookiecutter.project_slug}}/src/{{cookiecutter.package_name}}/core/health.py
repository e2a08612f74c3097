"""Liveness (the process answers) and readiness (its database and Redis answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from .db import get_database
from .errors import ProblemError
from .ratelimit import get_rate_limiter

router = APIRouter(prefix="/health", tags=["health"])

READY_TIMEOUT = 2.0


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, Literal["ok", "failed", "off"]]


@router.get("/live")
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


@router.get("/ready", responses={503: {"description": "A dependency is down"}})
async def ready(request: Request) -> Readiness:
    checks: dict[str, Literal["ok", "failed", "off"]] = {
        "database": await _check(_database_ok(request)),
        "redis": "off",
    }
    if request.app.state.settings.redis_url:
        checks["redis"] = await _check(get_rate_limiter(request).healthy())
    failed = [name for name, state in checks.items() if state == "failed"]
    if failed:
        raise ProblemError(503, f"Not ready: {', '.join(failed)} unreachable.", checks=checks)
    return Readiness(checks=checks)
