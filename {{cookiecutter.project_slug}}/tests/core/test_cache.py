from __future__ import annotations

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
