"""Prometheus metrics on their own port, scraped over HTTP and read with prometheus_client's
parser: requests by route template, the pool, the job queue and job runs; and with several
worker processes (uvicorn --workers 2), every scrape counts the requests of both."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from sqlalchemy import insert

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.contract import public
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.core.jobs import JobContext, JobRecord, JobStatus, enqueue, get_jobs, job
from {{ cookiecutter.package_name }}.core.metrics import Metrics
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.core.telemetry import Telemetry, observe
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from tests.conftest import PROJECT_ROOT, clear_tables

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


class Outcome(BaseModel):
    fail: bool


@job("tests.measured", max_attempts=1)
async def measured(ctx: JobContext, args: Outcome) -> None:
    if args.fail:
        raise RuntimeError("a planned failure")


@asynccontextmanager
async def measured_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient, int]]:
    router = APIRouter()

    @router.post("/test-measured/{fail}")
    @public("a test route")
    async def make(fail: bool, session: SessionDep) -> dict[str, str]:
        return {"id": await enqueue(session, measured, Outcome(fail=fail))}

    metrics = Metrics(port=0)  # any free port
    modules = (*MODULES, Module("t", routers=(router,), jobs=(measured,)))
    app = create_app(settings, modules=modules, telemetry=Telemetry(metrics=metrics))
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield app, http, metrics.bound_port
        finally:
            await clear_tables(app.state.database)


async def test_requests_jobs_and_the_pool_are_scraped(settings: Settings, migrated: object) -> None:
    async with measured_app(settings) as (app, http, port):
        for _ in range(3):
            assert (await http.get("/health/live")).status_code == 200
        assert (await http.get(f"/no-such-page/{uuid.uuid4()}")).status_code == 404
        assert (await http.post("/test-measured/false")).status_code == 200
        assert (await http.post("/test-measured/true")).status_code == 200
        await get_jobs(app).drain()
        # A job this process does not run, overdue by a minute: it waits in the queue.
        async with app.state.database.engine.begin() as connection:
            await connection.execute(
                insert(JobRecord).values(
                    id="overdue",
                    name="tests.not_here",
                    args={},
                    status=JobStatus.PENDING,
                    attempts=0,
                    max_attempts=1,
                    run_at=datetime.now(UTC) - timedelta(seconds=60),
                )
            )
        samples = await scrape(port)

    duration = "http_server_request_duration_seconds_count"
    assert value(samples, duration, method="GET", route="/health/live", status="200") == 3
    # Unknown paths share one series, whatever they are.
    assert value(samples, duration, method="GET", route="unmatched", status="404") == 1
    assert value(samples, duration, method="POST", route="/test-measured/{fail}", status="200") == 2
    runs = "jobs_run_duration_seconds_count"
    assert value(samples, runs, job="tests.measured", outcome="done") == 1
    assert value(samples, runs, job="tests.measured", outcome="dead") == 1
    assert value(samples, "jobs_queue_depth", status="pending") == 1
    assert value(samples, "jobs_queue_depth", status="dead") == 1
    oldest = value(samples, "jobs_queue_oldest_seconds", status="pending")
    assert oldest is not None
    assert 59 <= oldest < 600
    limit = settings.db_pool_size + settings.db_max_overflow
    assert value(samples, "db_pool_connections_limit") == limit
    assert value(samples, "db_pool_connections_in_use") == 0
    assert value(samples, "db_pool_waiting") == 0


async def test_a_module_observes_its_own_durations(settings: Settings, migrated: object) -> None:
    observe("tests_lag_seconds", "A module's own duration", 1.0)  # metrics off: nothing
    async with measured_app(settings) as (_app, _http, port):
        observe("tests_lag_seconds", "A module's own duration", 2.0)
        observe("tests_lag_seconds", "A module's own duration", 0.2)
        samples = await scrape(port)
    assert value(samples, "tests_lag_seconds_count") == 2
    assert value(samples, "tests_lag_seconds_sum") == 2.2
    assert value(samples, "tests_lag_seconds_bucket", le="0.5") == 1


async def test_a_wait_for_a_pooled_connection_is_measured(
    settings: Settings, migrated: object
) -> None:
    one = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
    async with measured_app(one) as (app, http, port):
        async with app.state.database.engine.connect() as held:  # the pool's only connection
            ready = asyncio.ensure_future(http.get("/health/ready"))
            await asyncio.sleep(0.3)
            assert not ready.done()
        assert (await ready).status_code == 200
        samples = await scrape(port)
        del held
    # The request, and the job loops that looked for work meanwhile.
    waits = value(samples, "db_pool_wait_seconds_count")
    assert waits is not None
    assert waits >= 1
    waited = value(samples, "db_pool_wait_seconds_sum")
    assert waited is not None
    assert waited >= 0.25


CLOSE = {"Connection": "close"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_several_worker_processes_report_together(
    settings: Settings, migrated: object, tmp_path: Path
) -> None:
    """uvicorn --workers 2 with PROMETHEUS_MULTIPROC_DIR: each scrape, whichever worker
    answers it, counts every request of both."""
    api, metrics_port = free_port(), free_port()
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))},
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key.get_secret_value(),
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        "JOBS_SCHEDULER": "false",
        "METRICS_PORT": str(metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "WEB_CONCURRENCY": "2",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)]),
    }
    env.pop("REDIS_URL", None)
    server = subprocess.Popen(  # noqa: S603 - this interpreter, our own app
        [
            *(sys.executable, "-m", "uvicorn", "{{ cookiecutter.package_name }}.main:app"),
            *("--host", "127.0.0.1", "--port", str(api), "--workers", "2"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        answered = 0
        with httpx.Client(timeout=5) as http:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the workers did not start"
                try:
                    live = http.get(f"http://127.0.0.1:{api}/health/live", headers=CLOSE)
                    answered += live.status_code == 200
                    scraped = http.get(f"http://127.0.0.1:{metrics_port}/metrics")
                    if live.status_code == 200 and scraped.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            # Both workers have started once the sum of their pools' sizes is reported.
            both = 2 * settings.db_pool_size
            while value(parse(scraped.text), "db_pool_connections_limit") != both:
                assert time.monotonic() < deadline, "only one worker started"
                time.sleep(0.2)
                scraped = http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            for _ in range(20):  # a connection each: the kernel spreads them over the workers
                live = http.get(f"http://127.0.0.1:{api}/health/live", headers=CLOSE)
                assert live.status_code == 200
                answered += 1


            def live_count() -> float | None:
                samples = parse(http.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
                assert value(samples, "db_pool_connections_limit") == both
                return value(
                    samples,
                    "http_server_request_duration_seconds_count",
                    method="GET",
                    route="/health/live",
                    status="200",
                )

            # A request is counted once its response has gone: the last one may still be
            # on its way into the count. Wait for it, then every scrape must agree.
            while live_count() != answered:
                assert time.monotonic() < deadline, f"never counted {answered} requests"
                time.sleep(0.1)
            counts = {live_count() for _ in range(6)}
        assert counts == {answered}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
