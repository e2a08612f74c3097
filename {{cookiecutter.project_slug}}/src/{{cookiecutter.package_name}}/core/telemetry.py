"""Traces (OpenTelemetry), metrics (Prometheus) and error reports (Sentry), each off by default.

Nothing here loads the OpenTelemetry SDK, prometheus_client or sentry_sdk unless its
setting is on: with none set, a request costs what it cost without this module.

- Traces, from the standard `OTEL_*` variables: on when `OTEL_EXPORTER_OTLP_ENDPOINT`
  (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER` (otlp, console) is
  set, off when `OTEL_SDK_DISABLED=true`. A span per request (FastAPI's own, named after
  the route template), per SQL statement, Redis command, outgoing HTTP call (httpx,
  aiohttp) and SMTP send; a job's run joins the trace of the request that enqueued it.
  The SDK reads the other `OTEL_*` variables itself (OTEL_EXPORTER_OTLP_HEADERS,
  OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*) from the process environment.
- Metrics: `METRICS_PORT` serves Prometheus' text format on a port of its own (core/metrics.py).
- Errors: `SENTRY_DSN` sends unhandled errors to Sentry, without personal data.

Modules use the helpers below (`model_call`, `client_span`), which do nothing when off.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy.engine import Engine
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .metrics import Metrics

TRACER_NAME = "{{ cookiecutter.package_name }}"


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # OpenTelemetry's own names (https://opentelemetry.io/docs/specs/otel/configuration/).
    otel_sdk_disabled: bool = False
    otel_traces_exporter: Literal["", "otlp", "console", "none"] = ""
    otel_exporter_otlp_endpoint: str = ""  # e.g. http://127.0.0.1:4318 (OTLP over HTTP)
    otel_exporter_otlp_traces_endpoint: str = ""  # the full URL, e.g. .../v1/traces
    otel_service_name: str = "{{ cookiecutter.package_name }}"
    # Requests not traced: regular expressions searched in the path, comma separated
    # (the variable of OpenTelemetry's Python instrumentations), e.g. "/health/,/metrics".
    otel_python_excluded_urls: str = ""

    # Prometheus metrics on a port of their own (off when unset); see core/metrics.py.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # Several worker processes: a directory they share (prometheus_client's multiprocess mode).
    prometheus_multiproc_dir: str | None = None

    sentry_dsn: SecretStr | None = None
    # Share of requests Sentry also traces (its performance view); 0 sends errors only.
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("otel_traces_exporter", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("sentry_dsn", "prometheus_multiproc_dir", "metrics_port", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def tracing(self) -> bool:
        if self.otel_sdk_disabled:
            return False
        if self.otel_traces_exporter:
            return self.otel_traces_exporter != "none"
        return bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint)

    @property
    def traces_endpoint(self) -> str:
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint or "http://localhost:4318"
        return f"{base.rstrip('/')}/v1/traces"


def tracer_provider_from(settings: TelemetrySettings) -> TracerProvider:
    """A provider exporting in batches to the configured exporter (OTLP over HTTP, or console)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from
    # OTEL_TRACES_SAMPLER (parent-based, always on, by default).
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name}),
        shutdown_on_exit=False,
    )
    exporter: SpanExporter
    if settings.otel_traces_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.traces_endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Telemetry:
    """What of observability one app has on, and the objects that do it.

    `create_app` makes it from the environment (`Telemetry.from_settings`); tests pass
    their own, e.g. with a tracer provider exporting to memory.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        metrics: Metrics | None = None,
        excluded_urls: str = "",
    ) -> None:
        self.tracer_provider = tracer_provider
        self.metrics = metrics
        patterns = [p.strip() for p in excluded_urls.split(",") if p.strip()]
        self._excluded = re.compile("|".join(patterns)) if patterns else None
        self._tracer: Tracer | None = None
        self._undo: list[Any] = []

    @classmethod
    def from_settings(
        cls, settings: TelemetrySettings, *, environment: str, workers: int = 1
    ) -> Telemetry:
        if settings.sentry_dsn is not None:
            start_sentry(settings, environment)
        metrics = None
        if settings.metrics_port is not None:
            if settings.prometheus_multiproc_dir is not None:
                # Read by prometheus_client when it is first imported, just below.
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.prometheus_multiproc_dir
            elif workers > 1:
                raise ValueError(
                    f"METRICS_PORT with WEB_CONCURRENCY={workers} needs PROMETHEUS_MULTIPROC_DIR "
                    "(a directory the workers share): each would report only its own numbers"
                )
            from .metrics import Metrics

            metrics = Metrics.from_settings(settings)
        return cls(
            tracer_provider=tracer_provider_from(settings) if settings.tracing else None,
            metrics=metrics,
            excluded_urls=settings.otel_python_excluded_urls,
        )

    @property
    def tracing(self) -> bool:
        return self.tracer_provider is not None

    @property
    def tracer(self) -> Tracer:
        assert self.tracer_provider is not None
        if self._tracer is None:
            self._tracer = self.tracer_provider.get_tracer(TRACER_NAME)
        return self._tracer

    def fastapi_options(self) -> TelemetryConfig:
        """`FastAPI(telemetry=...)`: FastAPI's own telemetry stays off.

        The request spans are ours (`ServerSpans`, added by `install`): the same spans
        for about half of the CPU (docs/benchmarks.md, Tracing overhead). Metrics go to
        Prometheus our way (core/metrics.py).
        """
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}

    def install(self, app: FastAPI) -> None:
        """Middleware: request metrics and the request spans (when on); called by create_app.

        Added last, so outside the app's other middleware (inside Starlette's error one).
        """
        if self.metrics is not None:
            from .metrics import RequestMetricsMiddleware

            app.add_middleware(RequestMetricsMiddleware, metrics=self.metrics)
        if self.tracer_provider is not None:
            app.add_middleware(ServerSpans, telemetry=self)

    @asynccontextmanager
    async def running(self, app: FastAPI) -> AsyncIterator[None]:
        """Instrument the app's clients, serve metrics; entered first in the app's lifespan."""
        global _current
        _current = self
        try:
            if self.tracer_provider is not None:
                self._instrument(app)
            if self.metrics is not None:
                await self.metrics.start(app)
            yield
        finally:
            if self.metrics is not None:
                await self.metrics.stop()
            for undo in reversed(self._undo):
                undo()
            self._undo.clear()
            if self.tracer_provider is not None:
                self.tracer_provider.force_flush()
            if _current is self:
                _current = None

    def _instrument(self, app: FastAPI) -> None:
        provider = self.tracer_provider
        assert provider is not None
        # SQL: this app's engine only.
        self._undo.append(trace_sql(app.state.database.engine.sync_engine, provider))
        # Redis, httpx and aiohttp are patched at class level: undone when the app stops.
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        self._patch(RedisInstrumentor(), provider)
        try:
            import httpx  # noqa: F401 - only when the project uses it
        except ImportError:  # pragma: no cover - a project without httpx at run time
            pass
        else:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            self._patch(HTTPXClientInstrumentor(), provider)
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            pass
        else:
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

            self._patch(AioHttpClientInstrumentor(), provider)

    def _patch(self, instrumentor: Any, provider: TracerProvider) -> None:
        if instrumentor.is_instrumented_by_opentelemetry:
            return  # another app in this process did (tests); it undoes it
        instrumentor.instrument(tracer_provider=provider)
        self._undo.append(instrumentor.uninstrument)


# Methods named as themselves in spans; others are "_OTHER" (OpenTelemetry's HTTP conventions).
_HTTP_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
# Query parameters whose values a span never shows (the conventions' list, as FastAPI's).
_SENSITIVE_QUERY_PARAMETERS = frozenset(
    {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig", "X-Goog-Signature"}
)


class ServerSpans:
    """Pure ASGI: a server span per HTTP request, current while the app answers it.

    The span FastAPI's own telemetry makes (OpenTelemetry's HTTP server conventions):
    named `<METHOD> <route template>`, with `http.request.method`, `url.scheme`,
    `url.path`, `url.query` (signature parameters redacted), `server.address`,
    `server.port`, `network.protocol.version`, then `http.route`,
    `http.response.status_code` and, for a 5xx or an exception, `error.type` and an error
    status. A caller's trace context (`traceparent`, or what `OTEL_PROPAGATORS` reads)
    is continued. For less per request than FastAPI's (docs/benchmarks.md, Tracing
    overhead): the attributes that depend only on method, scheme, protocol and host are
    made once per combination, the headers are read once and the propagator only runs
    when a header it reads is there, and one context is attached rather than three.
    """

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry) -> None:
        from opentelemetry import context, propagate
        from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context

        self.app = app
        self._tracer = telemetry.tracer
        self._excluded = telemetry._excluded
        self._propagator = propagate.get_global_textmap
        self._fields: tuple[Any, frozenset[bytes]] = (None, frozenset())
        self._attach, self._detach, self._root = context.attach, context.detach, context.Context
        self._in_context = set_span_in_context
        self._server, self._error = SpanKind.SERVER, StatusCode.ERROR
        # (method, scheme, protocol, Host) -> the span's first attributes; bounded.
        self._constant: dict[tuple[str, str, str, bytes | None], dict[str, Any]] = {}

    def _read_headers(self, propagator: Any) -> frozenset[bytes]:
        """The header names the propagator reads (ASGI's are lower-case bytes)."""
        if self._fields[0] is not propagator:
            self._fields = (propagator, frozenset(f.lower().encode() for f in propagator.fields))
        return self._fields[1]

    def _attributes(
        self, method: str, original: str, scope: Scope, host: bytes | None
    ) -> dict[str, Any]:
        key = (original, scope["scheme"], scope.get("http_version", ""), host)
        # Without a Host header (HTTP/1.0) the address is the socket's: not cached.
        found = self._constant.get(key) if host is not None else None
        if found is None:
            found = {"http.request.method": method, "url.scheme": scope["scheme"]}
            if scope.get("http_version"):
                found["network.protocol.version"] = scope["http_version"]
            if original != method:
                found["http.request.method_original"] = original
            found.update(_server_address(scope, host))
            if host is not None:
                if len(self._constant) >= 256:
                    self._constant.clear()
                self._constant[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self._excluded is not None and self._excluded.search(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        propagator = self._propagator()
        fields = self._read_headers(propagator)
        carrier: dict[str, list[str]] | None = None
        host = None
        for name, value in scope["headers"]:
            if name in fields:
                carrier = carrier if carrier is not None else {}
                carrier.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
            elif name == b"host":
                host = value
        if carrier is not None and "baggage" in carrier:
            carrier["baggage"] = [",".join(carrier["baggage"])]  # it reads the first only
        parent = propagator.extract(carrier) if carrier is not None else self._root()
        original = scope["method"]
        method = original if original in _HTTP_METHODS else "_OTHER"
        span_method = method if method != "_OTHER" else "HTTP"
        attributes = {**self._attributes(method, original, scope, host), "url.path": scope["path"]}
        if scope.get("query_string"):
            attributes["url.query"] = _redacted_query(scope["query_string"])
        span = self._tracer.start_span(
            span_method, context=parent, kind=self._server, attributes=attributes
        )
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = self._attach(self._in_context(span, parent))
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._detach(token)
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None)
            end: dict[str, Any] = {}
            if template:
                end["http.route"] = template
                span.update_name(f"{span_method} {template}")
            if status is None and isinstance(error, Exception):
                status = 500  # what Starlette's error middleware, outside this one, sends
            if status is not None:
                end["http.response.status_code"] = status
            if error is not None or status is None or status >= 500:
                end["error.type"] = (
                    _exception_type(error)
                    if error is not None
                    else str(status or "incomplete_response")
                )
                span.set_status(self._error)
            span.set_attributes(end)
            span.end()


def _server_address(scope: Scope, host: bytes | None) -> dict[str, Any]:
    """`server.address` and `server.port`, from the Host header (else the socket's)."""
    from urllib.parse import urlsplit

    if host is not None:
        try:
            url = urlsplit("//" + host.decode("latin-1"))
            address, port = url.hostname, url.port
        except ValueError:  # a malformed Host must not fail the request
            return {}
        if url.username is not None or url.path or url.query or url.fragment:
            return {}
        if port is None:
            port = {"http": 80, "https": 443}.get(scope.get("scheme", "http"))
    else:
        address, port = scope.get("server") or (None, None)
    if address is None:
        return {}
    return {"server.address": address, **({"server.port": port} if port is not None else {})}


def _redacted_query(query: bytes) -> str:
    from urllib.parse import parse_qsl, urlencode

    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, "REDACTED" if k in _SENSITIVE_QUERY_PARAMETERS else v) for k, v in pairs])


