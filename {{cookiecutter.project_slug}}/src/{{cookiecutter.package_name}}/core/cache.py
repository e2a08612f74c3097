"""A per-process memory of values read a moment ago, so a hot path need not read them again."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Values remembered for `seconds`, about `size` of them at most.

    When full, the stale values are dropped first, and all of them if none is
    stale. With `seconds` at 0 nothing is ever found.
    """

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds = seconds
        self.size = size
        self._items: dict[K, tuple[float, V]] = {}

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
