"""Prometheus metrics on a port of their own (METRICS_PORT), imported only when it is set.

What is measured:

- `http_server_request_duration_seconds{method,route,status}`: a histogram per route
  template (its `_count` is the request rate, `status=~"5.."` the errors);
- `db_pool_connections_in_use`, `db_pool_connections_limit`, `db_pool_waiting` (sampled each
  second) and `db_pool_wait_seconds` (time a request waited for a connection);
- `jobs_queue_depth{status}` and `jobs_queue_oldest_seconds{status}` (read from the jobs
  table at each scrape), `jobs_run_duration_seconds{job,outcome}` (per run: done, retry,
  dead, lost, given_back);
- `gen_ai_tokens_total{model,outcome,type}` (input and output tokens of model calls);
- what a module adds: durations with `telemetry.observe` (e.g. how long after its
  arrival a webhook was processed), or numbers computed at scrape time with
  `register_collector`.

The port is its own so the public API never serves it: in Kubernetes, Prometheus scrapes
the pod's port and no Service or Ingress publishes it. Each process serves it with
SO_REUSEPORT, so several worker processes of one instance (`uvicorn --workers N`, or
WEB_CONCURRENCY) share the port; with PROMETHEUS_MULTIPROC_DIR set (a directory emptied
before the server starts) each of them writes its numbers there and whichever process
answers a scrape reports the sum of all of them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .db import Database
    from .telemetry import TelemetrySettings

SAMPLE_SECONDS = 1.0  # how often the pool gauges are sampled
SCRAPE_QUERY_SECONDS = 2.0  # the jobs table's numbers are left out of a scrape after this
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Module durations (`observe`): from a fraction of a second to an hour.
SECONDS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _ReusePortServer(ThreadingWSGIServer):
    # Every worker process of an instance binds the same port; the kernel spreads scrapes.
    allow_reuse_port = True


class Metrics:
    def __init__(
        self, *, port: int, host: str = "127.0.0.1", multiprocess_dir: str | None = None
    ) -> None:
        self.port = port
        self.host = host
        self.multiprocess = multiprocess_dir is not None
        # Metrics of this app; in multiprocess mode their values live in the directory.
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "http_server_request_duration_seconds",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "db_pool_connections_in_use",
            "Database connections checked out",
            registry=self.registry,
            multiprocess_mode="livesum",  # the sum over the running processes
        )
        self.pool_limit = Gauge(
            "db_pool_connections_limit",
            "Connections the pool may open (DB_POOL_SIZE + DB_MAX_OVERFLOW)",
            registry=self.registry,
            multiprocess_mode="livesum",  # the sum over the running processes
        )
        self.pool_waiting = Gauge(
            "db_pool_waiting",
            "Requests waiting for a database connection",
            registry=self.registry,
            multiprocess_mode="livesum",  # the sum over the running processes
        )
        self.pool_wait = Histogram(
            "db_pool_wait_seconds",
            "Time spent waiting for a database connection (only when none was free)",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.job_runs = Histogram(
            "jobs_run_duration_seconds",
            "Job runs by job and outcome (done, retry, dead, lost, given_back)",
            ["job", "outcome"],
            buckets=(0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
            registry=self.registry,
        )
        self.tokens = Counter(
            "gen_ai_tokens",
            "Tokens of model calls by model, outcome and type (input, output)",
            ["model", "outcome", "type"],
            registry=self.registry,
        )
        self._collectors: list[Collector] = []
        self._histograms: dict[str, Histogram] = {}
        self._database: Database | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _ReusePortServer | None = None
        self._thread: threading.Thread | None = None
        self._sampler: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: TelemetrySettings) -> Metrics:
        assert settings.metrics_port is not None
        return cls(
            port=settings.metrics_port,
            host=settings.metrics_host,
            multiprocess_dir=settings.prometheus_multiproc_dir,
        )

    # --- what modules add ------------------------------------------------------------------

    def register_collector(self, collector: Collector) -> None:
        """Numbers computed at scrape time (e.g. read from a module's table)."""
        self._collectors.append(collector)

    def model_tokens(self, model: str, outcome: str, input_tokens: int, output_tokens: int) -> None:
        self.tokens.labels(model, outcome, "input").inc(input_tokens)
        self.tokens.labels(model, outcome, "output").inc(output_tokens)

    def observe(self, name: str, documentation: str, seconds: float) -> None:
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = Histogram(
                name, documentation, buckets=SECONDS_BUCKETS, registry=self.registry
            )
            self._histograms[name] = histogram
        histogram.observe(seconds)

    def job_run(self, job: str, outcome: str, seconds: float) -> None:
        self.job_runs.labels(job, outcome).observe(seconds)

    # --- the pool ---------------------------------------------------------------------------

    def sample_pool(self) -> None:
        database = self._database
        if database is None:
            return
        pool: Any = database.engine.sync_engine.pool
        if not hasattr(pool, "checkedout"):
            return  # an in-memory SQLite database's single connection
        self.pool_in_use.set(pool.checkedout())
        self.pool_limit.set(pool.size() + max(getattr(pool, "_max_overflow", 0), 0))
        turns = getattr(pool, "_turns", None)
        self.pool_waiting.set(len(turns.waiters) if turns is not None else 0)

    async def _sample_forever(self) -> None:
        while True:
            self.sample_pool()
            await asyncio.sleep(SAMPLE_SECONDS)

    # --- serving ----------------------------------------------------------------------------

    def scrape_registry(self) -> CollectorRegistry:
        """What a scrape reads: this process's metrics, or every process's (multiprocess)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            self.sample_pool()
            registry = self.registry
        return registry

    def exposition(self) -> bytes:
        """The text a scrape gets (tests read it without a server)."""
        from prometheus_client import generate_latest

        return generate_latest(_Scrape(self))

    async def start(self, app: FastAPI) -> None:
        self._database = app.state.database
        self._loop = asyncio.get_running_loop()
        pool: Any = self._database.engine.sync_engine.pool
        if hasattr(pool, "wait_observer"):
            pool.wait_observer = self.pool_wait.observe
        self._sampler = asyncio.create_task(self._sample_forever(), name="metrics-sampler")
        wsgi = make_wsgi_app(_Scrape(self))
        server = make_server(
            self.host, self.port, wsgi, _ReusePortServer, handler_class=_SilentHandler
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="metrics", daemon=True, kwargs={"poll_interval": 0.5}
        )
        self._thread.start()

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        if self._database is not None:
            pool: Any = self._database.engine.sync_engine.pool
            if getattr(pool, "wait_observer", None) is not None:
                pool.wait_observer = None
        if self.multiprocess:
            from prometheus_client import multiprocess

            # Its live gauges leave the sum.
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    # --- the jobs table, read at scrape time --------------------------------------------------

    def jobs_families(self) -> Iterator[Metric]:
        database, loop = self._database, self._loop
        if database is None or loop is None or loop.is_closed():
            return
        try:
            rows = asyncio.run_coroutine_threadsafe(_jobs_rows(database), loop).result(
                SCRAPE_QUERY_SECONDS
            )
        except Exception:  # a slow or failing database leaves these out
            return
        depth = GaugeMetricFamily(
            "jobs_queue_depth", "Jobs waiting, running or dead, by status", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "jobs_queue_oldest_seconds",
            "Age of the oldest job past its run time, by status (0: none overdue)",
            labels=["status"],
        )
        now = datetime.now(UTC)
        seen = {status: (count, first) for status, count, first in rows}
        for status in ("pending", "queued", "running", "dead"):
            count, first = seen.get(status, (0, None))
            depth.add_metric([status], count)
            age = 0.0
            if first is not None and status != "dead":
                first = first if first.tzinfo else first.replace(tzinfo=UTC)
                age = max(0.0, (now - first).total_seconds())
            oldest.add_metric([status], age)
        yield depth
        yield oldest


async def _jobs_rows(database: Database) -> list[tuple[str, int, datetime | None]]:
    from .jobs.models import JobRecord, JobStatus

    statuses = [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DEAD]
    async with database.read_engine.connect() as connection:
        result = await connection.execute(
            select(JobRecord.status, func.count(), func.min(JobRecord.run_at))
            .where(JobRecord.status.in_(statuses))
            .group_by(JobRecord.status)
        )
        return [(str(s), int(c), first) for s, c, first in result]


class _Scrape:
    """The collector a scrape reads: the metrics, the jobs table, the modules' collectors."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        yield from self.metrics.scrape_registry().collect()
        yield from self.metrics.jobs_families()
        for collector in self.metrics._collectors:
            yield from collector.collect()


class RequestMetricsMiddleware:
    """Pure ASGI: each request's duration by method, route template and status."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.observe: Callable[..., Any] = metrics.request_duration.labels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label: a scan of random URLs adds no series.
            template = getattr(route, "path_format", None) or getattr(route, "path", None)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            self.observe(method, template or "unmatched", str(status)).observe(
                time.perf_counter() - started
            )
