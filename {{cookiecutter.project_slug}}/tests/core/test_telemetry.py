"""Traces: off, nothing is loaded; on, a request, its SQL, and the job it enqueued (with its
SMTP send) are spans of one trace, exported here to memory; log lines carry the trace id."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel
from sqlalchemy import text

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.contract import public
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.core.email import EmailSettings, Mailer, get_mailer
from {{ cookiecutter.package_name }}.core.jobs import JobContext, enqueue, get_jobs, job
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.core.telemetry import Telemetry, TelemetrySettings
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.modules import MODULES
from tests.conftest import PROJECT_ROOT, clear_tables, make_settings

REDIS_URL = os.environ.get("TEST_REDIS_URL")

# What tracing, metrics and error reports load; none of it may be imported when they are off.
# (`opentelemetry` itself, the API, is imported by FastAPI: its no-op tracer is what runs.)
HEAVY = (
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "prometheus_client",
    "sentry_sdk",
)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    yield exported
    exported.clear()


def traced(exporter: InMemorySpanExporter) -> Telemetry:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Telemetry(tracer_provider=provider)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield http
        finally:
            await clear_tables(app.state.database)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name!r} not once in {[s.name for s in spans]}"
    return found[0]


def sql_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.attributes and "db.system" in str(dict(s.attributes))]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


OFF_PROGRAM = """
import asyncio, json, sys
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from {{ cookiecutter.package_name }}.main import app

async def main():
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            statuses = [(await http.get(p)).status_code for p in ("/health/live", "/health/ready")]
    heavy = sorted(m for m in sys.modules if m.startswith(HEAVY))
    print(json.dumps(dict(statuses=statuses, heavy=heavy, tracing=app.state.telemetry.tracing)))

asyncio.run(main())
"""


def test_with_nothing_set_nothing_is_loaded(tmp_path: Path) -> None:
    """A whole request (and the app's start and stop) without any of it in sys.modules."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SENTRY_", "METRICS_", "PROMETHEUS_"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/off.db",
        SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
        ENVIRONMENT="test",
        PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)]),
    )
    program = OFF_PROGRAM.replace("HEAVY", repr(HEAVY))
    done = subprocess.run(  # noqa: S603 - this interpreter, our own program
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"statuses": [200, 200], "heavy": [], "tracing": False}


def test_the_standard_variables_turn_tracing_on_and_off() -> None:
    def settings(**values: object) -> TelemetrySettings:
        return TelemetrySettings(_env_file=None, **values)  # type: ignore[arg-type]

    assert not settings().tracing
    on = settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318/")
    assert on.tracing
    assert on.traces_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert settings(otel_traces_exporter="console").tracing
    endpoint = "http://x:4318"
    assert not settings(otel_exporter_otlp_endpoint=endpoint, otel_sdk_disabled=True).tracing
    assert not settings(otel_exporter_otlp_endpoint=endpoint, otel_traces_exporter="none").tracing
    full = settings(otel_exporter_otlp_traces_endpoint="http://collector:4318/custom")
    assert full.tracing
    assert full.traces_endpoint == "http://collector:4318/custom"


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver on loopback: keeps what is posted to /v1/traces."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def do_GET(self) -> None:
        self.received.append((self.path, "", str(dict(self.headers)).encode()))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


