"""A per-process memory of values read a moment ago, so a hot path need not read them again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Values remembered for `seconds`, about `size` of them at most.

    When full, the stale values are dropped first, and all of them if none is
    stale. With `seconds` at 0 nothing is ever found (`fetch` still lets
    concurrent callers share one read).
    """

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds = seconds
        self.size = size
        self._items: dict[K, tuple[float, V]] = {}
        self._reading: dict[K, asyncio.Task[V]] = {}

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None or time.monotonic() - found[0] >= self.seconds:
            return None
        return found[1]

    def put(self, key: K, value: V) -> None:
        now = time.monotonic()
        if len(self._items) >= self.size:
            self._items = {k: v for k, v in self._items.items() if now - v[0] < self.seconds}
            if len(self._items) >= self.size:
                self._items.clear()
        self._items[key] = (now, value)

    async def fetch(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        """The recent value for `key`, else what `read()` returns, remembered.

        Callers that ask while a read of the key is under way wait for that read
        instead of starting another: when a value expires, a burst of requests for
        it makes one read, not one each. The read runs in a task of its own, so a
        caller that goes away does not cancel it for the others. A failed read is
        not remembered: everyone waiting on it gets its error.
        """
        found = self.get(key)
        if found is not None:
            return found
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(key, read))
            reading.add_done_callback(_retrieve)
            self._reading[key] = reading
        return await asyncio.shield(reading)

    async def _read(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await read()
        finally:
            del self._reading[key]
        self.put(key, value)
        return value


def _retrieve(task: asyncio.Task[V]) -> None:
    """Mark a failed read's error as seen, even when every caller went away."""
    if not task.cancelled():
        task.exception()
