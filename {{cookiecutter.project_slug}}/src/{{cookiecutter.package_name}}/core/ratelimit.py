"""Rate limits per route: in memory by default, in Redis when REDIS_URL is set.

With Redis, every instance behind the load balancer shares the same counters.
If Redis cannot be reached (or answers nothing within REDIS_TIMEOUT seconds) a
limit fails open by default (the request goes through and a warning is logged):
an outage of the limiter should not take the API down. A limit that guards
against brute force (login, registration, password reset) fails closed instead:
`fail_closed=True` answers 503 problem+json with `Retry-After` while the
limiter is down.

The key of a per-client limit is the client address, `request.client.host`:
the peer itself, or the address a proxy listed in FORWARDED_ALLOW_IPS forwarded
(see core/security.py); never what an untrusted client wrote in a header. An IPv6
address counts as its /64 (`client_key`).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache

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

# Seconds to wait for Redis (connect, and each command) before the limiter counts as down.
REDIS_TIMEOUT = 2.0
# What a fail-closed limit tells the client to wait while the limiter is down.
UNAVAILABLE_RETRY_AFTER = 5


class RateLimiterUnavailableError(Exception):
    """The limiter's storage did not answer, and the limit fails closed."""


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        self.storage: Storage = (
            RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                wrap_exceptions=True,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
            )
            if redis_url
            else MemoryStorage()
        )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    async def hit(
        self, item: RateLimitItem, *identifiers: str, fail_closed: bool = False
    ) -> float | None:
        """Count one hit; return seconds until retry when over the limit, else None.

        When the storage is down: None (fail open, logged), or with `fail_closed`
        `RateLimiterUnavailableError`.
        """
        try:
            if await self.strategy.hit(item, *identifiers):
                return None
            stats = await self.strategy.get_window_stats(item, *identifiers)
        except Exception as exc:
            if fail_closed:
                log.error("rate_limiter_unavailable", error=type(exc).__name__, fail_closed=True)
                raise RateLimiterUnavailableError from exc
            log.warning("rate_limiter_unavailable", error=type(exc).__name__, fail_closed=False)
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
    """The caller's address: the peer, or what a proxy in FORWARDED_ALLOW_IPS forwarded."""
    return request.client.host if request.client else "unknown"


async def client_key(request: Request) -> str:
    """What a per-client limit counts under: the client address, an IPv6 one as its /64."""
    return network_key(await client_address(request))


@lru_cache(maxsize=4096)
def network_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 network.

    One IPv6 subscriber usually gets a whole /64 (or more) and may pick any address in it,
    so counting each address apart would hand one client 2**64 fresh budgets.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


RATE_LIMITED = {429: "Rate limited (with Retry-After)"}
# A fail-closed limit while its storage is down.
LIMITER_DOWN = {503: "The rate limiter is unavailable (with Retry-After)"}


def rate_limit(
    limit: str,
    *,
    key: KeyFunc = client_key,
    scope: str | None = None,
    fail_closed: bool = False,
) -> DependsParam:
    """A dependency allowing `limit` (e.g. "5/minute") per key on the routes that use it.

        @router.post("/login", dependencies=[rate_limit("5/minute", fail_closed=True)])

    Routes that share a `scope` share counters; by default each route has its own.
    Over the limit: 429 problem+json with `Retry-After`. With `fail_closed`, a limiter
    outage answers 503 (with `Retry-After`) instead of letting the request through.
    """
    item = parse(limit)

    async def dependency(request: Request) -> None:
        route = request.scope.get("route")
        route_scope = scope or f"{request.method}:{getattr(route, 'path', request.url.path)}"
        await enforce(
            request, limit, item, route_scope, await key(request), fail_closed=fail_closed
        )

    problems = {**RATE_LIMITED, **LIMITER_DOWN} if fail_closed else RATE_LIMITED
    return DependsParam(declare(dependency, problems=problems))


async def enforce(
    request: Request,
    limit: str,
    item: RateLimitItem,
    scope: str,
    key: str,
    *,
    fail_closed: bool = False,
) -> None:
    """Count one hit of `key` under `scope`; over `limit`: 429 problem+json with Retry-After.

    With `fail_closed`, a limiter outage is 503 problem+json with Retry-After.
    """
    try:
        retry_after = await get_rate_limiter(request).hit(item, scope, key, fail_closed=fail_closed)
    except RateLimiterUnavailableError:
        raise ProblemError(
            503,
            "Rate limiting is unavailable, so this request is refused for now; try again shortly.",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        ) from None
    if retry_after is not None:
        seconds = math.ceil(retry_after)
        raise ProblemError(
            429,
            f"Rate limit of {limit} exceeded; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
