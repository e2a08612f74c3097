"""What a job is: a typed async function with Pydantic arguments, declared by its module.

    class Welcome(BaseModel):
        user_id: UUID

    @job("accounts.welcome", max_attempts=8)
    async def welcome(ctx: JobContext, args: Welcome) -> None:
        ...

The module lists its jobs in its `Module(jobs=(welcome,))`; `enqueue(session, welcome,
Welcome(user_id=...))` adds one to the caller's transaction.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, get_type_hints

from croniter import croniter
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

ArgsT = TypeVar("ArgsT", bound=BaseModel)

# Retries wait about backoff * 2**(attempt - 1) seconds (with jitter), at most this long.
MAX_BACKOFF_SECONDS = 3600.0


class Tick(BaseModel):
    """The arguments of a scheduled job: the minute (UTC) it was scheduled for."""

    at: datetime


class RetryLater(Exception):
    """Raised by a job that cannot finish yet: retried after `seconds`, counted as an attempt."""

    def __init__(self, reason: str, seconds: float | None = None) -> None:
        super().__init__(reason)
        self.seconds = seconds


@dataclass
class JobContext:
    """What a running job gets besides its arguments."""

    app: FastAPI  # app.state: settings, database, mailer, the modules' clients
    session: AsyncSession  # commits with the job's "done" mark, rolls back when it raises
    job_id: str
    name: str
    attempt: int  # 1 on the first run


@dataclass(frozen=True)
class Job(Generic[ArgsT]):
    name: str
    handler: Callable[[JobContext, ArgsT], Awaitable[None]]
    args_type: type[ArgsT]
    max_attempts: int = 5
    timeout: float = 60.0  # seconds; a run that takes longer is cancelled and retried
    backoff: float = 2.0  # seconds before the first retry; doubles with each attempt
    # Cron, in UTC, for a periodic job: five fields, or six with seconds first.
    schedule: str | None = None

    def retry_delay(self, attempt: int) -> float:
        delay = min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        return delay * random.uniform(0.75, 1.0)  # noqa: S311 - spreading retries, not a secret


def job(
    name: str,
    *,
    max_attempts: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    schedule: str | None = None,
) -> Callable[[Callable[[JobContext, ArgsT], Awaitable[None]]], Job[ArgsT]]:
    """Declare a job. With `schedule` (cron syntax, UTC) it takes `Tick` and runs once per tick."""
    if max_attempts < 1 or timeout <= 0 or backoff < 0:
        raise ValueError(f"job {name}: max_attempts >= 1, timeout > 0 and backoff >= 0")

    def declare(handler: Callable[[JobContext, ArgsT], Awaitable[None]]) -> Job[ArgsT]:
        parameters = list(inspect.signature(handler).parameters)
        if len(parameters) != 2:
            raise TypeError(f"job {name}: the handler takes (ctx: JobContext, args: <a model>)")
        try:
            args_type = get_type_hints(handler).get(parameters[1])
        except NameError as error:
            raise TypeError(
                f"job {name}: its annotations must name classes importable from its module "
                f"({error})"
            ) from None
        if not (inspect.isclass(args_type) and issubclass(args_type, BaseModel)):
            raise TypeError(f"job {name}: its arguments must be a Pydantic model")
        if schedule is not None:
            if args_type is not Tick:
                raise TypeError(f"job {name}: a scheduled job takes Tick as its arguments")
            if not croniter.is_valid(schedule, second_at_beginning=True):
                raise ValueError(f"job {name}: {schedule!r} is not a cron schedule")
        arguments = cast("type[ArgsT]", args_type)
        return Job(name, handler, arguments, max_attempts, timeout, backoff, schedule)

    return declare


def registry(jobs: Iterable[Job[Any]]) -> dict[str, Job[Any]]:
    """Jobs by name; two jobs with one name are a mistake caught at start-up."""
    found: dict[str, Job[Any]] = {}
    for item in jobs:
        if found.setdefault(item.name, item) is not item:
            raise ValueError(f"two jobs are named {item.name!r}")
    return found