def _exception_type(error: BaseException) -> str:
    kind = type(error)
    name = kind.__qualname__
    return name if kind.__module__ == "builtins" else f"{kind.__module__}.{name}"


# SQLAlchemy's dialect names as OpenTelemetry's `db.system` values.
_DB_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mssql": "mssql"}


def trace_sql(engine: Engine, provider: TracerProvider) -> Callable[[], None]:
    """A client span per SQL statement `engine` sends; returns what removes the listeners.

    The spans opentelemetry-instrumentation-sqlalchemy makes (same name, kind, attributes
    and instrumentation scope), for less per statement, which matters on every request
    (docs/benchmarks.md, Tracing overhead): the engine's attributes are worked out once,
    and a statement's name and attributes once per statement text (the last 1,024), not
    each time it is sent; the span gets its attributes when it starts; no listeners on the
    pool (the instrumentation's connection-usage metrics, which nothing here exports);
    and under a parent the sampler dropped (parent-based, the default) no span at all,
    where the instrumentation makes one that records nothing.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import ParentBased
    from opentelemetry.trace import SpanKind, StatusCode
    from sqlalchemy import event

    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    url = engine.url
    system = _DB_SYSTEMS.get(engine.dialect.name, engine.dialect.name)
    constant: dict[str, str | int] = {"db.system": system}
    if url.host:
        constant["net.peer.name"] = url.host
    if url.port:
        constant["net.peer.port"] = url.port
    if url.database:
        constant["db.name"] = url.database
    if url.username:
        constant["db.user"] = url.username
    in_database = f" {url.database}" if url.database else ""
    parent_based = isinstance(provider.sampler, ParentBased)
    get_current_span = trace.get_current_span
    # statement -> (span name, attributes): an app sends the same few hundred statements
    # over and over; worked out once each (bounded; the SDK copies the attributes).
    seen: dict[str, tuple[str, dict[str, str | int]]] = {}

    def before(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if context is None:
            return
        if parent_based:
            parent = get_current_span().get_span_context()
            if parent.is_valid and not parent.trace_flags.sampled:
                return  # its children are dropped too
        found = seen.get(statement)
        if found is None:
            words = _LEADING_COMMENT.sub("", statement).split(None, 1)
            operation = f"{words[0]}{in_database}" if words else system
            attributes = {**constant, "db.statement": statement, "db.operation": operation}
            found = (operation, attributes)
            if len(seen) >= 1024:
                seen.clear()
            seen[statement] = found
        context._otel_span = tracer.start_span(found[0], kind=SpanKind.CLIENT, attributes=found[1])

    def after(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _m: bool
    ) -> None:
        span = getattr(context, "_otel_span", None)
        if span is not None:
            context._otel_span = None
            span.end()

    def failed(error: Any) -> None:
        span = getattr(error.execution_context, "_otel_span", None)
        if span is not None:
            error.execution_context._otel_span = None
            span.set_status(StatusCode.ERROR, str(error.original_exception))
            span.end()

    listeners = (
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("handle_error", failed),
    )
    for name, listener in listeners:
        event.listen(engine, name, listener)

    def remove() -> None:
        for name, listener in listeners:
            if event.contains(engine, name, listener):
                event.remove(engine, name, listener)

    return remove


_LEADING_COMMENT = re.compile(r"^\s*/\*.*?\*/")


# The running app's telemetry (one app per process; tests run one at a time).
_current: Telemetry | None = None


def current() -> Telemetry | None:
    return _current


def start_sentry(settings: TelemetrySettings, environment: str) -> None:
    """Unhandled errors (and a share of requests, SENTRY_TRACES_SAMPLE_RATE) to Sentry.

    No personal data: no user ids, addresses, cookies, credentials, request bodies or
    frame locals (the SDK's default, which is send_default_pii off, and local variables
    off); the integrations for FastAPI, Starlette, SQLAlchemy, Redis and logging are
    enabled by sentry_sdk on its own.
    """
    import sentry_sdk

    assert settings.sentry_dsn is not None
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=environment,
        # No `send_default_pii`/`data_collection`: the SDK's default sends no personal data.
        traces_sample_rate=settings.sentry_traces_sample_rate,
        # Breadcrumbs hold log lines; ours may name an address (e.g. email_sent to=...).
        max_breadcrumbs=0,
        # A frame's local variables hold the request's headers (cookies, credentials) and
        # whatever the code was handling: the stack trace is sent without them.
        include_local_variables=False,
    )


# --- helpers for the code that does the work (no-ops when off) ---------------------


def traceparent() -> str | None:
    """The W3C traceparent of the current span, to hand to work done later (a job)."""
    telemetry = _current
    if telemetry is None or telemetry.tracer_provider is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def job_span(
    name: str, attributes: Mapping[str, Any], parent: str | None
) -> AbstractContextManager[Span | None]:
    """The span of one run of a job, a child of the span that enqueued it (when known)."""
    telemetry = _current
    if telemetry is None or telemetry.tracer_provider is None:
        return nullcontext()
    return _job_span(telemetry, name, attributes, parent)


@contextmanager
def _job_span(
    telemetry: Telemetry, name: str, attributes: Mapping[str, Any], parent: str | None
) -> Iterator[Span]:
    from opentelemetry import context as otel_context
    from opentelemetry.trace import SpanKind, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    start_in = (
        TraceContextTextMapPropagator().extract({"traceparent": parent})
        if parent
        else otel_context.Context()  # a root: not whatever the loop's task inherited
    )
    span = telemetry.tracer.start_span(
        f"job {name}", context=start_in, kind=SpanKind.CONSUMER, attributes=dict(attributes)
    )
    token = otel_context.attach(set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


def client_span(name: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Span | None]:
    """A client span around a call no instrumentation sees (an SMTP send)."""
    telemetry = _current
    if telemetry is None or telemetry.tracer_provider is None:
        return nullcontext()
    return _client_span(telemetry, name, attributes)


@contextmanager
def _client_span(telemetry: Telemetry, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind

    with telemetry.tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=dict(attributes)
    ) as span:
        yield span


def mark_outcome(span: Span | None, outcome: str) -> None:
    """Set a span's status from an outcome ("done"/"ok" or a failure)."""
    if span is None:
        return
    from opentelemetry.trace import StatusCode

    span.set_attribute("outcome", outcome)
    if outcome not in ("done", "ok", "given_back"):
        span.set_status(StatusCode.ERROR, outcome)


