from __future__ import annotations

import asyncio
import time

import pytest

from {{ cookiecutter.package_name }}.core.cache import Recent


def test_values_are_found_only_while_recent(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent: Recent[str, int] = Recent(seconds=2, size=10)
    recent.put("a", 1)
    assert recent.get("a") == 1
    now[0] += 2
    assert recent.get("a") is None
    assert recent.get("never put") is None
    assert Recent[str, int](seconds=0, size=10).get("a") is None


def test_when_full_stale_values_go_first(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent: Recent[str, int] = Recent(seconds=5, size=2)
    recent.put("old", 1)
    now[0] += 10
    recent.put("fresh", 2)
    recent.put("new", 3)  # full: the stale "old" makes room
    assert (recent.get("fresh"), recent.get("new")) == (2, 3)
    recent.put("newer", 4)  # full of fresh values: all of them go
    assert (recent.get("fresh"), recent.get("new"), recent.get("newer")) == (None, None, 4)


async def test_concurrent_callers_share_one_read() -> None:
    recent: Recent[str, int] = Recent(seconds=60, size=10)
    reads: list[str] = []
    release = asyncio.Event()

    async def read() -> int:
        reads.append("a")
        await release.wait()
        return len(reads)

    callers = [asyncio.create_task(recent.fetch("a", read)) for _ in range(5)]
    await asyncio.sleep(0)
    callers[0].cancel()  # the first caller going away does not cancel the read
    release.set()
    assert await asyncio.gather(*callers[1:]) == [1, 1, 1, 1]
    assert await recent.fetch("a", read) == 1  # remembered
    assert reads == ["a"]


async def test_a_failed_read_reaches_every_caller_and_is_not_remembered() -> None:
    recent: Recent[str, int] = Recent(seconds=60, size=10)
    attempts: list[int] = []

    async def read() -> int:
        attempts.append(1)
        await asyncio.sleep(0)
        if len(attempts) == 1:
            raise ConnectionError("database went away")
        return 7

    results = await asyncio.gather(
        recent.fetch("a", read), recent.fetch("a", read), return_exceptions=True
    )
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert await recent.fetch("a", read) == 7
    assert len(attempts) == 2
