"""What a module contributes to the app. Each module exposes one `Module` in its `module.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI

from .jobs import Job

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
Install = Callable[[FastAPI], None]


@dataclass(frozen=True)
class Module:
    name: str
    routers: Sequence[APIRouter] = ()
    lifespan: Lifespan | None = None  # entered at startup, after the database is ready
    # Called once by create_app, after the routers: for what must be mounted on the app itself.
    install: Install | None = None
    # Its background jobs (core/jobs); a scheduled one runs on its own once the app starts.
    jobs: Sequence[Job[Any]] = ()
