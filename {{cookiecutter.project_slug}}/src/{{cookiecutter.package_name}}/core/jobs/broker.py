"""Taskiq on a Redis stream: carries job ids from the relays to the workers.

Only loaded when jobs go through Redis. The stream's consumer group hands each
message to one worker and keeps it until that worker acknowledges it (after the
run); a message a dead worker held is taken over by another after
JOBS_REQUEUE_SECONDS. The job's row decides whether a delivery runs (runtime.py),
so a message delivered twice runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from taskiq import AsyncTaskiqDecoratedTask
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.core.config import Settings

log = structlog.get_logger("jobs")

TASK_NAME = "jobs.run"
CONSUMER_GROUP = "workers"
PUBLISH_TIMEOUT = 5.0
# The stream is trimmed to about this many messages; a message trimmed before it was read
# is handed out again from its row after JOBS_REQUEUE_SECONDS.
STREAM_LENGTH = 100_000


class Broker:
    def __init__(self, settings: Settings, execute: Callable[[str], Awaitable[str]]) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self._started = False
        self.taskiq = RedisStreamBroker(
            settings.redis_url,
            queue_name=settings.jobs_queue,
            consumer_group_name=CONSUMER_GROUP,
            idle_timeout=int(settings.jobs_requeue_seconds * 1000),
            xread_block=1000,
            maxlen=STREAM_LENGTH,
            # A worker takes no more messages at a time than it runs at once, leaving the rest
            # to the other workers.
            xread_count=settings.jobs_concurrency,
            socket_connect_timeout=2,
        )

        async def run(job_id: str) -> str:
            return await execute(job_id)

        self.task: AsyncTaskiqDecoratedTask[[str], Coroutine[Any, Any, str]] = (
            self.taskiq.register_task(run, task_name=TASK_NAME)
        )

    async def start(self, *, worker: bool) -> None:
        """Get ready; Redis may be away at start-up (publish and work wait for it)."""
        self.taskiq.is_worker_process = worker
        with contextlib.suppress(Exception):
            await self._ready()

    async def _ready(self) -> None:
        # The stream and its consumer group must exist before the first message is added:
        # a group made later would not see the messages before it.
        if not self._started:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self.taskiq.startup()
            self._started = True

    async def stop(self) -> None:
        await self.taskiq.shutdown()

    async def publish(self, job_ids: Sequence[str]) -> None:
        await self._ready()
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            for job_id in job_ids:
                await self.task.kiq(job_id)

    async def healthy(self) -> bool:
        async with Redis(connection_pool=self.taskiq.connection_pool) as redis:
            return bool(await redis.ping())

    async def work(self, stop: asyncio.Event) -> None:
        """Take jobs from the stream until `stop` is set; then wait for the running ones."""
        while not self._started and not stop.is_set():
            try:
                await self._ready()
            except Exception as error:
                log.warning("jobs_redis_unavailable", error=repr(error))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await stop.wait()
        receiver = Receiver(
            self.taskiq,
            run_startup=False,
            max_async_tasks=self.settings.jobs_concurrency,
            ack_type=AcknowledgeType.WHEN_EXECUTED,
            wait_tasks_timeout=self.settings.jobs_shutdown_seconds,
        )
        await receiver.listen(stop)
