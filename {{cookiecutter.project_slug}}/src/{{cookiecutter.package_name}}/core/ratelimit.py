"""Rate limits per route: in memory by default, in Redis when REDIS_URL is set.

With Redis, every instance behind the load balancer shares the same counters.
If Redis cannot be reached the limiter fails open (the request goes through and
a warning is logged): an outage of the limiter should not take the API down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request
from fastapi.params import Depends as DependsParam
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from .contract import declare
from .errors import ProblemError

log = structlog.get_logger(__name__)

KeyFunc = Callable[[Request], Awaitable[str]]


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        self.storage: Storage = (
            RedisStorage(f"async+{redis_url}", implementation="redispy", wrap_exceptions=True)
            if redis_url
            else MemoryStorage()
        )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> float | None:
        """Count one hit; return seconds until retry when over the limit, else None."""
        try:
            if await self.strategy.hit(item, *identifiers):
                return None
            stats = await self.strategy.get_window_stats(item, *identifiers)
        except Exception as exc:  # the storage is down: fail open
            log.warning("rate_limiter_unavailable", error=type(exc).__name__)
            return None
        return max(stats.reset_time - time.time(), 1.0)

    async def healthy(self) -> bool:
        try:
            return bool(await self.storage.check())
        except Exception:
            return False

    async def reset(self) -> None:
        await self.storage.reset()


def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def client_address(request: Request) -> str:
    """The caller's address (behind a proxy, run uvicorn with --proxy-headers)."""
    return request.client.host if request.client else "unknown"


RATE_LIMITED = {429: "Rate limited (with Retry-After)"}


def rate_limit(
    limit: str, *, key: KeyFunc = client_address, scope: str | None = None
) -> DependsParam:
    """A dependency allowing `limit` (e.g. "5/minute") per key on the routes that use it.

        @router.post("/login", dependencies=[rate_limit("5/minute")])

    Routes that share a `scope` share counters; by default each route has its own.
    Over the limit: 429 problem+json with `Retry-After`.
    """
    item = parse(limit)

    async def dependency(request: Request) -> None:
        route = request.scope.get("route")
        route_scope = scope or f"{request.method}:{getattr(route, 'path', request.url.path)}"
        await enforce(request, limit, item, route_scope, await key(request))

    return DependsParam(declare(dependency, problems=RATE_LIMITED))


async def enforce(request: Request, limit: str, item: RateLimitItem, scope: str, key: str) -> None:
    """Count one hit of `key` under `scope`; over `limit`: 429 problem+json with Retry-After."""
    retry_after = await get_rate_limiter(request).hit(item, scope, key)
    if retry_after is not None:
        seconds = math.ceil(retry_after)
        raise ProblemError(
            429,
            f"Rate limit of {limit} exceeded; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
