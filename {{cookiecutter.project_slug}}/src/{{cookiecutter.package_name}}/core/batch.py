"""Batching: calls made while one round trip runs share the next one.

A hot endpoint that makes one small database round trip per request pays more for
the round trip (SQLAlchemy's work per statement, the socket, a pooled connection held
meanwhile) than for what it reads or writes. `Batcher` gathers those calls instead:
the first call of a quiet moment runs at once (a batch of one, no added wait), and
the calls that arrive while a batch runs go into the next one, so under load one
statement serves many requests and the batches grow by themselves. It is the ledger
writer's group commit (ai/service.py) made generic, and the "data loader" of GraphQL
servers.

    async def read_many(ids: Sequence[uuid.UUID]) -> list[Row | None]: ...  # one query
    read = Batcher(read_many, name="rows")
    row = await read(row_id)           # in each request

`run` gets the items in arrival order and returns one result per item, in the same
order. If it raises, every caller in that batch gets the exception. A caller that
stops waiting (its request was cancelled) does not take its item out: a write it
handed over still happens. One batcher serves one event loop (make it in a lifespan).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        name: str,
        max_size: int = 100,
    ) -> None:
        self._run = run
        self.name = name
        self.max_size = max_size
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            # In a context of its own: a batch belongs to no one request (its log lines
            # and trace spans are not the first caller's).
            self._task = asyncio.create_task(
                self._drain(), name=f"batch-{self.name}", context=contextvars.Context()
            )
            self._task.add_done_callback(self._stopped)
        return await future

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if self._task is task:  # cancelled before it ran: it never got to clean up
            self._task = None
            pending, self._pending = self._pending, []
            for _, future in pending:
                future.cancel()

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._pending:
                batch = self._pending[: self.max_size]
                del self._pending[: self.max_size]
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                batch = []
        except BaseException:
            # Cancelled (the app is stopping) or a result count that does not match:
            # no caller is left waiting for ever.
            for _, future in [*batch, *self._pending]:
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._task = None

    async def aclose(self) -> None:
        """Wait for what was handed over (at shutdown, before the database is closed)."""
        while self._task is not None:
            await asyncio.shield(self._task)