def model_call(
    *, system: str, model: str, input_tokens: int, output_tokens: int, outcome: str
) -> None:
    """A call to a model provider: GenAI attributes on the current span, tokens counted.

    The attributes are OpenTelemetry's GenAI semantic conventions (gen_ai.system,
    gen_ai.request.model, gen_ai.usage.input_tokens, gen_ai.usage.output_tokens).
    """
    telemetry = _current
    if telemetry is None:
        return
    if telemetry.metrics is not None:
        telemetry.metrics.model_tokens(model, outcome, input_tokens, output_tokens)
    if telemetry.tracer_provider is not None:
        from opentelemetry.trace import get_current_span

        span = get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "gen_ai.system": system,
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.output_tokens": output_tokens,
                }
            )


def observe(name: str, documentation: str, seconds: float) -> None:
    """A module's own duration (a histogram, in seconds), when metrics are on.

    E.g. how long after its arrival a webhook was processed; `name` is the metric's name,
    prefixed with the module's (`<module>_<what>_seconds`).
    """
    telemetry = _current
    if telemetry is not None and telemetry.metrics is not None:
        telemetry.metrics.observe(name, documentation, seconds)


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span ids on every line (tracing on)."""
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", f"{context.trace_id:032x}")
        event.setdefault("span_id", f"{context.span_id:016x}")
    return event
