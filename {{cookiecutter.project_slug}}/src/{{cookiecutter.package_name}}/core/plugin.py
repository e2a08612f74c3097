"""What a module contributes to the app. Each module exposes one `Module` in its `module.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class Module:
    name: str
    routers: Sequence[APIRouter] = ()
    lifespan: Lifespan | None = None  # entered at startup, after the database is ready