async def test_an_outgoing_httpx_call_is_a_client_span_of_the_request(
    settings: Settings, migrated: object, exporter: InMemorySpanExporter
) -> None:
    """What a module's HTTP client does (httpx), here against a loopback server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received.clear()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/outgoing"
    router = APIRouter()

    @router.get("/test-outgoing")
    @public("a test route")
    async def outgoing() -> dict[str, int]:
        async with httpx.AsyncClient() as client:
            return {"status": (await client.get(url)).status_code}

    app = create_app(
        settings, modules=(*MODULES, Module("t", routers=(router,))), telemetry=traced(exporter)
    )
    try:
        async with served(app) as http:
            assert (await http.get("/test-outgoing")).json() == {"status": 204}
    finally:
        server.shutdown()
        server.server_close()
    spans = exporter.get_finished_spans()
    request = by_name(spans, "GET /test-outgoing")
    [call] = [s for s in spans if s.kind is SpanKind.CLIENT and s.name.startswith("GET")]
    assert parent_id(call) == request.context.span_id
    assert call.attributes is not None
    assert call.attributes.get("url.full", call.attributes.get("http.url")) == url
    # The server called is told the trace (W3C traceparent).
    [(path, _, headers)] = Receiver.received
    assert path == "/outgoing"
    assert f"{request.context.trace_id:032x}".encode() in headers


async def test_the_environment_sends_spans_to_an_otlp_receiver(
    settings: Settings, migrated: object
) -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received.clear()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
        telemetry = Telemetry.from_settings(
            TelemetrySettings(_env_file=None, otel_exporter_otlp_endpoint=endpoint),
            environment="test",
        )
        app = create_app(settings, telemetry=telemetry)
        async with served(app) as http:
            assert (await http.get("/health/live")).status_code == 200
        # Stopping the app flushed the batch.
    finally:
        receiver.shutdown()
        receiver.server_close()
    paths = {path for path, _, _ in Receiver.received}
    assert paths == {"/v1/traces"}
    assert {kind for _, kind, _ in Receiver.received} == {"application/x-protobuf"}
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    # What was posted is OTLP's protobuf.
    exports = [ExportTraceServiceRequest.FromString(body) for _, _, body in Receiver.received]
    [resource] = {
        str(r.resource) for export in exports for r in export.resource_spans
    }  # one process, one resource: its service's name
    assert '"{{ cookiecutter.package_name }}"' in resource
    sent = [
        span
        for export in exports
        for r in export.resource_spans
        for scope in r.scope_spans
        for span in scope.spans
    ]
    [live] = [span for span in sent if span.name == "GET /health/live"]
    assert live.kind == live.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in live.attributes}
    assert attributes["http.route"].string_value == "/health/live"
    assert attributes["http.response.status_code"].int_value == 200


async def test_a_request_and_its_sql_are_one_trace(
    settings: Settings, migrated: object, exporter: InMemorySpanExporter
) -> None:
    app = create_app(settings, telemetry=traced(exporter))
    async with served(app) as http:
        assert (await http.get("/health/ready")).status_code == 200
    spans = exporter.get_finished_spans()
    server = by_name(spans, "GET /health/ready")
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/health/ready"
    assert server.attributes["http.response.status_code"] == 200
    [select] = [s for s in sql_spans(spans) if "SELECT 1" in str(dict(s.attributes or {}))]
    assert select.context.trace_id == server.context.trace_id
    assert parent_id(select) == server.context.span_id


@pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to test with a real Redis")
async def test_redis_commands_are_spans_of_the_request(
    settings: Settings, migrated: object, exporter: InMemorySpanExporter
) -> None:
    with_redis = make_settings(
        settings.database_url,
        redis_url=REDIS_URL,
        jobs_backend="inprocess",
        jobs_queue=f"test-traced-{uuid.uuid4().hex}",
    )
    app = create_app(with_redis, telemetry=traced(exporter))
    async with served(app) as http:
        ready = await http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["redis"] == "ok"
    spans = exporter.get_finished_spans()
    server = by_name(spans, "GET /health/ready")
    commands = [s for s in spans if (s.attributes or {}).get("db.system") == "redis"]
    assert commands, [(s.name, s.attributes) for s in spans]
    assert all(parent_id(c) == server.context.span_id for c in commands)


async def test_excluded_urls_are_not_traced(
    settings: Settings, migrated: object, exporter: InMemorySpanExporter
) -> None:
    telemetry = traced(exporter)
    telemetry = Telemetry(tracer_provider=telemetry.tracer_provider, excluded_urls="^/health/live$")
    app = create_app(settings, telemetry=telemetry)
    async with served(app) as http:
        await http.get("/health/live")
        await http.get("/health/ready")
    names = [s.name for s in exporter.get_finished_spans()]
    assert "GET /health/live" not in names
    assert "GET /health/ready" in names


class Note(BaseModel):
    to: str


@job("tests.traced_note", max_attempts=2, backoff=0.1)
async def traced_note(ctx: JobContext, args: Note) -> None:
    await ctx.session.execute(text("SELECT 2"))
    await get_mailer(ctx.app).send(args.to, "Traced", "A note sent by a job.")


async def smtp_sink(received: list[bytes]) -> asyncio.Server:
    """Just enough of an SMTP server on loopback to take one message."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        while line := await reader.readline():
            command = line[:4].upper()
            if command == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                received.append(await reader.readuntil(b"\r\n.\r\n"))
                writer.write(b"250 kept\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0)


async def test_a_job_joins_the_trace_of_the_request_that_enqueued_it(
    settings: Settings,
    migrated: object,
    exporter: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    router = APIRouter()

    @router.post("/test-traced-notes")
    @public("a test route")
    async def make_note(session: SessionDep) -> dict[str, str]:
        return {"id": await enqueue(session, traced_note, Note(to="someone@example.com"))}

    received: list[bytes] = []
    sink = await smtp_sink(received)
    port = sink.sockets[0].getsockname()[1]
    modules = (*MODULES, Module("t", routers=(router,), jobs=(traced_note,)))
    verbose = settings.model_copy(update={"log_level": "INFO"})
    app = create_app(verbose, modules=modules, telemetry=traced(exporter))
    smtp = EmailSettings(
        _env_file=None, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none"
    )
    app.state.mailer = Mailer(smtp)
    try:
        async with served(app) as http:
            capsys.readouterr()
            response = await http.post("/test-traced-notes")
            assert response.status_code == 200
            access_line = capsys.readouterr().err
            await get_jobs(app).drain()
    finally:
        sink.close()
    assert len(received) == 1

    spans = exporter.get_finished_spans()
    request = by_name(spans, "POST /test-traced-notes")
    run = by_name(spans, "job tests.traced_note")
    assert run.kind is SpanKind.CONSUMER
    assert run.context.trace_id == request.context.trace_id
    assert parent_id(run) == request.context.span_id
    assert run.attributes is not None
    assert run.attributes["job.id"] == response.json()["id"]
    assert run.status.status_code is not StatusCode.ERROR
    # The job's own work is inside its span: its SQL and the SMTP send.
    [job_sql] = [s for s in sql_spans(spans) if "SELECT 2" in str(dict(s.attributes or {}))]
    assert parent_id(job_sql) == run.context.span_id
    send = by_name(spans, "smtp send")
    assert send.kind is SpanKind.CLIENT
    assert parent_id(send) == run.context.span_id
    assert send.attributes is not None
    assert send.attributes["server.port"] == port
    assert "someone@example.com" not in json.dumps([dict(s.attributes or {}) for s in spans])
    # The request's log lines carry its trace id.
    trace_id = f"{request.context.trace_id:032x}"
    assert f"trace_id={trace_id}" in access_line, access_line


async def test_the_request_span_follows_the_http_conventions(
    settings: Settings, migrated: object, exporter: InMemorySpanExporter
) -> None:
    """Our server span (core/telemetry.py ServerSpans) says what FastAPI's said."""
    router = APIRouter()

    @router.get("/test-spans/{item}")
    @public("a test route")
    async def item(item: str) -> dict[str, str]:
        if item == "boom":
            raise RuntimeError("boom")
        return {"item": item}

    app = create_app(
        settings, modules=(*MODULES, Module("t", routers=(router,))), telemetry=traced(exporter)
    )
    caller_trace, caller_span = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    async with served(app) as http:
        ok = await http.get(
            "/test-spans/seven?sig=secret&page=2",
            headers={"traceparent": f"00-{caller_trace:032x}-{caller_span:016x}-01"},
        )
        assert ok.status_code == 200
        assert (await http.get("/test-spans/boom")).status_code == 500
        assert (await http.get("/no-such-path")).status_code == 404
    spans = exporter.get_finished_spans()
    [seven, boom] = [s for s in spans if s.name == "GET /test-spans/{item}"]
    assert seven.kind is SpanKind.SERVER
    # A caller's trace is continued.
    assert seven.context.trace_id == caller_trace
    assert parent_id(seven) == caller_span
    assert dict(seven.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/test-spans/seven",
        "url.query": "sig=REDACTED&page=2",
        "server.address": "testserver",
        "server.port": 80,
        "network.protocol.version": "1.1",
        "http.route": "/test-spans/{item}",
        "http.response.status_code": 200,
    }
    assert seven.status.status_code is StatusCode.UNSET
    assert boom.parent is None  # no traceparent: a trace of its own
    assert boom.status.status_code is StatusCode.ERROR
    assert (boom.attributes or {})["error.type"] == "RuntimeError"
    assert (boom.attributes or {})["http.response.status_code"] == 500
    # A path no route has: the method alone, no route (a scan of random URLs adds no names).
    [unmatched] = [s for s in spans if s.name == "GET"]
    assert "http.route" not in (unmatched.attributes or {})
    assert (unmatched.attributes or {})["http.response.status_code"] == 404
