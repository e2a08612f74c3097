"""The project's app with test routes and jobs, for the API processes of the scale-out test:
`uvicorn --factory tests.core.scaleout_app:create`, configured from the environment like
`main.app`.

Its workers are `python -m tests.core.job_worker` with TEST_SCHEDULED=1: the project's
worker with the same test jobs (tests/core/jobkit.py).
"""

from __future__ import annotations

import os

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.contract import public
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.core.jobs import enqueue
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.core.ratelimit import rate_limit
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from tests.core.jobkit import Effect, effect, scheduled_module, test_module

# Per hour, so that the sliding window's previous minute cannot let one more through when
# a test runs across the turn of a window.
LIMIT = 6
router = APIRouter(prefix="/test-scaleout")


class Served(BaseModel):
    pid: int


class Enqueued(BaseModel):
    ids: list[str]
    pid: int


@router.get("/limited", dependencies=[rate_limit(f"{LIMIT}/hour")])
@public("a test route")
async def limited() -> Served:
    return Served(pid=os.getpid())


@router.post("/jobs")
@public("a test route")
async def enqueue_jobs(session: SessionDep, tag: str, count: int = 10) -> Enqueued:
    """`count` test jobs, enqueued in the request's transaction."""
    ids = [await enqueue(session, effect, Effect(tag=f"{tag}-{i}")) for i in range(count)]
    return Enqueued(ids=ids, pid=os.getpid())


def create() -> FastAPI:
    extra = (test_module, scheduled_module, Module("scaleout", routers=(router,)))
    return create_app(Settings(), modules=(*MODULES, *extra))
